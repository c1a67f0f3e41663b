//! What the PV frontends share: finding a ring page the toolstack placed in the bootstrap
//! region, reaching shared_info for its event port, and waiting on that port.
//!
//! A frontend masks its port: its events are never taken by the upcall (a guest may have
//! its own handler), only seen by `SCHEDOP_poll`, which works with events masked.

use crate::events;
use crate::StartInfo;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use guest_abi::evtchn::Port;

/// First PFN past the bootstrap region (Xen's start-of-day layout: the tables, one stack
/// page, at least 512 KiB of slack, rounded up to 4 MiB).
pub fn region_end_pfn(si: &StartInfo) -> u64 {
    let end = si.pt_base + (si.nr_pt_frames + 1) * 4096 + (512 << 10);
    let end = (end + (4 << 20) - 1) & !((4 << 20) - 1);
    (end - crate::virt_base()) / 4096
}

/// shared_info's address once mapped here (0: not yet).
static SHARED_VA: AtomicU64 = AtomicU64::new(0);

/// shared_info mapped at the last page of the bootstrap region (where the test guests and
/// dom0 keep it too) and known to [`events`]; false if the mapping was refused.
pub fn shared_up(si: &StartInfo) -> bool {
    if SHARED_VA.load(Ordering::SeqCst) != 0 {
        return true;
    }
    let va = crate::virt_base() + (region_end_pfn(si) - 1) * 4096;
    match crate::mm::map_shared_info(si, va) {
        Ok(map) => {
            events::attach(&map);
            SHARED_VA.store(va, Ordering::SeqCst);
            true
        }
        Err(_) => false,
    }
}

/// Entry `pfn` of the P2M list (the machine frame of pseudo-physical frame `pfn`), if the
/// domain has that frame.
pub fn p2m(si: &StartInfo, pfn: u64) -> Option<u64> {
    if pfn >= si.nr_pages {
        return None;
    }
    // SAFETY: the P2M list is mapped at mfn_list for nr_pages entries (Xen's start-of-day
    // contract) and `pfn` is below nr_pages. A plain read of a word the guest owns.
    Some(unsafe { ((si.mfn_list + 8 * pfn) as *const u64).read_volatile() })
}

/// The address of machine frame `mfn` if it is one of the bootstrap region's (found in the
/// P2M list).
pub fn region_va(si: &StartInfo, mfn: u64) -> Option<u64> {
    (0..region_end_pfn(si)).find(|&pfn| p2m(si, pfn) == Some(mfn)).map(|pfn| crate::virt_base() + pfn * 4096)
}

/// The machine frame behind address `va` of the bootstrap region (from the P2M list).
pub fn region_mfn(si: &StartInfo, va: u64) -> Option<u64> {
    let pfn = va.checked_sub(crate::virt_base())? / 4096;
    if pfn >= region_end_pfn(si) {
        return None;
    }
    p2m(si, pfn)
}

/// Sleeps until one of `ports` is pending, then clears them (their events are consumed
/// here, never by the upcall: [`take_port`] masked them).
pub fn wait(ports: &[Port]) {
    wait_until(ports, 0)
}

/// [`wait`] until `deadline` (absolute system time, ns) at the latest.
pub fn wait_until(ports: &[Port], deadline: u64) {
    if !ports.iter().any(|&p| events::is_pending(p)) {
        events::poll(ports, deadline);
    }
    for &p in ports {
        events::clear_pending(p);
    }
}

/// Keeps `port`'s events from the upcall: masked, and polled by its frontend.
pub fn take_port(port: Port) {
    events::set_port_mask(port, true);
}

/// A ring page: volatile word and byte accesses at offsets within it.
#[derive(Copy, Clone)]
pub struct RingPage(u64);

impl RingPage {
    /// The page at `va`.
    ///
    /// # Safety
    /// `va` must be a page mapped writable for the guest's lifetime that nothing but this
    /// frontend (and its backend, through its own mapping) uses.
    pub unsafe fn new(va: u64) -> RingPage {
        RingPage(va)
    }

    pub fn read_u32(&self, off: usize) -> u32 {
        core::sync::atomic::fence(Ordering::SeqCst);
        // SAFETY: `new`'s contract; callers pass offsets of the ring's index words (4-aligned,
        // inside the page).
        unsafe { ((self.0 + (off as u64 & 0xFFC)) as *const u32).read_volatile() }
    }

    pub fn write_u32(&self, off: usize, v: u32) {
        core::sync::atomic::fence(Ordering::SeqCst);
        // SAFETY: as for `read_u32`.
        unsafe { ((self.0 + (off as u64 & 0xFFC)) as *mut u32).write_volatile(v) };
        core::sync::atomic::fence(Ordering::SeqCst);
    }

    /// Produces as much of `bytes` as there is room for into the ring of `size` bytes at
    /// `data` whose free-running indexes are at `prod_off` (ours) and `cons_off` (the other
    /// side's): how many went in. Indexes claiming more than the ring holds leave no room.
    pub fn produce(&self, data: usize, size: u32, prod_off: usize, cons_off: usize, bytes: &[u8]) -> usize {
        let (cons, prod) = (self.read_u32(cons_off), self.read_u32(prod_off));
        let room = size.saturating_sub(prod.wrapping_sub(cons)) as usize;
        let n = room.min(bytes.len());
        for (i, &b) in bytes[..n].iter().enumerate() {
            self.write_u8(data + (prod.wrapping_add(i as u32) % size) as usize, b);
        }
        if n > 0 {
            self.write_u32(prod_off, prod.wrapping_add(n as u32));
        }
        n
    }

    /// Copies `out.len()` bytes from offset `off` (kept inside the page).
    pub fn read(&self, off: usize, out: &mut [u8]) {
        let off = off.min(4096);
        let n = out.len().min(4096 - off);
        // SAFETY: `new`'s contract; the range is inside the page. The other side may change
        // the bytes meanwhile: they are copied as they are, nothing is assumed of them.
        unsafe { core::ptr::copy_nonoverlapping((self.0 + off as u64) as *const u8, out.as_mut_ptr(), n) };
        core::sync::atomic::fence(Ordering::SeqCst);
    }

    /// Copies `data` to offset `off` (kept inside the page).
    pub fn write(&self, off: usize, data: &[u8]) {
        let off = off.min(4096);
        let n = data.len().min(4096 - off);
        core::sync::atomic::fence(Ordering::SeqCst);
        // SAFETY: as for `read`.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), (self.0 + off as u64) as *mut u8, n) };
        core::sync::atomic::fence(Ordering::SeqCst);
    }

    pub fn read_u8(&self, off: usize) -> u8 {
        // SAFETY: `new`'s contract; the offset is kept inside the page.
        unsafe { ((self.0 + (off as u64 & 0xFFF)) as *const u8).read_volatile() }
    }

    pub fn write_u8(&self, off: usize, v: u8) {
        // SAFETY: as for `read_u8`.
        unsafe { ((self.0 + (off as u64 & 0xFFF)) as *mut u8).write_volatile(v) }
    }
}

/// A frontend's ring: the page the toolstack gave the domain (found in the bootstrap
/// region) and its event port, masked and left to `SCHEDOP_poll`.
pub struct Frontend {
    va: AtomicU64,
    port: AtomicU32,
}

impl Frontend {
    pub const fn new() -> Frontend {
        Frontend { va: AtomicU64::new(0), port: AtomicU32::new(0) }
    }

    /// Takes the ring in machine frame `mfn` with event port `port` (both from
    /// start_info); false if there is none or it is not in the bootstrap region.
    pub fn take(&self, si: &StartInfo, mfn: u64, port: Port) -> bool {
        if mfn == 0 || port == 0 || !shared_up(si) {
            return false;
        }
        let Some(va) = region_va(si, mfn) else { return false };
        take_port(port);
        self.port.store(port, Ordering::SeqCst);
        self.va.store(va, Ordering::SeqCst);
        true
    }

    /// The ring page and port, once taken.
    pub fn get(&self) -> Option<(RingPage, Port)> {
        let va = self.va.load(Ordering::SeqCst);
        // SAFETY: `take` stored the address of a ring page the toolstack placed in the
        // bootstrap region, mapped writable for the domain's lifetime and used by nothing
        // else of the guest.
        (va != 0).then(|| (unsafe { RingPage::new(va) }, self.port.load(Ordering::SeqCst)))
    }

    /// The event port (0 before [`Frontend::take`]).
    pub fn port(&self) -> Port {
        self.port.load(Ordering::SeqCst)
    }
}

impl Default for Frontend {
    fn default() -> Frontend {
        Frontend::new()
    }
}

/// Why a frontend could not connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    /// The device is used already (one per guest).
    Taken,
    NoXenStore,
    NoDevice,
    NoGrants,
    NoPort,
    Refused(&'static str),
}

/// A device a frontend found in XenStore: its directory, its backend's, the backend domain.
pub struct Device {
    pub fe: crate::xenbus::Path,
    pub be: crate::xenbus::Path,
    pub backend: u16,
}

/// What every frontend does first: takes the one device of its kind (`taken`), brings up
/// the XenStore and grant-table clients, and reads `device/<class>/<devid>`'s `backend`
/// and `backend-id`.
pub fn open_device(si: &StartInfo, taken: &core::sync::atomic::AtomicBool, class: &str, devid: u32) -> Result<Device, ConnectError> {
    use crate::xenbus::{self, Path};
    if taken.swap(true, Ordering::SeqCst) {
        return Err(ConnectError::Taken);
    }
    if !xenbus::init(si) {
        return Err(ConnectError::NoXenStore);
    }
    if !crate::gnttab::init(si) {
        return Err(ConnectError::NoGrants);
    }
    let fe = Path::of(format_args!("device/{class}/{devid}"));
    let be = xenbus::read_path(Path::of(format_args!("{}/backend", fe.as_str())).as_str()).ok_or(ConnectError::NoDevice)?;
    let backend = xenbus::read_u64(Path::of(format_args!("{}/backend-id", fe.as_str())).as_str()).unwrap_or(0) as u16;
    Ok(Device { fe, be, backend })
}

/// After a producer moved from `old` to `new`: does the other side want an event (its
/// `event` index among the new entries: `RING_PUSH_*_AND_CHECK_NOTIFY`)?
pub fn needs_notify(new: u32, old: u32, event: u32) -> bool {
    new.wrapping_sub(event) < new.wrapping_sub(old)
}
