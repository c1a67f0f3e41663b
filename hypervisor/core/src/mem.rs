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

/// Access to machine memory, one frame at a time, by copies only: no reference into a
/// frame is ever handed out (guest frames change under the hypervisor's feet, on other CPUs).
///
/// The hypervisor implements it over its direct map (guest and free frames only); host tests
/// over a vector of pages. `None` means the frame is not memory this handle may reach, or the
/// range crosses the frame's end.
pub trait PhysMem {
    /// Copies `out.len()` bytes from byte `off` of frame `mfn`.
    fn read(&self, mfn: Mfn, off: usize, out: &mut [u8]) -> Option<()>;
    /// Copies `data` to byte `off` of frame `mfn`.
    fn write(&mut self, mfn: Mfn, off: usize, data: &[u8]) -> Option<()>;

    /// Reads the little-endian u64 at `index` (0..512) of a frame.
    fn read_u64(&self, mfn: Mfn, index: usize) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(mfn, index.checked_mul(8)?, &mut b)?;
        Some(u64::from_le_bytes(b))
    }

    /// Writes the little-endian u64 at `index` (0..512) of a frame.
    fn write_u64(&mut self, mfn: Mfn, index: usize, v: u64) -> Option<()> {
        self.write(mfn, index.checked_mul(8)?, &v.to_le_bytes())
    }

    /// Zeroes a frame.
    fn zero(&mut self, mfn: Mfn) -> Option<()> {
        let z = [0u8; 512];
        for k in 0..8 {
            self.write(mfn, 512 * k, &z)?;
        }
        Some(())
    }

    /// Copies frame `src` to frame `dst`.
    fn copy_frame(&mut self, dst: Mfn, src: Mfn) -> Option<()> {
        let mut b = [0u8; 512];
        for k in 0..8 {
            self.read(src, 512 * k, &mut b)?;
            self.write(dst, 512 * k, &b)?;
        }
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

    fn page(&self, mfn: Mfn) -> Option<&Page> {
        self.pages.get(usize::try_from(mfn.0.checked_sub(self.base)?).ok()?)
    }
}

#[cfg(test)]
impl PhysMem for VecMem {
    fn read(&self, mfn: Mfn, off: usize, out: &mut [u8]) -> Option<()> {
        out.copy_from_slice(self.page(mfn)?.get(off..off.checked_add(out.len())?)?);
        Some(())
    }
    fn write(&mut self, mfn: Mfn, off: usize, data: &[u8]) -> Option<()> {
        let i = usize::try_from(mfn.0.checked_sub(self.base)?).ok()?;
        self.pages.get_mut(i)?.get_mut(off..off.checked_add(data.len())?)?.copy_from_slice(data);
        Some(())
    }
}
