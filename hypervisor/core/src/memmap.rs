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

/// Why an EFI memory map could not be used.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EfiMapError {
    /// A descriptor version other than 1, or descriptors shorter than version 1's.
    Layout,
    TooManyRanges,
}

/// The usable RAM an EFI memory map (`descriptors`, each `desc_size` bytes of version
/// `desc_version`, as GRUB's multiboot2 EFI memory-map tag holds them) describes once boot
/// services are gone, as Xen reads it: loader and boot-services code and data and
/// conventional memory, when write-back cacheable (`EFI_MEMORY_WB`).
pub fn efi_ram(descriptors: &[u8], desc_size: u32, desc_version: u32) -> Result<RangeSet, EfiMapError> {
    const LOADER_CODE: u32 = 1;
    const CONVENTIONAL: u32 = 7;
    const MEMORY_WB: u64 = 1 << 3;
    let size = desc_size as usize;
    if desc_version != 1 || size < 40 {
        return Err(EfiMapError::Layout);
    }
    let mut ram = RangeSet::default();
    for d in descriptors.chunks_exact(size) {
        let u32at = |o: usize| u32::from_le_bytes([d[o], d[o + 1], d[o + 2], d[o + 3]]);
        let u64at = |o: usize| u64::from(u32at(o)) | u64::from(u32at(o + 4)) << 32;
        let (ty, start, pages, attr) = (u32at(0), u64at(8), u64at(24), u64at(32));
        if !(LOADER_CODE..=CONVENTIONAL).contains(&ty) || (5..=6).contains(&ty) || attr & MEMORY_WB == 0 {
            continue;
        }
        // Pages past the physical address space are not RAM anyone can use.
        let Some(end) = pages.checked_mul(4096).and_then(|l| start.checked_add(l)).filter(|&e| e <= 1 << 52) else { continue };
        ram.add(Range::new(start, end)).map_err(|_| EfiMapError::TooManyRanges)?;
    }
    Ok(ram)
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

    /// An EFI map as OVMF gives it: usable types with WB merged, runtime services, MMIO,
    /// reserved and uncached ranges left out; unknown layouts refused.
    #[test]
    fn efi_ram_keeps_what_is_free_after_exit_boot_services() {
        let desc = |ty: u32, start: u64, pages: u64, attr: u64| {
            let mut d = std::vec![0u8; 48];
            d[..4].copy_from_slice(&ty.to_le_bytes());
            d[8..16].copy_from_slice(&start.to_le_bytes());
            d[24..32].copy_from_slice(&pages.to_le_bytes());
            d[32..40].copy_from_slice(&attr.to_le_bytes());
            d
        };
        const WB: u64 = 1 << 3;
        let map: std::vec::Vec<u8> = [
            desc(7, 0, 0xA0, WB),              // conventional, 0-640K
            desc(0, 0xA0000, 0x60, WB),        // reserved
            desc(2, 0x10_0000, 0x10, WB),      // loader data (GRUB, the MBI)
            desc(4, 0x11_0000, 0x20, WB),      // boot services data
            desc(7, 0x13_0000, 0x100, WB),     // conventional, adjacent: merged
            desc(6, 0x23_0000, 0x10, WB | 1 << 63), // runtime services data
            desc(7, 0x24_0000, 0x10, 1),       // conventional but uncached only
            desc(11, 0xFEC0_0000, 1, 1),       // MMIO
            desc(7, u64::MAX - 4095, 2, WB),   // past the address space
        ]
        .concat();
        let ram = efi_ram(&map, 48, 1).unwrap();
        assert_eq!(ram.as_slice(), &[Range::new(0, 0xA0000), Range::new(0x10_0000, 0x23_0000)]);
        assert_eq!(efi_ram(&map, 48, 2).unwrap_err(), EfiMapError::Layout);
        assert_eq!(efi_ram(&map, 32, 1).unwrap_err(), EfiMapError::Layout);
        // A trailing partial descriptor is ignored.
        assert_eq!(efi_ram(&map[..48 + 20], 48, 1).unwrap().as_slice(), &[Range::new(0, 0xA0000)]);
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
