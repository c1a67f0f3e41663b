//! The x86-64 layer of the hypervisor.
//!
//! Everything that touches the CPU or raw memory is here, and so is every `unsafe` block of
//! the hypervisor. The rest of the hypervisor (`hv-core` and the binary) is safe Rust that
//! reaches hardware only through this crate's functions.
#![no_std]

extern crate alloc;

pub mod boot;
pub mod console;
pub mod cpu;
pub mod descriptors;
pub mod entry;
pub mod heap;
pub mod ioapic;
pub mod lapic;
pub mod layout;
pub mod paging;
pub mod percpu;
pub mod power;
pub mod screen;
pub mod kbd;
pub mod physmem;
pub mod smp;
pub mod stop;
pub mod symbols;
pub mod time;
