//! Console input: taken from the UART and the keyboard (`hv_arch::kbd`) by CPU 0's
//! housekeeping (and by `CONSOLEIO_read`),
//! routed by `hv_core::conin` (Xen's `Ctrl-A` ×3 switch) to dom0's input buffer, which
//! `CONSOLEIO_read` drains, or to the hypervisor's debug keys.

use hv_core::conin::{Out, Router, Target};

/// Bytes for dom0 not read yet (older input is kept; bytes past this are dropped, as a
/// full UART FIFO drops them).
const BUFFER: usize = 512;

struct Input {
    router: Router,
    buf: [u8; BUFFER],
    head: usize,
    len: usize,
}

static INPUT: spin::Mutex<Input> = spin::Mutex::new(Input { router: Router::new(), buf: [0; BUFFER], head: 0, len: 0 });

/// Takes what the UART holds; true if dom0 got bytes (it is then to get `VIRQ_CONSOLE`).
/// The UART is read under the input lock (input, then UART: nothing takes them the other
/// way round), so two CPUs pumping at once cannot reorder the bytes.
pub fn pump() -> bool {
    let mut chunk = [0u8; 64];
    let mut for_dom0 = false;
    loop {
        // The hypervisor's share, in order, acted on with the input lock let go (the log
        // takes the UART's).
        let mut mine = [Out::Key(0); 64 * 3];
        let mut nmine = 0;
        {
            let mut i = INPUT.lock();
            let mut n = hv_arch::console::read_available(&mut chunk);
            n += hv_arch::kbd::read_available(&mut chunk[n..]);
            if n == 0 {
                return for_dom0;
            }
            let inp = &mut *i;
            for &b in &chunk[..n] {
                inp.router.feed(b, |o| match o {
                    Out::Dom0(c) => {
                        if inp.len < BUFFER {
                            inp.buf[(inp.head + inp.len) % BUFFER] = c;
                            inp.len += 1;
                            for_dom0 = true;
                        }
                    }
                    other => {
                        if nmine < mine.len() {
                            mine[nmine] = other;
                            nmine += 1;
                        }
                    }
                });
            }
        }
        for o in &mine[..nmine] {
            match *o {
                Out::Switched(Target::Hypervisor) => log::info!("*** Serial input to Xen (type 'CTRL-a' three times to switch input)"),
                Out::Switched(Target::Dom0) => log::info!("*** Serial input to DOM0 (type 'CTRL-a' three times to switch input)"),
                Out::Key(k) => crate::debug_keys::key(k),
                Out::Dom0(_) => {}
            }
        }
    }
}

/// dom0's `CONSOLEIO_read`: up to `out.len()` bytes of its input, handed to `deliver`; they
/// leave the buffer only if `deliver` took them (a copy to a bad guest buffer loses none).
pub fn read<E>(out: &mut [u8], deliver: impl FnOnce(&[u8]) -> Result<(), E>) -> Result<usize, E> {
    pump();
    let mut i = INPUT.lock();
    let n = i.len.min(out.len());
    for (k, b) in out[..n].iter_mut().enumerate() {
        *b = i.buf[(i.head + k) % BUFFER];
    }
    deliver(&out[..n])?;
    i.head = (i.head + n) % BUFFER;
    i.len -= n;
    Ok(n)
}
