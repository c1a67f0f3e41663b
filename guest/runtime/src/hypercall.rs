//! Hypercall wrappers: `call hypercall_page + 32 * nr`.

use guest_abi::hypercall as nr;
use guest_abi::sched::{SchedShutdown, ShutdownReason, SCHEDOP_SHUTDOWN};

extern "C" {
    static hypercall_page: [u8; 4096];
}

/// Address of the stub for `nr`.
pub fn stub_address(n: u64) -> u64 {
    core::ptr::addr_of!(hypercall_page) as u64 + 32 * n
}

/// Makes hypercall `n` with five arguments; returns RAX.
///
/// # Safety
/// The arguments must be valid for the hypercall (pointers to memory the call may read or
/// write).
pub unsafe fn hypercall5(n: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let ret: i64;
    let stub = stub_address(n & 127);
    // SAFETY: the stub executes `int 0x82` (pv64: `syscall`, saving RCX and R11) and
    // returns; the hypervisor may clobber the argument registers, which are declared as
    // such.
    unsafe {
        core::arch::asm!(
            "call {stub}",
            stub = in(reg) stub,
            inlateout("rax") n => ret,
            inlateout("rdi") a1 => _,
            inlateout("rsi") a2 => _,
            inlateout("rdx") a3 => _,
            inlateout("r10") a4 => _,
            inlateout("r8") a5 => _,
        );
    }
    ret
}

/// Makes hypercall `n` directly with `int 0x82` (pv64: `syscall`), bypassing the hypercall
/// page (so any RAX value can be tried).
///
/// # Safety
/// As for [`hypercall5`].
pub unsafe fn raw_hypercall(n: u64, a1: u64, a2: u64, a3: u64) -> i64 {
    let ret: i64;
    // SAFETY: as for `hypercall5`; pv64's `syscall` clobbers RCX and R11.
    unsafe {
        core::arch::asm!(
            ".if {pv64}",
            "syscall",
            ".else",
            "int 0x82",
            ".endif",
            pv64 = const crate::PV64 as u8,
            inlateout("rax") n => ret,
            inlateout("rdi") a1 => _,
            inlateout("rsi") a2 => _,
            inlateout("rdx") a3 => _,
            out("rcx") _,
            out("r11") _,
        );
    }
    ret
}

/// `console_io(WRITE, len, buf)`.
pub fn console_write(b: &[u8]) -> i64 {
    // SAFETY: the buffer is valid for reads of its length.
    unsafe { hypercall5(nr::CONSOLE_IO, 0, b.len() as u64, b.as_ptr() as u64, 0, 0) }
}

/// `console_io(READ, len, buf)`: bytes read.
pub fn console_read(b: &mut [u8]) -> i64 {
    // SAFETY: the buffer is valid for writes of its length.
    unsafe { hypercall5(nr::CONSOLE_IO, 1, b.len() as u64, b.as_mut_ptr() as u64, 0, 0) }
}

/// `xen_version(cmd, arg)`.
///
/// # Safety
/// `arg` must point to a buffer of the size `cmd` writes.
pub unsafe fn xen_version(cmd: u64, arg: u64) -> i64 {
    // SAFETY: guaranteed by the caller.
    unsafe { hypercall5(nr::XEN_VERSION, cmd, arg, 0, 0, 0) }
}

/// `sched_op(SCHEDOP_yield)`.
pub fn yield_now() -> i64 {
    // SAFETY: yield takes no pointer.
    unsafe { hypercall5(nr::SCHED_OP, guest_abi::sched::SCHEDOP_YIELD, 0, 0, 0, 0) }
}

/// `sched_op(SCHEDOP_shutdown, {reason})`: does not return.
pub fn shutdown(reason: ShutdownReason) -> ! {
    let s = SchedShutdown { reason: reason as u32 };
    // SAFETY: `s` is a valid sched_shutdown.
    unsafe { hypercall5(nr::SCHED_OP, SCHEDOP_SHUTDOWN, &s as *const _ as u64, 0, 0, 0) };
    loop {
        core::hint::spin_loop();
    }
}

/// `stack_switch(ss, sp)`.
pub fn stack_switch(ss: u16, sp: u64) -> i64 {
    // SAFETY: takes no pointer.
    unsafe { hypercall5(nr::STACK_SWITCH, ss as u64, sp, 0, 0, 0) }
}

/// `struct mmu_update`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct MmuUpdate {
    pub ptr: u64,
    pub val: u64,
}

/// `struct mmuext_op`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct MmuextOp {
    pub cmd: u32,
    pub _pad: u32,
    pub arg1: u64,
    pub arg2: u64,
}

/// `struct multicall_entry`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct MulticallEntry {
    pub op: u64,
    pub result: i64,
    pub args: [u64; 6],
}

const _: () = {
    assert!(core::mem::size_of::<MmuUpdate>() == 16);
    assert!(core::mem::size_of::<MmuextOp>() == 24);
    assert!(core::mem::size_of::<MulticallEntry>() == 64);
};

/// `DOMID_SELF` as a foreigndom argument.
pub const SELF: u64 = guest_abi::DOMID_SELF as u64;

/// `mmu_update(reqs, count, &done, SELF)`: returns (result, done).
pub fn mmu_update(reqs: &[MmuUpdate]) -> (i64, u32) {
    let mut done = 0u32;
    // SAFETY: the request array and `done` are valid for the call.
    let r = unsafe {
        hypercall5(nr::MMU_UPDATE, reqs.as_ptr() as u64, reqs.len() as u64, &mut done as *mut u32 as u64, SELF, 0)
    };
    (r, done)
}

/// `mmuext_op(ops, count, &done, SELF)`: returns (result, done).
pub fn mmuext_op(ops: &[MmuextOp]) -> (i64, u32) {
    let mut done = 0u32;
    // SAFETY: as for `mmu_update`.
    let r = unsafe {
        hypercall5(nr::MMUEXT_OP, ops.as_ptr() as u64, ops.len() as u64, &mut done as *mut u32 as u64, SELF, 0)
    };
    (r, done)
}

/// One mmuext op.
pub fn mmuext1(cmd: u32, arg1: u64, arg2: u64) -> i64 {
    mmuext_op(&[MmuextOp { cmd, _pad: 0, arg1, arg2 }]).0
}

/// `update_va_mapping(va, pte, flags)`.
pub fn update_va_mapping(va: u64, pte: u64, flags: u64) -> i64 {
    // SAFETY: takes no pointer (a MULTI flag pointer is the caller's responsibility).
    unsafe { hypercall5(nr::UPDATE_VA_MAPPING, va, pte, flags, 0, 0) }
}

/// `multicall(entries)`: per-entry results land in the entries.
pub fn multicall(entries: &mut [MulticallEntry]) -> i64 {
    // SAFETY: the entries are valid for reads and writes during the call, and whatever
    // pointers their arguments hold are the caller's to keep valid.
    unsafe { hypercall5(nr::MULTICALL, entries.as_mut_ptr() as u64, entries.len() as u64, 0, 0, 0) }
}

/// `memory_op(cmd, arg)`.
///
/// # Safety
/// `arg` must point to the structure `cmd` expects, with valid embedded pointers.
pub unsafe fn memory_op(cmd: u64, arg: u64) -> i64 {
    // SAFETY: guaranteed by the caller.
    unsafe { hypercall5(nr::MEMORY_OP, cmd, arg, 0, 0, 0) }
}

/// `struct xen_memory_reservation`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct Reservation {
    pub extent_start: u64,
    pub nr_extents: u64,
    pub extent_order: u32,
    pub mem_flags: u32,
    pub domid: u16,
    pub _pad: [u8; 6],
}

const _: () = assert!(core::mem::size_of::<Reservation>() == 32);

/// `fpu_taskswitch(set)`: CR0.TS set (1) or clear (0) for this vCPU.
pub fn fpu_taskswitch(set: u64) -> i64 {
    // SAFETY: takes no pointer.
    unsafe { hypercall5(nr::FPU_TASKSWITCH, set, 0, 0, 0, 0) }
}

/// `set_segment_base(which, base)`: 0 FS, 1 the shadow GS, 2 GS.
pub fn set_segment_base(which: u64, base: u64) -> i64 {
    // SAFETY: takes no pointer.
    unsafe { hypercall5(nr::SET_SEGMENT_BASE, which, base, 0, 0, 0) }
}

/// `set_gdt(frames, entries)`.
pub fn set_gdt(frames: &[u64], entries: u64) -> i64 {
    // SAFETY: the frame list is valid for reads.
    unsafe { hypercall5(nr::SET_GDT, frames.as_ptr() as u64, entries, 0, 0, 0) }
}

/// `xen_version(XENVER_version)`: `major << 16 | minor`.
pub fn xen_version_number() -> i64 {
    // SAFETY: XENVER_version takes no buffer.
    unsafe { xen_version(guest_abi::version::XENVER_VERSION, 0) }
}

/// `xen_version(XENVER_extraversion)`.
pub fn xen_extraversion() -> [u8; 16] {
    let mut b = [0u8; 16];
    // SAFETY: XENVER_extraversion writes 16 bytes into `b`.
    unsafe { xen_version(guest_abi::version::XENVER_EXTRAVERSION, b.as_mut_ptr() as u64) };
    b
}

/// `XENVER_commandline`: the hypervisor's command line (NUL-padded), or `None` if refused.
pub fn xen_commandline() -> Option<[u8; guest_abi::version::COMMANDLINE_LEN]> {
    let mut b = [0u8; guest_abi::version::COMMANDLINE_LEN];
    // SAFETY: XENVER_commandline writes COMMANDLINE_LEN bytes into `b`.
    let rc = unsafe { xen_version(guest_abi::version::XENVER_COMMANDLINE, b.as_mut_ptr() as u64) };
    (rc == 0).then_some(b)
}

/// `XENMEM_increase_reservation` (0) or `decrease_reservation` (1) of order-0 extents for
/// this domain: `frames` holds the MFNs to give back, or receives the new ones.
pub fn reservation(op: u64, frames: &mut [u64]) -> i64 {
    let r = Reservation {
        extent_start: frames.as_mut_ptr() as u64,
        nr_extents: frames.len() as u64,
        domid: guest_abi::DOMID_SELF,
        ..Reservation::default()
    };
    // SAFETY: the reservation and its extent array are valid for the call.
    unsafe { memory_op(op & 1, &r as *const Reservation as u64) }
}

/// `XENMEM_memory_map`: the pages the domain's RAM (E820 type 1) entries cover, up to the
/// end of the last one (its maximum: Xen gives a PV domain with no map set one entry of
/// its `max_pages`). `None` if refused.
pub fn memory_map_pages() -> Option<u64> {
    let mut e = [0u8; 20 * 8];
    let mut m = [0u8; 16];
    m[..4].copy_from_slice(&8u32.to_le_bytes());
    m[8..].copy_from_slice(&(e.as_mut_ptr() as u64).to_le_bytes());
    // SAFETY: `m` is a `xen_memory_map` naming `e`, room for 8 entries; both live across
    // the call.
    if unsafe { memory_op(guest_abi::memory::XENMEM_MEMORY_MAP, m.as_mut_ptr() as u64) } != 0 {
        return None;
    }
    let n = u32::from_le_bytes([m[0], m[1], m[2], m[3]]).min(8) as usize;
    let end = e.chunks(20).take(n).filter(|c| u32::from_le_bytes([c[16], c[17], c[18], c[19]]) == 1).map(|c| {
        let at = |o: usize| u64::from_le_bytes(c[o..o + 8].try_into().unwrap_or([0; 8]));
        at(0).saturating_add(at(8))
    });
    end.max().map(|b| b / 4096)
}

/// `XENMEM_current_reservation` for this domain, in pages.
/// `XENMEM_exchange` of `input` (single frames of this domain, mapped nowhere) for one
/// machine-contiguous extent of `input.len()` frames (a power of two) below
/// 2^`address_bits`, to be known as PFNs from `gpfn`: its first machine frame, or the error.
pub fn exchange_for_extent(input: &mut [u64], gpfn: u64, address_bits: u32) -> Result<u64, i64> {
    let order = input.len().trailing_zeros() as u64;
    let mut out = [gpfn];
    let self_ = guest_abi::DOMID_SELF as u64;
    let ex: [u64; 9] = [
        input.as_mut_ptr() as u64,
        input.len() as u64,
        (address_bits as u64) << 32,
        self_,
        out.as_mut_ptr() as u64,
        1,
        order | (address_bits as u64) << 32,
        self_,
        0,
    ];
    // SAFETY: `ex` is a `xen_memory_exchange` whose two arrays are valid for the call.
    match unsafe { hypercall5(nr::MEMORY_OP, 11, ex.as_ptr() as u64, 0, 0, 0) } {
        0 => Ok(out[0]),
        e => Err(e),
    }
}

pub fn current_reservation() -> i64 {
    let d = guest_abi::DOMID_SELF;
    // SAFETY: current_reservation reads one domid.
    unsafe { memory_op(3, &d as *const u16 as u64) }
}
