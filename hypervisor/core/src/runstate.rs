//! A vCPU's runstate accounting (`VCPUOP_get_runstate_info`): the state it is in, since
//! when, and the time spent in each state so far.

/// `RUNSTATE_*` values (`public/vcpu.h`, in `guest_abi::vcpu`).
pub use guest_abi::vcpu::{RUNSTATE_BLOCKED as BLOCKED, RUNSTATE_OFFLINE as OFFLINE, RUNSTATE_RUNNABLE as RUNNABLE, RUNSTATE_RUNNING as RUNNING};

/// Runstate and accumulated times (nanoseconds of system time).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Runstate {
    state: u32,
    entry: u64,
    time: [u64; 4],
}

impl Runstate {
    /// In state `state` since `now`, with nothing accumulated.
    pub fn new(state: u32, now: u64) -> Runstate {
        Runstate { state: state & 3, entry: now, time: [0; 4] }
    }

    pub fn state(&self) -> u32 {
        self.state
    }

    /// Moves to state `to` at time `now`, charging the time spent in the old one. A clock
    /// that went backwards charges nothing.
    pub fn set(&mut self, to: u32, now: u64) {
        let s = self.state as usize & 3;
        self.time[s] = self.time[s].saturating_add(now.saturating_sub(self.entry));
        self.state = to & 3;
        self.entry = self.entry.max(now);
    }

    /// (state, entry time, times) as of `now`, the current state's time included.
    pub fn at(&self, now: u64) -> (u32, u64, [u64; 4]) {
        let mut t = self.time;
        let s = self.state as usize & 3;
        t[s] = t[s].saturating_add(now.saturating_sub(self.entry));
        (self.state, self.entry, t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn charges_the_state_left() {
        let mut r = Runstate::new(RUNNABLE, 100);
        r.set(RUNNING, 150);
        r.set(BLOCKED, 400);
        assert_eq!(r.at(500), (BLOCKED, 400, [250, 50, 100, 0]));
        assert_eq!(r.state(), BLOCKED);
    }

    proptest! {
        /// Whatever the sequence of states and (monotonic) times, the times add up to the
        /// elapsed time, and a clock read that goes backwards never makes time negative or
        /// moves the entry time back.
        #[test]
        fn times_add_up(steps in prop::collection::vec((0u32..8, 0u64..1_000_000), 0..64), back in 0u64..1000) {
            let mut now = 1_000u64;
            let mut r = Runstate::new(OFFLINE, now);
            for (to, dt) in steps {
                now += dt;
                r.set(to, now);
            }
            let (_, entry, t) = r.at(now);
            prop_assert_eq!(t.iter().sum::<u64>(), now - 1_000);
            prop_assert!(entry <= now);
            let mut late = r;
            late.set(RUNNING, now.saturating_sub(back));
            let (_, e2, t2) = late.at(now);
            prop_assert_eq!(e2, entry.max(now.saturating_sub(back)));
            prop_assert_eq!(t2.iter().sum::<u64>(), now - 1_000);
        }
    }
}
