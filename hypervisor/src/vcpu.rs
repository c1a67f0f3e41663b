//! vCPUs: a virtual CPU's context ([`Vcpu`]), what the scheduler and timers see of it
//! ([`VcpuState`]), and its place in the run queue that owns it ([`Slot`]).

use crate::domain::DomShared;
use guest_abi::traps::TrapInfo;
use guest_abi::DomId;
use hv_arch::entry::TrapFrame;
use hv_core::mem::Mfn;

/// Guest callbacks registered with `set_callbacks` / `callback_op`.
#[derive(Copy, Clone, Debug, Default)]
pub struct Callbacks {
    pub event: u64,
    pub failsafe: u64,
    pub syscall: u64,
    pub syscall32: u64,
    pub sysenter: u64,
}

/// A virtual CPU's context: what it runs with. It lives in exactly one place: the
/// per-CPU structure of the CPU running it (`PerCpu::cur`, owned by that CPU alone) or its
/// [`Slot`] in the run queue that owns it (`state`). What other CPUs need to see of a vCPU
/// (whether it sleeps, its runstate) is its [`VcpuState`], in that slot; its timers are in
/// its domain.
pub struct Vcpu {
    /// Its domain and its number in that domain.
    pub dom: DomId,
    pub id: u32,
    /// Root of the guest's page tables (its CR3); `Mfn(0)` before `VCPUOP_initialise`. In
    /// the Xen pv64 mode, the root of the mode it is in (kernel or user).
    pub l4: Mfn,
    /// The Xen pv64 mode: the root of the other mode (the user root, `NEW_USER_BASEPTR`,
    /// while in kernel mode; the kernel root while in user mode), `Mfn(0)` for none; and
    /// whether it is in guest user mode. Both roots hold a root reference.
    pub other_l4: Mfn,
    pub user_mode: bool,
    /// The virtual IDT.
    pub traps: [TrapInfo; 256],
    /// Kernel stack for entries from guest user mode (`stack_switch`).
    pub kernel_ss: u16,
    pub kernel_sp: u64,
    pub callbacks: Callbacks,
    /// Frames of the guest's own GDT (`set_gdt`), by GDT page.
    pub gdt: [Option<Mfn>; 14],
    /// Its size in descriptors (as set: reported by `getvcpucontext`).
    pub gdt_ents: u32,
    /// Frames of the LDT (`MMUEXT_SET_LDT`), its linear address and size in descriptors.
    pub ldt: [Option<Mfn>; 16],
    pub ldt_base: u64,
    pub ldt_ents: u32,
    /// Virtual CR0.TS (`fpu_taskswitch`).
    pub fpu_ts: bool,
    /// The Xen pv64 mode's virtual IOPL (0–3: `PHYSDEVOP_set_iopl`, or the RFLAGS of
    /// `HYPERVISOR_iret` under `VMASST_TYPE_architectural_iopl`); the real IOPL stays 0.
    pub iopl: u8,
    /// The Xen pv64 mode's virtual CR4.FSGSBASE (clear at start, as Xen's): the real bit
    /// follows it while the vCPU runs. Ring-1 vCPUs always have the instructions.
    pub fsgsbase: bool,
    /// Its debug registers (`hv_core::emul::DebugRegs`: kept, never armed).
    pub debug: hv_core::emul::DebugRegs,
    /// Saved registers while the vCPU is not running.
    pub frame: TrapFrame,
    /// Saved while another vCPU runs.
    pub fpu: alloc::boxed::Box<hv_arch::cpu::FxArea>,
    pub fs_base: u64,
    pub gs_base: u64,
    pub kernel_gs_base: u64,
    /// DS, ES, FS, GS selectors (loaded before the bases on a switch).
    pub sel: hv_arch::cpu::DataSelectors,
    /// Recent guest translations through `l4` (see `hv_core::guest_access`).
    pub xlat: hv_core::guest_access::XlatCache,
    /// What of its domain it reaches without a lock of the scheduler's.
    pub shared: alloc::sync::Arc<DomShared>,
}

/// What the scheduler, timers and events need of a vCPU, wherever its context is: kept
/// with it in the run queue that owns it ([`Slot`]), under that queue's lock.
pub struct VcpuState {
    /// Sleeping in SCHEDOP_block or SCHEDOP_poll.
    pub blocked: bool,
    /// Has a context (vCPU 0 from the builder, others from `VCPUOP_initialise`).
    pub initialised: bool,
    /// Offline (`VCPUOP_down`, or never brought up).
    pub down: bool,
    /// SCHEDOP_poll: the ports (its deadline is `VcpuTimer::poll`).
    pub poll_ports: alloc::vec::Vec<u32>,
    /// The CPU running it, if any.
    pub on_cpu: Option<usize>,
    /// Runstate (`RUNSTATE_*`), when it was entered, and the time spent in each state.
    pub runstate: hv_core::runstate::Runstate,
}

pub use hv_core::runstate::{BLOCKED as RUNSTATE_BLOCKED, OFFLINE as RUNSTATE_OFFLINE, RUNNABLE as RUNSTATE_RUNNABLE, RUNNING as RUNSTATE_RUNNING};

impl Vcpu {
    /// vCPU `id` of the domain `shared`: vCPU 0 runs on `l4`, the others have no context
    /// until `VCPUOP_initialise`.
    pub fn new(id: u32, l4: Mfn, shared: alloc::sync::Arc<DomShared>) -> Vcpu {
        let dom = shared.id;
        Vcpu {
            dom,
            id,
            l4: if id == 0 { l4 } else { Mfn(0) },
            other_l4: Mfn(0),
            user_mode: false,
            traps: [TrapInfo::default(); 256],
            kernel_ss: 0,
            kernel_sp: 0,
            callbacks: Callbacks::default(),
            gdt: [None; 14],
            gdt_ents: 0,
            ldt: [None; 16],
            ldt_base: 0,
            ldt_ents: 0,
            fpu_ts: false,
            iopl: 0,
            fsgsbase: false,
            debug: Default::default(),
            frame: TrapFrame::default(),
            fpu: alloc::boxed::Box::new(hv_arch::cpu::FxArea::initial()),
            fs_base: 0,
            gs_base: 0,
            kernel_gs_base: 0,
            sel: [0; 4],
            xlat: Default::default(),
            shared,
        }
    }

    /// Stands in for "no vCPU" in a CPU's slot while that CPU is idle. Never scheduled,
    /// never given events (see [`Vcpu::is_placeholder`]).
    pub fn placeholder() -> Vcpu {
        Vcpu::new(0, Mfn(0), alloc::sync::Arc::new(DomShared::new(guest_abi::DOMID_IDLE, false, Mfn(0), 0, 0)))
    }

    /// Is it, trapped with `f`, in guest user mode? (Ring-1 mode: ring 3; Xen pv64 mode:
    /// the mode it tracks, the CPU runs both in ring 3.)
    #[inline]
    pub fn in_user(&self, f: &TrapFrame) -> bool {
        if self.shared.pv64 {
            self.user_mode
        } else {
            f.cs & 3 == 3
        }
    }

    pub fn is_placeholder(&self) -> bool {
        self.dom == guest_abi::DOMID_IDLE
    }
}

impl VcpuState {
    /// vCPU `id`: vCPU 0 starts initialised and up, the others down and without a context.
    pub fn new(id: u32) -> VcpuState {
        let first = id == 0;
        VcpuState {
            blocked: false,
            initialised: first,
            down: !first,
            poll_ports: alloc::vec::Vec::new(),
            on_cpu: None,
            runstate: hv_core::runstate::Runstate::new(if first { RUNSTATE_RUNNABLE } else { RUNSTATE_OFFLINE }, hv_arch::time::now_ns()),
        }
    }

    /// Can the scheduler run it (given that its domain is alive)?
    pub fn runnable(&self) -> bool {
        !self.blocked && !self.down
    }

    /// Moves to runstate `to` at time `now`, charging the time spent in the old one.
    pub fn set_runstate(&mut self, to: u32, now: u64) {
        self.runstate.set(to, now);
    }

    /// (state, entry time, times) as of `now`, the current state's time included.
    pub fn runstate_at(&self, now: u64) -> (u32, u64, [u64; 4]) {
        self.runstate.at(now)
    }
}

/// A vCPU in the run queue that owns it (`state`): its domain, its number, what the
/// scheduler and timers need of it, and its context while no CPU runs it.
pub struct Slot {
    pub shared: alloc::sync::Arc<DomShared>,
    pub vcpu: u32,
    pub state: VcpuState,
    pub ctx: Option<alloc::boxed::Box<Vcpu>>,
}

impl Slot {
    /// Records that CPU `cpu`'s queue owns this vCPU now (with both queues' locks held).
    pub fn moved_to(&self, cpu: usize) {
        if let Some(o) = self.shared.owner.get(self.vcpu as usize) {
            o.store(cpu, core::sync::atomic::Ordering::Release);
        }
    }
}

/// The scheduler's handle for vCPU `vcpu` of `dom`.
#[inline]
pub fn sched_id(dom: DomId, vcpu: u32) -> usize {
    dom as usize * crate::domain::MAX_VCPUS + vcpu as usize
}

