//! `event_channel_op` (and the legacy `event_channel_op_compat`), without the hypervisor
//! lock: each operation holds the event locks of the domains it names (`crate::ports`).

use super::bytes::{u16at, u32at, u64at};
use super::{read_guest, resolve_dom, write_guest, HcResult, OnCpu};
use crate::domain::DomShared;
use crate::ports::{self, Locked};
use guest_abi::errno::Errno;
use guest_abi::evtchn::*;
use hv_core::evtchn::{Kick, Table};



/// Size of each op's argument structure.
fn arg_size(cmd: u64) -> Option<usize> {
    Some(match cmd {
        EVTCHNOP_ALLOC_UNBOUND | EVTCHNOP_BIND_IPI | EVTCHNOP_BIND_VCPU => 8,
        EVTCHNOP_BIND_INTERDOMAIN | EVTCHNOP_BIND_VIRQ | EVTCHNOP_BIND_PIRQ => 12,
        EVTCHNOP_CLOSE | EVTCHNOP_SEND | EVTCHNOP_UNMASK => 4,
        EVTCHNOP_STATUS => 24,
        EVTCHNOP_RESET => 2,
        EVTCHNOP_INIT_CONTROL => 24,
        EVTCHNOP_EXPAND_ARRAY | EVTCHNOP_SET_PRIORITY => 8,
        _ => return None,
    })
}

/// `event_channel_op(cmd, arg)`. Runs with whatever locks the caller holds besides this
/// CPU's structure (none on the way from a guest: `super::fast_path`); returns whether
/// a sleeper may need waking, which takes a run-queue lock (`ports::notify_lockfree`).
pub fn event_channel_op(c: &mut impl OnCpu, cmd: u64, arg: u64) -> (HcResult, bool) {
    let Some(n) = arg_size(cmd) else { return (Err(Errno::ENOSYS), false) };
    let mut b = [0u8; 24];
    if let Err(e) = read_guest(&*c, arg, &mut b[..n]) {
        return (Err(e), false);
    }
    if matches!(cmd, EVTCHNOP_INIT_CONTROL | EVTCHNOP_EXPAND_ARRAY) {
        return fifo_setup(c, cmd, arg, &b, 0);
    }
    run(&*c, cmd, arg, &b, 0)
}

/// Legacy #16: `{cmd u32, pad, union}` in one structure.
pub fn event_channel_op_compat(c: &mut impl OnCpu, arg: u64) -> (HcResult, bool) {
    let mut w = [0u8; 4];
    if let Err(e) = read_guest(&*c, arg, &mut w) {
        return (Err(e), false);
    }
    let cmd = u32::from_le_bytes(w) as u64;
    let Some(n) = arg_size(cmd) else { return (Err(Errno::ENOSYS), false) };
    let mut b = [0u8; 24];
    if let Err(e) = read_guest(&*c, arg.wrapping_add(8), &mut b[..n]) {
        return (Err(e), false);
    }
    if matches!(cmd, EVTCHNOP_INIT_CONTROL | EVTCHNOP_EXPAND_ARRAY) {
        return fifo_setup(c, cmd, arg, &b, 8);
    }
    run(&*c, cmd, arg, &b, 8)
}

/// The FIFO operations that hand the hypervisor a frame of the caller: `init_control
/// {control_gfn u64, offset u32, vcpu u32; OUT link_bits u8 @16}` and `expand_array
/// {array_gfn u64}`. The frame is held with a writable type reference (so it can never
/// become a page table or descriptor page while the event words live there), taken under
/// the memory lock before the event lock; an operation refused under the event lock gives
/// it back. Arguments are checked in Xen's order: -ENOENT for a vCPU the domain lacks,
/// -EINVAL for a bad offset, -EOPNOTSUPP (`expand_array` before `init_control`) or -ENOSPC
/// (the array full) before the frame, -EINVAL for a frame the caller may not give.
fn fifo_setup(c: &mut impl OnCpu, cmd: u64, arg: u64, b: &[u8; 24], base: u64) -> (HcResult, bool) {
    let me = c.pc().cur.shared.clone();
    let cpu = c.pc().id;
    let gfn = u64at(b, 0);
    let init = cmd == EVTCHNOP_INIT_CONTROL;
    let (offset, vcpu) = (u32at(b, 8), u32at(b, 12));
    let early = if init { hv_core::evtchn::check_control(me.nr_vcpus(), vcpu, offset) } else { Locked::new(&me, None).pair().can_expand(me.id) };
    if let Err(e) = early {
        return (Err(e), false);
    }
    let m = hv_core::mem::Mfn(gfn);
    let held = c.with_mx(|mx| {
        let dom = mx.pc.cur.dom;
        let mut dm = hv_arch::physmem::DirectMap;
        crate::guest::pt!(mx, dm).get_writable_page(m, dom)
    });
    if held.is_err() {
        return (Err(Errno::EINVAL), false);
    }
    let (r, need) = {
        let mut l = Locked::new(&me, None);
        let mut bits = l.bits();
        // Under the event lock: a teardown's sweep of the FIFO frames cannot miss this one.
        let r = if me.is_dying() {
            Err(Errno::ESRCH)
        } else if init {
            l.pair().init_control(me.id, vcpu, m, offset, &mut bits).map(|()| alloc::vec::Vec::new())
        } else {
            l.pair().expand_array(me.id, m, &mut bits)
        };
        if init && r.is_ok() {
            me.fifo_on.store(true, core::sync::atomic::Ordering::SeqCst);
        }
        let mut need = false;
        if let Ok(kicks) = &r {
            let doms = l.domains();
            // A poller of a replayed port may sleep with no kick for it (masked, or no
            // control block on its vCPU): its sleeper check is due anyway.
            need = ports::notify_lockfree(cpu, None, &doms);
            for &k in kicks {
                need |= ports::notify_lockfree(cpu, Some(k), &doms);
            }
        }
        (r, need)
    };
    if let Err(e) = r {
        let _ = crate::machine::frames().put_page_and_type(m, true);
        return (Err(e), false);
    }
    if init {
        // As Xen: the link width back to the caller (a failed copy is -EFAULT; the block
        // stays registered).
        let r = write_guest(&*c, arg.wrapping_add(base).wrapping_add(16), &[guest_abi::evtchn::fifo::LINK_BITS]).map(|()| 0);
        return (r, need);
    }
    (Ok(0), need)
}

/// An operation's outcome under the event locks: a value to return (a port, or a status
/// to copy out) and the vCPU to notify.
enum Out {
    None,
    Port(Port),
    Status(hv_core::evtchn::Status),
}

/// Runs `cmd` with its argument bytes in `b`; outputs go back to `arg + base + offset`
/// (after the event locks are dropped: a copy may wait for frames).
fn run(c: &impl OnCpu, cmd: u64, arg: u64, b: &[u8; 24], base: u64) -> (HcResult, bool) {
    let me: &DomShared = &c.pc().cur.shared;
    let cpu = c.pc().id;
    let myid = me.id;
    let self_or = |d: u16| if d == guest_abi::DOMID_SELF { myid } else { d };
    // Each arm: the operation on the tables it locked, then the notice while they are
    // still held (their domains' sleepers are looked at).
    let done = |l: &mut Locked<'_>, r: Result<(Out, Option<Kick>), Errno>| -> (Result<Out, Errno>, bool) {
        match r {
            Ok((o, k)) => {
                (Ok(o), ports::notify_lockfree(cpu, k, &l.domains()))
            }
            Err(e) => (Err(e), false),
        }
    };
    let (r, need) = match cmd {
        // A privileged caller may allocate in another domain (a builder's console and
        // store ports): that domain's event lock is taken (the remote's table is not
        // touched; it need not even exist, as in Xen).
        EVTCHNOP_ALLOC_UNBOUND => match super::foreign_dom(c, u16at(b, 0)) {
            Err(e) => (Err(e), false),
            Ok(d) => {
                let remote = self_or(u16at(b, 2));
                ports::on_domains(&d, d.id, |l| {
                    // Under its event lock: a teardown's port sweep cannot miss a port made here.
                    let r = if d.is_dying() { Err(Errno::ESRCH) } else { l.pair().alloc_unbound(d.id, remote).map(|p| (Out::Port(p), None)) };
                    done(l, r)
                })
            }
        },
        EVTCHNOP_BIND_INTERDOMAIN => {
            let remote = self_or(u16at(b, 0));
            ports::on_domains(me, remote, |l| {
                let mut bits = l.bits();
                let r = l.pair().bind_interdomain(myid, remote, u32at(b, 4), &mut bits).map(|(p, k)| (Out::Port(p), k));
                done(l, r)
            })
        }
        EVTCHNOP_BIND_VIRQ => ports::on_domains(me, myid, |l| {
            let r = l.pair().bind_virq(myid, u32at(b, 0), u32at(b, 4)).map(|p| (Out::Port(p), None));
            done(l, r)
        }),
        EVTCHNOP_BIND_IPI => ports::on_domains(me, myid, |l| {
            let r = l.pair().bind_ipi(myid, u32at(b, 0)).map(|p| (Out::Port(p), None));
            done(l, r)
        }),
        EVTCHNOP_BIND_PIRQ => (super::physdev::bind_pirq(me, u32at(b, 0)).map(Out::Port), false),
        EVTCHNOP_CLOSE => {
            let mut pirq = None;
            let r = ports::on_port(me, u32at(b, 0), |l| {
                let r = ports::close(l, myid, u32at(b, 0)).map(|p| {
                    pirq = p;
                    (Out::None, None)
                });
                done(l, r)
            });
            if let Some(p) = pirq {
                crate::irq::unbound(myid, p);
            }
            r
        }
        EVTCHNOP_SEND => ports::on_port(me, u32at(b, 0), |l| {
            let mut bits = l.bits();
            let r = l.pair().send(myid, u32at(b, 0), &mut bits).map(|k| (Out::None, k));
            done(l, r)
        }),
        EVTCHNOP_UNMASK => ports::on_domains(me, myid, |l| {
            let mut bits = l.bits();
            let r = l.pair().unmask(myid, u32at(b, 0), &mut bits).map(|k| (Out::None, k));
            done(l, r)
        }),
        EVTCHNOP_BIND_VCPU => ports::on_domains(me, myid, |l| {
            let mut bits = l.bits();
            let r = l.pair().bind_vcpu(myid, u32at(b, 0), u32at(b, 4), &mut bits).map(|k| (Out::None, k));
            done(l, r)
        }),
        EVTCHNOP_STATUS => match resolve_dom(c, u16at(b, 0)) {
            Err(e) => (Err(e), false),
            Ok(dom) => ports::on_domains(me, dom, |l| {
                let r = l.pair().status(dom, u32at(b, 4)).map(|s| (Out::Status(s), None));
                done(l, r)
            }),
        },
        EVTCHNOP_SET_PRIORITY => ports::on_domains(me, myid, |l| {
            let r = l.pair().set_priority(myid, u32at(b, 0), u32at(b, 4)).map(|()| (Out::None, None));
            done(l, r)
        }),
        EVTCHNOP_RESET => match super::foreign_dom(c, u16at(b, 0)) {
            Err(e) => (Err(e), false),
            // Another domain's only while it is paused (as Xen): its vCPUs must not be
            // binding ports or using its FIFO state meanwhile.
            Ok(d) if d.id != myid && !d.is_paused() => (Err(Errno::EINVAL), false),
            Ok(d) => reset(&d, cpu),
        },
        _ => (Err(Errno::ENOSYS), false),
    };
    let out = |off: u64, data: &[u8]| write_guest(c, arg.wrapping_add(base).wrapping_add(off), data);
    let r = match r {
        Err(e) => Err(e),
        Ok(Out::None) => Ok(0),
        Ok(Out::Port(p)) => {
            // Where each op returns its port.
            let off = match cmd {
                EVTCHNOP_ALLOC_UNBOUND | EVTCHNOP_BIND_IPI => 4,
                _ => 8,
            };
            out(off, &p.to_le_bytes()).map(|()| 0)
        }
        Ok(Out::Status(s)) => {
            let mut o = [0u8; 16];
            o[..4].copy_from_slice(&s.status.to_le_bytes());
            o[4..8].copy_from_slice(&s.vcpu.to_le_bytes());
            match s.status {
                EVTCHNSTAT_UNBOUND => o[8..10].copy_from_slice(&(s.a as u16).to_le_bytes()),
                EVTCHNSTAT_INTERDOMAIN => {
                    o[8..10].copy_from_slice(&(s.a as u16).to_le_bytes());
                    o[12..16].copy_from_slice(&s.b.to_le_bytes());
                }
                EVTCHNSTAT_VIRQ | EVTCHNSTAT_PIRQ => o[8..12].copy_from_slice(&s.a.to_le_bytes()),
                _ => {}
            }
            out(8, &o).map(|()| 0)
        }
    };
    (r, need)
}

/// `EVTCHNOP_reset` of the caller's own domain: closes its ports one at a time, each with
/// the locks its peer needs.
fn reset(me: &DomShared, cpu: usize) -> (Result<Out, Errno>, bool) {
    let used: alloc::vec::Vec<Port> = ports::Locked::new(me, None).ports(me.id).map(|t| t.used().collect()).unwrap_or_default();
    let mut need = false;
    for p in used {
        ports::on_port(me, p, |l| {
            // A port closed meanwhile by another vCPU is no error here.
            if let Ok(Some(pirq)) = ports::close(l, me.id, p) {
                crate::irq::unbound(me.id, pirq);
            }
            need |= ports::notify_lockfree(cpu, None, &l.domains());
        });
    }
    // As Xen: a port bound meanwhile (another vCPU) leaves the domain as it is (-EAGAIN);
    // otherwise a FIFO domain is 2-level again.
    if !ports::fifo_destroy(me, true) {
        return (Err(Errno::EAGAIN), need);
    }
    (Ok(Out::None), need)
}
