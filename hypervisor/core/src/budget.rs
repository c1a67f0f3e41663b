//! One hypercall's work budget: how much a long operation may do before it stops and is
//! continued later (a continuation, or a multicall continuing at its current entry).

/// Work units one hypercall may do: page-table entries, mmuext operations, extents,
/// multicall entries, console chunks.
pub const WORK_LIMIT: u64 = 256;
/// Time one hypercall may take, whatever its units cost.
pub const TIME_LIMIT_NS: u64 = 1_000_000;
/// The clock is read once per this many units.
const CLOCK_EVERY: u64 = 8;

/// The budget of the hypercall in progress on a CPU.
#[derive(Copy, Clone, Debug, Default)]
pub struct Budget {
    work: u64,
    start: u64,
}

impl Budget {
    /// A new hypercall begins at clock value `now` (TSC ticks).
    pub fn begin(now: u64) -> Budget {
        Budget { work: 0, start: now }
    }

    /// Records `units` of work and says whether the hypercall should stop here. Callers ask
    /// only after making progress, so every call moves forward. `clock` (TSC ticks now) is
    /// read only when the units cross a multiple of 8 (this runs once per page-table entry);
    /// slow work (a console chunk) counts 8 units, so the clock is read after each.
    /// `limit_ticks` is [`TIME_LIMIT_NS`] in clock ticks. Once it says stop, it keeps saying
    /// so for the rest of the hypercall (a multicall stops after an entry that ran out of
    /// time).
    pub fn spend(&mut self, units: u64, clock: impl FnOnce() -> u64, limit_ticks: impl FnOnce() -> u64) -> bool {
        let before = self.work;
        self.work = self.work.saturating_add(units);
        if self.work >= WORK_LIMIT {
            return true;
        }
        if before / CLOCK_EVERY == self.work / CLOCK_EVERY {
            return false;
        }
        if clock().saturating_sub(self.start) < limit_ticks() {
            return false;
        }
        self.work = WORK_LIMIT;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;
    use proptest::prelude::*;

    #[test]
    fn stops_at_the_unit_limit_or_on_time() {
        let mut b = Budget::begin(0);
        let reads = Cell::new(0);
        let clock = || {
            reads.set(reads.get() + 1);
            10
        };
        for _ in 0..WORK_LIMIT - 1 {
            assert!(!b.spend(1, clock, || 1000));
        }
        assert!(b.spend(1, clock, || 1000), "the 256th unit");
        assert_eq!(reads.get(), (WORK_LIMIT / CLOCK_EVERY - 1) as u32, "the clock read once per 8 units");
        let mut b = Budget::begin(0);
        assert!(b.spend(8, || 1000, || 1000), "out of time at the first clock read");
        assert!(b.spend(1, || 0, || 1000), "and it stays stopped");
    }

    proptest! {
        /// It stops no later than the unit limit, never before the time limit unless the
        /// units ran out, and stays stopped.
        #[test]
        fn never_runs_past_its_budget(units in prop::collection::vec(1u64..16, 1..200), tick in 0u64..50, limit in 1u64..5000) {
            let mut b = Budget::begin(0);
            let mut now = 0u64;
            let mut total = 0u64;
            let mut stopped = false;
            for u in units {
                now += tick;
                total += u;
                let s = b.spend(u, || now, || limit);
                prop_assert!(!stopped || s, "stays stopped");
                if total >= WORK_LIMIT {
                    prop_assert!(s);
                }
                if s && !stopped && total < WORK_LIMIT {
                    prop_assert!(now >= limit, "stopped early on time");
                }
                stopped |= s;
            }
        }
    }
}
