//! The boot memory map: which physical ranges are usable RAM once the hypervisor image, the
//! boot information, the modules and low memory are reserved.
//!
//! Bootloaders may put the boot information or modules inside holes of the hypervisor's own
//! span, so every reservation is subtracted from RAM before any frame is reused.

/// A half-open physical byte range.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

impl Range {
    pub const fn new(start: u64, end: u64) -> Self {
        Range { start, end }
    }
    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// Capacity of a [`RangeSet`].
pub const MAX_RANGES: usize = 128;

/// A sorted set of disjoint ranges with fixed capacity.
#[derive(Clone, Debug)]
pub struct RangeSet {
    ranges: [Range; MAX_RANGES],
    len: usize,
}

impl Default for RangeSet {
    fn default() -> Self {
        RangeSet { ranges: [Range::default(); MAX_RANGES], len: 0 }
    }
}

/// The set would need more than [`MAX_RANGES`] entries.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TooManyRanges;

impl RangeSet {
    pub fn as_slice(&self) -> &[Range] {
        &self.ranges[..self.len]
    }

    fn insert_at(&mut self, i: usize, r: Range) -> Result<(), TooManyRanges> {
        if self.len == MAX_RANGES {
            return Err(TooManyRanges);
        }
        self.ranges.copy_within(i..self.len, i + 1);
        self.ranges[i] = r;
        self.len += 1;
        Ok(())
    }

    fn remove_at(&mut self, i: usize) {
        self.ranges.copy_within(i + 1..self.len, i);
        self.len -= 1;
    }

    /// Adds `r`, merging with overlapping or adjacent ranges.
    pub fn add(&mut self, r: Range) -> Result<(), TooManyRanges> {
        if r.is_empty() {
            return Ok(());
        }
        let mut new = r;
        let mut i = 0;
        while i < self.len {
            let cur = self.ranges[i];
            if cur.end < new.start {
                i += 1;
            } else if cur.start > new.end {
                break;
            } else {
                new = Range::new(cur.start.min(new.start), cur.end.max(new.end));
                self.remove_at(i);
            }
        }
        self.insert_at(i, new)
    }

    /// Removes `r` from every range.
    pub fn remove(&mut self, r: Range) -> Result<(), TooManyRanges> {
        if r.is_empty() {
            return Ok(());
        }
        let mut i = 0;
        while i < self.len {
            let cur = self.ranges[i];
            if cur.end <= r.start || cur.start >= r.end {
                i += 1;
                continue;
            }
            self.remove_at(i);
            let right = Range::new(r.end, cur.end);
            if !right.is_empty() {
                self.insert_at(i, right)?;
            }
            let left = Range::new(cur.start, r.start);
            if !left.is_empty() {
                self.insert_at(i, left)?;
                i += 1;
            }
            if !right.is_empty() {
                i += 1;
            }
        }
        Ok(())
    }

    /// Shrinks each range to whole pages, dropping those with none.
    pub fn page_align(&mut self) {
        let mut i = 0;
        while i < self.len {
            let r = self.ranges[i];
            let a = Range::new(r.start.div_ceil(4096).saturating_mul(4096), r.end & !4095);
            if a.is_empty() {
                self.remove_at(i);
            } else {
                self.ranges[i] = a;
                i += 1;
            }
        }
    }

    /// Total bytes.
    pub fn total(&self) -> u64 {
        self.as_slice().iter().map(Range::len).sum()
    }

    /// Does any range intersect `r`?
    pub fn intersects(&self, r: Range) -> bool {
        self.as_slice().iter().any(|c| c.start < r.end && r.start < c.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn subtract_reservations() {
        let mut s = RangeSet::default();
        s.add(Range::new(0, 0x9F000)).unwrap();
        s.add(Range::new(0x10_0000, 0x800_0000)).unwrap();
        s.remove(Range::new(0, 0x10_0000)).unwrap(); // low memory
        s.remove(Range::new(0x10_0000, 0x40_0000)).unwrap(); // image
        s.remove(Range::new(0x20_0800, 0x20_1000)).unwrap(); // boot info inside the image: no-op
        s.remove(Range::new(0x100_0123, 0x120_0000)).unwrap(); // a module
        s.page_align();
        assert_eq!(
            s.as_slice(),
            &[Range::new(0x40_0000, 0x100_0000), Range::new(0x120_0000, 0x800_0000)]
        );
    }

    #[test]
    fn add_merges() {
        let mut s = RangeSet::default();
        s.add(Range::new(10, 20)).unwrap();
        s.add(Range::new(30, 40)).unwrap();
        s.add(Range::new(15, 35)).unwrap();
        assert_eq!(s.as_slice(), &[Range::new(10, 40)]);
        assert!(s.intersects(Range::new(39, 50)) && !s.intersects(Range::new(40, 50)));
    }

    proptest! {
        #[test]
        fn matches_a_bitmap_model(ops in proptest::collection::vec((any::<bool>(), 0u64..200, 0u64..40), 0..60)) {
            let mut s = RangeSet::default();
            let mut model = [false; 256];
            for (add, start, len) in ops {
                let r = Range::new(start, start + len);
                if add { s.add(r).unwrap(); } else { s.remove(r).unwrap(); }
                for b in start..start + len { model[b as usize] = add; }
                let sl = s.as_slice();
                for w in sl.windows(2) { prop_assert!(w[0].end < w[1].start); }
                for (b, &m) in model.iter().enumerate() {
                    let inside = sl.iter().any(|r| r.start <= b as u64 && (b as u64) < r.end);
                    prop_assert_eq!(inside, m);
                }
            }
        }
    }
}
