//! A boot-time domU that waits for dom0 to get ready, then takes a fault with no handler
//! registered: the hypervisor must crash it, tell dom0 (VIRQ_DOM_EXC) and carry on.
#![no_std]
#![no_main]

#[no_mangle]
fn guest_main(_si: &'static pv_runtime::StartInfo) -> ! {
    test_guests::settle();
    pv_runtime::println!("crasher: executing ud2 without a trap table");
    // SAFETY: deliberately faults; the hypervisor crashes this domain.
    unsafe { core::arch::asm!("ud2") };
    pv_runtime::hypercall::shutdown(guest_abi::sched::ShutdownReason::Poweroff)
}
