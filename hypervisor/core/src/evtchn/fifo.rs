//! The FIFO event-channel ABI (Xen's `event_fifo.c` semantics).
//!
//! Each vCPU has 16 queues, one per priority, whose heads the guest reads from its control
//! block; each port has a 32-bit event word in the domain's event-array pages (PENDING,
//! MASKED, LINKED, BUSY and the LINK to the next port). Raising a port sets PENDING and,
//! if the word is neither masked nor linked already, links it behind its queue's tail (or
//! makes it the head of an empty queue and sets the queue's bit in `ready`, announcing an
//! upcall). The guest may write any of these words at any time: the hypervisor keeps its
//! own tail per queue and never follows a guest-written link, and its one retry loop (the
//! tail's LINK update racing the guest) is bounded, as Xen's, so a hostile guest can lose
//! its own events but never stall the hypervisor. Every operation runs under the domain's
//! event lock.

use super::{Bits, Chan, DomainEvents, Kick};
use crate::mem::Mfn;
use alloc::vec::Vec;
use guest_abi::errno::Errno;
use guest_abi::evtchn::fifo::*;
use guest_abi::evtchn::Port;
use guest_abi::DomId;

/// One vCPU's queues: its control block (frame, byte offset) and each queue's tail (0 for
/// none).
#[derive(Copy, Clone, Debug, Default)]
struct Queues {
    control: Option<(Mfn, u32)>,
    tail: [Port; MAX_QUEUES],
}

/// A domain's FIFO state.
#[derive(Clone, Debug)]
pub(super) struct Fifo {
    /// Event-array pages in port order: port p's word is word p % 1024 of page p / 1024.
    array: Vec<Mfn>,
    vcpus: Vec<Queues>,
}

/// `init_control`'s checks of its arguments, in Xen's order: -ENOENT for a vCPU the domain
/// does not have, -EINVAL for a block crossing its page or not 8-byte aligned.
pub fn check_control(nr_vcpus: u32, vcpu: u32, offset: u32) -> Result<(), Errno> {
    if vcpu >= nr_vcpus {
        return Err(Errno::ENOENT);
    }
    if offset > 4096 - CONTROL_SIZE || !offset.is_multiple_of(8) {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

impl Fifo {
    pub(super) fn new(nr_vcpus: u32) -> Fifo {
        Fifo { array: Vec::new(), vcpus: alloc::vec![Queues::default(); nr_vcpus as usize] }
    }

    pub(super) fn has_control(&self, vcpu: u32) -> bool {
        self.vcpus.get(vcpu as usize).is_some_and(|q| q.control.is_some())
    }

    pub(super) fn set_control(&mut self, vcpu: u32, page: Mfn, offset: u32) {
        if let Some(q) = self.vcpus.get_mut(vcpu as usize) {
            *q = Queues { control: Some((page, offset)), tail: [0; MAX_QUEUES] };
        }
    }

    pub(super) fn pages(&self) -> usize {
        self.array.len()
    }

    /// Adds an event-array page; the first port whose word it holds.
    pub(super) fn add_page(&mut self, page: Mfn) -> Port {
        self.array.push(page);
        (self.array.len() as Port - 1) * WORDS_PER_PAGE
    }

    pub(super) fn frames(&self) -> Vec<Mfn> {
        self.vcpus.iter().filter_map(|q| q.control.map(|c| c.0)).chain(self.array.iter().copied()).collect()
    }

    /// Where `port`'s event word is, if an array page holds it.
    fn word(&self, port: Port) -> Option<(Mfn, usize)> {
        let page = *self.array.get((port / WORDS_PER_PAGE) as usize)?;
        Some((page, (port % WORDS_PER_PAGE) as usize * 4))
    }

    pub(super) fn is_pending(&self, port: Port, bits: &dyn Bits) -> bool {
        self.word(port).is_some_and(|(m, o)| bits.word_load(m, o) & PENDING != 0)
    }

    /// Clears PENDING only: the guest unlinks a port it finds not pending and drops it.
    pub(super) fn clear_pending(&self, port: Port, bits: &mut dyn Bits) {
        if let Some((m, o)) = self.word(port) {
            bits.word_fetch_and(m, o, !PENDING);
        }
    }

    /// The invariants of the hypervisor's side (for [`super::Events::check`]): every tail
    /// is a port with a word.
    pub(super) fn check(&self) -> Result<(), &'static str> {
        let words = self.array.len() as Port * WORDS_PER_PAGE;
        if self.vcpus.iter().flat_map(|q| q.tail).any(|t| t >= words) {
            return Err("FIFO tail without a word");
        }
        Ok(())
    }
}

/// Sets the LINK of the tail's word `(m, o)` to `port` if it is still LINKED; whether it
/// was. The guest may change a linked word only by masking, unmasking, clearing PENDING or
/// unlinking it, and setting BUSY holds off its unmasking, so a handful of tries settle it;
/// past them the tail counts as linked (the guest that kept changing it loses the event).
fn set_link(bits: &mut dyn Bits, m: Mfn, o: usize, port: Port) -> bool {
    let try_link = |bits: &mut dyn Bits, w: &mut u32| -> Option<bool> {
        if *w & LINKED == 0 {
            return Some(false);
        }
        let new = (*w & !(BUSY | LINK_MASK)) | port;
        match bits.word_cas(m, o, *w, new) {
            Ok(()) => Some(true),
            Err(cur) => {
                *w = cur;
                None
            }
        }
    };
    let mut w = bits.word_load(m, o);
    if let Some(r) = try_link(bits, &mut w) {
        return r;
    }
    bits.word_fetch_or(m, o, BUSY);
    let mut w = bits.word_load(m, o);
    for _ in 0..4 {
        if let Some(r) = try_link(bits, &mut w) {
            if !r {
                bits.word_fetch_and(m, o, !BUSY);
            }
            return r;
        }
    }
    bits.word_fetch_and(m, o, !BUSY);
    true
}

/// Raises `port` of `dom` (its table `de`, FIFO on) towards its notify vCPU: Xen's
/// `evtchn_fifo_set_pending`. The vCPU to notify when its queue became ready.
pub(super) fn set_pending(de: &mut DomainEvents, dom: DomId, port: Port, bits: &mut dyn Bits) -> Option<Kick> {
    let DomainEvents { chans, fifo, .. } = de;
    let f = fifo.as_mut()?;
    let c: &mut Chan = chans.get_mut(port as usize)?;
    let Some((m, o)) = f.word(port) else {
        c.saved = true;
        return None;
    };
    let (v, prio) = (c.vcpu as usize, c.prio as usize);
    bits.word_fetch_or(m, o, PENDING);
    // No control block on that vCPU: the event stays pending, announced to no one (the
    // guest must not unmask a port before its vCPU's block exists).
    let (cm, co) = f.vcpus.get(v)?.control?;
    let mut linked = true;
    if bits.word_load(m, o) & MASKED == 0 && bits.word_fetch_or(m, o, LINKED) & LINKED == 0 {
        // Last linked elsewhere and that queue's tail: that queue is empty now, and must not
        // link a later event behind this one.
        let (lv, lp) = (c.last.0 as usize, c.last.1 as usize);
        if let Some(t) = f.vcpus.get_mut(lv).map(|q| &mut q.tail[lp % MAX_QUEUES]) {
            if *t == port {
                *t = 0;
            }
        }
        c.last = (v as u8, prio as u8);
        linked = false;
        let tail = f.vcpus[v].tail[prio];
        if tail != 0 {
            if let Some((tm, to)) = f.word(tail) {
                linked = set_link(bits, tm, to, port);
            }
        }
        if !linked {
            bits.word_store(cm, co as usize + CONTROL_HEAD + 4 * prio, port);
        }
        f.vcpus[v].tail[prio] = port;
    }
    if !linked && bits.word_fetch_or(cm, co as usize + CONTROL_READY, 1 << prio) & (1 << prio) == 0 {
        bits.set_upcall_pending(dom, v as u32);
        return Some(Kick { dom, vcpu: v as u32 });
    }
    None
}

/// `unmask` under the FIFO ABI: MASKED cleared, and the port queued if it is pending.
pub(super) fn unmask(de: &mut DomainEvents, dom: DomId, port: Port, bits: &mut dyn Bits) -> Option<Kick> {
    let (m, o) = de.fifo.as_ref()?.word(port)?;
    bits.word_fetch_and(m, o, !MASKED);
    if bits.word_load(m, o) & PENDING != 0 {
        return set_pending(de, dom, port, bits);
    }
    None
}
