//! The guest/hypervisor ABI, as Rust types and constants.
//!
//! This crate is the single source of truth for numbers and layouts shared by the hypervisor,
//! dom0 and every PV guest. It follows Xen's public x86-64 PV ABI wherever our ring model
//! allows. Every `repr(C)` struct carries compile-time size and offset assertions.
//!
//! Deviations from Xen (also in `docs/abi-deviations.md`):
//! - Guest kernels run in **ring 1**, not ring 3. The flat kernel selectors therefore are
//!   ring-1 descriptors in the hypervisor-reserved GDT area ([`selectors`]).
//! - Hypercalls use `int 0x82` (a DPL-1 gate), so the hypercall page holds
//!   `mov eax, nr; int 0x82; ret` stubs ([`hypercall::stub`]).
//! - Exceptions are bounced with a hardware-shaped frame (no RCX/R11 words), so a guest
//!   handler returns with a native `iretq` ([`traps`]).
#![no_std]
#![forbid(unsafe_code)]

pub mod cpulist;
pub mod domctl;
pub mod elfnote;
pub mod errno;
pub mod evtchn;
pub mod grant;
pub mod harness;
pub mod hypercall;
pub mod io;
pub mod layout;
pub mod memory;
pub mod mm;
pub mod physdev;
pub mod sched;
pub mod selectors;
pub mod shared_info;
pub mod start_info;
pub mod traps;
pub mod vcpu;
pub mod version;

/// A Xen domain id.
pub type DomId = u16;
/// `DOMID_SELF`: the calling domain.
pub const DOMID_SELF: DomId = 0x7FF0;
/// `DOMID_IO`: owner of MMIO frames.
pub const DOMID_IO: DomId = 0x7FF1;
/// `DOMID_XEN`: owner of hypervisor frames.
pub const DOMID_XEN: DomId = 0x7FF2;
/// `DOMID_IDLE`: the idle domain.
pub const DOMID_IDLE: DomId = 0x7FFF;
/// `DOMID_INVALID`.
pub const DOMID_INVALID: DomId = 0x7FF4;

/// Page size (all frames are 4 KiB).
pub const PAGE_SIZE: usize = 4096;
/// log2 of the page size.
pub const PAGE_SHIFT: u32 = 12;
