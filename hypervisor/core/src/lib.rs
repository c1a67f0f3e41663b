//! Hypervisor logic that needs no CPU: it builds without `std` and is tested on the host.
//!
//! Hardware-touching code lives in `hv-arch`; this crate sees memory only through the
//! [`mem::PhysMem`] trait, so host tests plug in a vector of pages.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod acpi;
pub mod acpi_power;
pub mod audit;
pub mod budget;
pub mod conin;
pub mod conring;
pub mod cpuid;
pub mod emul;
pub mod builder;
pub mod cmdline;
pub mod continuation;
pub mod evtchn;
pub mod frame;
pub mod frame_alloc;
pub mod grant;
pub mod guest_access;
pub mod ioperm;
pub mod irq;
pub mod mem;
pub mod memmap;
pub mod pt;
pub mod pte;
pub mod pv_image;
pub mod ratelimit;
pub mod runstate;
pub mod sched;
pub mod screen;
pub mod shootdown;
pub mod symbols;
pub mod time;
