//! Symbolised backtraces for fatal faults, panics and the `d` debug key: the frame-pointer
//! chain (`hv_arch::symbols::walk`) named through the symbol table embedded in the image.
//! Emergency console writes only: this runs with any lock held.

use hv_arch::console::emergency_write_fmt as p;

/// Prints one address as `name+0xoff`, or bare when no symbol covers it.
pub fn line(addr: u64) {
    match hv_core::symbols::lookup(hv_arch::symbols::table(), addr) {
        Some((name, off)) => p(format_args!("(XEN)    [<{:#018x}>] {}+{:#x}\n", addr, name, off)),
        None => p(format_args!("(XEN)    [<{:#018x}>] ?\n", addr)),
    }
}

/// The backtrace from frame pointer `rbp` (after `rip`, the faulting instruction, if given).
pub fn print_from(rip: Option<u64>, rbp: u64) {
    p(format_args!("(XEN) Xen call trace:\n"));
    if let Some(r) = rip {
        line(r);
    }
    hv_arch::symbols::walk(rbp, 32, line);
}

/// The backtrace of the caller of this function.
#[inline(never)]
pub fn here() {
    print_from(None, hv_arch::symbols::frame_pointer());
}
