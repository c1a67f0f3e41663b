//! `console_io`: the hypervisor console.

use super::{read_guest, write_guest, HcResult};
use crate::Hv;
use guest_abi::errno::Errno;
use guest_abi::hypercall::console_io::{READ, WRITE};

/// Largest single write, as Xen bounds its per-call work.
const MAX_WRITE: u64 = 1 << 16;

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

/// `console_io`: every byte of a privileged domain goes straight to the console; other
/// domains may write (prefixed with their id) but not read.
pub fn console_io(hv: &mut Hv, cmd: u64, count: u64, buf: u64) -> HcResult {
    if cmd == READ && !hv.dom().privileged {
        return Err(Errno::EPERM);
    }
    match cmd {
        WRITE => {
            let count = count.min(MAX_WRITE) as usize;
            let mut chunk = [0u8; 256];
            let mut done = 0;
            while done < count {
                let n = (count - done).min(chunk.len());
                read_guest(hv, buf.wrapping_add(done as u64), &mut chunk[..n])?;
                if hv.dom().privileged {
                    hv_arch::console::write_bytes(&chunk[..n]);
                } else {
                    write_prefixed(hv, &chunk[..n]);
                }
                done += n;
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
