//! Per-CPU data at a fixed virtual address.
//!
//! Every CPU's hypervisor root maps its own [`PerCpu`] page at `layout::PERCPU_DATA`, so the
//! same address names each CPU's own record without relying on the GS base (which guests may
//! set themselves with `wrgsbase`).

use crate::layout::PERCPU_DATA;

/// This CPU's private record (hypervisor root only).
#[repr(C)]
#[derive(Debug)]
pub struct PerCpu {
    pub cpu_id: u32,
    pub _pad: u32,
    /// Top of the hypervisor stack; the guest entry path switches to it.
    pub hv_stack_top: u64,
    /// Machine address of this CPU's hypervisor root.
    pub hv_root: u64,
    /// Machine address of this CPU's guest root.
    pub guest_root: u64,
    /// Machine address of this CPU's TSS (for RSP1 updates through the direct map).
    pub tss_maddr: u64,
    /// Machine address of this CPU's entry-area IDT.
    pub idt_maddr: u64,
}

/// Offset of `hv_stack_top`, used by the entry stubs.
pub const HV_STACK_TOP_OFFSET: usize = core::mem::offset_of!(PerCpu, hv_stack_top);
const _: () = assert!(HV_STACK_TOP_OFFSET == 8);

/// This CPU's record.
pub fn this_cpu() -> &'static PerCpu {
    // SAFETY: once `paging::activate` ran, every CPU's hypervisor root maps its own
    // initialised PerCpu page at this address for the hypervisor's lifetime; it is only
    // written during that CPU's bring-up.
    unsafe { &*(PERCPU_DATA as *const PerCpu) }
}

/// This CPU's number (0 = the boot CPU).
pub fn cpu_id() -> usize {
    this_cpu().cpu_id as usize
}
