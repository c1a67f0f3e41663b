//! Event channels: each domain's ports sit under its own event
//! lock (`DomShared::ports`), and an operation holds the locks of exactly the domains it
//! names (its own, the other domain of its arguments, the peer of its port: see
//! `hv_core::evtchn::Table`), two of them lower id first. The pending, mask and selector
//! bits live in the domains' shared_info and `vcpu_info` pages and change by atomic byte
//! operations ([`PortBits`]). An operation returns the vCPU to notify ([`Kick`]); what it
//! takes to notify it without a run-queue lock is [`notify_lockfree`].

use crate::domain::{shared_of, vi, DomShared};
use crate::locks::{Level, Ordered};
use alloc::sync::Arc;
use core::sync::atomic::{fence, Ordering};
use guest_abi::evtchn::Port;
use guest_abi::DomId;
use hv_arch::physmem::DirectMap;
use hv_core::evtchn::{Bits, DomainEvents, Kick, Pair};
use hv_core::mem::Mfn;

type Guard<'a> = Ordered<spin::mutex::TicketMutexGuard<'a, DomainEvents>>;

/// One or two domains' event locks, held.
pub struct Locked<'a> {
    a: (&'a DomShared, Guard<'a>),
    b: Option<(&'a DomShared, Guard<'a>)>,
}

impl<'a> Locked<'a> {
    /// Takes `x`'s event lock and, if given and another domain, `y`'s: lower id first.
    pub fn new(x: &'a DomShared, y: Option<&'a DomShared>) -> Locked<'a> {
        match y.filter(|y| y.id != x.id) {
            None => Locked { a: (x, lock(x, Level::Events)), b: None },
            Some(y) => {
                let (lo, hi) = if x.id < y.id { (x, y) } else { (y, x) };
                let g = lock(lo, Level::Events);
                Locked { a: (lo, g), b: Some((hi, lock(hi, Level::Events2))) }
            }
        }
    }

    /// The locked tables, for `hv_core::evtchn::Table` operations.
    pub fn pair(&mut self) -> Pair<'_> {
        Pair { a: (self.a.0.id, &mut *self.a.1), b: self.b.as_mut().map(|(d, g)| (d.id, &mut **g)) }
    }

    /// The locked domains (the first twice when only one is).
    pub fn domains(&self) -> [&'a DomShared; 2] {
        [self.a.0, self.b.as_ref().map_or(self.a.0, |b| b.0)]
    }

    /// The locked domains' bits.
    pub fn bits(&self) -> PortBits<'a> {
        PortBits { a: self.a.0, b: self.b.as_ref().map(|b| b.0) }
    }

    /// Domain `dom`'s table, if it is one of the locked ones.
    pub fn table(&self, dom: DomId) -> Option<&DomainEvents> {
        if self.a.0.id == dom {
            return Some(&self.a.1);
        }
        self.b.as_ref().filter(|b| b.0.id == dom).map(|b| &*b.1)
    }

    /// Domain `dom`'s table, if it is one of the locked ones, to change.
    pub fn ports_mut(&mut self, dom: DomId) -> Option<&mut DomainEvents> {
        if self.a.0.id == dom {
            return Some(&mut self.a.1);
        }
        self.b.as_mut().filter(|b| b.0.id == dom).map(|b| &mut *b.1)
    }

    /// Domain `dom`'s table, if it is one of the locked ones.
    pub fn ports(&self, dom: DomId) -> Option<&DomainEvents> {
        if self.a.0.id == dom {
            return Some(&self.a.1);
        }
        self.b.as_ref().filter(|b| b.0.id == dom).map(|b| &*b.1)
    }
}

fn lock(d: &DomShared, level: Level) -> Guard<'_> {
    Ordered::new(level, || d.ports.lock())
}

/// Runs `op` on `me`'s tables with the event locks its `port` needs: `me`'s and, when the
/// port names another domain (its peer, or the domain an unbound port waits for), that
/// domain's too; the peer is looked at again once both are held, and the whole taken anew
/// if it changed meanwhile.
pub fn on_port<R>(me: &DomShared, port: Port, mut op: impl FnMut(&mut Locked<'_>) -> R) -> R {
    loop {
        let peer = {
            let mut l = Locked::new(me, None);
            match l.a.1.peer(port).filter(|&q| q != me.id) {
                None => return op(&mut l),
                Some(q) => q,
            }
        };
        let other = shared_of(peer);
        let mut l = Locked::new(me, other.as_deref());
        if l.ports(me.id).and_then(|t| t.peer(port)).filter(|&q| q != me.id) == Some(peer) {
            return op(&mut l);
        }
    }
}

/// Runs `op` with the event locks of `me` and `other` (a domain id from the arguments; a
/// domain that does not exist is simply not locked, and the operation fails with -ESRCH).
pub fn on_domains<R>(me: &DomShared, other: DomId, op: impl FnOnce(&mut Locked<'_>) -> R) -> R {
    let o: Option<Arc<DomShared>> = if other == me.id { None } else { shared_of(other) };
    let mut l = Locked::new(me, o.as_deref());
    op(&mut l)
}

/// Closes `port` of `dom` (a domain `l` holds). Returns the PIRQ it was bound to, if any:
/// the caller closes its pin (`crate::irq::unbound`).
pub fn close(l: &mut Locked<'_>, dom: DomId, port: Port) -> Result<Option<u32>, guest_abi::errno::Errno> {
    let pirq = l.ports(dom).and_then(|t| t.pirq_of(port));
    let mut bits = l.bits();
    hv_core::evtchn::Table::close(&mut l.pair(), dom, port, &mut bits)?;
    Ok(pirq)
}

/// Returns `d` to the 2-level ABI (`EVTCHNOP_reset`, a teardown), dropping the references
/// its FIFO state held. With `if_closed` (a reset), only if no port is in use once its
/// event lock is held: false (nothing changed) otherwise.
pub fn fifo_destroy(d: &DomShared, if_closed: bool) -> bool {
    let frames = {
        let mut l = Locked::new(d, None);
        if if_closed && l.ports(d.id).is_some_and(|t| t.used().next().is_some()) {
            return false;
        }
        let mut bits = l.bits();
        let f = l.ports_mut(d.id).map(|t| t.fifo_destroy(d.id, &mut bits)).unwrap_or_default();
        d.fifo_on.store(false, Ordering::SeqCst);
        f
    };
    let ft = crate::machine::frames();
    for m in frames {
        let _ = ft.put_page_and_type(m, true);
    }
    true
}

/// Is one of `ports` of `d` pending, in the ABI `d` uses (a poller's wake-up condition)?
/// The 2-level bitmap is read lock-free; a FIFO domain's words are found under its event
/// lock (which ranks above the run-queue locks a sleeper check holds). A switch of ABI
/// between the flag's load and the look is caught by the sleeper check the switch's
/// next event triggers.
pub fn any_pending(d: &DomShared, ports: &[Port]) -> bool {
    let bits = PortBits::one(d);
    if d.fifo_on.load(Ordering::SeqCst) {
        let l = Locked::new(d, None);
        return l.ports(d.id).is_some_and(|t| ports.iter().any(|&p| t.is_pending(d.id, p, &bits)));
    }
    ports.iter().any(|&p| bits.is_pending(d.id, p))
}

/// What the hypervisor raises in a domain on its own: a VIRQ on a vCPU, or a PIRQ.
#[derive(Copy, Clone, Debug)]
pub enum Source {
    Virq { virq: u32, vcpu: u32 },
    Pirq(u32),
}

/// Raises `what` in `d` under `d`'s event lock (dropped if no port is bound to it); the
/// vCPU to notify.
pub fn raise(d: &DomShared, what: Source) -> Option<Kick> {
    let mut l = Locked::new(d, None);
    let mut bits = l.bits();
    match what {
        Source::Virq { virq, vcpu } => hv_core::evtchn::Table::send_virq(&mut l.pair(), d.id, virq, vcpu, &mut bits),
        Source::Pirq(p) => hv_core::evtchn::Table::send_pirq(&mut l.pair(), d.id, p, &mut bits),
    }
}

/// The 2-level bits of one or two domains.
pub struct PortBits<'a> {
    pub a: &'a DomShared,
    pub b: Option<&'a DomShared>,
}

const PENDING: usize = 2048;
const MASK: usize = 2560;

fn bit(base: usize, port: Port) -> (usize, u8) {
    (base + (port / 8) as usize, 1 << (port % 8))
}

impl<'a> PortBits<'a> {
    /// Bits of domain `d` alone.
    pub fn one(d: &'a DomShared) -> PortBits<'a> {
        PortBits { a: d, b: None }
    }

    fn dom(&self, id: DomId) -> Option<&'a DomShared> {
        if self.a.id == id {
            return Some(self.a);
        }
        self.b.filter(|b| b.id == id)
    }

    /// The shared_info frame of `id` (none for the idle domain or one not held here).
    fn page(&self, id: DomId) -> Option<hv_core::mem::Mfn> {
        self.dom(id).filter(|d| d.id != guest_abi::DOMID_IDLE).map(|d| d.shared_info)
    }
}

impl Bits for PortBits<'_> {
    fn test_and_set_pending(&mut self, d: DomId, port: Port) -> bool {
        let (o, m) = bit(PENDING, port);
        self.page(d).and_then(|p| DirectMap.fetch_or_u8(p, o, m)).is_none_or(|old| old & m != 0)
    }
    fn clear_pending(&mut self, d: DomId, port: Port) {
        let (o, m) = bit(PENDING, port);
        if let Some(p) = self.page(d) {
            DirectMap.fetch_and_u8(p, o, !m);
        }
    }
    fn is_pending(&self, d: DomId, port: Port) -> bool {
        let (o, m) = bit(PENDING, port);
        self.page(d).and_then(|p| DirectMap.load_u8(p, o)).is_some_and(|b| b & m != 0)
    }
    fn is_masked(&self, d: DomId, port: Port) -> bool {
        let (o, m) = bit(MASK, port);
        self.page(d).and_then(|p| DirectMap.load_u8(p, o)).is_none_or(|b| b & m != 0)
    }
    fn test_and_clear_mask(&mut self, d: DomId, port: Port) -> bool {
        let (o, m) = bit(MASK, port);
        self.page(d).and_then(|p| DirectMap.fetch_and_u8(p, o, !m)).is_some_and(|old| old & m != 0)
    }
    fn test_and_set_sel(&mut self, d: DomId, vcpu: u32, word: u32) -> bool {
        let (o, m) = (vi::PENDING_SEL + (word / 8) as usize, 1u8 << (word % 8));
        self.dom(d).is_none_or(|dom| dom.vcpu_info.fetch_or(vcpu, o, m) & m != 0)
    }
    fn set_upcall_pending(&mut self, d: DomId, vcpu: u32) {
        if let Some(dom) = self.dom(d) {
            dom.vcpu_info.set_byte(vcpu, vi::UPCALL_PENDING, 1);
        }
    }
    fn clear_sel(&mut self, d: DomId, vcpu: u32) {
        if let Some(dom) = self.dom(d) {
            dom.vcpu_info.write(vcpu, vi::PENDING_SEL, &[0; 8]);
        }
    }
    // FIFO words live in frames the domain's FIFO state holds with writable type references
    // (never private, always direct-mapped): the `None` arms cannot happen, and answer as
    // if the word had every bit set, which links and announces nothing.
    fn word_fetch_or(&mut self, m: Mfn, off: usize, bits: u32) -> u32 {
        DirectMap.fetch_or_u32(m, off, bits).unwrap_or(u32::MAX)
    }
    fn word_fetch_and(&mut self, m: Mfn, off: usize, mask: u32) -> u32 {
        DirectMap.fetch_and_u32(m, off, mask).unwrap_or(u32::MAX)
    }
    fn word_load(&self, m: Mfn, off: usize) -> u32 {
        DirectMap.load_u32(m, off).unwrap_or(u32::MAX)
    }
    fn word_cas(&mut self, m: Mfn, off: usize, old: u32, new: u32) -> Result<(), u32> {
        DirectMap.cas_u32(m, off, old, new).unwrap_or(Ok(()))
    }
    fn word_store(&mut self, m: Mfn, off: usize, v: u32) {
        DirectMap.store_u32(m, off, v);
    }
}

/// After an event operation on the domains `doms` it
/// held: makes the kicked vCPU notice (a CPU running it gets the reschedule IPI; the
/// current vCPU takes its upcall on the way out) and says whether a sleeper check
/// (`schedule::check_sleepers`, under run-queue locks) is needed after all: a vCPU of one of them sleeps and might be waiting for this (the
/// kicked one in `SCHEDOP_block`, or any poller). The sleepers set their bit before they
/// last look for events, and the operation set its bits before this looks at theirs
/// (a full fence between): one of the two sees the other.
pub fn notify_lockfree(this_cpu: usize, k: Option<Kick>, doms: &[&DomShared]) -> bool {
    fence(Ordering::SeqCst);
    let mut need = doms.iter().any(|d| d.polling.load(Ordering::Relaxed) != 0);
    if let Some(k) = k {
        let Some(d) = doms.iter().find(|d| d.id == k.dom) else { return true };
        if k.vcpu >= 64 || d.sleeping.load(Ordering::Relaxed) & (1 << k.vcpu) != 0 {
            need = true;
        } else if let Some(cpu) = crate::shootdown::cpu_running(k.dom, k.vcpu).filter(|&c| c != this_cpu) {
            if let Some(&apic) = crate::machine::get().apic_ids.get(cpu) {
                crate::percpu::poke(cpu, apic);
            }
        }
    }
    need
}
