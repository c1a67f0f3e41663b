//! `event_channel_op` (and the legacy `event_channel_op_compat`).

use super::{read_guest, resolve_dom, write_guest, HcResult};
use crate::Hv;
use guest_abi::errno::Errno;
use guest_abi::evtchn::*;

fn u32at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or_default())
}

fn u16at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

/// Size of each op's argument structure.
fn arg_size(cmd: u64) -> Option<usize> {
    Some(match cmd {
        EVTCHNOP_ALLOC_UNBOUND | EVTCHNOP_BIND_IPI | EVTCHNOP_BIND_VCPU => 8,
        EVTCHNOP_BIND_INTERDOMAIN | EVTCHNOP_BIND_VIRQ => 12,
        EVTCHNOP_CLOSE | EVTCHNOP_SEND | EVTCHNOP_UNMASK => 4,
        EVTCHNOP_STATUS => 24,
        EVTCHNOP_RESET => 2,
        _ => return None,
    })
}

pub fn event_channel_op(hv: &mut Hv, cmd: u64, arg: u64) -> HcResult {
    let n = arg_size(cmd).ok_or(Errno::ENOSYS)?;
    let mut b = [0u8; 24];
    read_guest(hv, arg, &mut b[..n])?;
    run(hv, cmd, arg, &mut b, 0)
}

/// Legacy #16: `{cmd u32, pad, union}` in one structure.
pub fn event_channel_op_compat(hv: &mut Hv, arg: u64) -> HcResult {
    let mut c = [0u8; 4];
    read_guest(hv, arg, &mut c)?;
    let cmd = u32::from_le_bytes(c) as u64;
    let n = arg_size(cmd).ok_or(Errno::ENOSYS)?;
    let mut b = [0u8; 24];
    read_guest(hv, arg.wrapping_add(8), &mut b[..n])?;
    run(hv, cmd, arg, &mut b, 8)
}

/// Runs `cmd` with its argument bytes in `b`; outputs go back to `arg + base + offset`.
fn run(hv: &mut Hv, cmd: u64, arg: u64, b: &mut [u8; 24], base: u64) -> HcResult {
    let me = hv.pc.cur.dom;
    let mut bits = crate::events::SharedBits { doms: &hv.g.domains };
    let out = |hv: &Hv, off: u64, v: u32| write_guest(hv, arg.wrapping_add(base).wrapping_add(off), &v.to_le_bytes());
    match cmd {
        EVTCHNOP_ALLOC_UNBOUND => {
            let dom = resolve_dom(hv, u16at(b, 0))?;
            let remote = match u16at(b, 2) {
                guest_abi::DOMID_SELF => me,
                r => r,
            };
            let p = hv.g.events.alloc_unbound(dom, remote)?;
            out(hv, 4, p)?;
        }
        EVTCHNOP_BIND_INTERDOMAIN => {
            let remote = match u16at(b, 0) {
                guest_abi::DOMID_SELF => me,
                r => r,
            };
            let (p, k) = hv.g.events.bind_interdomain(me, remote, u32at(b, 4), &mut bits)?;
            crate::events::kick(hv, k);
            out(hv, 8, p)?;
        }
        EVTCHNOP_BIND_VIRQ => {
            let p = hv.g.events.bind_virq(me, u32at(b, 0), u32at(b, 4))?;
            out(hv, 8, p)?;
        }
        EVTCHNOP_BIND_IPI => {
            let p = hv.g.events.bind_ipi(me, u32at(b, 0))?;
            out(hv, 4, p)?;
        }
        EVTCHNOP_CLOSE => hv.g.events.close(me, u32at(b, 0), &mut bits)?,
        EVTCHNOP_SEND => {
            let k = hv.g.events.send(me, u32at(b, 0), &mut bits)?;
            crate::events::kick(hv, k);
        }
        EVTCHNOP_UNMASK => {
            let k = hv.g.events.unmask(me, u32at(b, 0), &mut bits)?;
            crate::events::kick(hv, k);
        }
        EVTCHNOP_BIND_VCPU => {
            let k = hv.g.events.bind_vcpu(me, u32at(b, 0), u32at(b, 4), &mut bits)?;
            crate::events::kick(hv, k);
        }
        EVTCHNOP_STATUS => {
            let dom = resolve_dom(hv, u16at(b, 0))?;
            let s = hv.g.events.status(dom, u32at(b, 4))?;
            let mut o = [0u8; 16];
            o[..4].copy_from_slice(&s.status.to_le_bytes());
            o[4..8].copy_from_slice(&s.vcpu.to_le_bytes());
            match s.status {
                EVTCHNSTAT_UNBOUND => o[8..10].copy_from_slice(&(s.a as u16).to_le_bytes()),
                EVTCHNSTAT_INTERDOMAIN => {
                    o[8..10].copy_from_slice(&(s.a as u16).to_le_bytes());
                    o[12..16].copy_from_slice(&s.b.to_le_bytes());
                }
                EVTCHNSTAT_VIRQ => o[8..12].copy_from_slice(&s.a.to_le_bytes()),
                _ => {}
            }
            write_guest(hv, arg.wrapping_add(base).wrapping_add(8), &o)?;
        }
        EVTCHNOP_RESET => {
            let dom = resolve_dom(hv, u16at(b, 0))?;
            hv.g.events.reset(dom, &mut bits)?;
        }
        _ => return Err(Errno::ENOSYS),
    }
    // A poller may wait on the port that just became pending.
    crate::schedule::check_sleepers(hv);
    Ok(0)
}
