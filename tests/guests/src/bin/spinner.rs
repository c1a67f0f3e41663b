//! A domU that spins forever with events masked (its upcall mask is set at boot and never
//! cleared) and never makes a hypercall: only timer preemption can take the CPU back.
#![no_std]
#![no_main]

#[no_mangle]
fn guest_main(_si: &'static pv_runtime::StartInfo) -> ! {
    pv_runtime::println!("spinner: spinning with events masked");
    loop {
        core::hint::spin_loop();
    }
}
