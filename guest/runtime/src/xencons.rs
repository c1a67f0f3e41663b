//! The PV console frontend (`io/console.h`): output into the ring's `out` half, input from
//! its `in` half, one event channel both ways. Once [`init`] found the ring the toolstack
//! gave the domain (`start_info.console.domU`), `print!` goes here instead of
//! `console_io`: the domain's output then reaches dom0's console backend (`xl console`).

use crate::events;
use crate::pvio::{self, RingPage};
use crate::StartInfo;
use core::sync::atomic::{AtomicBool, Ordering};
use guest_abi::io::console::*;

static RING: pvio::Frontend = pvio::Frontend::new();

/// Takes the console ring of a domU built by a toolstack (dom0 and boot-time domUs have
/// none and keep `console_io`). True if the ring is in use from now on.
pub fn init(si: &StartInfo) -> bool {
    si.flags & guest_abi::start_info::SIF_INITDOMAIN == 0 && RING.take(si, si.console.mfn_or_info, si.console.evtchn)
}

fn ring() -> Option<(RingPage, u32)> {
    RING.get()
}

/// Is the PV console in use?
pub fn active() -> bool {
    RING.get().is_some()
}

/// One writer at a time: a print that finds the ring busy (another vCPU's, or a trap or
/// upcall handler interrupting a print) goes through `console_io` instead.
static WRITING: AtomicBool = AtomicBool::new(false);

/// How long a write waits for the backend to make room before it gives up on the ring.
const STALL_NS: u64 = 1_000_000_000;

/// Writes `bytes` into the ring, waiting for the backend to make room when it is full (a
/// backend that makes none for a second gets the rest through `console_io`, so a guest
/// whose backend is gone, e.g. on its way to a crash, still gets its last words out).
pub fn write(bytes: &[u8]) {
    let Some((r, port)) = ring() else { return };
    if WRITING.swap(true, Ordering::Acquire) {
        crate::hypercall::console_write(bytes);
        return;
    }
    let mut rest = bytes;
    let mut deadline = 0;
    while !rest.is_empty() {
        // A backend that set the indexes to nonsense gets a full ring (nothing written).
        let n = r.produce(OUT, OUT_SIZE, OUT_PROD, OUT_CONS, rest);
        if n == 0 {
            let now = events::system_time();
            if deadline == 0 {
                deadline = now + STALL_NS;
            } else if now >= deadline {
                crate::hypercall::console_write(rest);
                break;
            }
            events::send(port);
            pvio::wait_until(&[port], deadline);
            continue;
        }
        deadline = 0;
        rest = &rest[n..];
    }
    WRITING.store(false, Ordering::Release);
    events::send(port);
}

/// Takes what input the ring holds (at most `buf.len()` bytes) without waiting.
pub fn read(buf: &mut [u8]) -> usize {
    let Some((r, port)) = ring() else { return 0 };
    let (cons, prod) = (r.read_u32(IN_CONS), r.read_u32(IN_PROD));
    let avail = prod.wrapping_sub(cons).min(IN_SIZE) as usize;
    let n = avail.min(buf.len());
    for (i, b) in buf[..n].iter_mut().enumerate() {
        *b = r.read_u8(IN + (cons.wrapping_add(i as u32) % IN_SIZE) as usize);
    }
    if n > 0 {
        r.write_u32(IN_CONS, cons.wrapping_add(n as u32));
        events::send(port);
    }
    n
}

/// The console's event port (0 before [`init`]), for a guest that waits on several.
pub fn port() -> u32 {
    RING.port()
}
