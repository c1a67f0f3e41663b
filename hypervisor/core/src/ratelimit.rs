//! Token buckets: a burst of `burst` units refilled at `rate` units per second of system
//! time (the domU console limits).

/// A bucket with its capacity and rate.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    tokens: u64,
    refilled: u64,
    burst: u64,
    rate: u64,
}

impl TokenBucket {
    /// A full bucket of `burst` units refilled at `rate` units/s.
    pub const fn new(burst: u64, rate: u64) -> TokenBucket {
        TokenBucket { tokens: burst, refilled: 0, burst, rate }
    }

    /// Adds what `now` (ns) brings since the last refill, up to the burst. Whole units only:
    /// the remainder stays pending.
    fn refill(&mut self, now: u64) {
        let add = now.saturating_sub(self.refilled).saturating_mul(self.rate) / 1_000_000_000;
        if add > 0 {
            self.tokens = self.tokens.saturating_add(add).min(self.burst);
            self.refilled = now;
        }
    }

    /// Takes `n` units from every bucket in `all` at `now` if each has them, else none.
    pub fn take_all(all: &mut [&mut TokenBucket], now: u64, n: u64) -> bool {
        for b in all.iter_mut() {
            b.refill(now);
        }
        if all.iter().any(|b| b.tokens < n) {
            return false;
        }
        for b in all.iter_mut() {
            b.tokens -= n;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn bursts_refills_and_takes_from_all_or_none() {
        let mut a = TokenBucket::new(100, 50);
        let mut b = TokenBucket::new(60, 1000);
        assert!(TokenBucket::take_all(&mut [&mut a, &mut b], 0, 60));
        assert!(!TokenBucket::take_all(&mut [&mut a, &mut b], 0, 40), "b is empty: nothing taken");
        assert!(TokenBucket::take_all(&mut [&mut a], 0, 40), "a still had its 40");
        assert!(!TokenBucket::take_all(&mut [&mut a], S / 10, 10), "0.1 s brings 5");
        assert!(TokenBucket::take_all(&mut [&mut a], S / 5, 10), "0.2 s brings 10");
        assert!(!TokenBucket::take_all(&mut [&mut a], 100 * S, 101), "never above the burst");
        assert!(TokenBucket::take_all(&mut [&mut a], 100 * S, 100));
        // Time going backwards (never happens) takes nothing away.
        assert!(!TokenBucket::take_all(&mut [&mut a], 0, 1));
    }
}
