//! The hypervisor's console ring: every byte of its console (log lines and guests' console
//! output) is kept in a ring that survives the UART's scrolling, for `sysctl readconsole`
//! (`xl dmesg`). Xen's semantics (`read_console_ring`): free-running producer and consumer
//! indices; the producer overwrites the oldest bytes, dragging the consumer along; a read
//! starts at the consumer, or at the caller's own index when it is newer (an incremental
//! reader); "clear" moves the consumer to where the read stopped.

/// A ring of `N` bytes (`N` a power of two).
pub struct ConRing<const N: usize> {
    buf: [u8; N],
    prod: u32,
    cons: u32,
}

impl<const N: usize> Default for ConRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> ConRing<N> {
    const CHECK: () = assert!(N.is_power_of_two() && N <= 1 << 30);

    pub const fn new() -> Self {
        let () = Self::CHECK;
        ConRing { buf: [0; N], prod: 0, cons: 0 }
    }

    /// Appends bytes, overwriting the oldest when full.
    pub fn put(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.buf[self.prod as usize & (N - 1)] = b;
            self.prod = self.prod.wrapping_add(1);
        }
        if self.prod.wrapping_sub(self.cons) as usize > N {
            self.cons = self.prod.wrapping_sub(N as u32);
        }
    }

    /// Where a read would start: the consumer, or `from` if it is newer (and not past
    /// the producer).
    pub fn start(&self, from: Option<u32>) -> u32 {
        match from {
            Some(i) if (i.wrapping_sub(self.cons) as i32) > 0 && (self.prod.wrapping_sub(i) as i32) >= 0 => i,
            _ => self.cons,
        }
    }

    /// Copies out bytes from index `at` on, up to `out.len()`; returns how many and the
    /// index after them.
    pub fn read(&self, at: u32, out: &mut [u8]) -> (usize, u32) {
        let mut c = at;
        let mut n = 0;
        while c != self.prod && n < out.len() {
            out[n] = self.buf[c as usize & (N - 1)];
            n += 1;
            c = c.wrapping_add(1);
        }
        (n, c)
    }

    /// "Clear": forget everything before index `upto` (as Xen: never further back than
    /// the ring holds, and never back past an earlier clear).
    pub fn clear_to(&mut self, upto: u32) {
        let to = if self.prod.wrapping_sub(upto) as usize > N { self.prod.wrapping_sub(N as u32) } else { upto };
        if self.prod.wrapping_sub(to) < self.prod.wrapping_sub(self.cons) {
            self.cons = to;
        }
    }

    /// The producer index (bytes ever written, modulo 2^32).
    pub fn producer(&self) -> u32 {
        self.prod
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    #[test]
    fn reads_clear_and_increments() {
        let mut r = ConRing::<16>::new();
        r.put(b"hello ");
        let mut out = [0u8; 64];
        let (n, end) = r.read(r.start(None), &mut out);
        assert_eq!(&out[..n], b"hello ");
        r.put(b"world");
        // Incremental: only what came since.
        let (n, end2) = r.read(r.start(Some(end)), &mut out);
        assert_eq!(&out[..n], b"world");
        // Overflow drags the consumer: the last 16 bytes remain.
        r.put(b"0123456789");
        let (n, _) = r.read(r.start(None), &mut out);
        assert_eq!(&out[..n], b" world0123456789");
        // An index that fell out of the ring starts at the oldest byte kept.
        assert_eq!(r.start(Some(end - 4)), r.start(None));
        assert_eq!(r.start(Some(end)), end);
        assert_eq!(r.start(Some(end2)), end2);
        r.clear_to(r.producer());
        assert_eq!(r.read(r.start(None), &mut out).0, 0);
        // A late clear (a reader that read before another cleared) does not bring bytes back.
        r.put(b"ab");
        let before = r.producer() - 2;
        r.clear_to(r.producer());
        r.clear_to(before);
        assert_eq!(r.read(r.start(None), &mut out).0, 0);
    }

    proptest! {
        /// Against a model (the whole history): a read returns exactly the last bytes
        /// written since the start it reports, at most N of them, in order.
        #[test]
        fn matches_history(ops in proptest::collection::vec((0u8..3, proptest::collection::vec(any::<u8>(), 0..40), 0usize..50), 1..60)) {
            let mut r = ConRing::<32>::new();
            let mut hist: Vec<u8> = Vec::new();
            let mut cons = 0usize;
            let mut last_end: Option<u32> = None;
            for (op, bytes, max) in ops {
                match op {
                    0 => {
                        r.put(&bytes);
                        hist.extend_from_slice(&bytes);
                        cons = cons.max(hist.len().saturating_sub(32));
                    }
                    _ => {
                        let from = if op == 2 { last_end } else { None };
                        let s = r.start(from);
                        let mut out = vec![0u8; max];
                        let (n, end) = r.read(s, &mut out);
                        let s_abs = s as usize;
                        prop_assert!(s_abs >= cons && s_abs <= hist.len());
                        prop_assert_eq!(&out[..n], &hist[s_abs..s_abs + n]);
                        prop_assert_eq!(n, max.min(hist.len() - s_abs));
                        prop_assert_eq!(end as usize, s_abs + n);
                        last_end = Some(end);
                        if max % 2 == 0 {
                            r.clear_to(end);
                            cons = end as usize;
                        }
                    }
                }
            }
        }
    }
}
