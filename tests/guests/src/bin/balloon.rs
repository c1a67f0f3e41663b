//! A domU whose memory follows `xl mem-set` (`pv_runtime::balloon`) while it keeps using
//! memory: it takes `<hold>` pages (its command line) one by one, writing each with a
//! pattern of its frame number, and checks them all when it is shut down. Each target it
//! reaches is written to `data/at-<KiB>-<n>` (the n-th size reached, for the script) and said on the console; a
//! shrink or grow of 16 MiB or more is timed (`BENCH balloon_*`).
#![no_std]
#![no_main]

use guest_abi::sched::ShutdownReason;
use pv_runtime::balloon;
use pv_runtime::foreign::Window;
use pv_runtime::mm::GuestMem;
use pv_runtime::{hvprintln as println, hypercall, xenbus};

const HOLD_MAX: usize = 4096;
static mut HELD: [u64; HOLD_MAX] = [0; HOLD_MAX];

fn held() -> &'static mut [u64; HOLD_MAX] {
    // SAFETY: one vCPU; only `guest_main`'s loop reaches it, through this function, once.
    unsafe { &mut *core::ptr::addr_of_mut!(HELD) }
}

fn word(pfn: u64, k: usize) -> u64 {
    pfn.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ k as u64
}

/// Writes (or, with `check`, compares) the pattern of `pfn` in its frame.
fn touch(win: &mut Window, mem: &GuestMem, pfn: u64, check: bool) -> bool {
    if win.map_own(mem.mfn(pfn)).is_err() {
        return false;
    }
    let mut ok = true;
    for k in (0..4096).step_by(512) {
        if check {
            ok &= win.read_u64(k) == word(pfn, k);
        } else {
            win.write(k, &word(pfn, k).to_le_bytes());
        }
    }
    win.restore();
    ok
}

fn end(ok: bool) -> ! {
    println!("balloon: {}", if ok { "SUCCESS" } else { "FAILURE" });
    hypercall::shutdown(if ok { ShutdownReason::Poweroff } else { ShutdownReason::Crash })
}

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    let hold = core::str::from_utf8(si.cmdline_bytes()).unwrap_or("").trim().parse::<usize>().unwrap_or(512).min(HOLD_MAX);
    let mut mem = GuestMem::new(si, pv_runtime::virt_base());
    let mut win = Window::new(si);
    if !xenbus::init(si) || !balloon::init(si, &mut mem) || xenbus::watch_shutdown().is_err() {
        println!("balloon: no XenStore");
        end(false)
    }
    let held = held();
    let mut n = 0;
    let mut target = balloon::target_pages().unwrap_or(si.nr_pages);
    let mut said = balloon::current_pages(&mem);
    let mut started: Option<(u64, u64)> = None;
    // Sizes reached so far (each written as `data/at-<KiB>-<n>`).
    let mut reached = 0;
    println!("balloon: {} KiB (up to {} KiB), target {} KiB, holding {} pages", said * 4, balloon::max_pages(&mem) * 4, target * 4, hold);
    loop {
        // The work: one more page taken and written, while the guest wants more.
        if n < hold {
            match mem.alloc_pfn() {
                Some(pfn) if touch(&mut win, &mem, pfn, false) => {
                    held[n] = pfn;
                    n += 1;
                    if n == hold {
                        let _ = xenbus::write("data/ready", b"1");
                        println!("balloon: {} pages taken and written", n);
                    }
                }
                _ => {}
            }
        }
        // The balloon: toward the target, 1024 pages at a time (the work goes on between).
        let mut ev = [0u8; 160];
        let mut news = false;
        while xenbus::next_watch(&mut ev).is_some() {
            news = true;
        }
        if news {
            target = balloon::target_pages().unwrap_or(target);
        }
        if let Some(r) = news.then(xenbus::take_shutdown_request).flatten() {
            let bad = held[..n].iter().filter(|&&p| !touch(&mut win, &mem, p, true)).count();
            println!("balloon: shutdown ({:?}): {} pages held, {} changed", r, n, bad);
            end(bad == 0 && n == hold)
        }
        let now = balloon::current_pages(&mem);
        if now != target {
            started.get_or_insert((pv_runtime::events::system_time(), now));
            let after = balloon::step(&mut mem, target, 1024);
            if after != now {
                continue;
            }
        }
        if now != said && n == hold {
            said = now;
            if let Some((t0, from)) = started.take() {
                let ms = (pv_runtime::events::system_time() - t0) / 1_000_000;
                let what = if now < from { "shrink" } else { "grow" };
                println!("balloon: {} from {} to {} KiB in {} ms (target {} KiB)", what, from * 4, now * 4, ms, target * 4);
                if from.abs_diff(now) >= 4096 {
                    println!("BENCH balloon_{}_{}m_ms={}", what, from.abs_diff(now) / 256, ms);
                }
            }
            reached += 1;
            let key = xenbus::Path::of(format_args!("data/at-{}-{}", now * 4, reached));
            let _ = xenbus::write(key.as_str(), b"1");
        }
        if n == hold && now == balloon::current_pages(&mem) {
            xenbus::wait_for_watch();
        }
    }
}
