//! The symbol table embedded in the image (`RXEN_SYMBOLS`, written into the ELF file by
//! `cargo xtask build`: `hv_core::symbols` is its format) and the frame-pointer walk
//! (the image is built with `force-frame-pointers`) that a fatal fault's backtrace uses.

use core::cell::UnsafeCell;

/// Room for the table (the hypervisor has about a thousand functions: ~60 KiB).
pub const SYMBOLS_SIZE: usize = 256 << 10;

/// The table's bytes: zero in the compiled image, filled in the file by xtask. An
/// `UnsafeCell` so that the compiler cannot assume the zeros it was built with.
#[repr(transparent)]
pub struct Table(UnsafeCell<[u8; SYMBOLS_SIZE]>);

// SAFETY: never written while the hypervisor runs (only in the image file, before boot).
unsafe impl Sync for Table {}

#[no_mangle]
#[used]
#[link_section = ".data.rxen_symbols"]
pub static RXEN_SYMBOLS: Table = Table(UnsafeCell::new([0; SYMBOLS_SIZE]));

/// The table (all zeros when the image was not post-processed: no symbols).
pub fn table() -> &'static [u8] {
    // SAFETY: nothing writes the table at run time, so a shared reference is sound.
    unsafe { &*RXEN_SYMBOLS.0.get() }
}

/// This function's caller's frame pointer (where a walk from here starts).
#[inline(always)]
pub fn frame_pointer() -> u64 {
    let rbp: u64;
    // SAFETY: reads a register.
    unsafe { core::arch::asm!("mov {}, rbp", out(reg) rbp, options(nomem, nostack, preserves_flags)) };
    rbp
}

/// Walks the frame-pointer chain from `rbp`, calling `each` with every return address, at
/// most `max` of them. Stops at a frame that is not 8-aligned, not mapped hypervisor
/// memory, or not above the one before (so it never faults and always ends).
pub fn walk(mut rbp: u64, max: usize, mut each: impl FnMut(u64)) {
    for _ in 0..max {
        if !rbp.is_multiple_of(8) || rbp.checked_add(16).is_none() || !crate::paging::hypervisor_va_mapped(rbp) || !crate::paging::hypervisor_va_mapped(rbp + 8) {
            return;
        }
        // SAFETY: both words are in mapped hypervisor memory (checked just above); a stack
        // frame holds the caller's frame pointer and the return address.
        let (next, ret) = unsafe { ((rbp as *const u64).read_volatile(), ((rbp + 8) as *const u64).read_volatile()) };
        if ret == 0 {
            return;
        }
        each(ret);
        if next <= rbp {
            return;
        }
        rbp = next;
    }
}
