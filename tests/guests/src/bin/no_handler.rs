//! A fault with no registered handler crashes the domain (with a register dump), never the
//! hypervisor. Expected: exit code Crash and "crashed: #UD with no handler".
#![no_std]
#![no_main]

#[no_mangle]
fn guest_main(_si: &'static pv_runtime::StartInfo) -> ! {
    pv_runtime::println!("no-handler: executing ud2 without a trap table");
    // SAFETY: deliberately faults; the hypervisor crashes this domain.
    unsafe { core::arch::asm!("mov rax, 0x1122334455667788", "ud2") };
    pv_runtime::println!("Test result: FAILURE (survived ud2 without a handler)");
    pv_runtime::hypercall::shutdown(guest_abi::sched::ShutdownReason::Poweroff)
}
