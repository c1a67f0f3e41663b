//! A fault that cannot be delivered because the guest's kernel stack points into the
//! hypervisor's area crashes the domain cleanly. Expected: exit code Crash and
//! "kernel stack ... unusable".
#![no_std]
#![no_main]

#[no_mangle]
fn guest_main(_si: &'static pv_runtime::StartInfo) -> ! {
    pv_runtime::traps::install();
    pv_runtime::println!("bad-stack: faulting with RSP in the hypervisor's direct map");
    // SAFETY: deliberately faults with an unusable stack; the domain is crashed.
    unsafe { core::arch::asm!("mov rsp, 0xFFFF830000100000", "ud2", options(noreturn)) };
}
