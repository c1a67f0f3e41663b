//! A domU that says hello and powers off (dom0's `xl create` tests its on_poweroff action).
#![no_std]
#![no_main]

#[no_mangle]
fn guest_main(_si: &'static pv_runtime::StartInfo) -> ! {
    pv_runtime::println!("hello: up, powering off");
    pv_runtime::hypercall::shutdown(guest_abi::sched::ShutdownReason::Poweroff)
}
