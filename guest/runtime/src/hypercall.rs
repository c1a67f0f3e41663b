//! Hypercall wrappers: `call hypercall_page + 32 * nr`.

use guest_abi::hypercall as nr;
use guest_abi::sched::{SchedShutdown, ShutdownReason, SCHEDOP_SHUTDOWN};

extern "C" {
    static hypercall_page: [u8; 4096];
}

/// Address of the stub for `nr`.
pub fn stub_address(n: u64) -> u64 {
    core::ptr::addr_of!(hypercall_page) as u64 + 32 * n
}

/// Makes hypercall `n` with five arguments; returns RAX.
///
/// # Safety
/// The arguments must be valid for the hypercall (pointers to memory the call may read or
/// write).
pub unsafe fn hypercall5(n: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let ret: i64;
    let stub = stub_address(n & 127);
    // SAFETY: the stub executes `int 0x82` and returns; the hypervisor may clobber the
    // argument registers, which are declared as such.
    unsafe {
        core::arch::asm!(
            "call {stub}",
            stub = in(reg) stub,
            inlateout("rax") n => ret,
            inlateout("rdi") a1 => _,
            inlateout("rsi") a2 => _,
            inlateout("rdx") a3 => _,
            inlateout("r10") a4 => _,
            inlateout("r8") a5 => _,
        );
    }
    ret
}

/// Makes hypercall `n` directly with `int 0x82`, bypassing the hypercall page (so any RAX
/// value can be tried).
///
/// # Safety
/// As for [`hypercall5`].
pub unsafe fn raw_hypercall(n: u64, a1: u64, a2: u64, a3: u64) -> i64 {
    let ret: i64;
    // SAFETY: as for `hypercall5`.
    unsafe {
        core::arch::asm!(
            "int 0x82",
            inlateout("rax") n => ret,
            inlateout("rdi") a1 => _,
            inlateout("rsi") a2 => _,
            inlateout("rdx") a3 => _,
        );
    }
    ret
}

/// `console_io(WRITE, len, buf)`.
pub fn console_write(b: &[u8]) -> i64 {
    // SAFETY: the buffer is valid for reads of its length.
    unsafe { hypercall5(nr::CONSOLE_IO, 0, b.len() as u64, b.as_ptr() as u64, 0, 0) }
}

/// `console_io(READ, len, buf)`: bytes read.
pub fn console_read(b: &mut [u8]) -> i64 {
    // SAFETY: the buffer is valid for writes of its length.
    unsafe { hypercall5(nr::CONSOLE_IO, 1, b.len() as u64, b.as_mut_ptr() as u64, 0, 0) }
}

/// `xen_version(cmd, arg)`.
///
/// # Safety
/// `arg` must point to a buffer of the size `cmd` writes.
pub unsafe fn xen_version(cmd: u64, arg: u64) -> i64 {
    // SAFETY: guaranteed by the caller.
    unsafe { hypercall5(nr::XEN_VERSION, cmd, arg, 0, 0, 0) }
}

/// `sched_op(SCHEDOP_yield)`.
pub fn yield_now() -> i64 {
    // SAFETY: yield takes no pointer.
    unsafe { hypercall5(nr::SCHED_OP, guest_abi::sched::SCHEDOP_YIELD, 0, 0, 0, 0) }
}

/// `sched_op(SCHEDOP_shutdown, {reason})`: does not return.
pub fn shutdown(reason: ShutdownReason) -> ! {
    let s = SchedShutdown { reason: reason as u32 };
    // SAFETY: `s` is a valid sched_shutdown.
    unsafe { hypercall5(nr::SCHED_OP, SCHEDOP_SHUTDOWN, &s as *const _ as u64, 0, 0, 0) };
    loop {
        core::hint::spin_loop();
    }
}

/// `stack_switch(ss, sp)`.
pub fn stack_switch(ss: u16, sp: u64) -> i64 {
    // SAFETY: takes no pointer.
    unsafe { hypercall5(nr::STACK_SWITCH, ss as u64, sp, 0, 0, 0) }
}
