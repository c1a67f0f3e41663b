//! A bitmap allocator of machine frames.
//!
//! One bit per frame, set = free. Allocation is first-fit from the lowest frame, so frames
//! taken early in boot (page tables, the frame table) come from low memory, which the
//! early boot mapping covers.

use crate::mem::Mfn;

/// The allocator over caller-provided bitmap storage covering frames `0..bits`.
pub struct FrameAllocator<S> {
    bitmap: S,
    nr_frames: u64,
    free: u64,
    /// Lowest word that may contain a free bit.
    hint: usize,
}

impl<S: AsRef<[u64]> + AsMut<[u64]>> FrameAllocator<S> {
    /// An allocator with every frame in use; `free_range` hands frames to it.
    pub fn new(mut bitmap: S, nr_frames: u64) -> Self {
        bitmap.as_mut().iter_mut().for_each(|w| *w = 0);
        let cap = bitmap.as_ref().len() as u64 * 64;
        FrameAllocator { bitmap, nr_frames: nr_frames.min(cap), free: 0, hint: 0 }
    }

    /// Frames currently free.
    pub fn free_frames(&self) -> u64 {
        self.free
    }

    /// Frames covered by the bitmap.
    pub fn nr_frames(&self) -> u64 {
        self.nr_frames
    }

    fn bit(&self, mfn: u64) -> bool {
        self.bitmap.as_ref()[(mfn / 64) as usize] & (1 << (mfn % 64)) != 0
    }

    /// Is `mfn` free (false beyond the bitmap)?
    pub fn is_free(&self, mfn: Mfn) -> bool {
        mfn.0 < self.nr_frames && self.bit(mfn.0)
    }

    /// Marks `[start, end)` free (frames beyond the bitmap are ignored).
    pub fn free_range(&mut self, start: Mfn, end: Mfn) {
        for m in start.0..end.0.min(self.nr_frames) {
            self.free(Mfn(m));
        }
    }

    /// Marks `[start, end)` in use.
    pub fn reserve_range(&mut self, start: Mfn, end: Mfn) {
        for m in start.0..end.0.min(self.nr_frames) {
            if self.bit(m) {
                self.bitmap.as_mut()[(m / 64) as usize] &= !(1 << (m % 64));
                self.free -= 1;
            }
        }
    }

    /// Returns a frame. Freeing a free frame or one outside the bitmap is ignored and
    /// reported as `false`.
    pub fn free(&mut self, mfn: Mfn) -> bool {
        if mfn.0 >= self.nr_frames || self.bit(mfn.0) {
            return false;
        }
        let w = (mfn.0 / 64) as usize;
        self.bitmap.as_mut()[w] |= 1 << (mfn.0 % 64);
        self.free += 1;
        self.hint = self.hint.min(w);
        true
    }

    /// Allocates the lowest free frame.
    pub fn alloc(&mut self) -> Option<Mfn> {
        let words = self.bitmap.as_ref();
        let (w, word) = words.iter().enumerate().skip(self.hint).find(|(_, w)| **w != 0)?;
        let bit = word.trailing_zeros() as u64;
        let mfn = w as u64 * 64 + bit;
        self.hint = w;
        self.bitmap.as_mut()[w] &= !(1 << bit);
        self.free -= 1;
        Some(Mfn(mfn))
    }

    /// Allocates `n` physically contiguous frames, aligned to `align` frames.
    pub fn alloc_contig(&mut self, n: u64, align: u64) -> Option<Mfn> {
        if n == 0 || align == 0 {
            return None;
        }
        let mut start = 0;
        while start + n <= self.nr_frames {
            match (start..start + n).find(|&m| !self.bit(m)) {
                None => {
                    self.reserve_range(Mfn(start), Mfn(start + n));
                    return Some(Mfn(start));
                }
                Some(busy) => start = (busy + 1).div_ceil(align) * align,
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::vec;

    #[test]
    fn alloc_lowest_first_and_contig() {
        let mut a = FrameAllocator::new(vec![0u64; 4], 200);
        a.free_range(Mfn(10), Mfn(20));
        a.free_range(Mfn(100), Mfn(300)); // clipped at 200
        assert_eq!(a.free_frames(), 110);
        assert_eq!(a.alloc(), Some(Mfn(10)));
        assert_eq!(a.alloc_contig(16, 16), Some(Mfn(112)));
        assert_eq!(a.free_frames(), 93);
        assert!(a.free(Mfn(10)));
        assert!(!a.free(Mfn(10)), "double free is refused");
        assert!(!a.free(Mfn(500)));
        assert_eq!(a.alloc(), Some(Mfn(10)));
    }

    proptest! {
        #[test]
        fn never_hands_out_a_frame_twice(ops in proptest::collection::vec((any::<bool>(), 0u64..256), 1..400)) {
            let mut a = FrameAllocator::new(vec![0u64; 4], 256);
            a.free_range(Mfn(0), Mfn(256));
            let mut held = BTreeSet::new();
            for (is_alloc, m) in ops {
                if is_alloc {
                    if let Some(f) = a.alloc() {
                        prop_assert!(held.insert(f.0), "frame {} handed out twice", f.0);
                    } else {
                        prop_assert_eq!(held.len(), 256);
                    }
                } else if held.remove(&m) {
                    prop_assert!(a.free(Mfn(m)));
                } else {
                    prop_assert!(!a.free(Mfn(m)));
                }
                prop_assert_eq!(a.free_frames() as usize, 256 - held.len());
            }
        }
    }
}
