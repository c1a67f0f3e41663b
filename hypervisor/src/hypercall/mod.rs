//! Hypercall dispatch: number in RAX, arguments in RDI, RSI, RDX, R10, R8, result in RAX.
//!
//! Every argument is hostile. Guest pointers go through `hv_core::guest_access` (→ `-EFAULT`),
//! unknown numbers and sub-ops return `-ENOSYS`.

mod console;
mod sched;
mod traps;
mod version;

use crate::domain::with_view;
use crate::Hv;
use guest_abi::errno::Errno;
use guest_abi::hypercall as nr;
use hv_arch::entry::TrapFrame;
use hv_arch::physmem::DirectMap;
use hv_core::guest_access::{copy_from_guest, copy_to_guest};

/// A hypercall's result: a non-negative value or a Xen error.
pub type HcResult = Result<i64, Errno>;

/// Arguments as the guest passed them.
#[derive(Copy, Clone, Debug)]
pub struct Args(pub [u64; 5]);

/// The hypercall table.
fn call(hv: &mut Hv, f: &mut TrapFrame, n: u64, a: Args) -> HcResult {
    let [a1, a2, a3, _a4, _a5] = a.0;
    match n {
        nr::SET_TRAP_TABLE => traps::set_trap_table(hv, a1),
        nr::STACK_SWITCH => traps::stack_switch(hv, a1, a2),
        nr::SET_CALLBACKS => traps::set_callbacks(hv, a1, a2, a3),
        nr::SCHED_OP_COMPAT => sched::sched_op_compat(hv, f, a1, a2),
        nr::XEN_VERSION => version::xen_version(hv, a1, a2),
        nr::CONSOLE_IO => console::console_io(hv, a1, a2, a3),
        nr::VM_ASSIST => vm_assist(hv, a1, a2),
        nr::SCHED_OP => sched::sched_op(hv, f, a1, a2),
        nr::CALLBACK_OP => traps::callback_op(hv, a1, a2),
        _ => Err(Errno::ENOSYS),
    }
}

/// Runs the hypercall in `f` and stores its result in RAX.
pub fn dispatch(hv: &mut Hv, f: &mut TrapFrame) {
    let args = Args([f.rdi, f.rsi, f.rdx, f.r10, f.r8]);
    let n = f.rax;
    let r = call(hv, f, n, args);
    f.rax = match r {
        Ok(v) => v as u64,
        Err(e) => e.to_ret() as u64,
    };
}

/// Copies bytes from the current domain's memory.
pub fn read_guest(hv: &Hv, va: u64, out: &mut [u8]) -> Result<(), Errno> {
    with_view(&hv.dom0, &hv.mm.ft, |v| copy_from_guest(&DirectMap, v, va, out)).map_err(Errno::from)
}

/// Copies bytes into the current domain's memory.
pub fn write_guest(hv: &Hv, va: u64, data: &[u8]) -> Result<(), Errno> {
    with_view(&hv.dom0, &hv.mm.ft, |v| copy_to_guest(&mut DirectMap, v, va, data)).map_err(Errno::from)
}

/// `vm_assist(cmd, type)`.
fn vm_assist(hv: &mut Hv, cmd: u64, ty: u64) -> HcResult {
    use guest_abi::hypercall::vm_assist::*;
    if ty >= 64 || VALID_MASK & (1 << ty) == 0 {
        return Err(Errno::EINVAL);
    }
    match cmd {
        ENABLE => hv.dom0.vm_assist |= 1 << ty,
        DISABLE => hv.dom0.vm_assist &= !(1 << ty),
        _ => return Err(Errno::ENOSYS),
    }
    Ok(0)
}
