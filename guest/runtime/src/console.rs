//! Console output through `console_io` (dom0 and test guests).

use core::fmt::{self, Write};

/// Writes through `console_io`.
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        crate::hypercall::console_write(s.as_bytes());
        Ok(())
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
                    crate::hypercall::console_write(&self.b);
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
    crate::hypercall::console_write(&b.b[..b.n]);
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
