//! The console: COM1 and the screen (`crate::screen`), and the `log` backend.
//!
//! Each log line carries a timestamp (seconds since boot, from the calibrated TSC) and, where
//! the caller gives one, the domain. Guest console output is written raw through
//! [`write_bytes`].

use core::fmt::{self, Write};
use spin::Mutex;
use uart_16550::SerialPort;

/// COM1.
pub const COM1: u16 = 0x3F8;

static PORT: Mutex<Option<SerialPort>> = Mutex::new(None);

/// Size of the console ring (`sysctl readconsole`).
pub const RING_SIZE: usize = 16384;

/// Everything written to the console, newest last (a leaf lock, taken inside `PORT`'s).
static RING: Mutex<hv_core::conring::ConRing<RING_SIZE>> = Mutex::new(hv_core::conring::ConRing::new());

/// Reads the console ring from the oldest byte it holds, or from index `from` when that is
/// newer (an incremental reader), into `out`. Returns the bytes read and the index after them.
pub fn read_ring(from: Option<u32>, out: &mut [u8]) -> (usize, u32) {
    let r = RING.lock();
    r.read(r.start(from), out)
}

/// Forgets the ring's bytes before index `end` (a `read_ring`'s end, once its bytes
/// reached their reader).
pub fn clear_ring_to(end: u32) {
    RING.lock().clear_to(end);
}

/// Frees the console's locks whoever holds them (`crate::stop`, once every other CPU is
/// halted).
///
/// # Safety
/// No other CPU may run code that holds or takes them, and no code on this CPU that holds
/// one may resume.
pub(crate) unsafe fn force_unlock() {
    // SAFETY: guaranteed by the caller.
    unsafe {
        PORT.force_unlock();
        RING.force_unlock();
    }
}

/// Initialises COM1 (115200 8N1).
pub fn init() {
    // SAFETY: COM1 is a standard 16550 at 0x3F8 that only this module drives.
    let mut p = unsafe { SerialPort::new(COM1) };
    p.init();
    *PORT.lock() = Some(p);
}

/// Sends `b` byte by byte, `\n` as `\r\n`.
fn crlf(b: &[u8], mut send: impl FnMut(u8)) {
    for &c in b {
        if c == b'\n' {
            send(b'\r');
        }
        send(c);
    }
}

/// A `fmt::Write` over a byte sender (with [`crlf`]); with `ring`, the text also goes
/// into the console ring.
struct Sink<F: FnMut(u8)>(F, bool);

impl<F: FnMut(u8)> Write for Sink<F> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.1 {
            RING.lock().put(s.as_bytes());
            crate::screen::write(s.as_bytes());
        } else {
            crate::screen::try_write(s.as_bytes());
        }
        crlf(s.as_bytes(), &mut self.0);
        Ok(())
    }
}

/// Writes raw bytes (`\n` becomes `\r\n`), kept in the console ring too.
pub fn write_bytes(b: &[u8]) {
    if let Some(p) = PORT.lock().as_mut() {
        RING.lock().put(b);
        crate::screen::write(b);
        crlf(b, |c| p.send(c));
    }
    draw_screen();
}

/// Draws what the screen is owed, for at most about a millisecond (the rest at the next
/// write or CPU 0's next tick: `crate::screen::flush`), with the console lock let go.
pub fn draw_screen() {
    crate::screen::flush(crate::time::tsc_khz().max(1_000_000));
}

/// Writes formatted text from a context that must never block on the console lock: NMI,
/// #MC, #DF, fatal traps and panics (the interrupted code of this very CPU may hold it).
/// Takes the lock if it comes free within a short spin; otherwise writes to the UART
/// directly, beside whoever holds it (lines may interleave, nothing deadlocks).
pub fn emergency_write_fmt(args: fmt::Arguments<'_>) {
    for _ in 0..100_000 {
        if let Some(mut g) = PORT.try_lock() {
            if let Some(p) = g.as_mut() {
                let _ = Sink(|c| p.send(c), false).write_fmt(args);
            }
            drop(g);
            crate::screen::flush_emergency();
            return;
        }
        core::hint::spin_loop();
    }
    let _ = Sink(raw_send, false).write_fmt(args);
    crate::screen::flush_emergency();
}

/// COM1 without the lock: polls the line status (bounded) and writes the data register.
fn raw_send(c: u8) {
    for _ in 0..100_000 {
        if crate::cpu::inb(COM1 + 5) & 0x20 != 0 {
            break;
        }
        core::hint::spin_loop();
    }
    crate::cpu::outb(COM1, c);
}

/// Writes formatted text without a log prefix.
pub fn write_fmt(args: fmt::Arguments<'_>) {
    if let Some(p) = PORT.lock().as_mut() {
        let _ = Sink(|c| p.send(c), true).write_fmt(args);
    }
    draw_screen();
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let ns = crate::time::now_ns();
        let lvl = match r.level() {
            log::Level::Error => "ERR",
            log::Level::Warn => "WRN",
            log::Level::Info => "INF",
            log::Level::Debug => "DBG",
            log::Level::Trace => "TRC",
        };
        write_fmt(format_args!(
            "[{:4}.{:06}] (XEN) {} {}\n",
            ns / 1_000_000_000,
            (ns / 1000) % 1_000_000,
            lvl,
            r.args()
        ));
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Installs the logger at `level`.
pub fn init_log(level: log::LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Reads whatever input bytes the UART holds now, without waiting.
pub fn read_available(buf: &mut [u8]) -> usize {
    let mut n = 0;
    if let Some(p) = PORT.lock().as_mut() {
        while n < buf.len() {
            match p.try_receive() {
                Ok(b) => {
                    buf[n] = b;
                    n += 1;
                }
                Err(_) => break,
            }
        }
    }
    n
}
