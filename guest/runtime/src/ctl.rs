//! The toolstack hypercalls as dom0 issues them: `domctl` and `sysctl` requests built in a
//! buffer of Xen's layout (`guest_abi::domctl`).

use crate::hypercall::hypercall5;
use guest_abi::domctl::*;
use guest_abi::hypercall as nr;

/// A `xen_domctl` for one command on one domain; fields of the union set and read by
/// their offsets in it.
pub struct Domctl(pub [u8; DOMCTL_SIZE]);

impl Domctl {
    pub fn new(cmd: u32, dom: u16) -> Domctl {
        let mut b = [0u8; DOMCTL_SIZE];
        b[..4].copy_from_slice(&cmd.to_le_bytes());
        b[4..8].copy_from_slice(&DOMCTL_INTERFACE_VERSION.to_le_bytes());
        b[8..10].copy_from_slice(&dom.to_le_bytes());
        Domctl(b)
    }

    pub fn u16(mut self, off: usize, v: u16) -> Domctl {
        self.0[U_OFFSET + off..U_OFFSET + off + 2].copy_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u32(mut self, off: usize, v: u32) -> Domctl {
        self.0[U_OFFSET + off..U_OFFSET + off + 4].copy_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u64(mut self, off: usize, v: u64) -> Domctl {
        self.0[U_OFFSET + off..U_OFFSET + off + 8].copy_from_slice(&v.to_le_bytes());
        self
    }

    /// Issues it (pointer fields set by the caller must point at buffers that live through
    /// the call); the result, and the buffer as the hypervisor left it.
    pub fn call(&mut self) -> i64 {
        // SAFETY: the request is a local buffer of the size the hypervisor reads and writes.
        unsafe { hypercall5(nr::DOMCTL, self.0.as_mut_ptr() as u64, 0, 0, 0, 0) }
    }

    /// The domain field (set by createdomain, getdomaininfo).
    pub fn dom(&self) -> u16 {
        u16::from_le_bytes([self.0[8], self.0[9]])
    }

    pub fn get16(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.0[U_OFFSET + off], self.0[U_OFFSET + off + 1]])
    }

    pub fn get32(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.0[U_OFFSET + off..U_OFFSET + off + 4].try_into().unwrap_or_default())
    }

    pub fn get64(&self, off: usize) -> u64 {
        u64::from_le_bytes(self.0[U_OFFSET + off..U_OFFSET + off + 8].try_into().unwrap_or_default())
    }
}

/// A `xen_sysctl`: the command and version are filled in.
pub fn sysctl(cmd: u32, b: &mut [u8; SYSCTL_SIZE]) -> i64 {
    b[..4].copy_from_slice(&cmd.to_le_bytes());
    b[4..8].copy_from_slice(&SYSCTL_INTERFACE_VERSION.to_le_bytes());
    // SAFETY: the request is a buffer of the size the hypervisor reads and writes.
    unsafe { hypercall5(nr::SYSCTL, b.as_mut_ptr() as u64, 0, 0, 0, 0) }
}

/// `populate_physmap` of order-0 extents for domain `dom`: `frames` holds the PFNs and gets
/// the MFNs; how many were populated.
pub fn populate(dom: u16, frames: &mut [u64]) -> i64 {
    let mut r = [0u8; 32];
    r[..8].copy_from_slice(&(frames.as_mut_ptr() as u64).to_le_bytes());
    r[8..16].copy_from_slice(&(frames.len() as u64).to_le_bytes());
    r[24..26].copy_from_slice(&dom.to_le_bytes());
    // SAFETY: the reservation and its extent list are valid for the call.
    unsafe { crate::hypercall::memory_op(guest_abi::memory::XENMEM_POPULATE_PHYSMAP, r.as_mut_ptr() as u64) }
}

/// `GNTTABOP_setup_table` for domain `dom` (a privileged caller may name another domain):
/// its first grant-table frame's MFN, or the hypercall's error or the operation's negative
/// `GNTST_*` status.
pub fn grant_frame(dom: u16) -> Result<u64, i64> {
    let mut frame = 0u64;
    let mut op = [0u8; 24];
    op[..2].copy_from_slice(&dom.to_le_bytes());
    op[4..8].copy_from_slice(&1u32.to_le_bytes());
    op[16..24].copy_from_slice(&(&mut frame as *mut u64 as u64).to_le_bytes());
    // SAFETY: the operation and the one-entry frame list are valid for the call.
    let rc = unsafe { hypercall5(nr::GRANT_TABLE_OP, guest_abi::grant::GNTTABOP_SETUP_TABLE, op.as_mut_ptr() as u64, 1, 0, 0) };
    let status = i16::from_le_bytes([op[8], op[9]]);
    match (rc, status) {
        (0, 0) => Ok(frame),
        (0, s) => Err(s as i64),
        (e, _) => Err(e),
    }
}

/// One `mmuext_op` on domain `dom`'s behalf (`foreigndom`).
pub fn mmuext_for(dom: u16, cmd: u32, arg1: u64) -> i64 {
    let op = [crate::hypercall::MmuextOp { cmd, _pad: 0, arg1, arg2: 0 }];
    let mut done = 0u32;
    // SAFETY: the op and `done` are valid for the call.
    unsafe { hypercall5(nr::MMUEXT_OP, op.as_ptr() as u64, 1, &mut done as *mut u32 as u64, dom as u64, 0) }
}

/// `setvcpucontext` of vCPU `vcpu` of `dom` with the `vcpu_guest_context` image `ctx`.
pub fn set_vcpu_context(dom: u16, vcpu: u32, ctx: &mut [u8]) -> i64 {
    Domctl::new(SETVCPUCONTEXT, dom).u32(vcpucontext::VCPU, vcpu).u64(vcpucontext::CTXT, ctx.as_mut_ptr() as u64).call()
}

/// `sysctl readconsole` into `buf`: from the oldest byte the ring holds, or from index
/// `from` (incremental); `clear` forgets what was read. (rc, bytes read, index after).
pub fn readconsole(buf: &mut [u8], clear: bool, from: Option<u32>) -> (i64, usize, u32) {
    let mut b = [0u8; SYSCTL_SIZE];
    let u = SYSCTL_U_OFFSET;
    b[u] = clear as u8;
    b[u + 1] = from.is_some() as u8;
    b[u + 4..u + 8].copy_from_slice(&from.unwrap_or(0).to_le_bytes());
    b[u + 8..u + 16].copy_from_slice(&(buf.as_mut_ptr() as u64).to_le_bytes());
    b[u + 16..u + 20].copy_from_slice(&(buf.len().min(u32::MAX as usize) as u32).to_le_bytes());
    let rc = sysctl(sys::READCONSOLE, &mut b);
    let n = u32::from_le_bytes(b[u + 16..u + 20].try_into().unwrap_or_default()) as usize;
    (rc, n.min(buf.len()), u32::from_le_bytes(b[u + 4..u + 8].try_into().unwrap_or_default()))
}

/// vCPU `vcpu` of `dom`'s hard affinity set to the CPU bitmap `mask` (64 CPUs).
pub fn set_affinity(dom: u16, vcpu: u32, mask: u64) -> i64 {
    let mut map = mask.to_le_bytes();
    Domctl::new(SETVCPUAFFINITY, dom)
        .u32(affinity::VCPU, vcpu)
        .u32(affinity::FLAGS, affinity::HARD_FLAG)
        .u64(affinity::HARD, map.as_mut_ptr() as u64)
        .u32(affinity::HARD + 8, 64)
        .call()
}

/// vCPU `vcpu` of `dom`'s hard affinity (64 CPUs).
pub fn get_affinity(dom: u16, vcpu: u32) -> Result<u64, i64> {
    let mut map = [0u8; 8];
    let rc = Domctl::new(GETVCPUAFFINITY, dom)
        .u32(affinity::VCPU, vcpu)
        .u32(affinity::FLAGS, affinity::HARD_FLAG)
        .u64(affinity::HARD, map.as_mut_ptr() as u64)
        .u32(affinity::HARD + 8, 64)
        .call();
    if rc == 0 { Ok(u64::from_le_bytes(map)) } else { Err(rc) }
}

/// The credit scheduler's weight and cap for `dom` (weight 0 / cap 0xFFFF: keep).
pub fn sched_credit_put(dom: u16, weight: u16, cap: u16) -> i64 {
    Domctl::new(SCHEDULER_OP, dom)
        .u32(sched::SCHED_ID, sched::CREDIT)
        .u32(sched::CMD, sched::PUTINFO)
        .u16(sched::WEIGHT, weight)
        .u16(sched::CAP, cap)
        .call()
}

/// A `vcpu_guest_context` for a vCPU starting in the guest kernel at `entry` with stack
/// `stack_top` (also its kernel stack), RSI = `rsi` (start_info, for a domain's first vCPU),
/// on root `l4_mfn`, online.
pub fn boot_context(c: &mut [u8], entry: u64, stack_top: u64, rsi: u64, l4_mfn: u64) {
    boot_context_in(c, entry, stack_top, rsi, l4_mfn, crate::PV64)
}

/// [`boot_context`] for a kernel of either mode (`pv64`: the Xen pv64 mode, Xen's ring-3
/// kernel selectors; the user root is the kernel's until the kernel sets its own, as XTF
/// does).
pub fn boot_context_in(c: &mut [u8], entry: u64, stack_top: u64, rsi: u64, l4_mfn: u64, pv64: bool) {
    use guest_abi::selectors::{kernel_cs, kernel_ss};
    use guest_abi::vcpu::{ctx, regs};
    let (cs, ss) = (kernel_cs(pv64), kernel_ss(pv64));
    let put = |c: &mut [u8], off: usize, v: u64| c[off..off + 8].copy_from_slice(&v.to_le_bytes());
    c.fill(0);
    let r = ctx::USER_REGS;
    put(c, r + regs::RIP, entry);
    put(c, r + regs::CS, cs as u64);
    put(c, r + regs::RFLAGS, 0x202);
    put(c, r + regs::RSP, stack_top);
    put(c, r + regs::SS, ss as u64);
    put(c, r + regs::RSI, rsi);
    put(c, ctx::KERNEL_SS, ss as u64);
    put(c, ctx::KERNEL_SP, stack_top);
    put(c, ctx::CR3, l4_mfn << 12);
    put(c, ctx::FLAGS, ctx::VGCF_ONLINE | ctx::VGCF_IN_KERNEL);
}
