//! Other domains' ring pages as dom0's backends reach them: long-lived grant mappings of
//! the references the builder seeded (`pv_runtime::foreign::Slots`), shared by the XenStore daemon and the console backend.

use pv_runtime::foreign::Slots;
use pv_runtime::pvio::RingPage;

static SLOTS: spin::Mutex<Option<Slots>> = spin::Mutex::new(None);

/// Sets the slots up (once, at start).
pub fn init(si: &pv_runtime::StartInfo) {
    *SLOTS.lock() = Some(Slots::new(si));
}

/// Maps grant `gref` of `dom`: the slot (-errno or -GNTST when refused, or full).
pub fn map(dom: u16, gref: u32) -> Result<usize, i64> {
    SLOTS.lock().as_mut().ok_or(-19)?.map(dom, gref)
}

/// A backend's connection to `dom`'s ring: the interdomain port bound to the domain's
/// unbound `remote_port` and grant `gref` mapped (what `what` names, for errors); both
/// undone if either fails.
pub fn connect(dom: u16, gref: u32, remote_port: u32, what: &str) -> Result<(usize, u32), alloc::string::String> {
    let port = pv_runtime::events::bind_interdomain(dom, remote_port).map_err(|e| alloc::format!("binding d{}'s {} port failed: {}", dom, what, crate::xl::errno(e)))?;
    match map(dom, gref) {
        Ok(slot) => Ok((slot, port)),
        Err(e) => {
            pv_runtime::events::close(port);
            Err(alloc::format!("mapping d{}'s {} ring failed: {}", dom, what, crate::xl::errno(e)))
        }
    }
}

/// Unmaps slot `i` (the domain's frame is no longer referenced by dom0): 0, or why the
/// unmap was refused (the mapping then stays, and the domain lingers once destroyed).
pub fn unmap(i: usize) -> i64 {
    SLOTS.lock().as_mut().map_or(0, |s| s.unmap(i))
}

/// Copies bytes out of slot `i`'s page (a request entry, before it is looked at).
pub fn read(i: usize, off: usize, out: &mut [u8]) {
    match SLOTS.lock().as_ref() {
        Some(s) => s.page(i).read(off, out),
        None => out.fill(0),
    }
}

/// Copies bytes into slot `i`'s page.
pub fn write(i: usize, off: usize, data: &[u8]) {
    if let Some(s) = SLOTS.lock().as_ref() {
        s.page(i).write(off, data)
    }
}

/// Publishes a backend's responses up to `rsp` on slot `i`'s ring and tells the frontend
/// (on `port`) if it asked to be told (`rsp_event` among the new ones:
/// `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`).
pub fn push_responses(i: usize, rsp: u32, port: u32) {
    use guest_abi::io::blkif::{RSP_EVENT, RSP_PROD};
    let page = page(i);
    let old = page.u32(RSP_PROD);
    if old == rsp {
        return;
    }
    page.set_u32(RSP_PROD, rsp);
    if pv_runtime::pvio::needs_notify(rsp, old, page.u32(RSP_EVENT)) {
        pv_runtime::events::send(port);
    }
}

/// Slot `i`'s page.
pub fn page(i: usize) -> Page {
    Page(SLOTS.lock().as_ref().map(|s| s.page(i)))
}

/// A mapped ring page (as `xenstore::ring::Page`); an absent one reads as zeroes.
pub struct Page(Option<RingPage>);

impl Page {
    pub fn u32(&self, off: usize) -> u32 {
        self.0.map_or(0, |p| p.read_u32(off))
    }
    pub fn set_u32(&self, off: usize, v: u32) {
        if let Some(p) = self.0 {
            p.write_u32(off, v)
        }
    }
    pub fn u8(&self, off: usize) -> u8 {
        self.0.map_or(0, |p| p.read_u8(off))
    }
    pub fn set_u8(&self, off: usize, v: u8) {
        if let Some(p) = self.0 {
            p.write_u8(off, v)
        }
    }
    /// [`RingPage::produce`] (nothing goes into an absent page).
    pub fn produce(&self, data: usize, size: u32, prod_off: usize, cons_off: usize, bytes: &[u8]) -> usize {
        self.0.map_or(0, |p| p.produce(data, size, prod_off, cons_off, bytes))
    }
}

impl xenstore::ring::Page for Page {
    fn read_u32(&self, off: usize) -> u32 {
        self.u32(off)
    }
    fn write_u32(&mut self, off: usize, v: u32) {
        self.set_u32(off, v)
    }
    fn read(&self, off: usize, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.u8(off + i);
        }
    }
    fn write(&mut self, off: usize, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            self.set_u8(off + i, b);
        }
    }
}
