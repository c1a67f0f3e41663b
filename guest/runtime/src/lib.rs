//! The PV guest runtime: what every guest of this hypervisor links against.
//!
//! It provides the ELF notes the builder reads, the entry point (`_start`, RSI = start_info),
//! the hypercall page and typed wrappers, the console, and exception handling through the
//! virtual IDT, for either of the hypervisor's modes (the ring-1 model by default, the Xen
//! pv64 mode with the `pv64` feature: [`PV64`]). A guest binary defines `guest_main(&StartInfo) -> !` and links with
//! `guest-high.ld` (VIRT_BASE −2 GiB) or `guest-low.ld` (VIRT_BASE 0, image at 1 MiB).
#![no_std]

pub mod balloon;
pub mod blkfront;
pub mod console;
pub mod ctl;
pub mod entry;
pub mod events;
pub mod foreign;
pub mod gnttab;
pub mod hypercall;
pub mod mm;
pub mod netfront;
pub mod physdev;
pub mod pvio;
pub mod traps;
pub mod xenbus;
pub mod xencons;

pub use guest_abi;
pub use guest_abi::start_info::StartInfo;

/// Built for the Xen pv64 mode (the `pv64` feature) rather than the ring-1 model.
pub const PV64: bool = cfg!(feature = "pv64");
/// The kernel's flat code and stack selectors in this build's mode.
pub const KERNEL_CS: u16 = guest_abi::selectors::kernel_cs(PV64);
pub const KERNEL_SS: u16 = guest_abi::selectors::kernel_ss(PV64);

/// The current privilege level (CPL), from CS.
pub fn cpl() -> u16 {
    use x86_64::instructions::segmentation::{Segment, CS};
    CS::get_reg().0 & 3
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("guest panic: {}", info);
    hypercall::shutdown(guest_abi::sched::ShutdownReason::Crash)
}

extern "C" {
    static __virt_base: u8;
}

/// The TSC (rdtsc is allowed at CPL 1: CR4.TSD is clear).
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc reads the counter and has no other effect.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The boot module the builder mapped for this domain (`start_info.mod_start` /
/// `mod_len`: dom0's initrd), if any.
pub fn boot_module(si: &StartInfo) -> Option<&'static [u8]> {
    if si.mod_start == 0 || si.mod_len == 0 || si.mod_start.checked_add(si.mod_len).is_none() {
        return None;
    }
    // SAFETY: the builder maps the module at mod_start for mod_len bytes in the bootstrap
    // region (Xen's start-of-day contract), writable memory of this domain that nothing
    // else of the runtime uses; it stays mapped.
    Some(unsafe { core::slice::from_raw_parts(si.mod_start as *const u8, si.mod_len as usize) })
}

/// This guest's `VIRT_BASE` (from its linker script).
pub fn virt_base() -> u64 {
    core::ptr::addr_of!(__virt_base) as u64
}
