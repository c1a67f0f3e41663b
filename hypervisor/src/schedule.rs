//! Running several domains on this CPU: the glue between the credit scheduler
//! (`hv_core::sched`, pure policy) and the CPU (saving and loading vCPU state).
//!
//! The current domain lives in `hv.cur`; a switch swaps another domain in and loads its
//! vCPU's registers into the trap frame the exit path resumes. Per-vCPU state switched:
//! registers, FPU/SSE (eagerly, FXSAVE), FS/GS bases, CR0.TS, the guest slots of this CPU's
//! roots, TSS.RSP1, and the GDT/LDT frames mapped in the entry area.

use crate::domain::Domain;
use crate::events;
use crate::Hv;
use guest_abi::DomId;
use hv_arch::cpu::{self, SegBase};
use hv_arch::entry::TrapFrame;
use hv_arch::paging;

/// Puts a blocked vCPU back in the run queue.
pub fn wake(hv: &mut Hv, dom: DomId) {
    let now = events::now();
    let d: &mut Domain = if hv.cur.id == dom {
        &mut hv.cur
    } else {
        match hv.others.iter_mut().find(|d| d.id == dom) {
            Some(d) => d,
            None => return,
        }
    };
    if !d.vcpu.blocked || d.dead.is_some() {
        return;
    }
    d.vcpu.blocked = false;
    d.vcpu.poll_ports.clear();
    let id = d.vcpu.sched_id;
    if hv.sched.wake(id, now).is_some() {
        hv.need_resched = true;
    }
}

/// Takes the current vCPU off the CPU (it blocks, polls or died).
pub fn block_current(hv: &mut Hv) {
    hv.cur.vcpu.blocked = true;
    hv.sched.block(0, events::now());
    hv.need_resched = true;
}

/// Wakes pollers whose port became pending or whose deadline passed, and blocked vCPUs with
/// a due upcall.
pub fn check_sleepers(hv: &mut Hv) {
    let now = events::now();
    let mut to_wake = [0 as DomId; 16];
    let mut n = 0;
    let bits = events::bits(hv);
    for d in core::iter::once(&hv.cur).chain(hv.others.iter()) {
        let v = &d.vcpu;
        if !v.blocked || d.dead.is_some() {
            continue;
        }
        let ready = if v.poll_ports.is_empty() {
            events::upcall_due(d)
        } else {
            v.poll_ports.iter().any(|&p| hv_core::evtchn::Bits::is_pending(&bits, d.id, p))
                || (v.poll_deadline != 0 && now >= v.poll_deadline)
        };
        if ready && n < to_wake.len() {
            to_wake[n] = d.id;
            n += 1;
        }
    }
    for &id in &to_wake[..n] {
        wake(hv, id);
    }
}

fn save_state(d: &mut Domain) {
    let v = &mut d.vcpu;
    v.fs_base = cpu::segment_base(SegBase::Fs);
    v.gs_base = cpu::segment_base(SegBase::Gs);
    v.kernel_gs_base = cpu::segment_base(SegBase::KernelGs);
    cpu::fxsave(&mut v.fpu);
}

fn load_state(hv: &Hv) {
    let d = &hv.cur;
    let v = &d.vcpu;
    cpu::fxrstor(&v.fpu);
    cpu::set_ts(d.fpu_ts);
    cpu::set_segment_base(SegBase::Fs, v.fs_base);
    cpu::set_segment_base(SegBase::Gs, v.gs_base);
    cpu::set_segment_base(SegBase::KernelGs, v.kernel_gs_base);
    paging::sync_guest_slots(&hv.cpu, v.l4);
    paging::set_rsp1(&hv.cpu, v.kernel_sp);
    for (i, m) in d.gdt.iter().enumerate() {
        paging::map_gdt_page(&hv.cpu, i, *m);
    }
    for (i, m) in d.ldt.iter().enumerate() {
        paging::map_ldt_page(&hv.cpu, i, *m);
    }
    paging::load_ldt(&hv.cpu, d.ldt_ents);
    load_direct_gates(hv);
}

/// Vectors a guest may take directly from user mode (no hypervisor entry).
pub const DIRECT_VECTORS: [u8; 1] = [0x80];

/// Programs this CPU's direct gates for the current vCPU's trap table: a vector registered
/// with DPL 3 goes straight to the guest kernel.
pub fn load_direct_gates(hv: &Hv) {
    for v in DIRECT_VECTORS {
        let t = hv.cur.vcpu.traps[v as usize];
        let direct = (t.address != 0 && t.flags & guest_abi::traps::TI_DPL_MASK == 3).then_some(t.address);
        paging::set_direct_gate(&hv.cpu, v, direct);
    }
}

/// Chooses what runs next and makes `f` resume it. If nothing is runnable, idles (timers
/// and events keep being processed) until something is.
pub fn reschedule(hv: &mut Hv, f: &mut TrapFrame, yielding: bool) {
    hv.need_resched = false;
    let mut d = hv.sched.schedule(0, events::now(), yielding, false);
    while d.next.is_none() {
        if hv.cur.id == 0 && hv.cur.dead.is_some() {
            return;
        }
        events::arm(hv, Some(d.until));
        cpu::wait_for_interrupt();
        events::process_timers(hv);
        check_sleepers(hv);
        d = hv.sched.schedule(0, events::now(), false, false);
    }
    hv.slice_until = d.until;
    let next = d.next.unwrap_or(hv.cur.vcpu.sched_id);
    if next != hv.cur.vcpu.sched_id {
        if let Some(i) = hv.others.iter().position(|o| o.vcpu.sched_id == next) {
            hv.cur.vcpu.frame = *f;
            save_state(&mut hv.cur);
            core::mem::swap(&mut hv.cur, &mut hv.others[i]);
            load_state(hv);
            *f = hv.cur.vcpu.frame;
            log::trace!("switched to d{}", hv.cur.id);
        }
    }
    events::arm(hv, None);
}
