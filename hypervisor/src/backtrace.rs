//! Symbolised backtraces for fatal faults, panics and the `d` debug key: the frame-pointer
//! chain (`hv_arch::symbols::walk`) named through the symbol table embedded in the image.
//! Emergency console writes only: this runs with any lock held.

use hv_arch::console::emergency_write_fmt as p;

/// Prints one address as `name+0xoff`, or bare when no symbol covers it. A return address
/// (`ret`) is looked up one byte back: a call that ends its function returns just past it.
pub fn line(addr: u64, ret: bool) {
    let at = addr.saturating_sub(u64::from(ret));
    match hv_core::symbols::lookup(hv_arch::symbols::table(), at) {
        Some((name, off)) => p(format_args!("(XEN)    [<{:#018x}>] {}+{:#x}\n", addr, name, off + u64::from(ret))),
        None => p(format_args!("(XEN)    [<{:#018x}>] ?\n", addr)),
    }
}

/// The backtrace from frame pointer `rbp` (after `rip`, the faulting instruction, if given).
pub fn print_from(rip: Option<u64>, rbp: u64) {
    p(format_args!("(XEN) Xen call trace:\n"));
    if let Some(r) = rip {
        line(r, false);
    }
    hv_arch::symbols::walk(rbp, 32, |r| line(r, true));
}

/// The backtrace of the caller of this function.
#[inline(never)]
pub fn here() {
    print_from(None, hv_arch::symbols::frame_pointer());
}
