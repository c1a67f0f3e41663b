//! Domains and vCPUs: what the hypervisor remembers about each guest.

use guest_abi::shared_info;
use guest_abi::traps::TrapInfo;
use guest_abi::DomId;
use hv_arch::entry::TrapFrame;
use hv_arch::physmem::DirectMap;
use hv_core::guest_access::GuestView;
use hv_core::mem::{Mfn, PhysMem};

/// Guest callbacks registered with `set_callbacks` / `callback_op`.
#[derive(Copy, Clone, Debug, Default)]
pub struct Callbacks {
    pub event: u64,
    pub failsafe: u64,
    pub syscall: u64,
    pub syscall32: u64,
    pub sysenter: u64,
    pub nmi: u64,
}

/// A virtual CPU.
pub struct Vcpu {
    pub id: u32,
    /// Root of the guest's page tables (its CR3).
    pub l4: Mfn,
    /// The virtual IDT.
    pub traps: [TrapInfo; 256],
    /// Kernel stack for entries from guest user mode (`stack_switch`).
    pub kernel_ss: u16,
    pub kernel_sp: u64,
    pub callbacks: Callbacks,
    /// Saved registers while the vCPU is not running.
    pub frame: TrapFrame,
    /// One-shot timer (system time, ns), and the periodic timer (0 = off).
    pub single_deadline: Option<u64>,
    pub period_ns: u64,
    pub period_next: u64,
    /// The scheduler's handle for this vCPU.
    pub sched_id: usize,
    /// Sleeping in SCHEDOP_block or SCHEDOP_poll.
    pub blocked: bool,
    /// SCHEDOP_poll: the ports and the deadline (0 = none).
    pub poll_ports: alloc::vec::Vec<u32>,
    pub poll_deadline: u64,
    /// Saved while another vCPU runs.
    pub fpu: alloc::boxed::Box<hv_arch::cpu::FxArea>,
    pub fs_base: u64,
    pub gs_base: u64,
    pub kernel_gs_base: u64,
    /// Runstate (`RUNSTATE_*`), when it was entered, and the time spent in each state.
    pub runstate: u32,
    pub runstate_entry: u64,
    pub runstate_time: [u64; 4],
}

/// `RUNSTATE_*` values (`public/vcpu.h`).
pub const RUNSTATE_RUNNING: u32 = 0;
pub const RUNSTATE_RUNNABLE: u32 = 1;
pub const RUNSTATE_BLOCKED: u32 = 2;
pub const RUNSTATE_OFFLINE: u32 = 3;

impl Vcpu {
    pub fn new(id: u32, l4: Mfn) -> Vcpu {
        Vcpu {
            id,
            l4,
            traps: [TrapInfo::default(); 256],
            kernel_ss: 0,
            kernel_sp: 0,
            callbacks: Callbacks::default(),
            frame: TrapFrame::default(),
            single_deadline: None,
            period_ns: crate::events::DEFAULT_PERIOD_NS,
            period_next: crate::events::now() + crate::events::DEFAULT_PERIOD_NS,
            sched_id: 0,
            blocked: false,
            poll_ports: alloc::vec::Vec::new(),
            poll_deadline: 0,
            fpu: alloc::boxed::Box::new(hv_arch::cpu::FxArea::initial()),
            fs_base: 0,
            gs_base: 0,
            kernel_gs_base: 0,
            runstate: RUNSTATE_RUNNABLE,
            runstate_entry: crate::events::now(),
            runstate_time: [0; 4],
        }
    }

    /// Moves to runstate `to` at time `now`, charging the time spent in the old one.
    pub fn set_runstate(&mut self, to: u32, now: u64) {
        let s = self.runstate as usize & 3;
        self.runstate_time[s] += now.saturating_sub(self.runstate_entry);
        self.runstate = to;
        self.runstate_entry = now;
    }

    /// (state, entry time, times) as of `now`, the current state's time included.
    pub fn runstate_at(&self, now: u64) -> (u32, u64, [u64; 4]) {
        let mut t = self.runstate_time;
        t[self.runstate as usize & 3] += now.saturating_sub(self.runstate_entry);
        (self.runstate, self.runstate_entry, t)
    }
}

/// A domain.
pub struct Domain {
    pub id: DomId,
    pub privileged: bool,
    /// Pages the domain owns now, and the most it may own (`maximum_reservation`).
    pub tot_pages: u64,
    pub max_pages: u64,
    /// Frames of the guest's own GDT (`set_gdt`), by GDT page.
    pub gdt: [Option<Mfn>; 14],
    /// Frames of the LDT (`MMUEXT_SET_LDT`) and its size in descriptors.
    pub ldt: [Option<Mfn>; 16],
    pub ldt_ents: u32,
    /// Virtual CR0.TS (`fpu_taskswitch`).
    pub fpu_ts: bool,
    /// The scheduler's handle for this domain.
    pub sched_dom: usize,
    /// Shut down or crashed (a zombie until a toolstack destroys it).
    pub dead: Option<guest_abi::sched::ShutdownReason>,
    /// Console output of an unprivileged domain is prefixed at line starts.
    pub console_line_start: bool,
    pub shared_info: Mfn,
    /// Enabled `vm_assist` types.
    pub vm_assist: u64,
    pub vcpu: Vcpu,
}

impl Domain {
    /// Stands in for "no domain" in a CPU's slot while that CPU is idle. Never scheduled,
    /// never given events (see [`Domain::is_placeholder`]).
    pub fn placeholder() -> Domain {
        let mut vcpu = Vcpu::new(0, Mfn(0));
        vcpu.sched_id = usize::MAX;
        vcpu.period_ns = 0;
        Domain {
            id: guest_abi::DOMID_IDLE,
            privileged: false,
            tot_pages: 0,
            max_pages: 0,
            shared_info: Mfn(0),
            vm_assist: 0,
            gdt: [None; 14],
            ldt: [None; 16],
            ldt_ents: 0,
            fpu_ts: false,
            sched_dom: usize::MAX,
            dead: None,
            console_line_start: true,
            vcpu,
        }
    }

    pub fn is_placeholder(&self) -> bool {
        self.id == guest_abi::DOMID_IDLE
    }

    /// The byte at `off` in the shared-info page.
    pub fn shared_byte(&self, off: usize) -> u8 {
        DirectMap.frame(self.shared_info).map(|p| p[off]).unwrap_or(0)
    }

    pub fn set_shared_byte(&self, off: usize, v: u8) {
        if let Some(p) = DirectMap.frame_mut(self.shared_info) {
            p[off] = v;
        }
    }

    pub fn set_shared_u64(&self, off: usize, v: u64) {
        if let Some(p) = DirectMap.frame_mut(self.shared_info) {
            p[off..off + 8].copy_from_slice(&v.to_le_bytes());
        }
    }

    /// vCPU 0's virtual interrupt mask.
    pub fn upcall_mask(&self) -> u8 {
        self.shared_byte(shared_info::upcall_mask_offset(self.vcpu.id as usize))
    }
}

/// Runs `f` with a view of the domain's address space for checked guest accesses.
pub fn with_view<R>(d: &Domain, ft: &hv_core::frame::FrameTable<&'static mut [hv_core::frame::FrameInfo]>, f: impl FnOnce(&GuestView<'_>) -> R) -> R {
    let id = d.id;
    let owns = |m: Mfn| ft.owner(m) == hv_core::frame::Owner::Dom(id);
    f(&GuestView { l4: d.vcpu.l4, owns: &owns })
}
