//! The Xen pv64 mode: a domain whose image lacks rxen's ring-1 note runs as on Xen. Its
//! kernel runs in ring 3 with Xen's flat selectors (`FLAT_RING3_CS64`/`SS64`), so guest
//! kernel and guest user mode differ only in the root they run on: the vCPU keeps both
//! (`Vcpu::l4` for the mode it is in, `Vcpu::other_l4` for the other) and the hypervisor
//! switches between them on every kernel↔user transition, as Xen's `toggle_guest_mode`.
//! Its hypercalls are `syscall` from kernel mode: EFER.SCE is clear, so the instruction
//! arrives as #UD and is decoded from its bytes; from user mode it goes to the guest's
//! syscall callback, never to a hypercall. Its frames are Xen's (RCX and R11 below the
//! hardware frame) and it returns to user mode through `HYPERVISOR_iret`.
//!
//! The MMU core, the event core and the scheduler are the ring-1 mode's; what differs is
//! here, in the frame building of `crate::bounce` (with the mode switch, `bounce::toggle`)
//! and in `Vcpu::in_user`.

use crate::domain::vi;
use crate::Hv;
use guest_abi::hypercall::iret::{VGCF_IN_SYSCALL, WORDS};
use hv_arch::entry::TrapFrame;

const RFLAGS_IF: u64 = 1 << 9;

/// A `syscall` (a #UD at `0F 05`) of a Xen pv64 vCPU in kernel mode: a hypercall. RIP goes
/// past it, RCX and R11 are set as the instruction sets them, and CS and SS become the flat
/// ones, as SYSCALL and Xen's SYSRET leave them whatever the guest ran on before (XTF's
/// `xsa-296` tells whether the hypercall ran from its CS); the frame then stands for an
/// `int 0x82` (its vector too: a continuation rewinds the 2 bytes, as Xen rewinds over
/// `syscall`). Taken on the fast path (`crate::entry`) like rxen's own hypercalls.
pub fn as_hypercall(f: &mut TrapFrame) {
    f.rip = f.rip.wrapping_add(2);
    f.rcx = f.rip;
    f.r11 = f.rflags;
    f.cs = guest_abi::selectors::FLAT_RING3_CS64 as u64;
    f.ss = guest_abi::selectors::FLAT_RING3_SS64 as u64;
    f.vector = guest_abi::hypercall::HYPERCALL_VECTOR as u64;
}

/// `HYPERVISOR_iret`: the guest's `iret_context` at RSP (RAX, R11, RCX, flags, RIP, CS,
/// RFLAGS, RSP, SS). To user mode when CS has RPL 3 (a user root is required), else to
/// kernel mode; CS and SS get RPL 3, RFLAGS keeps only what a guest may set (as a vCPU
/// context's: no IOPL, VM, NT, RF or VIF/VIP) and gets IF; R11 and RCX are
/// restored, or with `VGCF_in_syscall` set as SYSRET leaves them (RIP, RFLAGS); the upcall
/// mask follows the frame's IF. A frame that
/// cannot be read, or a return to user mode without a user root, crashes the domain (as
/// Xen). Never returns to the caller's stub: RAX is the frame's.
pub fn iret(hv: &mut Hv, f: &mut TrapFrame) {
    let mut b = [0u8; 8 * WORDS];
    if crate::guest::read_guest(hv, f.rsp, &mut b).is_err() {
        return crate::bounce::crash_domain(hv, f, format_args!("iret: frame at {:#x} unreadable", f.rsp));
    }
    let w = |i: usize| u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().unwrap_or_default());
    let [rax, r11, rcx, flags, rip, cs, rflags, rsp, ss] = core::array::from_fn(w);
    if cs & 3 == 3 {
        if hv.pc.cur.other_l4 == hv_core::mem::Mfn(0) {
            return crate::bounce::crash_domain(hv, f, format_args!("iret to user mode without a user root (NEW_USER_BASEPTR)"));
        }
        crate::bounce::toggle(hv.pc);
    }
    f.rip = rip;
    f.cs = (cs & 0xFFFF) | 3;
    f.rflags = (rflags & crate::hypercall::RFLAGS_GUEST) | RFLAGS_IF | 2;
    if hv.pc.cur.shared.architectural_iopl() {
        hv.pc.cur.iopl = (rflags >> 12 & 3) as u8;
    }
    f.rsp = rsp;
    f.ss = (ss & 0xFFFF) | 3;
    if flags & VGCF_IN_SYSCALL == 0 {
        f.r11 = r11;
        f.rcx = rcx;
    } else {
        // A return from a system call, as SYSRET leaves them (nothing of the kernel's).
        f.rcx = f.rip;
        f.r11 = f.rflags;
    }
    f.rax = rax;
    let v = &hv.pc.cur;
    v.shared.vcpu_info.set_byte(v.id, vi::UPCALL_MASK, (rflags & RFLAGS_IF == 0) as u8);
}
