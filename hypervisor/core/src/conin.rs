//! Serial input routing, as Xen's console: bytes go to dom0 (its `CONSOLEIO_read`, with
//! `VIRQ_CONSOLE`) until `Ctrl-A` is typed three times in a row, which switches input to the
//! hypervisor (its debug keys) and back. A `Ctrl-A` that does not complete the three is
//! passed on before the byte that broke the run, as Xen does.

/// The switch code (`Ctrl-A`) and how many in a row switch.
pub const SWITCH: u8 = 0x01;
pub const SWITCH_COUNT: u8 = 3;

/// Where input goes now.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Dom0,
    Hypervisor,
}

/// What one byte of input turned into.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Out {
    /// A byte for dom0.
    Dom0(u8),
    /// A debug key for the hypervisor.
    Key(u8),
    /// Input switched to this target.
    Switched(Target),
}

/// The router's state.
#[derive(Debug)]
pub struct Router {
    target: Target,
    held: u8,
}

impl Default for Router {
    fn default() -> Router {
        Router::new()
    }
}

impl Router {
    pub const fn new() -> Router {
        Router { target: Target::Dom0, held: 0 }
    }

    pub fn target(&self) -> Target {
        self.target
    }

    /// Feeds one byte; what it yields goes to `out` (at most [`SWITCH_COUNT`] items).
    pub fn feed(&mut self, b: u8, mut out: impl FnMut(Out)) {
        if b == SWITCH {
            self.held += 1;
            if self.held == SWITCH_COUNT {
                self.held = 0;
                self.target = match self.target {
                    Target::Dom0 => Target::Hypervisor,
                    Target::Hypervisor => Target::Dom0,
                };
                out(Out::Switched(self.target));
            }
            return;
        }
        for _ in 0..core::mem::take(&mut self.held) {
            out(self.deliver(SWITCH));
        }
        out(self.deliver(b));
    }

    fn deliver(&self, b: u8) -> Out {
        match self.target {
            Target::Dom0 => Out::Dom0(b),
            Target::Hypervisor => Out::Key(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn run(r: &mut Router, input: &[u8]) -> Vec<Out> {
        let mut v = Vec::new();
        for &b in input {
            r.feed(b, |o| v.push(o));
        }
        v
    }

    #[test]
    fn three_ctrl_a_switch_and_fewer_pass_through() {
        let mut r = Router::new();
        assert_eq!(run(&mut r, b"a"), [Out::Dom0(b'a')]);
        assert_eq!(run(&mut r, &[1, 1, b'x']), [Out::Dom0(1), Out::Dom0(1), Out::Dom0(b'x')]);
        assert_eq!(run(&mut r, &[1, 1, 1]), [Out::Switched(Target::Hypervisor)]);
        assert_eq!(r.target(), Target::Hypervisor);
        assert_eq!(run(&mut r, b"h"), [Out::Key(b'h')]);
        assert_eq!(run(&mut r, &[1, b'q']), [Out::Key(1), Out::Key(b'q')]);
        assert_eq!(run(&mut r, &[1, 1, 1, b'z']), [Out::Switched(Target::Dom0), Out::Dom0(b'z')]);
        // Six in a row: there and back.
        assert_eq!(run(&mut r, &[1; 6]), [Out::Switched(Target::Hypervisor), Out::Switched(Target::Dom0)]);
    }

    proptest::proptest! {
        /// Whatever is typed, every byte that is not part of a switching triple comes out,
        /// in order, and the target flips once per triple.
        #[test]
        fn no_byte_is_lost(input in proptest::collection::vec(proptest::prelude::prop_oneof![proptest::prelude::Just(1u8), 0u8..=255], 0..200)) {
            let mut r = Router::new();
            let out = run(&mut r, &input);
            let mut held = 0u8;
            let mut target = Target::Dom0;
            let mut want = Vec::new();
            for &b in &input {
                if b == SWITCH {
                    held += 1;
                    if held == 3 {
                        held = 0;
                        target = if target == Target::Dom0 { Target::Hypervisor } else { Target::Dom0 };
                        want.push(Out::Switched(target));
                    }
                    continue;
                }
                for _ in 0..held {
                    want.push(if target == Target::Dom0 { Out::Dom0(1) } else { Out::Key(1) });
                }
                held = 0;
                want.push(if target == Target::Dom0 { Out::Dom0(b) } else { Out::Key(b) });
            }
            proptest::prop_assert_eq!(out, want);
        }
    }
}
