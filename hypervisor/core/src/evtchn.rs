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

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
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


    /// `alloc_unbound`: a port in `dom` that `remote` may bind to.
    fn alloc_unbound(&mut self, dom: DomId, remote: DomId) -> Result<Port, Errno> {
        d(self, remote)?;
        let p = free_port(self, dom)?;
        set(self, dom, p, Chan { state: State::Unbound { remote }, vcpu: 0 })?;
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
        set(self, dom, p, Chan { state: State::Interdomain { remote, remote_port }, vcpu: 0 })?;
        set(self, remote, remote_port, Chan { state: State::Interdomain { remote: dom, remote_port: p }, vcpu: rc.vcpu })?;
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
        set(self, dom, p, Chan { state: State::Virq { virq }, vcpu })?;
        dm(self, dom)?.virqs.insert(virq_key(virq, vcpu), p);
        Ok(p)
    }

    /// `bind_pirq` of a PIRQ the caller checked is mapped to `dom` (-EEXIST: already bound).
    fn bind_pirq(&mut self, dom: DomId, pirq: u32) -> Result<Port, Errno> {
        if d(self, dom)?.pirqs.contains_key(&pirq) {
            return Err(Errno::EEXIST);
        }
        let p = free_port(self, dom)?;
        set(self, dom, p, Chan { state: State::Pirq { pirq }, vcpu: 0 })?;
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
        set(self, dom, p, Chan { state: State::Ipi, vcpu })?;
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
                set(self, remote, remote_port, Chan { state: State::Unbound { remote: dom }, vcpu: rc.vcpu })?;
            }
            State::Virq { virq } => {
                dm(self, dom)?.virqs.remove(&virq_key(virq, c.vcpu));
            }
            State::Pirq { pirq } => {
                dm(self, dom)?.pirqs.remove(&pirq);
            }
            _ => {}
        }
        set(self, dom, port, Chan { state: State::Free, vcpu: 0 })?;
        bits.clear_pending(dom, port);
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
    Ok(d.chans.get(port as usize).copied().unwrap_or(Chan { state: State::Free, vcpu: 0 }))
}

fn set<T: Table + ?Sized>(t: &mut T, dom: DomId, port: Port, c: Chan) -> Result<(), Errno> {
    let d = dm(t, dom)?;
    if d.chans.len() <= port as usize {
        d.chans.resize(port as usize + 1, Chan { state: State::Free, vcpu: 0 });
    }
    d.chans[port as usize] = c;
    Ok(())
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
        DomainEvents { chans: Vec::new(), max_port, limit: max_port, nr_vcpus: nr_vcpus.min(MAX_VCPUS as u32), virqs: BTreeMap::new(), pirqs: BTreeMap::new() }
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
                if !matches!(d.chans.get(p as usize), Some(Chan { state: State::Virq { virq: w }, vcpu: v }) if *w == virq && virq_key(virq, *v) == (virq, vcpu)) {
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
        assert_eq!(e.alloc_unbound(1, 9), Err(Errno::ESRCH));
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
}
