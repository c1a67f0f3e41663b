//! `console_io`: the hypervisor console.
//!
//! Writes are preemptible (the UART is slow: 64 KiB take about 5.7 s at 115200 baud): they
//! go out in chunks and continue later once the hypercall's budget is spent. Unprivileged
//! domains are rate-limited on top (a token bucket of [`DOMU_BURST`] bytes refilled at
//! [`DOMU_RATE`] bytes/s); what exceeds it is dropped and counted, as Xen drops guest output
//! beyond its rate limit.

use super::{continuation, read_guest, write_guest, HcResult};
use crate::Hv;
use guest_abi::errno::Errno;
use guest_abi::hypercall as nr;
use guest_abi::hypercall::console_io::{READ, WRITE};
use hv_arch::entry::TrapFrame;

/// Bytes per chunk (one work unit).
const CHUNK: usize = 256;
/// A domU's console burst and sustained rate (bytes, bytes per second).
pub const DOMU_BURST: u64 = 4096;
pub const DOMU_RATE: u64 = 4096;

/// Writes an unprivileged domain's output with `(dN) ` at each line start.
fn write_prefixed(hv: &mut Hv, bytes: &[u8]) {
    let mut start = 0;
    for (i, &c) in bytes.iter().enumerate() {
        if hv.dom().console_line_start {
            hv_arch::console::write_bytes(&bytes[start..i]);
            start = i;
            hv_arch::console::write_fmt(format_args!("(d{}) ", hv.cur.dom));
            hv.dom_mut().console_line_start = false;
        }
        if c == b'\n' {
            hv.dom_mut().console_line_start = true;
        }
    }
    hv_arch::console::write_bytes(&bytes[start..]);
}

/// May an unprivileged domain print `n` more bytes now (taking them from its bucket)?
fn domu_allowance(hv: &mut Hv, n: u64) -> bool {
    let now = crate::events::now();
    let d = hv.dom_mut();
    let refill = now.saturating_sub(d.console_refilled).saturating_mul(DOMU_RATE) / 1_000_000_000;
    if refill > 0 {
        d.console_tokens = (d.console_tokens + refill).min(DOMU_BURST);
        d.console_refilled = now;
    }
    if n > d.console_tokens {
        return false;
    }
    d.console_tokens -= n;
    true
}

/// `console_io`: a privileged domain's bytes go straight to the console; other domains may
/// write (prefixed with their id, rate-limited) but not read.
pub fn console_io(hv: &mut Hv, f: &mut TrapFrame, cmd: u64, count: u64, buf: u64) -> HcResult {
    if cmd == READ && !hv.dom().privileged {
        return Err(Errno::EPERM);
    }
    match cmd {
        WRITE => {
            let count = count.min(u32::MAX as u64);
            let mut chunk = [0u8; CHUNK];
            let mut done = 0;
            while done < count {
                if done > 0 && super::preempt(hv, 1) {
                    return continuation(f, nr::CONSOLE_IO, [WRITE, count - done, buf.wrapping_add(done), 0]);
                }
                let n = (count - done).min(CHUNK as u64) as usize;
                read_guest(hv, buf.wrapping_add(done), &mut chunk[..n])?;
                if hv.dom().privileged {
                    hv_arch::console::write_bytes(&chunk[..n]);
                } else if domu_allowance(hv, n as u64) {
                    write_prefixed(hv, &chunk[..n]);
                } else {
                    // Whole chunks are dropped, so lines are not cut at arbitrary places.
                    {
                        let d = hv.dom_mut();
                        d.console_dropped += n as u64;
                        if d.console_dropped.is_power_of_two() {
                            log::warn!("d{}: console output rate-limited ({} bytes dropped so far)", hv.cur.dom, hv.dom().console_dropped);
                        }
                    }
                }
                done += n as u64;
            }
            Ok(0)
        }
        READ => {
            let mut chunk = [0u8; 256];
            let n = hv_arch::console::read_available(&mut chunk[..(count as usize).min(256)]);
            write_guest(hv, buf, &chunk[..n])?;
            Ok(n as i64)
        }
        _ => Err(Errno::ENOSYS),
    }
}
