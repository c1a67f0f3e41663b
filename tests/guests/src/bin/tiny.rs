//! The `xl create` benchmark's domU (`/etc/xen/tiny.cfg`): prints one line through its
//! console ring and then idles, asleep on its console port, as an idle OS would (rather
//! than spinning: a spinning, freshly boosted guest keeps one CPU from dom0 until the
//! scheduler's tick, which is what `spinner` shows).
#![no_std]
#![no_main]

use pv_runtime::{println, pvio, xencons};

#[no_mangle]
fn guest_main(_si: &'static pv_runtime::StartInfo) -> ! {
    println!("tiny: up");
    loop {
        let mut b = [0u8; 16];
        if xencons::read(&mut b) == 0 {
            pvio::wait(&[xencons::port()]);
        }
    }
}
