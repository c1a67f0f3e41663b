//! A CPU hog domU for the share benchmark: counts loop iterations and prints the count every
//! 100 000, forever (dom0 ends the run).
#![no_std]
#![no_main]

#[no_mangle]
fn guest_main(_si: &'static pv_runtime::StartInfo) -> ! {
    let mut n: u64 = 0;
    loop {
        n += 1;
        if n.is_multiple_of(100_000) {
            pv_runtime::println!("hog: {} loops", n);
        }
        core::hint::spin_loop();
    }
}
