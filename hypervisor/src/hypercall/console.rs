//! `console_io`: the hypervisor console.
//!
//! Writes are preemptible (the UART is slow: 64 KiB take about 5.7 s at 115200 baud): they
//! go out in small chunks and continue later (a domU's after every chunk, dom0's once the
//! hypercall's budget is spent), so no write holds the hypervisor for more than about 11 ms
//! of UART time. Unprivileged domains are rate-limited on top (a token bucket of
//! [`crate::guest_console::DOMU_BURST`] bytes refilled at [`crate::guest_console::DOMU_RATE`] bytes/s, charged with what reaches the UART,
//! prefixes and CRs included), and their output goes out a whole line at a time (Xen
//! buffers guest lines the same way), so lines of different domains never mix; lines over
//! the rate are dropped and counted, as Xen drops guest output beyond its rate limit.

use super::{continuation, read_guest, write_guest, HcResult, OnCpu};
use crate::guest_console::GuestConsole;
use guest_abi::errno::Errno;
use guest_abi::hypercall as nr;
use guest_abi::hypercall::console_io::{READ, WRITE};
use hv_arch::entry::TrapFrame;
use crate::guest_console::DOMU_LINE;
use hv_core::ratelimit::TokenBucket;

/// Bytes per chunk (one work unit): at most 128 bytes reach the UART per chunk for dom0
/// (`\n` becomes `\r\n`), about 11 ms at 115200 baud.
const CHUNK: usize = 64;
/// A domU's chunk: it completes at most one full line buffer plus 15 short lines (each with
/// its prefix and CR): at most about 260 bytes, 23 ms at 115200 baud, per hypercall.
const DOMU_CHUNK: usize = 16;
/// All unprivileged domains together may send this many bytes per second to the UART (about
/// half of 115200 baud), beside their own buckets: several domUs cannot fill it either.
const ALL_DOMU_RATE: u64 = 6144;

/// The bucket all unprivileged domains share (a leaf lock, taken under a domain's console
/// lock).
static ALL_DOMU: spin::Mutex<Option<TokenBucket>> = spin::Mutex::new(None);

/// Takes a domU's bytes into its line buffer; each complete (or full) line goes to the UART
/// at once, as `(dN) line`, so lines of different domains never mix. Lines over the rate
/// limit are dropped and counted.
fn domu_bytes(d: &crate::domain::DomShared, bytes: &[u8]) {
    let mut guard = crate::locks::Ordered::new(crate::locks::Level::Console, || d.console.lock());
    let con: &mut GuestConsole = &mut guard;
    for &c in bytes {
        con.line[con.len] = c;
        con.len += 1;
        if c == b'\n' || con.len == DOMU_LINE {
            flush_domu_line(d.id, con);
        }
    }
}

fn flush_domu_line(dom: guest_abi::DomId, con: &mut GuestConsole) {
    let now = crate::events::now();
    let mut n = core::mem::take(&mut con.len);
    if con.line[n - 1] != b'\n' {
        con.line[n] = b'\n';
        n += 1;
    }
    // Only printable bytes and tabs reach the console: no CR, escape sequence or backspace
    // can move over the `(dN) ` prefix or fake another domain's or the hypervisor's lines.
    for c in &mut con.line[..n - 1] {
        if !(c.is_ascii_graphic() || *c == b' ' || *c == b'\t') {
            *c = b'.';
        }
    }
    // What reaches the UART: the prefix (up to 9 bytes), the line, a CR for its LF.
    let cost = 10 + n as u64;
    let passed = {
        let mut all = ALL_DOMU.lock();
        let all = all.get_or_insert_with(|| TokenBucket::new(ALL_DOMU_RATE, ALL_DOMU_RATE));
        TokenBucket::take_all(&mut [&mut con.bucket, all], now, cost)
    };
    if passed {
        hv_arch::console::write_fmt(format_args!("(d{}) ", dom));
        hv_arch::console::write_bytes(&con.line[..n]);
        return;
    }
    con.dropped = con.dropped.saturating_add(n as u64);
    // The note about it is itself rate-limited: once a second per domain.
    if con.noted.is_none_or(|t| now.saturating_sub(t) >= 1_000_000_000) {
        con.noted = Some(now);
        log::warn!("d{}: console output rate-limited ({} bytes dropped so far)", dom, con.dropped);
    }
}

/// `console_io`: a privileged domain's bytes go straight to the console; other domains may
/// write (prefixed with their id, rate-limited) but not read.
/// Runs on the fast path (`super::fast_path`): a domU's line buffer has its own
/// lock, the UART its own.
pub fn console_io(hv: &mut impl OnCpu, f: &mut TrapFrame, cmd: u64, count: u64, buf: u64) -> HcResult {
    if cmd == READ && !hv.pc().cur.shared.privileged {
        return Err(Errno::EPERM);
    }
    match cmd {
        WRITE => {
            let count = count.min(u32::MAX as u64);
            let shared = hv.pc().cur.shared.clone();
            let privileged = shared.privileged;
            let size = if privileged { CHUNK } else { DOMU_CHUNK };
            let mut chunk = [0u8; CHUNK];
            let mut done = 0;
            while done < count {
                let n = (count - done).min(size as u64) as usize;
                read_guest(hv, buf.wrapping_add(done), &mut chunk[..n])?;
                if privileged {
                    hv_arch::console::write_bytes(&chunk[..n]);
                } else {
                    domu_bytes(&shared, &chunk[..n]);
                }
                done += n as u64;
                // UART time is slow work (8 units: the clock is read). A domU's write goes out
                // one chunk per hypercall, dom0's within the usual budget.
                let stop = super::preempt(hv, 8);
                if done < count && (stop || !privileged) {
                    return continuation(f, nr::CONSOLE_IO, [WRITE, count - done, buf.wrapping_add(done), 0]);
                }
            }
            Ok(0)
        }
        READ => {
            let mut chunk = [0u8; 256];
            let n = crate::serial_input::read(&mut chunk[..(count as usize).min(256)], |b| write_guest(hv, buf, b))?;
            Ok(n as i64)
        }
        _ => Err(Errno::ENOSYS),
    }
}
