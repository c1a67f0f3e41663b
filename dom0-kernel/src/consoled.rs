//! The console backend (xenconsoled's job): each domain's console ring is drained into a
//! buffer in dom0 when its event channel fires; `xl console` shows what is buffered and
//! then the live output, and sends dom0's serial input into the ring's `in` half. Output
//! of a domain that died stays readable until the domain is destroyed.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use guest_abi::evtchn::Port;
use guest_abi::io::console::*;
use pv_runtime::events;
use core::sync::atomic::{AtomicU32, Ordering};

/// Output kept per domain while nobody is attached (older bytes are dropped first).
pub const BUFFER: usize = 16 * 1024;

struct Cons {
    slot: usize,
    port: Port,
    buf: VecDeque<u8>,
    /// The guest set its indexes to nonsense (said once).
    warned: bool,
    /// Bytes dropped for want of room.
    dropped: u64,
}

static CONS: spin::Mutex<BTreeMap<u16, Cons>> = spin::Mutex::new(BTreeMap::new());
/// The domain `xl console` is attached to, plus one (0: none).
static ATTACHED: AtomicU32 = AtomicU32::new(0);

/// Serves `dom`'s console ring (grant reference `GNTTAB_RESERVED_CONSOLE`, its unbound port
/// `remote_port`).
pub fn add(dom: u16, remote_port: Port) -> Result<(), String> {
    let (slot, port) = crate::rings::connect(dom, guest_abi::grant::RESERVED_CONSOLE, remote_port, "console")?;
    CONS.lock().insert(dom, Cons { slot, port, buf: VecDeque::new(), warned: false, dropped: 0 });
    if !crate::executor::register(port, crate::executor::Task::Console(dom)) {
        remove(dom);
        return Err(format!("d{}'s console port {} is past what dom0 serves", dom, port));
    }
    on_event(dom);
    Ok(())
}

/// Stops serving `dom` (at destroy): what it wrote last taken (and shown if attached),
/// then its ring unmapped, its port closed, its output gone.
pub fn remove(dom: u16) {
    on_event(dom);
    if ATTACHED.load(Ordering::SeqCst) == dom as u32 + 1 {
        detach();
    }
    if let Some(c) = CONS.lock().remove(&dom) {
        crate::executor::unregister(c.port);
        events::close(c.port);
        let rc = crate::rings::unmap(c.slot);
        if rc != 0 {
            pv_runtime::println!("xenconsoled: d{}: unmapping its ring failed ({}): it lingers once destroyed", dom, rc);
        }
    }
}

/// The ring of `dom` had an event: its new output taken (and shown if attached).
pub fn on_event(dom: u16) -> bool {
    let mut out = alloc::vec::Vec::new();
    let mut all = CONS.lock();
    let Some(c) = all.get_mut(&dom) else { return false };
    let page = crate::rings::page(c.slot);
    let (mut cons, prod) = (page.u32(OUT_CONS), page.u32(OUT_PROD));
    let mut avail = prod.wrapping_sub(cons);
    if avail > OUT_SIZE {
        // Indexes claiming more than the ring: only its last ring's worth is read (as
        // xenconsoled does), and the backend carries on.
        cons = prod.wrapping_sub(OUT_SIZE);
        avail = OUT_SIZE;
        if !c.warned {
            c.warned = true;
            pv_runtime::println!("xenconsoled: d{}: console ring indexes out of range", dom);
        }
    }
    for i in 0..avail {
        out.push(page.u8(OUT + (cons.wrapping_add(i) % OUT_SIZE) as usize));
    }
    if avail > 0 {
        page.set_u32(OUT_CONS, prod);
        events::send(c.port);
    }
    if ATTACHED.load(Ordering::SeqCst) == dom as u32 + 1 {
        drop(all);
        pv_runtime::hypercall::console_write(&out);
    } else if pv_heap::free() < crate::xs::reserve() {
        // dom0 is short of memory: the output is dropped rather than kept.
        c.dropped += out.len() as u64;
    } else {
        c.buf.extend(out);
        let over = c.buf.len().saturating_sub(BUFFER);
        if over > 0 {
            c.buf.drain(..over);
            c.dropped += over as u64;
        }
    }
    false
}

/// `xl console dom`: what is buffered is shown, then live output until [`detach`].
pub fn attach(dom: u16) -> Result<(), String> {
    let buffered: alloc::vec::Vec<u8> = {
        let mut all = CONS.lock();
        let c = all.get_mut(&dom).ok_or_else(|| format!("libxl: error: domain {} has no console", dom))?;
        c.buf.drain(..).collect()
    };
    ATTACHED.store(dom as u32 + 1, Ordering::SeqCst);
    pv_runtime::hypercall::console_write(&buffered);
    Ok(())
}

pub fn detach() {
    ATTACHED.store(0, Ordering::SeqCst);
}

/// The domain attached to, if any.
pub fn attached() -> Option<u16> {
    match ATTACHED.load(Ordering::SeqCst) {
        0 => None,
        n => Some((n - 1) as u16),
    }
}

/// Typed input for the attached domain: into its ring's `in` half as far as there is room
/// (the rest is dropped, as a full serial line drops it).
pub fn input(bytes: &[u8]) {
    let Some(dom) = attached() else { return };
    let all = CONS.lock();
    let Some(c) = all.get(&dom) else { return };
    crate::rings::page(c.slot).produce(IN, IN_SIZE, IN_PROD, IN_CONS, bytes);
    events::send(c.port);
}

/// Has `dom` written a whole line that is still buffered?
pub fn has_line(dom: u16) -> bool {
    CONS.lock().get(&dom).is_some_and(|c| c.buf.contains(&b'\n'))
}

/// dom0's port for `dom`'s console.
pub fn port(dom: u16) -> Option<Port> {
    CONS.lock().get(&dom).map(|c| c.port)
}
