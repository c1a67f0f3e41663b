//! What the hypervisor knows of the machine once it is up and never changes afterwards:
//! the frame table (whose records change atomically, see `hv_core::frame`), the top of RAM,
//! the M2P, and every CPU's tables and APIC id. Any CPU reads it without a lock.

use hv_arch::paging::CpuTables;
use hv_arch::physmem::M2p;
use hv_core::frame::{FrameSlot, FrameTable};

pub type Frames = FrameTable<&'static [FrameSlot]>;

pub struct Machine {
    pub ft: &'static Frames,
    pub max_mfn: u64,
    /// RAM frames (below the direct map's end): physinfo's total.
    pub ram_pages: u64,
    pub m2p: M2p,
    pub cpus: alloc::vec::Vec<CpuTables>,
    pub apic_ids: alloc::vec::Vec<u32>,
    /// The hypervisor's command line (`XENVER_commandline`).
    pub cmdline: &'static str,
    /// Audit dead domains' frames (the `audit` option; `schedule::park`).
    pub audit: bool,
    /// The MMIO a domain with I/O rights may map (`hv_core::ioperm`).
    pub iomem: hv_core::ioperm::IoMem,
    /// The CPUs have FSGSBASE (on while ring-1 vCPUs run; a Xen pv64 vCPU's own choice).
    pub fsgsbase: bool,
}

static MACHINE: spin::Once<Machine> = spin::Once::new();

/// Records the machine (once, at boot, before any guest runs).
pub fn init(m: Machine) {
    MACHINE.call_once(|| m);
}

/// The machine. Guest entries happen only after [`init`].
#[inline]
pub fn get() -> &'static Machine {
    match MACHINE.get() {
        Some(m) => m,
        None => panic!("the machine is not recorded yet"),
    }
}

/// The frame table.
#[inline]
pub fn frames() -> &'static Frames {
    get().ft
}
