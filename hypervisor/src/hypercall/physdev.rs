//! `physdev_op` (PIRQs of the caller: only a privileged domain gets any) and
//! `EVTCHNOP_bind_pirq`, over `crate::irq`.

use super::bytes::{u16at, u32at};
use super::{read_guest, write_guest, HcResult, OnCpu};
use crate::domain::DomShared;
use guest_abi::errno::Errno;
use guest_abi::physdev::*;

/// `physdev_op(cmd, arg)`.
pub fn physdev_op(c: &mut impl OnCpu, cmd: u64, arg: u64) -> HcResult {
    if cmd == PHYSDEVOP_SET_IOPL {
        return set_iopl(c, arg);
    }
    let c = &*c;
    let me = &c.pc().cur.shared;
    let n = match cmd {
        PHYSDEVOP_MAP_PIRQ => map_pirq::SIZE,
        PHYSDEVOP_UNMAP_PIRQ => UNMAP_PIRQ_SIZE,
        PHYSDEVOP_EOI => EOI_SIZE,
        PHYSDEVOP_IRQ_STATUS_QUERY => IRQ_STATUS_QUERY_SIZE,
        _ => return Err(Errno::ENOSYS),
    };
    let mut b = [0u8; map_pirq::SIZE];
    read_guest(c, arg, &mut b[..n])?;
    // Only the caller's own PIRQs: giving a device's interrupt to another domain
    // (passthrough) is not done.
    let own = |d: u16| d == guest_abi::DOMID_SELF || d == me.id;
    match cmd {
        PHYSDEVOP_MAP_PIRQ => {
            if !me.privileged || !own(u16at(&b, map_pirq::DOMID)) {
                return Err(Errno::EPERM);
            }
            match u32at(&b, map_pirq::TYPE) {
                MAP_PIRQ_TYPE_GSI => {}
                MAP_PIRQ_TYPE_MSI => return Err(Errno::EOPNOTSUPP),
                _ => return Err(Errno::EINVAL),
            }
            let pirq = crate::irq::map(me.id, u32at(&b, map_pirq::INDEX) as i32, u32at(&b, map_pirq::PIRQ) as i32)?;
            write_guest(c, arg + map_pirq::PIRQ as u64, &pirq.to_le_bytes())?;
            Ok(0)
        }
        PHYSDEVOP_UNMAP_PIRQ => {
            if !me.privileged || !own(u16at(&b, 0)) {
                return Err(Errno::EPERM);
            }
            crate::irq::unmap(me.id, u32at(&b, 4)).map(|()| 0)
        }
        PHYSDEVOP_EOI => crate::irq::eoi(me.id, u32at(&b, 0)).map(|()| 0),
        _ => {
            let flags = crate::irq::status(me.id, u32at(&b, 0))?;
            write_guest(c, arg + 4, &flags.to_le_bytes())?;
            Ok(0)
        }
    }
}

/// `EVTCHNOP_bind_pirq` of the caller's `pirq` (mapped by `map_pirq`): a port notified on
/// vCPU 0, and the pin opens.
pub fn bind_pirq(me: &DomShared, pirq: u32) -> Result<guest_abi::evtchn::Port, Errno> {
    if !me.privileged {
        return Err(Errno::EPERM);
    }
    crate::irq::claim(me.id, pirq)?;
    let r = crate::ports::on_domains(me, me.id, |l| {
        if me.is_dying() {
            return Err(Errno::ESRCH);
        }
        hv_core::evtchn::Table::bind_pirq(&mut l.pair(), me.id, pirq)
    });
    crate::irq::after_bind(me.id, pirq, r.is_ok());
    r
}

/// `PHYSDEVOP_set_iopl {iopl u32}`: the calling vCPU's virtual IOPL (Xen pv64 mode; the
/// ring-1 model has none: -ENOSYS). -EINVAL above 3.
fn set_iopl(c: &mut impl OnCpu, arg: u64) -> HcResult {
    if !c.pc().cur.shared.pv64 {
        return Err(Errno::ENOSYS);
    }
    let mut b = [0u8; 4];
    read_guest(&*c, arg, &mut b)?;
    let iopl = u32::from_le_bytes(b);
    if iopl > 3 {
        return Err(Errno::EINVAL);
    }
    c.pc_mut().cur.iopl = iopl as u8;
    Ok(0)
}
