//! Machine frames as the core crate sees them.

use core::fmt;

/// A machine frame number.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mfn(pub u64);

/// A guest pseudo-physical frame number.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pfn(pub u64);

impl Mfn {
    /// Machine address of the frame's first byte.
    pub const fn maddr(self) -> u64 {
        self.0 << 12
    }
    /// The frame containing machine address `maddr`.
    pub const fn of(maddr: u64) -> Mfn {
        Mfn(maddr >> 12)
    }
}

impl fmt::Debug for Mfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mfn {:#x}", self.0)
    }
}

impl fmt::Debug for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pfn {:#x}", self.0)
    }
}

/// One 4 KiB frame's contents.
pub type Page = [u8; 4096];

/// Access to machine memory, one frame at a time.
///
/// The hypervisor implements it over its direct map; host tests over a vector of pages.
/// Returning `None` means the frame is not RAM the hypervisor can reach.
pub trait PhysMem {
    fn frame(&self, mfn: Mfn) -> Option<&Page>;
    fn frame_mut(&mut self, mfn: Mfn) -> Option<&mut Page>;

    /// Reads the little-endian u64 at `index` (0..512) of a frame.
    fn read_u64(&self, mfn: Mfn, index: usize) -> Option<u64> {
        let f = self.frame(mfn)?;
        let b = f.get(index * 8..index * 8 + 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    /// Writes the little-endian u64 at `index` (0..512) of a frame.
    fn write_u64(&mut self, mfn: Mfn, index: usize, v: u64) -> Option<()> {
        let f = self.frame_mut(mfn)?;
        f.get_mut(index * 8..index * 8 + 8)?.copy_from_slice(&v.to_le_bytes());
        Some(())
    }
}

/// A [`PhysMem`] over a vector of pages, MFN = index + `base`. For tests and tools.
#[cfg(test)]
pub struct VecMem {
    pub base: u64,
    pub pages: std::vec::Vec<Page>,
}

#[cfg(test)]
impl VecMem {
    pub fn new(base: u64, n: usize) -> Self {
        VecMem { base, pages: std::vec![[0u8; 4096]; n] }
    }
}

#[cfg(test)]
impl PhysMem for VecMem {
    fn frame(&self, mfn: Mfn) -> Option<&Page> {
        self.pages.get(usize::try_from(mfn.0.checked_sub(self.base)?).ok()?)
    }
    fn frame_mut(&mut self, mfn: Mfn) -> Option<&mut Page> {
        self.pages.get_mut(usize::try_from(mfn.0.checked_sub(self.base)?).ok()?)
    }
}
