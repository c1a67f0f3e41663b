//! Console output: through the PV console ring once [`crate::xencons`] took it (a domU
//! built by a toolstack), else through `console_io` (dom0, boot-time domUs).

use core::fmt::{self, Write};

/// Writes through `console_io`.
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        out(s.as_bytes());
        Ok(())
    }
}

fn out(b: &[u8]) {
    if crate::xencons::active() {
        crate::xencons::write(b)
    } else {
        crate::hypercall::console_write(b);
    }
}

/// Formats into a 512-byte buffer, then writes it in one hypercall per line chunk.
pub fn print_fmt(args: fmt::Arguments<'_>) {
    struct Buf {
        b: [u8; 512],
        n: usize,
    }
    impl Write for Buf {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            for &c in s.as_bytes() {
                if self.n == self.b.len() {
                    out(&self.b);
                    self.n = 0;
                }
                self.b[self.n] = c;
                self.n += 1;
            }
            Ok(())
        }
    }
    let mut b = Buf { b: [0; 512], n: 0 };
    let _ = b.write_fmt(args);
    out(&b.b[..b.n]);
}

#[macro_export]
macro_rules! print {
    ($($a:tt)*) => { $crate::console::print_fmt(format_args!($($a)*)) };
}

#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($a:tt)*) => { $crate::console::print_fmt(format_args!("{}\n", format_args!($($a)*))) };
}
