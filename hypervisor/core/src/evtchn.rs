//! Event channels: ports, bindings and 2-level delivery.
//!
//! Each domain has a table of ports (port 0 is never allocated). A port is free, unbound
//! (waiting for a given remote domain to bind), interdomain (connected to a port of another
//! or the same domain), bound to a VIRQ on a vCPU, or an IPI port. Sending sets the pending
//! bit of the *receiving* port and, unless it is masked, the 2-level selector bit and
//! `evtchn_upcall_pending` of the port's notify vCPU — in exactly Xen's order — and reports
//! that vCPU to be kicked. The bits live in the guest's `shared_info`; this module reaches
//! them through [`Bits`], so host tests use plain arrays.
//!
//! Invariants: an interdomain port's peer is an interdomain port pointing back at it; a VIRQ
//! binding and the VIRQ table agree; a closed interdomain peer returns to unbound (remote =
//! the closer), as in Xen.

use crate::mem::Mfn;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

mod fifo;
pub use fifo::check_control;
use guest_abi::errno::Errno;
use guest_abi::evtchn::*;
use guest_abi::DomId;

/// Most vCPUs per domain tracked here.
pub const MAX_VCPUS: usize = 64;

/// What a port is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum State {
    Free,
    Unbound { remote: DomId },
    Interdomain { remote: DomId, remote_port: Port },
    Virq { virq: u32 },
    Ipi,
    /// A physical interrupt (`bind_pirq`), notified on vCPU 0 until moved.
    Pirq { pirq: u32 },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Chan {
    state: State,
    vcpu: u32,
    /// FIFO ABI: its priority (0 highest to 15) ...
    prio: u8,
    /// ... the queue (vCPU, priority) it was last linked on (kept while it is free: it
    /// may still be that queue's tail) ...
    last: (u8, u8),
    /// ... and an event raised while no event-array page held its word, raised again
    /// when one does.
    saved: bool,
}

impl Chan {
    const FREE: Chan = Chan { state: State::Free, vcpu: 0, prio: guest_abi::evtchn::fifo::PRIORITY_DEFAULT, last: (0, 0), saved: false };
}

/// The 2-level ABI bits in a domain's shared_info.
pub trait Bits {
    /// Sets `pending[port]`; returns its previous value.
    fn test_and_set_pending(&mut self, dom: DomId, port: Port) -> bool;
    fn clear_pending(&mut self, dom: DomId, port: Port);
    fn is_pending(&self, dom: DomId, port: Port) -> bool;
    fn is_masked(&self, dom: DomId, port: Port) -> bool;
    /// Clears `mask[port]`; returns its previous value.
    fn test_and_clear_mask(&mut self, dom: DomId, port: Port) -> bool;
    /// Sets the vCPU's `evtchn_pending_sel` bit `word`; returns its previous value.
    fn test_and_set_sel(&mut self, dom: DomId, vcpu: u32, word: u32) -> bool;
    /// Sets the vCPU's `evtchn_upcall_pending`.
    fn set_upcall_pending(&mut self, dom: DomId, vcpu: u32);
    /// Clears the vCPU's whole `evtchn_pending_sel`.
    fn clear_sel(&mut self, dom: DomId, vcpu: u32);

    /// FIFO ABI: atomic operations on the aligned 32-bit word at byte `off` of guest frame
    /// `m`, one the domain's FIFO state holds (a control block's page or an event-array
    /// page, each held with a writable type reference). `fetch_and` keeps the bits of `mask`.
    fn word_fetch_or(&mut self, m: Mfn, off: usize, bits: u32) -> u32;
    fn word_fetch_and(&mut self, m: Mfn, off: usize, mask: u32) -> u32;
    fn word_load(&self, m: Mfn, off: usize) -> u32;
    /// Compare-and-swap: `Err(current)` if the word was not `old`.
    fn word_cas(&mut self, m: Mfn, off: usize, old: u32, new: u32) -> Result<(), u32>;
    fn word_store(&mut self, m: Mfn, off: usize, v: u32);
}

/// A vCPU that must be woken or interrupted (it has a new unmasked event).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Kick {
    pub dom: DomId,
    pub vcpu: u32,
}

/// One domain's ports.
#[derive(Clone, Debug)]
pub struct DomainEvents {
    chans: Vec<Chan>,
    /// Ports `1..=max_port` exist: at least every port allocated so far ...
    max_port: Port,
    /// ... and new ones are allocated up to `limit` (`set_max_port`).
    limit: Port,
    nr_vcpus: u32,
    /// (VIRQ, vCPU) → port: a per-vCPU VIRQ under the vCPU it is bound to, a global one
    /// always under vCPU 0 (as Xen's `virq_to_evtchn` of vCPU 0), whichever vCPU
    /// `bind_vcpu` moved its notification to ([`virq_key`]).
    virqs: BTreeMap<(u32, u32), Port>,
    /// PIRQ → port.
    pirqs: BTreeMap<u32, Port>,
    /// The FIFO ABI's state once `init_control` switched the domain to it (2-level: None).
    fifo: Option<fifo::Fifo>,
}

/// The `virqs` key of `virq` notified on `vcpu`.
fn virq_key(virq: u32, vcpu: u32) -> (u32, u32) {
    (virq, if virq_is_per_vcpu(virq) { vcpu } else { 0 })
}

/// Event-channel state of every domain.
#[derive(Default, Debug)]
pub struct Events {
    doms: BTreeMap<DomId, DomainEvents>,
}

/// What `status` reports.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub status: u32,
    pub vcpu: u32,
    /// unbound: remote domain; interdomain: (remote domain, remote port); virq: virq.
    pub a: u32,
    pub b: u32,
}

/// The domains an operation reaches: every domain (host tests, [`Events`]) or just the one
/// or two whose locks the caller holds ([`Pair`]). An operation that needs a domain the
/// table does not hold fails with -ESRCH, so a caller must lock every domain the
/// operation names: the port's own domain and, for interdomain work, the peer
/// ([`DomainEvents::peer`] tells which).
pub trait Table {
    fn ports(&self, dom: DomId) -> Option<&DomainEvents>;
    fn ports_mut(&mut self, dom: DomId) -> Option<&mut DomainEvents>;


    /// `alloc_unbound`: a port in `dom` that `remote` may bind to. `remote` need not exist
    /// (as Xen, which never looks it up: a frontend may offer a port to a backend domain
    /// that is not there, and that id may be a later domain's).
    fn alloc_unbound(&mut self, dom: DomId, remote: DomId) -> Result<Port, Errno> {
        let p = free_port(self, dom)?;
        fresh(self, dom, p, State::Unbound { remote }, 0)?;
        Ok(p)
    }

    /// `bind_interdomain`: connects a new port of `dom` to `remote`'s unbound `remote_port`
    /// (which must accept `dom`). The new local port is set pending at once, as Xen does.
    fn bind_interdomain(
        &mut self,
        dom: DomId,
        remote: DomId,
        remote_port: Port,
        bits: &mut dyn Bits,
    ) -> Result<(Port, Option<Kick>), Errno> {
        d(self, dom)?;
        let rc = chan(self, remote, remote_port)?;
        if rc.state != (State::Unbound { remote: dom }) {
            return Err(Errno::EINVAL);
        }
        let p = free_port(self, dom)?;
        if dom == remote && p == remote_port {
            return Err(Errno::EINVAL);
        }
        fresh(self, dom, p, State::Interdomain { remote, remote_port }, 0)?;
        set(self, remote, remote_port, Chan { state: State::Interdomain { remote: dom, remote_port: p }, ..rc })?;
        let kick = raise(self, dom, p, bits)?;
        Ok((p, kick))
    }

    /// `bind_virq`.
    fn bind_virq(&mut self, dom: DomId, virq: u32, vcpu: u32) -> Result<Port, Errno> {
        if virq >= NR_VIRQS {
            return Err(Errno::EINVAL);
        }
        if !virq_is_per_vcpu(virq) && vcpu != 0 {
            return Err(Errno::EINVAL);
        }
        check_vcpu(self, dom, vcpu)?;
        if d(self, dom)?.virqs.contains_key(&virq_key(virq, vcpu)) {
            return Err(Errno::EEXIST);
        }
        let p = free_port(self, dom)?;
        fresh(self, dom, p, State::Virq { virq }, vcpu)?;
        dm(self, dom)?.virqs.insert(virq_key(virq, vcpu), p);
        Ok(p)
    }

    /// `bind_pirq` of a PIRQ the caller checked is mapped to `dom` (-EEXIST: already bound).
    fn bind_pirq(&mut self, dom: DomId, pirq: u32) -> Result<Port, Errno> {
        if d(self, dom)?.pirqs.contains_key(&pirq) {
            return Err(Errno::EEXIST);
        }
        let p = free_port(self, dom)?;
        fresh(self, dom, p, State::Pirq { pirq }, 0)?;
        dm(self, dom)?.pirqs.insert(pirq, p);
        Ok(p)
    }

    /// Raises PIRQ `pirq` of `dom` (from the hypervisor's interrupt handler); dropped if
    /// no port is bound to it.
    fn send_pirq(&mut self, dom: DomId, pirq: u32, bits: &mut dyn Bits) -> Option<Kick> {
        let p = *d(self, dom).ok()?.pirqs.get(&pirq)?;
        raise(self, dom, p, bits).ok().flatten()
    }

    /// `bind_ipi`.
    fn bind_ipi(&mut self, dom: DomId, vcpu: u32) -> Result<Port, Errno> {
        check_vcpu(self, dom, vcpu)?;
        let p = free_port(self, dom)?;
        fresh(self, dom, p, State::Ipi, vcpu)?;
        Ok(p)
    }

    /// `close`. The peer of an interdomain port goes back to unbound.
    fn close(&mut self, dom: DomId, port: Port, bits: &mut dyn Bits) -> Result<(), Errno> {
        let c = chan(self, dom, port)?;
        match c.state {
            State::Free => return Err(Errno::EINVAL),
            State::Interdomain { remote, remote_port } => {
                // The peer is always there (a domain is removed only after its ports are
                // closed); a table without it is a caller that did not lock it: refused
                // before anything changes.
                let rc = chan(self, remote, remote_port)?;
                set(self, remote, remote_port, Chan { state: State::Unbound { remote: dom }, ..rc })?;
            }
            State::Virq { virq } => {
                dm(self, dom)?.virqs.remove(&virq_key(virq, c.vcpu));
            }
            State::Pirq { pirq } => {
                dm(self, dom)?.pirqs.remove(&pirq);
            }
            _ => {}
        }
        set(self, dom, port, Chan { state: State::Free, vcpu: 0, saved: false, ..c })?;
        match &d(self, dom)?.fifo {
            Some(f) => f.clear_pending(port, bits),
            None => bits.clear_pending(dom, port),
        }
        Ok(())
    }


    /// `send` on `port` of `dom`.
    fn send(&mut self, dom: DomId, port: Port, bits: &mut dyn Bits) -> Result<Option<Kick>, Errno> {
        match chan(self, dom, port)?.state {
            State::Interdomain { remote, remote_port } => raise(self, remote, remote_port, bits),
            State::Ipi => raise(self, dom, port, bits),
            State::Unbound { .. } => Ok(None),
            _ => Err(Errno::EINVAL),
        }
    }

    /// Raises a VIRQ (from the hypervisor). Unbound VIRQs are dropped.
    fn send_virq(&mut self, dom: DomId, virq: u32, vcpu: u32, bits: &mut dyn Bits) -> Option<Kick> {
        let p = *d(self, dom).ok()?.virqs.get(&virq_key(virq, vcpu))?;
        raise(self, dom, p, bits).ok().flatten()
    }

    /// `unmask`: clears the mask and, if the port is pending, raises the upcall.
    fn unmask(&mut self, dom: DomId, port: Port, bits: &mut dyn Bits) -> Result<Option<Kick>, Errno> {
        let c = chan(self, dom, port)?;
        if d(self, dom)?.fifo.is_some() {
            return Ok(fifo::unmask(dm(self, dom)?, dom, port, bits));
        }
        if bits.test_and_clear_mask(dom, port) && bits.is_pending(dom, port) {
            return Ok(notify(self, dom, c.vcpu, port, bits));
        }
        Ok(None)
    }

    /// `bind_vcpu`: retargets notifications (not for per-vCPU VIRQs or IPIs). An event
    /// already pending and unmasked is re-announced on the new vCPU, so none is lost.
    fn bind_vcpu(&mut self, dom: DomId, port: Port, vcpu: u32, bits: &mut dyn Bits) -> Result<Option<Kick>, Errno> {
        check_vcpu(self, dom, vcpu)?;
        let c = chan(self, dom, port)?;
        match c.state {
            State::Unbound { .. } | State::Interdomain { .. } | State::Pirq { .. } => {}
            // A global VIRQ stays under vCPU 0's key: only its notification moves.
            State::Virq { virq } if !virq_is_per_vcpu(virq) => {}
            _ => return Err(Errno::EINVAL),
        }
        set(self, dom, port, Chan { vcpu, ..c })?;
        if d(self, dom)?.fifo.is_some() {
            // Only the vCPU changes (as Xen): a queued event stays on the old vCPU's queue,
            // and one pending but unlinked is one its consumer is handling right now
            // (queueing it here too would deliver it twice). The next event goes here.
            return Ok(None);
        }
        if bits.is_pending(dom, port) && !bits.is_masked(dom, port) {
            return Ok(notify(self, dom, vcpu, port, bits));
        }
        Ok(None)
    }

    /// `status` of `port` in `dom`.
    fn status(&self, dom: DomId, port: Port) -> Result<Status, Errno> {
        let c = chan(self, dom, port)?;
        let (status, a, b) = match c.state {
            State::Free => (EVTCHNSTAT_CLOSED, 0, 0),
            State::Unbound { remote } => (EVTCHNSTAT_UNBOUND, remote as u32, 0),
            State::Interdomain { remote, remote_port } => (EVTCHNSTAT_INTERDOMAIN, remote as u32, remote_port),
            State::Virq { virq } => (EVTCHNSTAT_VIRQ, virq, 0),
            State::Ipi => (EVTCHNSTAT_IPI, 0, 0),
            State::Pirq { pirq } => (EVTCHNSTAT_PIRQ, pirq, 0),
        };
        Ok(Status { status, vcpu: c.vcpu, a, b })
    }

    /// `EVTCHNOP_init_control`: registers vCPU `vcpu`'s FIFO control block at byte `offset`
    /// of `page` (a frame of `dom` the caller holds a writable type reference to, kept by
    /// the FIFO state from now on; on an error it is not kept). The first one switches the
    /// domain to the FIFO ABI: each port's priority becomes the default and a port pending
    /// in the 2-level bitmap moves out of it, pending again once an array page holds its word. -ENOENT: no
    /// such vCPU; -EINVAL: a bad offset, or the vCPU has its block already.
    fn init_control(&mut self, dom: DomId, vcpu: u32, page: Mfn, offset: u32, bits: &mut dyn Bits) -> Result<(), Errno> {
        let de = dm(self, dom)?;
        check_control(de.nr_vcpus, vcpu, offset)?;
        if de.fifo.as_ref().is_some_and(|f| f.has_control(vcpu)) {
            return Err(Errno::EINVAL);
        }
        if de.fifo.is_none() {
            for (p, c) in de.chans.iter_mut().enumerate().skip(1) {
                c.prio = guest_abi::evtchn::fifo::PRIORITY_DEFAULT;
                // Moved, not copied: left set, the bit would hold off the port's next
                // event after a return to the 2-level ABI.
                c.saved = c.state != State::Free && bits.is_pending(dom, p as Port);
                if c.saved {
                    bits.clear_pending(dom, p as Port);
                }
                c.last = (0, 0);
            }
        }
        let n = de.nr_vcpus;
        de.fifo.get_or_insert_with(|| fifo::Fifo::new(n)).set_control(vcpu, page, offset);
        Ok(())
    }

    /// Whether `EVTCHNOP_expand_array` may add a page: -EOPNOTSUPP under the 2-level ABI,
    /// -ENOSPC once every port the ABI can name has its word.
    fn can_expand(&self, dom: DomId) -> Result<(), Errno> {
        match &d(self, dom)?.fifo {
            None => Err(Errno::EOPNOTSUPP),
            Some(f) if f.pages() >= guest_abi::evtchn::fifo::MAX_ARRAY_PAGES => Err(Errno::ENOSPC),
            Some(_) => Ok(()),
        }
    }

    /// `EVTCHNOP_expand_array`: `page` (held as for [`Table::init_control`]) becomes the
    /// next event-array page; events saved for its ports are raised now. The vCPUs to
    /// notify.
    fn expand_array(&mut self, dom: DomId, page: Mfn, bits: &mut dyn Bits) -> Result<Vec<Kick>, Errno> {
        self.can_expand(dom)?;
        let de = dm(self, dom)?;
        let first = de.fifo.as_mut().map(|f| f.add_page(page)).ok_or(Errno::EOPNOTSUPP)?;
        let mut kicks = Vec::new();
        let end = (first + guest_abi::evtchn::fifo::WORDS_PER_PAGE).min(de.chans.len() as Port);
        for p in first..end {
            if de.chans[p as usize].saved {
                de.chans[p as usize].saved = false;
                if let Some(k) = fifo::set_pending(de, dom, p, bits) {
                    if !kicks.contains(&k) {
                        kicks.push(k);
                    }
                }
            }
        }
        Ok(kicks)
    }

    /// `EVTCHNOP_set_priority`: -EINVAL for a bad port or priority, -ENOSYS under the
    /// 2-level ABI (which has none). Events already queued stay where they are.
    fn set_priority(&mut self, dom: DomId, port: Port, prio: u32) -> Result<(), Errno> {
        let c = chan(self, dom, port)?;
        if d(self, dom)?.fifo.is_none() {
            return Err(Errno::ENOSYS);
        }
        if prio > guest_abi::evtchn::fifo::PRIORITY_MIN {
            return Err(Errno::EINVAL);
        }
        set(self, dom, port, Chan { prio: prio as u8, ..c })
    }

    /// `reset`: closes every port of `dom`.
    fn reset(&mut self, dom: DomId, bits: &mut dyn Bits) -> Result<(), Errno> {
        let n = d(self, dom)?.chans.len() as Port;
        for p in 1..n {
            if chan(self, dom, p)?.state != State::Free {
                self.close(dom, p, bits)?;
            }
        }
        Ok(())
    }
}

/// Domain `dom`'s ports, or -ESRCH.
fn d<T: Table + ?Sized>(t: &T, dom: DomId) -> Result<&DomainEvents, Errno> {
    t.ports(dom).ok_or(Errno::ESRCH)
}

fn dm<T: Table + ?Sized>(t: &mut T, dom: DomId) -> Result<&mut DomainEvents, Errno> {
    t.ports_mut(dom).ok_or(Errno::ESRCH)
}

fn chan<T: Table + ?Sized>(t: &T, dom: DomId, port: Port) -> Result<Chan, Errno> {
    let d = d(t, dom)?;
    if port == 0 || port > d.max_port {
        return Err(Errno::EINVAL);
    }
    Ok(d.chans.get(port as usize).copied().unwrap_or(Chan::FREE))
}

fn set<T: Table + ?Sized>(t: &mut T, dom: DomId, port: Port, c: Chan) -> Result<(), Errno> {
    let d = dm(t, dom)?;
    if d.chans.len() <= port as usize {
        d.chans.resize(port as usize + 1, Chan::FREE);
    }
    d.chans[port as usize] = c;
    Ok(())
}

/// Makes free port `p` of `dom` a new `state` notifying `vcpu`: default priority, nothing
/// saved (the queue it was last linked on is kept: it may still be that queue's tail).
fn fresh<T: Table + ?Sized>(t: &mut T, dom: DomId, p: Port, state: State, vcpu: u32) -> Result<(), Errno> {
    let old = chan(t, dom, p)?;
    set(t, dom, p, Chan { state, vcpu, saved: false, prio: guest_abi::evtchn::fifo::PRIORITY_DEFAULT, last: old.last })
}

/// The lowest free port, or -ENOSPC.
fn free_port<T: Table + ?Sized>(t: &T, dom: DomId) -> Result<Port, Errno> {
    let d = d(t, dom)?;
    (1..=d.limit)
        .find(|&p| d.chans.get(p as usize).is_none_or(|c| c.state == State::Free))
        .ok_or(Errno::ENOSPC)
}

fn check_vcpu<T: Table + ?Sized>(t: &T, dom: DomId, vcpu: u32) -> Result<(), Errno> {
    if vcpu < d(t, dom)?.nr_vcpus {
        Ok(())
    } else {
        Err(Errno::ENOENT)
    }
}

/// Marks `port` of `dom` pending and works out whom to notify (Xen's 2-level order).
fn raise<T: Table + ?Sized>(t: &mut T, dom: DomId, port: Port, bits: &mut dyn Bits) -> Result<Option<Kick>, Errno> {
    let c = chan(t, dom, port)?;
    if d(t, dom)?.fifo.is_some() {
        return Ok(fifo::set_pending(dm(t, dom)?, dom, port, bits));
    }
    if bits.test_and_set_pending(dom, port) || bits.is_masked(dom, port) {
        return Ok(None);
    }
    Ok(notify(t, dom, c.vcpu, port, bits))
}

fn notify<T: Table + ?Sized>(_: &T, dom: DomId, vcpu: u32, port: Port, bits: &mut dyn Bits) -> Option<Kick> {
    if bits.test_and_set_sel(dom, vcpu, port / 64) {
        return None;
    }
    bits.set_upcall_pending(dom, vcpu);
    Some(Kick { dom, vcpu })
}

impl DomainEvents {
    /// A domain's table with ports `1..=max_port` (at most the 2-level limit), all free.
    pub fn new(max_port: Port, nr_vcpus: u32) -> DomainEvents {
        let max_port = max_port.clamp(1, NR_EVTCHN_2L - 1);
        DomainEvents { chans: Vec::new(), max_port, limit: max_port, nr_vcpus: nr_vcpus.min(MAX_VCPUS as u32), virqs: BTreeMap::new(), pirqs: BTreeMap::new(), fifo: None }
    }

    /// `DOMCTL_set_max_evtchn`: new ports are allocated up to `max_port` (at most the
    /// 2-level limit) from now on; ports in use above it stay usable until closed (as Xen:
    /// the limit bounds allocation only).
    pub fn set_max_port(&mut self, max_port: Port) {
        self.limit = max_port.clamp(1, NR_EVTCHN_2L - 1);
        let highest = self.used().last().unwrap_or(0);
        self.max_port = self.limit.max(highest);
    }

    /// The other domain an operation on `port` reaches: the peer of an interdomain port,
    /// the domain an unbound port waits for (None for any other port, or a bad one).
    pub fn peer(&self, port: Port) -> Option<DomId> {
        match self.chans.get(port as usize)?.state {
            State::Interdomain { remote, .. } | State::Unbound { remote } => Some(remote),
            _ => None,
        }
    }

    /// The PIRQ bound to `port`, if it is a PIRQ port.
    pub fn pirq_of(&self, port: Port) -> Option<u32> {
        match self.chans.get(port as usize)?.state {
            State::Pirq { pirq } => Some(pirq),
            _ => None,
        }
    }

    /// Is `port` pending, in the ABI the domain uses (a poller's wake-up condition)?
    pub fn is_pending(&self, dom: DomId, port: Port, bits: &dyn Bits) -> bool {
        match &self.fifo {
            Some(f) => f.is_pending(port, bits),
            None => bits.is_pending(dom, port),
        }
    }

    /// Does the domain use the FIFO ABI?
    pub fn is_fifo(&self) -> bool {
        self.fifo.is_some()
    }

    /// The frames the FIFO state holds (control blocks' pages, event-array pages): one
    /// writable type reference each, once per time listed.
    pub fn fifo_frames(&self) -> Vec<Mfn> {
        self.fifo.as_ref().map(|f| f.frames()).unwrap_or_default()
    }

    /// Back to the 2-level ABI (`EVTCHNOP_reset`, a domain's teardown): the frames whose
    /// references the caller now drops ([`DomainEvents::fifo_frames`]). Every vCPU's
    /// selector is cleared: under FIFO the guest never consumed it, and a bit left set would
    /// keep the next 2-level event in its word from raising an upcall.
    pub fn fifo_destroy(&mut self, dom: DomId, bits: &mut dyn Bits) -> Vec<Mfn> {
        let frames = self.fifo_frames();
        if self.fifo.take().is_some() {
            for v in 0..self.nr_vcpus {
                bits.clear_sel(dom, v);
            }
        }
        for c in &mut self.chans {
            c.saved = false;
            c.last = (0, 0);
        }
        frames
    }

    /// What port `p` is bound to and the vCPU it notifies (`None` past the table).
    pub fn chan(&self, p: Port) -> Option<(State, u32)> {
        self.chans.get(p as usize).map(|c| (c.state, c.vcpu))
    }

    /// The ports in use, lowest first.
    pub fn used(&self) -> impl Iterator<Item = Port> + '_ {
        self.chans.iter().enumerate().filter(|(_, c)| c.state != State::Free).map(|(p, _)| p as Port)
    }
}

impl Table for Events {
    fn ports(&self, dom: DomId) -> Option<&DomainEvents> {
        self.doms.get(&dom)
    }
    fn ports_mut(&mut self, dom: DomId) -> Option<&mut DomainEvents> {
        self.doms.get_mut(&dom)
    }
}

/// One domain's table, or two (in any order): what a caller holding their locks reaches.
pub struct Pair<'a> {
    pub a: (DomId, &'a mut DomainEvents),
    pub b: Option<(DomId, &'a mut DomainEvents)>,
}

impl Table for Pair<'_> {
    fn ports(&self, dom: DomId) -> Option<&DomainEvents> {
        if self.a.0 == dom {
            return Some(&*self.a.1);
        }
        self.b.as_ref().filter(|b| b.0 == dom).map(|b| &*b.1)
    }
    fn ports_mut(&mut self, dom: DomId) -> Option<&mut DomainEvents> {
        if self.a.0 == dom {
            return Some(&mut *self.a.1);
        }
        self.b.as_mut().filter(|b| b.0 == dom).map(|b| &mut *b.1)
    }
}

impl Events {
    /// Registers a domain with ports `1..=max_port` (at most the 2-level limit).
    pub fn add_domain(&mut self, dom: DomId, max_port: Port, nr_vcpus: u32) {
        self.doms.insert(dom, DomainEvents::new(max_port, nr_vcpus));
    }

    /// Forgets a domain, closing its ports first (peers return to unbound).
    pub fn remove_domain(&mut self, dom: DomId, bits: &mut dyn Bits) {
        let _ = self.reset(dom, bits);
        self.doms.remove(&dom);
    }

    /// Checks the cross-domain invariants (for tests and debug builds).
    pub fn check(&self) -> Result<(), &'static str> {
        for (&dom, d) in &self.doms {
            if let Some(f) = &d.fifo {
                f.check()?;
            }
            for (p, c) in d.chans.iter().enumerate() {
                match c.state {
                    State::Interdomain { remote, remote_port } => {
                        let back = chan(self, remote, remote_port).map_err(|_| "dangling peer")?;
                        if back.state != (State::Interdomain { remote: dom, remote_port: p as Port }) {
                            return Err("peer does not point back");
                        }
                    }
                    State::Virq { virq } if d.virqs.get(&virq_key(virq, c.vcpu)) != Some(&(p as Port)) => {
                        return Err("VIRQ table disagrees");
                    }
                    _ => {}
                }
            }
            for (&pirq, &p) in &d.pirqs {
                if d.chans.get(p as usize).map(|c| c.state) != Some(State::Pirq { pirq }) {
                    return Err("PIRQ entry without a bound port");
                }
            }
            for (&(virq, vcpu), &p) in &d.virqs {
                if !matches!(d.chans.get(p as usize), Some(Chan { state: State::Virq { virq: w }, vcpu: v, .. }) if *w == virq && virq_key(virq, *v) == (virq, vcpu)) {
                    return Err("VIRQ entry without a bound port");
                }
            }
        }
        Ok(())
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap as Map, BTreeSet};
    use std::vec;

    /// Plain-array model of the shared_info bits.
    #[derive(Default)]
    struct FakeBits {
        pending: BTreeSet<(DomId, Port)>,
        masked: BTreeSet<(DomId, Port)>,
        sel: BTreeSet<(DomId, u32, u32)>,
        upcall: Map<(DomId, u32), bool>,
        /// Guest frames' 32-bit words (FIFO), by (frame, byte offset).
        words: Map<(u64, usize), u32>,
    }

    impl Bits for FakeBits {
        fn test_and_set_pending(&mut self, d: DomId, p: Port) -> bool {
            !self.pending.insert((d, p))
        }
        fn clear_pending(&mut self, d: DomId, p: Port) {
            self.pending.remove(&(d, p));
        }
        fn is_pending(&self, d: DomId, p: Port) -> bool {
            self.pending.contains(&(d, p))
        }
        fn is_masked(&self, d: DomId, p: Port) -> bool {
            self.masked.contains(&(d, p))
        }
        fn test_and_clear_mask(&mut self, d: DomId, p: Port) -> bool {
            self.masked.remove(&(d, p))
        }
        fn test_and_set_sel(&mut self, d: DomId, v: u32, w: u32) -> bool {
            !self.sel.insert((d, v, w))
        }
        fn set_upcall_pending(&mut self, d: DomId, v: u32) {
            self.upcall.insert((d, v), true);
        }
        fn clear_sel(&mut self, d: DomId, v: u32) {
            self.sel.retain(|&(dd, vv, _)| !(dd == d && vv == v));
        }
        fn word_fetch_or(&mut self, m: Mfn, off: usize, bits: u32) -> u32 {
            let w = self.words.entry((m.0, off)).or_insert(0);
            let old = *w;
            *w |= bits;
            old
        }
        fn word_fetch_and(&mut self, m: Mfn, off: usize, mask: u32) -> u32 {
            let w = self.words.entry((m.0, off)).or_insert(0);
            let old = *w;
            *w &= mask;
            old
        }
        fn word_load(&self, m: Mfn, off: usize) -> u32 {
            self.words.get(&(m.0, off)).copied().unwrap_or(0)
        }
        fn word_cas(&mut self, m: Mfn, off: usize, old: u32, new: u32) -> Result<(), u32> {
            let w = self.words.entry((m.0, off)).or_insert(0);
            if *w != old {
                return Err(*w);
            }
            *w = new;
            Ok(())
        }
        fn word_store(&mut self, m: Mfn, off: usize, v: u32) {
            self.words.insert((m.0, off), v);
        }
    }

    fn two() -> (Events, FakeBits) {
        let mut e = Events::default();
        e.add_domain(0, 1023, 2);
        e.add_domain(1, 64, 1);
        (e, FakeBits::default())
    }

    #[test]
    fn interdomain_round_trip() {
        let (mut e, mut b) = two();
        let p1 = e.alloc_unbound(1, 0).unwrap();
        assert_eq!(p1, 1);
        assert_eq!(e.status(1, p1).unwrap(), Status { status: EVTCHNSTAT_UNBOUND, vcpu: 0, a: 0, b: 0 });
        // dom 2 does not exist; dom 0 may bind, dom 1 may not bind to its own port for dom 0.
        assert_eq!(e.bind_interdomain(2, 1, p1, &mut b), Err(Errno::ESRCH));
        let (p0, kick) = e.bind_interdomain(0, 1, p1, &mut b).unwrap();
        assert_eq!(kick, Some(Kick { dom: 0, vcpu: 0 }), "local port pending at bind");
        assert_eq!(e.status(0, p0).unwrap().status, EVTCHNSTAT_INTERDOMAIN);
        assert_eq!(e.bind_interdomain(0, 1, p1, &mut b), Err(Errno::EINVAL), "already bound");
        // Sending from dom 0 raises dom 1's port; a second send before the guest clears
        // anything sets no new upcall.
        assert_eq!(e.send(0, p0, &mut b).unwrap(), Some(Kick { dom: 1, vcpu: 0 }));
        assert_eq!(e.send(0, p0, &mut b).unwrap(), None);
        assert!(b.is_pending(1, p1));
        // Closing one end makes the other unbound (remote = the closer).
        e.close(0, p0, &mut b).unwrap();
        assert_eq!(e.status(1, p1).unwrap(), Status { status: EVTCHNSTAT_UNBOUND, vcpu: 0, a: 0, b: 0 });
        assert_eq!(e.close(0, p0, &mut b), Err(Errno::EINVAL));
        e.check().unwrap();
    }

    /// `set_max_port` bounds allocation only: ports in use above the new limit stay usable
    /// (and closable); raising it lets allocation go higher.
    #[test]
    fn max_port_bounds_allocation_only() {
        let (mut e, mut b) = two();
        for want in 1..=3 {
            assert_eq!(e.alloc_unbound(1, 0), Ok(want));
        }
        e.doms.get_mut(&1).unwrap().set_max_port(2);
        assert_eq!(e.alloc_unbound(1, 0), Err(Errno::ENOSPC));
        assert_eq!(e.status(1, 3).unwrap().status, EVTCHNSTAT_UNBOUND, "port 3 in use stays valid");
        e.close(1, 3, &mut b).unwrap();
        e.close(1, 1, &mut b).unwrap();
        assert_eq!(e.alloc_unbound(1, 0), Ok(1));
        assert_eq!(e.alloc_unbound(1, 0), Err(Errno::ENOSPC));
        e.doms.get_mut(&1).unwrap().set_max_port(100);
        assert_eq!(e.alloc_unbound(1, 0), Ok(3));
        assert_eq!(e.status(1, 100).unwrap().status, guest_abi::evtchn::EVTCHNSTAT_CLOSED);
        assert_eq!(e.status(1, 101), Err(Errno::EINVAL));
        e.check().unwrap();
    }

    #[test]
    fn masking_and_unmask() {
        let (mut e, mut b) = two();
        let p = e.bind_ipi(0, 1).unwrap();
        b.masked.insert((0, p));
        assert_eq!(e.send(0, p, &mut b).unwrap(), None, "masked: pending only");
        assert!(b.is_pending(0, p) && b.upcall.is_empty());
        assert_eq!(e.unmask(0, p, &mut b).unwrap(), Some(Kick { dom: 0, vcpu: 1 }));
        assert_eq!(b.upcall.get(&(0, 1)), Some(&true));
        assert!(b.sel.contains(&(0, 1, p / 64)));
    }

    /// A global VIRQ moved to another vCPU by `bind_vcpu` is still the one binding: raised
    /// as the hypervisor raises it (naming vCPU 0) it reaches the new vCPU, and it cannot be
    /// bound a second time.
    #[test]
    fn a_moved_global_virq_stays_bound_once() {
        let (mut e, mut b) = two();
        let c = e.bind_virq(0, VIRQ_DOM_EXC, 0).unwrap();
        e.bind_vcpu(0, c, 1, &mut b).unwrap();
        assert_eq!(e.bind_virq(0, VIRQ_DOM_EXC, 0), Err(Errno::EEXIST));
        assert_eq!(e.send_virq(0, VIRQ_DOM_EXC, 0, &mut b), Some(Kick { dom: 0, vcpu: 1 }));
        e.check().unwrap();
        e.close(0, c, &mut b).unwrap();
        assert!(e.bind_virq(0, VIRQ_DOM_EXC, 0).is_ok(), "bindable again once closed");
        e.check().unwrap();
    }

    #[test]
    fn pirq_ports() {
        let (mut e, mut b) = two();
        let p = e.bind_pirq(0, 10).unwrap();
        assert_eq!(e.bind_pirq(0, 10), Err(Errno::EEXIST));
        assert_eq!(e.status(0, p).unwrap(), Status { status: EVTCHNSTAT_PIRQ, vcpu: 0, a: 10, b: 0 });
        assert_eq!(e.ports(0).unwrap().pirq_of(p), Some(10));
        assert_eq!(e.send(0, p, &mut b), Err(Errno::EINVAL), "PIRQ ports cannot be sent");
        assert_eq!(e.send_pirq(0, 11, &mut b), None, "unbound PIRQ dropped");
        assert_eq!(e.send_pirq(0, 10, &mut b), Some(Kick { dom: 0, vcpu: 0 }));
        e.bind_vcpu(0, p, 1, &mut b).unwrap();
        e.check().unwrap();
        e.close(0, p, &mut b).unwrap();
        assert_eq!(e.send_pirq(0, 10, &mut b), None);
        assert!(e.bind_pirq(0, 10).is_ok(), "bindable again once closed");
        e.check().unwrap();
    }

    #[test]
    fn virq_rules() {
        let (mut e, mut b) = two();
        let t0 = e.bind_virq(0, VIRQ_TIMER, 0).unwrap();
        let t1 = e.bind_virq(0, VIRQ_TIMER, 1).unwrap();
        assert_ne!(t0, t1);
        assert_eq!(e.bind_virq(0, VIRQ_TIMER, 1), Err(Errno::EEXIST));
        assert_eq!(e.bind_virq(0, VIRQ_TIMER, 2), Err(Errno::ENOENT), "no vCPU 2");
        assert_eq!(e.bind_virq(0, VIRQ_CONSOLE, 1), Err(Errno::EINVAL), "global VIRQ on vCPU 1");
        assert_eq!(e.bind_virq(0, 24, 0), Err(Errno::EINVAL));
        assert_eq!(e.bind_virq(0, u32::MAX, 0), Err(Errno::EINVAL));
        let c = e.bind_virq(0, VIRQ_CONSOLE, 0).unwrap();
        assert_eq!(e.send_virq(0, VIRQ_TIMER, 1, &mut b), Some(Kick { dom: 0, vcpu: 1 }));
        assert_eq!(e.send(0, t0, &mut b), Err(Errno::EINVAL), "VIRQ ports cannot be sent");
        assert_eq!(e.bind_vcpu(0, t0, 1, &mut b), Err(Errno::EINVAL), "per-vCPU VIRQ stays");
        e.bind_vcpu(0, c, 1, &mut b).unwrap();
        assert_eq!(e.send_virq(0, VIRQ_CONSOLE, 1, &mut b), None, "vCPU 1's selector word is already pending");
        assert!(b.is_pending(0, c));
        assert_eq!(e.status(0, c).unwrap(), Status { status: EVTCHNSTAT_VIRQ, vcpu: 1, a: VIRQ_CONSOLE, b: 0 });
        e.close(0, c, &mut b).unwrap();
        assert_eq!(e.send_virq(0, VIRQ_CONSOLE, 1, &mut b), None);
        e.check().unwrap();
    }

    #[test]
    fn bad_ports_and_limits() {
        let (mut e, mut b) = two();
        for p in [0, 65, 4096, u32::MAX] {
            assert_eq!(e.send(1, p, &mut b), Err(Errno::EINVAL), "port {p}");
            assert_eq!(e.status(1, p).map(|_| ()), Err(Errno::EINVAL));
        }
        assert_eq!(e.send(1, 5, &mut b), Err(Errno::EINVAL), "closed port");
        for _ in 0..64 {
            e.bind_ipi(1, 0).unwrap();
        }
        assert_eq!(e.bind_ipi(1, 0), Err(Errno::ENOSPC), "per-domain port limit");
        e.reset(1, &mut b).unwrap();
        assert_eq!(e.bind_ipi(1, 0), Ok(1));
        assert_eq!(e.alloc_unbound(1, 9), Ok(2), "a remote that does not exist (as Xen)");
        assert_eq!(e.alloc_unbound(9, 1), Err(Errno::ESRCH));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Alloc(DomId, DomId),
        Bind(DomId, DomId, Port),
        Virq(DomId, u32, u32),
        Ipi(DomId, u32),
        Close(DomId, Port),
        Send(DomId, Port),
        Mask(DomId, Port),
        Unmask(DomId, Port),
        BindVcpu(DomId, Port, u32),
        Reset(DomId),
        Ack(DomId, u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        let d = 0u16..3;
        let p = 0u32..12;
        prop_oneof![
            (d.clone(), d.clone()).prop_map(|(a, b)| Op::Alloc(a, b)),
            (d.clone(), d.clone(), p.clone()).prop_map(|(a, b, c)| Op::Bind(a, b, c)),
            (d.clone(), 0u32..5, 0u32..3).prop_map(|(a, b, c)| Op::Virq(a, b, c)),
            (d.clone(), 0u32..3).prop_map(|(a, b)| Op::Ipi(a, b)),
            (d.clone(), p.clone()).prop_map(|(a, b)| Op::Close(a, b)),
            (d.clone(), p.clone()).prop_map(|(a, b)| Op::Send(a, b)),
            (d.clone(), p.clone()).prop_map(|(a, b)| Op::Mask(a, b)),
            (d.clone(), p.clone()).prop_map(|(a, b)| Op::Unmask(a, b)),
            (d.clone(), p.clone(), 0u32..3).prop_map(|(a, b, c)| Op::BindVcpu(a, b, c)),
            d.clone().prop_map(Op::Reset),
            (d, 0u32..3).prop_map(|(a, b)| Op::Ack(a, b)),
        ]
    }

    /// Runs `f` on a [`Pair`] of `a` (and `b`) taken out of `m`, as the hypervisor does
    /// with the two domains' locks held.
    fn on_pair<R>(m: &mut Map<DomId, DomainEvents>, a: DomId, b: Option<DomId>, f: impl FnOnce(&mut Pair<'_>) -> R) -> Option<R> {
        let mut da = m.remove(&a)?;
        let b = b.filter(|&b| b != a);
        let mut db = match b {
            Some(b) => match m.remove(&b) {
                Some(d) => Some(d),
                None => {
                    m.insert(a, da);
                    return None;
                }
            },
            None => None,
        };
        let r = f(&mut Pair { a: (a, &mut da), b: b.zip(db.as_mut()) });
        m.insert(a, da);
        if let (Some(b), Some(d)) = (b, db) {
            m.insert(b, d);
        }
        Some(r)
    }

    proptest! {
        /// Random operation sequences keep the bindings consistent, and no unmasked pending
        /// event is ever left without a pending upcall on its vCPU (no lost wake-up).
        #[test]
        fn random_sequences(ops in prop::collection::vec(op(), 1..300)) {
            let mut e = Events::default();
            e.add_domain(0, 10, 2);
            e.add_domain(1, 10, 2);
            e.add_domain(2, 10, 1);
            let mut b = FakeBits::default();
            for o in ops {
                let _ = match o {
                    Op::Alloc(a, r) => e.alloc_unbound(a, r).map(|_| ()),
                    Op::Bind(a, r, p) => e.bind_interdomain(a, r, p, &mut b).map(|_| ()),
                    Op::Virq(a, v, c) => e.bind_virq(a, v, c).map(|_| ()),
                    Op::Ipi(a, c) => e.bind_ipi(a, c).map(|_| ()),
                    Op::Close(a, p) => e.close(a, p, &mut b),
                    Op::Send(a, p) => e.send(a, p, &mut b).map(|_| ()),
                    Op::Mask(a, p) => { b.masked.insert((a, p)); Ok(()) }
                    Op::Unmask(a, p) => e.unmask(a, p, &mut b).map(|_| ()),
                    Op::BindVcpu(a, p, v) => e.bind_vcpu(a, p, v, &mut b).map(|_| ()),
                    Op::Reset(a) => e.reset(a, &mut b),
                    Op::Ack(a, v) => {
                        // The guest's upcall handler: clear upcall_pending and the selector,
                        // then handle and clear every unmasked pending port of that vCPU.
                        b.upcall.remove(&(a, v));
                        b.sel.retain(|&(d, vv, _)| !(d == a && vv == v));
                        let mine: Vec<Port> = b.pending.iter().filter(|&&(d, p)| d == a && !b.masked.contains(&(d, p))
                            && e.status(a, p).map(|s| s.vcpu == v).unwrap_or(false)).map(|&(_, p)| p).collect();
                        for p in mine { b.pending.remove(&(a, p)); }
                        Ok(())
                    }
                };
                prop_assert!(e.check().is_ok(), "{:?}", e.check());
                // No lost wake-up: every pending, unmasked, bound port has its selector bit
                // and its vCPU's upcall flag set.
                for &(d, p) in &b.pending {
                    if b.masked.contains(&(d, p)) { continue; }
                    let Ok(s) = e.status(d, p) else { continue };
                    if s.status == EVTCHNSTAT_CLOSED { continue; }
                    prop_assert!(b.sel.contains(&(d, s.vcpu, p / 64)), "sel bit missing for port {} of d{}", p, d);
                    prop_assert_eq!(b.upcall.get(&(d, s.vcpu)), Some(&true), "no upcall for port {} of d{}", p, d);
                }
            }
        }

        /// Each operation on just the domains it names (its own, the other domain of its
        /// arguments, and the peer of its port, as [`DomainEvents::peer`] reports) gives the
        /// same result as on every domain: locking those is enough.
        #[test]
        fn pairs_reach_enough(ops in prop::collection::vec(op(), 1..200)) {
            let mut e = Events::default();
            let mut m = Map::new();
            for (d, n) in [(0u16, 2u32), (1, 2), (2, 1)] {
                e.add_domain(d, 10, n);
                m.insert(d, DomainEvents::new(10, n));
            }
            let (mut b1, mut b2) = (FakeBits::default(), FakeBits::default());
            for o in ops {
                let peer = |m: &Map<DomId, DomainEvents>, a: DomId, p: Port| m.get(&a).and_then(|d| d.peer(p));
                let (want, got) = match o {
                    Op::Alloc(a, r) => (e.alloc_unbound(a, r).map(|_| ()), on_pair(&mut m, a, Some(r), |t| t.alloc_unbound(a, r).map(|_| ()))),
                    Op::Bind(a, r, p) => (e.bind_interdomain(a, r, p, &mut b1).map(|_| ()), on_pair(&mut m, a, Some(r), |t| t.bind_interdomain(a, r, p, &mut b2).map(|_| ()))),
                    Op::Virq(a, v, c) => (e.bind_virq(a, v, c).map(|_| ()), on_pair(&mut m, a, None, |t| t.bind_virq(a, v, c).map(|_| ()))),
                    Op::Ipi(a, c) => (e.bind_ipi(a, c).map(|_| ()), on_pair(&mut m, a, None, |t| t.bind_ipi(a, c).map(|_| ()))),
                    Op::Close(a, p) => { let q = peer(&m, a, p); (e.close(a, p, &mut b1), on_pair(&mut m, a, q, |t| t.close(a, p, &mut b2))) }
                    Op::Send(a, p) => { let q = peer(&m, a, p); (e.send(a, p, &mut b1).map(|_| ()), on_pair(&mut m, a, q, |t| t.send(a, p, &mut b2).map(|_| ()))) }
                    Op::Unmask(a, p) => (e.unmask(a, p, &mut b1).map(|_| ()), on_pair(&mut m, a, None, |t| t.unmask(a, p, &mut b2).map(|_| ()))),
                    Op::BindVcpu(a, p, v) => (e.bind_vcpu(a, p, v, &mut b1).map(|_| ()), on_pair(&mut m, a, None, |t| t.bind_vcpu(a, p, v, &mut b2).map(|_| ()))),
                    Op::Reset(a) => {
                        let ports: Vec<Port> = m.get(&a).map(|d| d.used().collect()).unwrap_or_default();
                        let mut r = Ok(());
                        for p in ports {
                            let q = peer(&m, a, p);
                            if let Some(Err(x)) = on_pair(&mut m, a, q, |t| t.close(a, p, &mut b2)) { r = Err(x); }
                        }
                        (e.reset(a, &mut b1), Some(r))
                    }
                    Op::Mask(a, p) => { b1.masked.insert((a, p)); b2.masked.insert((a, p)); continue }
                    Op::Ack(..) => continue,
                };
                prop_assert_eq!(Some(want), got);
                for d in 0u16..3 {
                    for p in 0..12 {
                        prop_assert_eq!(e.status(d, p), on_pair(&mut m, d, None, |t| t.status(d, p)).unwrap());
                    }
                }
                prop_assert_eq!(&b1.pending, &b2.pending);
                prop_assert_eq!(&b1.upcall, &b2.upcall);
            }
        }
    }

    /// FIFO: the guest's side, as Linux's `events_fifo.c` consumes its queues.
    mod fifo_guest {
        use super::*;
        use guest_abi::evtchn::fifo::*;

        /// Control blocks are at frame 100 + vCPU, offset 64; array page i is frame 200 + i.
        pub const CTL_OFF: u32 = 64;
        pub fn ctl(v: u32) -> Mfn {
            Mfn(100 + v as u64)
        }
        pub fn page(i: usize) -> Mfn {
            Mfn(200 + i as u64)
        }
        pub fn word(p: Port) -> (Mfn, usize) {
            (page((p / WORDS_PER_PAGE) as usize), (p % WORDS_PER_PAGE) as usize * 4)
        }
        pub fn get(b: &FakeBits, p: Port) -> u32 {
            let (m, o) = word(p);
            b.word_load(m, o)
        }
        pub fn set_masked(b: &mut FakeBits, p: Port, on: bool) {
            let (m, o) = word(p);
            if on {
                b.word_fetch_or(m, o, MASKED);
            } else {
                b.word_fetch_and(m, o, !MASKED);
            }
        }

        /// One vCPU's consumer: its local queue heads.
        #[derive(Default, Clone)]
        pub struct Consumer {
            pub head: [Port; MAX_QUEUES],
        }

        impl Consumer {
            /// The upcall: takes `ready`, walks each ready queue from the highest priority,
            /// handles (clears PENDING of) each pending unmasked port. The ports handled, in
            /// order. Bounded, so garbage links cannot hang a test.
            pub fn run(&mut self, b: &mut FakeBits, dom: DomId, v: u32) -> Vec<Port> {
                b.upcall.remove(&(dom, v));
                let (cm, co) = (ctl(v), CTL_OFF as usize);
                let mut ready = b.word_fetch_and(cm, co + CONTROL_READY, 0);
                let mut out = Vec::new();
                for _ in 0..10_000 {
                    if ready == 0 {
                        break;
                    }
                    let q = ready.trailing_zeros() as usize;
                    let mut head = self.head[q];
                    if head == 0 {
                        head = b.word_load(cm, co + CONTROL_HEAD + 4 * q);
                    }
                    let port = head;
                    let (m, o) = word(port);
                    // clear_linked
                    let w = b.word_load(m, o);
                    b.word_store(m, o, w & !(LINKED | LINK_MASK));
                    let next = w & LINK_MASK;
                    if next == 0 {
                        ready &= !(1 << q);
                    }
                    if w & PENDING != 0 && w & MASKED == 0 {
                        b.word_fetch_and(m, o, !PENDING);
                        out.push(port);
                    }
                    self.head[q] = next;
                    ready |= b.word_fetch_and(cm, co + CONTROL_READY, 0);
                }
                out
            }
        }

        /// Switches `dom` to FIFO with every vCPU's block and `pages` array pages.
        pub fn setup(e: &mut Events, b: &mut FakeBits, dom: DomId, vcpus: u32, pages: usize) -> Vec<Kick> {
            for v in 0..vcpus {
                e.init_control(dom, v, ctl(v), CTL_OFF, b).unwrap();
            }
            let mut k = Vec::new();
            for i in 0..pages {
                k.extend(e.expand_array(dom, page(i), b).unwrap());
            }
            k
        }
    }

    #[test]
    fn fifo_init_control_errors() {
        use fifo_guest::*;
        use guest_abi::evtchn::fifo::*;
        let (mut e, mut b) = two();
        let p = e.bind_ipi(1, 0).unwrap();
        assert_eq!(e.set_priority(1, p, 3), Err(Errno::ENOSYS), "2-level: no priorities");
        assert_eq!(e.can_expand(1), Err(Errno::EOPNOTSUPP));
        assert_eq!(e.expand_array(1, page(0), &mut b), Err(Errno::EOPNOTSUPP));
        assert_eq!(e.init_control(1, 1, ctl(1), 0, &mut b), Err(Errno::ENOENT), "dom 1 has one vCPU");
        assert_eq!(e.init_control(1, u32::MAX, ctl(1), 0, &mut b), Err(Errno::ENOENT));
        for off in [4, 4096 - 64, 4096, u32::MAX] {
            assert_eq!(e.init_control(1, 0, ctl(0), off, &mut b), Err(Errno::EINVAL), "offset {off}");
        }
        assert!(!e.doms[&1].is_fifo(), "still 2-level after the errors");
        e.init_control(1, 0, ctl(0), 4096 - 72, &mut b).unwrap();
        assert!(e.doms[&1].is_fifo());
        assert_eq!(e.init_control(1, 0, ctl(0), 0, &mut b), Err(Errno::EINVAL), "a second block");
        assert_eq!(e.set_priority(1, p, 16), Err(Errno::EINVAL));
        assert_eq!(e.set_priority(1, 60, 3), Ok(()), "a closed port in range (as Xen: a valid port)");
        assert_eq!(e.set_priority(1, 65, 3), Err(Errno::EINVAL), "past the limit");
        assert_eq!(e.set_priority(1, p, 15), Ok(()));
        assert_eq!(e.doms[&1].fifo_frames(), vec![ctl(0)]);
        for i in 0..MAX_ARRAY_PAGES {
            assert_eq!(e.expand_array(1, page(i), &mut b), Ok(vec![]));
        }
        assert_eq!(e.can_expand(1), Err(Errno::ENOSPC));
        assert_eq!(e.expand_array(1, page(999), &mut b), Err(Errno::ENOSPC));
        assert_eq!(e.doms[&1].fifo_frames().len(), 1 + MAX_ARRAY_PAGES);
        // A selector bit the 2-level guest left set before the switch goes with the switch
        // back: the next 2-level event raises its upcall.
        b.sel.insert((1, 0, p / 64));
        let frames = e.doms.get_mut(&1).unwrap().fifo_destroy(1, &mut b);
        assert_eq!(frames.len(), 1 + MAX_ARRAY_PAGES);
        assert!(!e.doms[&1].is_fifo() && e.doms[&1].fifo_frames().is_empty());
        // 2-level again.
        assert_eq!(e.send(1, p, &mut b).unwrap(), Some(Kick { dom: 1, vcpu: 0 }));
        assert!(b.is_pending(1, p));
        e.check().unwrap();
    }

    /// A port pending in the 2-level bitmap at the switch is pending again once an array
    /// page holds its word; one raised before that page exists likewise.
    #[test]
    fn fifo_carries_pending_events() {
        use fifo_guest::*;
        let (mut e, mut b) = two();
        let p = e.bind_ipi(0, 1).unwrap();
        e.send(0, p, &mut b).unwrap();
        for v in 0..2 {
            e.init_control(0, v, ctl(v), CTL_OFF, &mut b).unwrap();
        }
        assert!(!b.is_pending(0, p), "moved out of the 2-level bitmap");
        let q = e.bind_ipi(0, 0).unwrap();
        assert_eq!(e.send(0, q, &mut b).unwrap(), None, "no word yet: saved");
        assert!(!e.doms[&0].is_pending(0, q, &b));
        let mut kicks = e.expand_array(0, page(0), &mut b).unwrap();
        kicks.sort_by_key(|k| k.vcpu);
        assert_eq!(kicks, vec![Kick { dom: 0, vcpu: 0 }, Kick { dom: 0, vcpu: 1 }]);
        assert!(e.doms[&0].is_pending(0, p, &b) && e.doms[&0].is_pending(0, q, &b));
        assert_eq!(Consumer::default().run(&mut b, 0, 1), vec![p]);
        assert_eq!(Consumer::default().run(&mut b, 0, 0), vec![q]);
        assert!(!e.doms[&0].is_pending(0, p, &b));
        e.check().unwrap();
    }

    /// Queues are taken highest priority first and in raise order within one.
    #[test]
    fn fifo_priority_and_order() {
        use fifo_guest::*;
        let (mut e, mut b) = two();
        setup(&mut e, &mut b, 0, 2, 1);
        let ports: Vec<Port> = (0..6).map(|_| e.bind_ipi(0, 0).unwrap()).collect();
        e.set_priority(0, ports[4], 2).unwrap();
        e.set_priority(0, ports[5], 2).unwrap();
        e.set_priority(0, ports[0], 12).unwrap();
        let mut kicks = 0;
        for &p in &[ports[0], ports[3], ports[1], ports[5], ports[2], ports[4]] {
            kicks += e.send(0, p, &mut b).unwrap().is_some() as u32;
        }
        assert_eq!(kicks, 3, "one upcall per queue becoming ready");
        assert_eq!(b.upcall.get(&(0, 0)), Some(&true));
        assert_eq!(e.send(0, ports[3], &mut b).unwrap(), None, "pending already: no relink");
        let mut c = Consumer::default();
        assert_eq!(c.run(&mut b, 0, 0), vec![ports[5], ports[4], ports[3], ports[1], ports[2], ports[0]]);
        assert!(c.run(&mut b, 0, 0).is_empty());
        // A queue emptied by the guest takes events again (its stale tail is not linked).
        assert_eq!(e.send(0, ports[1], &mut b).unwrap(), Some(Kick { dom: 0, vcpu: 0 }));
        assert_eq!(e.send(0, ports[3], &mut b).unwrap(), None);
        assert_eq!(c.run(&mut b, 0, 0), vec![ports[1], ports[3]]);
        e.check().unwrap();
    }

    #[test]
    fn fifo_mask_and_unmask() {
        use fifo_guest::*;
        use guest_abi::evtchn::fifo::*;
        let (mut e, mut b) = two();
        setup(&mut e, &mut b, 0, 2, 1);
        let p = e.bind_ipi(0, 1).unwrap();
        set_masked(&mut b, p, true);
        assert_eq!(e.send(0, p, &mut b).unwrap(), None, "masked: pending only");
        assert!(e.doms[&0].is_pending(0, p, &b) && get(&b, p) & LINKED == 0);
        assert_eq!(e.unmask(0, p, &mut b).unwrap(), Some(Kick { dom: 0, vcpu: 1 }));
        assert_eq!(get(&b, p) & (MASKED | LINKED), LINKED);
        // Masked while queued: the guest drops it from its queue, leaving it pending;
        // unmasking queues it again.
        let mut c = Consumer::default();
        set_masked(&mut b, p, true);
        assert!(c.run(&mut b, 0, 1).is_empty());
        assert_eq!(get(&b, p) & (PENDING | LINKED), PENDING);
        assert_eq!(e.unmask(0, p, &mut b).unwrap(), Some(Kick { dom: 0, vcpu: 1 }));
        assert_eq!(c.run(&mut b, 0, 1), vec![p]);
        // Closing clears the word's PENDING.
        set_masked(&mut b, p, true);
        e.send(0, p, &mut b).unwrap();
        e.close(0, p, &mut b).unwrap();
        assert_eq!(get(&b, p) & PENDING, 0);
        e.check().unwrap();
    }

    /// A port linked on one vCPU's queue then moved to another vCPU: raised after the guest
    /// took it, it goes to the new vCPU's queue, and the old queue's tail is let go.
    #[test]
    fn fifo_moved_port() {
        use fifo_guest::*;
        let (mut e, mut b) = two();
        setup(&mut e, &mut b, 0, 2, 1);
        let p = e.alloc_unbound(0, 1).unwrap();
        let (r, _) = e.bind_interdomain(1, 0, p, &mut b).unwrap();
        let q = e.alloc_unbound(0, 1).unwrap();
        let (rq, _) = e.bind_interdomain(1, 0, q, &mut b).unwrap();
        assert_eq!(e.send(1, r, &mut b).unwrap(), Some(Kick { dom: 0, vcpu: 0 }));
        e.bind_vcpu(0, p, 1, &mut b).unwrap();
        let (mut c0, mut c1) = (Consumer::default(), Consumer::default());
        assert_eq!(c0.run(&mut b, 0, 0), vec![p], "linked before the move: stays on vCPU 0");
        assert_eq!(e.send(1, r, &mut b).unwrap(), Some(Kick { dom: 0, vcpu: 1 }));
        // vCPU 0's queue 7 is empty; q raised there must not be linked behind p.
        assert_eq!(e.send(1, rq, &mut b).unwrap(), Some(Kick { dom: 0, vcpu: 0 }));
        assert_eq!(c1.run(&mut b, 0, 1), vec![p]);
        assert_eq!(c0.run(&mut b, 0, 0), vec![q]);
        e.check().unwrap();
    }

    /// A port its consumer has unlinked but not yet handled (PENDING, not LINKED) moved to
    /// another vCPU is not queued there too: it would be delivered twice.
    #[test]
    fn fifo_move_while_handled() {
        use fifo_guest::*;
        use guest_abi::evtchn::fifo::*;
        let (mut e, mut b) = two();
        setup(&mut e, &mut b, 0, 2, 1);
        let p = e.alloc_unbound(0, 1).unwrap();
        let (r, _) = e.bind_interdomain(1, 0, p, &mut b).unwrap();
        Consumer::default().run(&mut b, 0, 0);
        e.send(1, r, &mut b).unwrap();
        let (m, o) = word(p);
        b.word_fetch_and(m, o, !LINKED);
        assert_eq!(e.bind_vcpu(0, p, 1, &mut b).unwrap(), None);
        assert_eq!(get(&b, p) & LINKED, 0);
        assert_eq!(b.word_load(ctl(1), CTL_OFF as usize + CONTROL_READY), 0, "nothing queued on vCPU 1");
    }

    /// Garbage the guest writes into its words and control blocks (every flag, links to
    /// anywhere) costs it its events but never hangs or confuses the hypervisor; once it
    /// cleans up, events flow again.
    #[test]
    fn fifo_hostile_words() {
        use fifo_guest::*;
        use guest_abi::evtchn::fifo::*;
        let (mut e, mut b) = two();
        setup(&mut e, &mut b, 0, 2, 2);
        let ports: Vec<Port> = (0..40).map(|i| e.bind_ipi(0, i % 2).unwrap()).collect();
        for pat in [LINKED | BUSY | 0x1ffff, LINKED | 5, BUSY, LINKED, u32::MAX, LINKED | MASKED | 3] {
            for i in 0..2048 {
                let (m, o) = word(i);
                b.word_store(m, o, pat);
            }
            for v in 0..2 {
                b.word_store(ctl(v), CTL_OFF as usize, 0xffff_ffff);
            }
            for &p in &ports {
                let _ = e.send(0, p, &mut b).unwrap();
                let _ = e.unmask(0, p, &mut b).unwrap();
                let _ = e.bind_vcpu(0, p, 1, &mut b);
            }
            e.check().unwrap();
        }
        // The guest resets its side: everything zero, local heads forgotten.
        b.words.clear();
        let mut c = Consumer::default();
        for &p in &ports[..4] {
            e.send(0, p, &mut b).unwrap();
        }
        let mut got = c.run(&mut b, 0, 0);
        got.extend(c.run(&mut b, 0, 1));
        got.sort();
        assert_eq!(got, ports[..4].to_vec());
        e.check().unwrap();
    }

    #[derive(Clone, Debug)]
    enum FOp {
        Send(usize),
        Consume(u32),
        Mask(usize),
        Unmask(usize),
        Prio(usize, u32),
        Move(usize, u32),
    }

    fn fop() -> impl Strategy<Value = FOp> {
        let i = 0usize..8;
        prop_oneof![
            3 => i.clone().prop_map(FOp::Send),
            2 => (0u32..2).prop_map(FOp::Consume),
            1 => i.clone().prop_map(FOp::Mask),
            1 => i.clone().prop_map(FOp::Unmask),
            1 => (i.clone(), 0u32..16).prop_map(|(a, b)| FOp::Prio(a, b)),
            1 => (i, 0u32..2).prop_map(|(a, b)| FOp::Move(a, b)),
        ]
    }

    proptest! {
        /// Random FIFO traffic against Linux's consumer: every event raised on a port is
        /// handled exactly once (none lost, none twice), once the port is unmasked and its
        /// vCPU consumes; a queue made ready always comes with an upcall.
        #[test]
        fn fifo_random_traffic(ops in prop::collection::vec(fop(), 1..300)) {
            use fifo_guest::*;
            use guest_abi::evtchn::fifo::*;
            let (mut e, mut b) = two();
            setup(&mut e, &mut b, 0, 2, 1);
            let mut ports = Vec::new();
            for _ in 0..8 {
                let p = e.alloc_unbound(0, 1).unwrap();
                let (r, _) = e.bind_interdomain(1, 0, p, &mut b).unwrap();
                Consumer::default().run(&mut b, 0, 0);
                ports.push((p, r));
            }
            let mut cons = [Consumer::default(), Consumer::default()];
            // Ports raised and not handled yet.
            let mut owed: BTreeSet<Port> = BTreeSet::new();
            let handle = |got: Vec<Port>, owed: &mut BTreeSet<Port>| -> Result<(), TestCaseError> {
                for p in got {
                    prop_assert!(owed.remove(&p), "port {} handled without an event", p);
                }
                Ok(())
            };
            for o in ops {
                match o {
                    FOp::Send(i) => { e.send(1, ports[i].1, &mut b).unwrap(); owed.insert(ports[i].0); }
                    FOp::Consume(v) => { let got = cons[v as usize].run(&mut b, 0, v); handle(got, &mut owed)?; }
                    FOp::Mask(i) => set_masked(&mut b, ports[i].0, true),
                    FOp::Unmask(i) => { e.unmask(0, ports[i].0, &mut b).unwrap(); }
                    FOp::Prio(i, p) => e.set_priority(0, ports[i].0, p).unwrap(),
                    FOp::Move(i, v) => { e.bind_vcpu(0, ports[i].0, v, &mut b).unwrap(); }
                }
                prop_assert!(e.check().is_ok());
                for v in 0..2u32 {
                    let ready = b.word_load(ctl(v), CTL_OFF as usize + CONTROL_READY);
                    prop_assert!(ready == 0 || b.upcall.get(&(0, v)) == Some(&true), "vCPU {} ready without an upcall", v);
                }
            }
            for &(p, _) in &ports {
                e.unmask(0, p, &mut b).unwrap();
            }
            for _ in 0..4 {
                for v in 0..2u32 {
                    let got = cons[v as usize].run(&mut b, 0, v);
                    handle(got, &mut owed)?;
                }
            }
            prop_assert!(owed.is_empty(), "events lost: {:?}", owed);
        }
    }
}
