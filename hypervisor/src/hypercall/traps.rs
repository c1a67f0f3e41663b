//! `set_trap_table`, `stack_switch`, `set_callbacks`, `callback_op`.

use super::{read_guest, HcResult};
use guest_abi::errno::Errno;
use guest_abi::layout::is_guest_va;
use guest_abi::selectors;
use guest_abi::traps::*;

/// Largest trap table accepted in one call.
const MAX_TRAPS: u64 = 256;

/// A handler address must be a canonical guest address (0 means "none").
pub(super) fn check_handler(a: u64) -> Result<(), Errno> {
    if a == 0 || is_guest_va(a) {
        Ok(())
    } else {
        Err(Errno::EINVAL)
    }
}

/// Raises a selector's RPL to the guest kernel's ring (3 in the Xen pv64 mode, as Xen's
/// `fixup_guest_code_selector`, so Xen's `0xE030` is `FLAT_RING3_CS64`); only the flat
/// kernel code selector of the mode is usable until guests can load GDTs of their own.
pub(super) fn fixup_cs(cs: u16, pv64: bool) -> Result<u16, Errno> {
    let rpl = selectors::kernel_rpl(pv64);
    let cs = if selectors::rpl(cs) < rpl { (cs & !3) | rpl as u16 } else { cs };
    if cs == selectors::kernel_cs(pv64) {
        Ok(cs)
    } else {
        Err(Errno::EINVAL)
    }
}

pub fn set_trap_table(hv: &mut impl super::OnCpu, list: u64) -> HcResult {
    let r = update_trap_table(hv, list);
    // Entries before a refused one did change: reprogram the direct gates either way.
    crate::schedule::load_direct_gates(hv.pc());
    r
}

fn update_trap_table(hv: &mut impl super::OnCpu, list: u64) -> HcResult {
    if list == 0 {
        hv.pc_mut().cur.traps = [TrapInfo::default(); 256];
        return Ok(0);
    }
    for i in 0..MAX_TRAPS {
        let mut b = [0u8; 16];
        read_guest(hv, list.wrapping_add(16 * i), &mut b)?;
        let t = TrapInfo {
            vector: b[0],
            flags: b[1],
            cs: u16::from_le_bytes([b[2], b[3]]),
            _pad: 0,
            address: u64::from_le_bytes(b[8..16].try_into().map_err(|_| Errno::EFAULT)?),
        };
        if t.address == 0 {
            break;
        }
        check_handler(t.address)?;
        let cs = fixup_cs(t.cs, hv.pc().cur.shared.pv64)?;
        hv.pc_mut().cur.traps[t.vector as usize] = TrapInfo { cs, _pad: 0, ..t };
    }
    Ok(0)
}

/// Raises a stack selector's RPL to the guest kernel's ring (of the mode).
pub(super) fn fixup_ss(ss: u16, pv64: bool) -> u16 {
    let rpl = selectors::kernel_rpl(pv64);
    if selectors::rpl(ss) < rpl {
        (ss & !3) | rpl as u16
    } else {
        ss
    }
}

/// `stack_switch(ss, sp)`: the kernel stack for entries from guest user mode (TSS.RSP1 for
/// the direct gates). The top of stack must be a guest address (canonical, outside the
/// hypervisor's slots): the CPU itself pushes the direct gates' frames there.
pub fn stack_switch(pc: &mut crate::percpu::PerCpu, ss: u64, sp: u64) -> HcResult {
    if !is_guest_va(sp) {
        return Err(Errno::EINVAL);
    }
    let ss = fixup_ss(ss as u16, pc.cur.shared.pv64);
    pc.cur.kernel_ss = ss;
    pc.cur.kernel_sp = sp;
    hv_arch::paging::set_rsp1(&pc.tables, sp);
    Ok(0)
}

pub fn set_callbacks(pc: &mut crate::percpu::PerCpu, event: u64, failsafe: u64, syscall: u64) -> HcResult {
    for a in [event, failsafe, syscall] {
        check_handler(a)?;
    }
    let cb = &mut pc.cur.callbacks;
    cb.event = event;
    cb.failsafe = failsafe;
    cb.syscall = syscall;
    Ok(0)
}

pub fn callback_op(hv: &mut impl super::OnCpu, cmd: u64, arg: u64) -> HcResult {
    match cmd {
        CALLBACKOP_REGISTER => {
            let mut b = [0u8; 16];
            read_guest(hv, arg, &mut b)?;
            let ty = u16::from_le_bytes([b[0], b[1]]);
            let address = u64::from_le_bytes(b[8..16].try_into().map_err(|_| Errno::EFAULT)?);
            check_handler(address)?;
            let cb = &mut hv.pc_mut().cur.callbacks;
            let slot = match ty {
                CALLBACKTYPE_EVENT => &mut cb.event,
                CALLBACKTYPE_FAILSAFE => &mut cb.failsafe,
                CALLBACKTYPE_SYSCALL => &mut cb.syscall,
                CALLBACKTYPE_SYSCALL32 => &mut cb.syscall32,
                CALLBACKTYPE_SYSENTER => &mut cb.sysenter,
                // NMIs are not delivered to guests: refused rather than stored and ignored.
                _ => return Err(Errno::EINVAL),
            };
            *slot = address;
            Ok(0)
        }
        CALLBACKOP_UNREGISTER => {
            let mut b = [0u8; 4];
            read_guest(hv, arg, &mut b)?;
            match u16::from_le_bytes([b[0], b[1]]) {
                // Never registered (see above): nothing to undo, as Xen allows.
                CALLBACKTYPE_NMI => Ok(0),
                _ => Err(Errno::EINVAL),
            }
        }
        _ => Err(Errno::ENOSYS),
    }
}
