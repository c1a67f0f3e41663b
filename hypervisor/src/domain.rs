//! Domains: what the hypervisor remembers about each guest ([`DomShared`]) and the
//! registry that finds them by id. vCPUs are `crate::vcpu`.

use guest_abi::shared_info;
use guest_abi::DomId;
use hv_arch::physmem::DirectMap;
use hv_core::guest_access::GuestView;
use hv_core::mem::{Mfn, PhysMem};

/// Default periodic timer of a new vCPU (as Xen: 10 ms).
pub const DEFAULT_PERIOD_NS: u64 = 10_000_000;

/// Where a vCPU's `vcpu_info` lives: a frame and the byte offset in it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct VcpuInfoAt {
    pub frame: Mfn,
    pub offset: usize,
}

/// A domain: what its vCPUs and every CPU reach of it, shared (through an `Arc`) by the
/// domain registry, its vCPUs' contexts and their slots. There is no other domain object.
pub struct DomShared {
    pub id: DomId,
    pub privileged: bool,
    /// Runs in the Xen pv64 mode (kernel in ring 3 with Xen's selectors, kernel and user
    /// roots, `syscall` hypercalls, Xen's frames); else in rxen's ring-1 model. Chosen at
    /// creation from the image's notes, never changed.
    pub pv64: bool,
    pub vcpu_info: VcpuInfos,
    /// Bit n set while vCPU n is up (mirrors `VcpuState::down`: both change under the lock
    /// of the queue owning the vCPU).
    pub up: core::sync::atomic::AtomicU64,
    /// The domain's memory lock (see `locks`): its page-table operations and every change of
    /// its frames' owners happen under it. A ticket lock: a CPU that waits for it is
    /// served in turn, however busy the domain's other vCPUs keep it.
    mm: spin::mutex::TicketMutex<DomMm>,
    /// Its shared_info frame (held for the domain's life).
    pub shared_info: Mfn,
    /// Its event channels, under the domain's event lock (`ports::Locked` takes it). A
    /// ticket lock: other domains take it too (interdomain operations), and none of them may
    /// keep the domain's own vCPUs from it.
    pub ports: spin::mutex::TicketMutex<hv_core::evtchn::DomainEvents>,
    /// Its grant table (`hypercall::grant`), under its grant lock.
    grant: spin::mutex::TicketMutex<GrantTable>,
    /// Bit n set while vCPU n sleeps in `SCHEDOP_block` or `SCHEDOP_poll` (set before the
    /// sleeper's last look for events, cleared when it is woken), and while it polls: an
    /// event sent looks at a run queue only to wake such a vCPU.
    pub sleeping: core::sync::atomic::AtomicU64,
    pub polling: core::sync::atomic::AtomicU64,
    /// Whether its event channels use the FIFO ABI (changed under its event lock): a
    /// poller's pending check reads the 2-level bitmap lock-free, FIFO words under the lock.
    pub fifo_on: core::sync::atomic::AtomicBool,
    /// Shut down or crashed: the `ShutdownReason` + 1 in bits 0–6 (0 while alive), set
    /// once; bit 7 ([`DYING`]) once `destroydomain` began tearing it down.
    ended: core::sync::atomic::AtomicU8,
    /// The toolstack's pauses (`pausedomain`; a created domain starts with one): its
    /// vCPUs run only while this is 0. Changed under [`DomShared::pause_lock`].
    pause: core::sync::atomic::AtomicU32,
    pub pause_lock: spin::Mutex<()>,
    /// The lowest and highest frame the domain ever owned (every frame that becomes its
    /// own is noted here): teardown looks for its frames in this range alone.
    frames_lo: core::sync::atomic::AtomicU64,
    frames_hi: core::sync::atomic::AtomicU64,
    /// Its limits, as `createdomain` set them.
    pub limits: Limits,
    /// What the toolstack set: the domain handle (a UUID), the wallclock offset in
    /// seconds (`settimeoffset`), and the I/O resources it may be given (recorded now,
    /// enforced once domains drive devices). Leaf locks.
    pub handle: spin::Mutex<[u8; 16]>,
    pub time_offset: core::sync::atomic::AtomicI64,
    pub perms: spin::Mutex<Perms>,
    /// `destroydomain`'s progress (`hypercall::domctl`).
    pub teardown: Teardown,
    /// Set once the work done when its last vCPU left the CPUs (`schedule::finish`) is
    /// over: teardown waits for it.
    pub finished: core::sync::atomic::AtomicBool,
    /// dom0 was told (VIRQ_DOM_EXC) that every vCPU of the dead domain is off the CPUs.
    pub exc_sent: core::sync::atomic::AtomicBool,
    /// Its scheduling parameters (weight, cap), shared by the run queues.
    pub sched: alloc::sync::Arc<hv_core::sched::DomSched>,
    /// Per vCPU: the CPU whose run queue owns it (`state::with_owner`); changes only with
    /// both queues' locks held.
    pub owner: alloc::vec::Vec<core::sync::atomic::AtomicUsize>,
    /// vCPUs that moved their `vcpu_info` (once each, as Xen), and vCPUs a
    /// `VCPUOP_initialise` claimed (it then runs without locks, then installs the context).
    pub vcpu_info_registered: core::sync::atomic::AtomicU64,
    pub claimed: core::sync::atomic::AtomicU64,
    /// Pages the domain owns now, and the most it may own (`maximum_reservation`): changed
    /// under its memory lock (with the frames' owners), read anywhere.
    pub tot_pages: core::sync::atomic::AtomicU64,
    pub max_pages: core::sync::atomic::AtomicU64,
    /// An unprivileged domain's console (line buffer, rate limit), under its console lock.
    pub console: spin::Mutex<crate::guest_console::GuestConsole>,
    /// Enabled `vm_assist` types (a bit each).
    pub vm_assist: core::sync::atomic::AtomicU64,
    /// Each vCPU's timers.
    pub timers: alloc::vec::Vec<VcpuTimer>,
}

/// A vCPU's timers, reached without locks: the CPU it last ran on (its
/// `home`) fires them and arms its LAPIC for them (`timers`). Deadlines are system time in
/// ns, 0 for none; a firing CPU clears or advances one with a compare-and-swap, so each
/// expiry raises VIRQ_TIMER once.
pub struct VcpuTimer {
    pub single: core::sync::atomic::AtomicU64,
    /// The periodic timer's period (0 = off) and next expiry.
    pub period: core::sync::atomic::AtomicU64,
    pub period_next: core::sync::atomic::AtomicU64,
    /// The timeout of a `SCHEDOP_poll` in progress.
    pub poll: core::sync::atomic::AtomicU64,
    pub home: core::sync::atomic::AtomicUsize,
}

impl VcpuTimer {
    /// No one-shot timer, Xen's default 10 ms period from `now`, fired by CPU 0 until the vCPU
    /// first runs.
    pub fn new(now: u64) -> VcpuTimer {
        use core::sync::atomic::{AtomicU64, AtomicUsize};
        VcpuTimer {
            single: AtomicU64::new(0),
            period: AtomicU64::new(DEFAULT_PERIOD_NS),
            period_next: AtomicU64::new(now + DEFAULT_PERIOD_NS),
            poll: AtomicU64::new(0),
            home: AtomicUsize::new(0),
        }
    }
}

/// A domain's grant table: its grant frames (hypervisor-allocated, owned by the domain
/// and held with a writable type reference for its life, so they can never become page
/// tables or descriptor pages), in v2 its status frames (likewise, but held with an
/// untyped type reference: the domain may map them read-only only), its version and
/// limits, and the active entries of its grants.
pub struct GrantTable {
    pub frames: alloc::vec::Vec<Mfn>,
    pub status: alloc::vec::Vec<Mfn>,
    pub version: u8,
    pub max_version: u8,
    pub max_frames: u32,
    pub active: hv_core::grant::Granter,
}

impl GrantTable {
    pub fn new() -> GrantTable {
        GrantTable {
            frames: alloc::vec::Vec::new(),
            status: alloc::vec::Vec::new(),
            version: 1,
            max_version: 2,
            max_frames: guest_abi::grant::DEFAULT_MAX_GRANT_FRAMES,
            active: Default::default(),
        }
    }

    /// Its shared entries as the hypervisor reaches them.
    pub fn entries(&self) -> crate::grants::Entries<'_> {
        crate::grants::Entries::new(&self.frames, &self.status, self.version)
    }
}

/// Where a domain's teardown is: taken by one CPU at a time (`busy`, a try-lock: a second
/// `destroydomain` is re-issued until the first lets go; `createdomain` holds it until
/// the new domain's vCPUs are in the run queues), its step, and the next frame of a step
/// that walks the domain's frames.
#[derive(Default)]
pub struct Teardown {
    pub busy: core::sync::atomic::AtomicBool,
    pub step: core::sync::atomic::AtomicU32,
    pub cursor: core::sync::atomic::AtomicU64,
    /// A foreign reference to one of its frames went: the frames are to be looked at again.
    pub reap: core::sync::atomic::AtomicBool,
    /// How many hypercalls it took and the longest of them, in TSC ticks (logged at the
    /// end: `cargo xtask bench` reads it).
    pub stretches: core::sync::atomic::AtomicU32,
    pub longest: core::sync::atomic::AtomicU64,
    /// Counted in [`LINGERING`]: relinquished, but frames still referenced elsewhere.
    pub lingering: core::sync::atomic::AtomicBool,
    /// The frames the FREE walk found still referenced (what `reap` looks at), unless
    /// there were too many to list (`overflow`: `reap` walks every frame then).
    pub stuck: spin::Mutex<alloc::vec::Vec<Mfn>>,
    pub overflow: core::sync::atomic::AtomicBool,
    /// When `reap` last walked every frame (an overflowed stuck list).
    pub last_walk: core::sync::atomic::AtomicU64,
    /// The next maptrack handle of its own grant mappings to release (`teardown`).
    pub release_at: core::sync::atomic::AtomicU32,
}

/// Dying domains whose teardown is done but whose frames other domains still reference (a
/// grant or foreign mapping): while any exist, a privileged domain's page-table operations
/// look at them again (`teardown::reap_lingering`), since such an operation may
/// have dropped the last reference.
pub static LINGERING: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// `ended`'s bit for a domain being destroyed.
const DYING: u8 = 0x80;

/// A domain's limits (`createdomain`; boot-time domains get Xen's defaults).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_vcpus: u32,
    pub max_evtchn_port: u32,
    pub max_grant_frames: u32,
    pub max_maptrack_frames: u32,
    /// The highest grant-table version it may switch to (1 or 2).
    pub max_grant_version: u8,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_vcpus: 1,
            max_evtchn_port: guest_abi::evtchn::NR_EVTCHN_2L - 1,
            max_grant_frames: guest_abi::grant::DEFAULT_MAX_GRANT_FRAMES,
            max_maptrack_frames: guest_abi::grant::DEFAULT_MAX_MAPTRACK_FRAMES,
            max_grant_version: 2,
        }
    }
}

/// I/O resources a domain may be given (`*_permission`): inclusive ranges.
#[derive(Clone, Debug, Default)]
pub struct Perms {
    pub ioports: alloc::vec::Vec<(u64, u64)>,
    pub iomem: alloc::vec::Vec<(u64, u64)>,
    pub irqs: alloc::vec::Vec<(u64, u64)>,
}

impl Perms {
    /// Most ranges of one kind (each grant or revoke is one range).
    pub const MAX_RANGES: usize = 64;

    /// Grants (`allow`) or revokes the range `first..=last` in `set`: revoking cuts it out
    /// of every range it overlaps. `false` when the set is full.
    pub fn change(set: &mut alloc::vec::Vec<(u64, u64)>, first: u64, last: u64, allow: bool) -> bool {
        let mut out = alloc::vec::Vec::new();
        for &(a, b) in set.iter() {
            if b < first || a > last {
                out.push((a, b));
                continue;
            }
            if allow {
                out.push((a, b));
                continue;
            }
            if a < first {
                out.push((a, first - 1));
            }
            if b > last {
                out.push((last + 1, b));
            }
        }
        if allow && !out.iter().any(|&(a, b)| a <= first && last <= b) {
            out.push((first, last));
        }
        if out.len() > Self::MAX_RANGES {
            return false;
        }
        *set = out;
        true
    }

    /// Is `first..=last` wholly granted in `set`?
    pub fn allows(set: &[(u64, u64)], first: u64, last: u64) -> bool {
        set.iter().any(|&(a, b)| a <= first && last <= b)
    }
}

/// What the domain's memory lock guards.
pub struct DomMm {
    /// Preempted page-table (de)validation (see `hv_core::pt`).
    pub jobs: hv_core::pt::Jobs,
    /// The grants it maps (`hypercall::grant`).
    pub maptrack: hv_core::grant::Maptrack,
}

/// A domain's maptrack budget goes back with it (the last reference to the domain).
impl Drop for DomMm {
    fn drop(&mut self) {
        crate::grants::maptrack_release(self.maptrack.chunks_held());
    }
}

impl DomMm {
    /// With room for `maptrack_frames` maptrack frames (Xen's count: 512 handles each).
    pub fn new(maptrack_frames: u32) -> DomMm {
        let limit = maptrack_frames as usize * hv_core::grant::MAPTRACK_CHUNK;
        DomMm { jobs: Default::default(), maptrack: hv_core::grant::Maptrack::new(limit, crate::grants::maptrack_grow) }
    }
}

impl DomShared {
    pub fn new(id: DomId, privileged: bool, shared_info: Mfn, nr_vcpus: usize, nr_pages: u64) -> DomShared {
        DomShared::with_limits(id, privileged, shared_info, Limits { max_vcpus: nr_vcpus as u32, ..Limits::default() }, nr_pages)
    }

    /// Chooses the Xen pv64 mode (before the domain is shared): also its tables' entries
    /// get the User bit (`hv_core::pt::Jobs::user_entries`).
    pub fn set_pv64(&mut self, pv64: bool) {
        self.pv64 = pv64;
        self.mm.get_mut().jobs.user_entries = pv64;
    }

    /// A domain with the limits `limits` (its vCPU count is `limits.max_vcpus`).
    pub fn with_limits(id: DomId, privileged: bool, shared_info: Mfn, limits: Limits, nr_pages: u64) -> DomShared {
        use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize};
        let nr_vcpus = limits.max_vcpus as usize;
        let mut grant = GrantTable::new();
        grant.max_frames = limits.max_grant_frames;
        grant.max_version = limits.max_grant_version;
        DomShared {
            id,
            privileged,
            pv64: false,
            vcpu_info: VcpuInfos::legacy(shared_info, nr_vcpus),
            up: AtomicU64::new(1),
            mm: spin::mutex::TicketMutex::new(DomMm::new(limits.max_maptrack_frames)),
            shared_info,
            ports: spin::mutex::TicketMutex::new(hv_core::evtchn::DomainEvents::new(limits.max_evtchn_port, nr_vcpus as u32)),
            grant: spin::mutex::TicketMutex::new(grant),
            sleeping: AtomicU64::new(0),
            polling: AtomicU64::new(0),
            fifo_on: core::sync::atomic::AtomicBool::new(false),
            ended: AtomicU8::new(0),
            pause: core::sync::atomic::AtomicU32::new(0),
            pause_lock: spin::Mutex::new(()),
            frames_lo: AtomicU64::new(u64::MAX),
            frames_hi: AtomicU64::new(0),
            limits,
            handle: spin::Mutex::new([0; 16]),
            time_offset: core::sync::atomic::AtomicI64::new(0),
            perms: spin::Mutex::new(Perms::default()),
            teardown: Default::default(),
            finished: AtomicBool::new(false),
            exc_sent: AtomicBool::new(false),
            sched: hv_core::sched::DomSched::new(hv_core::sched::DEFAULT_WEIGHT, 0),
            owner: (0..nr_vcpus).map(|_| AtomicUsize::new(0)).collect(),
            vcpu_info_registered: AtomicU64::new(0),
            claimed: AtomicU64::new(1),
            tot_pages: AtomicU64::new(nr_pages),
            max_pages: AtomicU64::new(nr_pages),
            console: spin::Mutex::new(Default::default()),
            vm_assist: AtomicU64::new(0),
            timers: (0..nr_vcpus).map(|_| VcpuTimer::new(hv_arch::time::now_ns())).collect(),
        }
    }

    /// Takes the domain's memory lock.
    pub fn mm(&self) -> crate::locks::Ordered<spin::mutex::TicketMutexGuard<'_, DomMm>> {
        crate::locks::Ordered::new(crate::locks::Level::DomainMm, || self.mm.lock())
    }

    /// Takes the domain's grant-table lock.
    pub fn grant(&self) -> crate::locks::Ordered<spin::mutex::TicketMutexGuard<'_, GrantTable>> {
        crate::locks::Ordered::new(crate::locks::Level::Grant, || self.grant.lock())
    }

    /// Takes an unprivileged domain's memory lock as the second one of a privileged caller
    /// (a foreign page-table operation; see `locks`).
    pub fn foreign_mm(&self) -> crate::locks::Ordered<spin::mutex::TicketMutexGuard<'_, DomMm>> {
        debug_assert!(!self.privileged);
        crate::locks::Ordered::new(crate::locks::Level::ForeignMm, || self.mm.lock())
    }

    /// Takes the domain's memory lock if it is free.
    pub fn try_mm(&self) -> Option<crate::locks::Ordered<spin::mutex::TicketMutexGuard<'_, DomMm>>> {
        crate::locks::Ordered::try_new(crate::locks::Level::DomainMm, || self.mm.try_lock())
    }

    /// Has it shut down or crashed, or is it being destroyed? (Its vCPUs never run again.)
    #[inline]
    pub fn is_dead(&self) -> bool {
        self.ended.load(core::sync::atomic::Ordering::Acquire) != 0
    }

    /// Why it ended, if it shut down or crashed.
    pub fn ended(&self) -> Option<guest_abi::sched::ShutdownReason> {
        let e = self.ended.load(core::sync::atomic::Ordering::Acquire) & !DYING;
        e.checked_sub(1).and_then(|r| guest_abi::sched::ShutdownReason::from_u32(r as u32))
    }

    /// Is it being destroyed (`destroydomain` began)?
    pub fn is_dying(&self) -> bool {
        self.ended.load(core::sync::atomic::Ordering::Acquire) & DYING != 0
    }

    /// Marks it dying; false if it already was.
    pub fn set_dying(&self) -> bool {
        self.ended.fetch_or(DYING, core::sync::atomic::Ordering::AcqRel) & DYING == 0
    }

    /// Has it enabled `VMASST_TYPE_architectural_iopl` (its kernel counts as CPL 0 for the
    /// virtual IOPL, which `HYPERVISOR_iret` sets and bounce frames show)?
    pub fn architectural_iopl(&self) -> bool {
        self.vm_assist.load(core::sync::atomic::Ordering::Relaxed) & (1 << guest_abi::hypercall::vm_assist::TYPE_ARCHITECTURAL_IOPL) != 0
    }

    /// Is it paused by the toolstack?
    #[inline]
    pub fn is_paused(&self) -> bool {
        self.pause.load(core::sync::atomic::Ordering::Acquire) != 0
    }

    /// The toolstack's pause count (see `pause`).
    pub fn pause_count(&self) -> &core::sync::atomic::AtomicU32 {
        &self.pause
    }

    /// Notes that frame `m` became the domain's (see `frames_lo`).
    pub fn note_frame(&self, m: Mfn) {
        self.frames_lo.fetch_min(m.0, core::sync::atomic::Ordering::AcqRel);
        self.frames_hi.fetch_max(m.0, core::sync::atomic::Ordering::AcqRel);
    }

    /// The frames the domain may own: every one of them is in `lo..=hi` (empty: `lo > hi`).
    pub fn frame_range(&self) -> (u64, u64) {
        (self.frames_lo.load(core::sync::atomic::Ordering::Acquire), self.frames_hi.load(core::sync::atomic::Ordering::Acquire))
    }

    /// Records that it ended for `why`; false if it had already.
    pub fn end(&self, why: guest_abi::sched::ShutdownReason) -> bool {
        let code = (why as u32 as u8).saturating_add(1).min(DYING - 1);
        self.ended.compare_exchange(0, code, core::sync::atomic::Ordering::AcqRel, core::sync::atomic::Ordering::Acquire).is_ok()
    }

    pub fn nr_vcpus(&self) -> u32 {
        self.vcpu_info.len() as u32
    }

    /// vCPU `v`'s virtual interrupt mask.
    pub fn upcall_mask(&self, v: u32) -> u8 {
        self.vcpu_info.byte(v, vi::UPCALL_MASK)
    }

    /// Is vCPU `v` up?
    pub fn is_up(&self, v: u32) -> bool {
        v < 64 && self.up.load(core::sync::atomic::Ordering::Acquire) & (1 << v) != 0
    }

    pub fn set_up(&self, v: u32, up: bool) {
        if v < 64 {
            if up {
                self.up.fetch_or(1 << v, core::sync::atomic::Ordering::AcqRel);
            } else {
                self.up.fetch_and(!(1 << v), core::sync::atomic::Ordering::AcqRel);
            }
        }
    }
}

impl DomShared {
}

/// Where each vCPU of a domain has its `vcpu_info`, so that the CPU running a vCPU reads it
/// without a lock. Each entry is one atomic word: the machine address of the
/// area.
pub struct VcpuInfos(alloc::vec::Vec<core::sync::atomic::AtomicU64>);

impl VcpuInfos {
    /// The legacy slots of `shared_info` for `n` vCPUs.
    pub fn legacy(shared_info: Mfn, n: usize) -> VcpuInfos {
        VcpuInfos((0..n).map(|v| core::sync::atomic::AtomicU64::new(shared_info.maddr() + (v * vi::SIZE) as u64)).collect())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn get(&self, v: u32) -> Option<VcpuInfoAt> {
        let a = self.0.get(v as usize)?.load(core::sync::atomic::Ordering::Acquire);
        Some(VcpuInfoAt { frame: Mfn(a >> 12), offset: (a & 0xFFF) as usize })
    }

    pub fn set(&self, v: u32, at: VcpuInfoAt) {
        if let Some(w) = self.0.get(v as usize) {
            w.store(at.frame.maddr() + at.offset as u64, core::sync::atomic::Ordering::Release);
        }
    }

    /// The byte at `off` of vCPU `v`'s `vcpu_info` (0 if it has none). The areas are
    /// guest-shared pages held for the domain's life (shared_info, or a registered page with
    /// a writable type reference): accessed by copies and atomic byte operations only.
    pub fn byte(&self, v: u32, off: usize) -> u8 {
        self.get(v).and_then(|at| DirectMap.load_u8(at.frame, at.offset + off)).unwrap_or(0)
    }

    pub fn set_byte(&self, v: u32, off: usize, val: u8) {
        if let Some(at) = self.get(v) {
            DirectMap.store_u8(at.frame, at.offset + off, val);
        }
    }

    /// Sets bits of a byte of vCPU `v`'s `vcpu_info`; the old byte (0xFF if it has none).
    pub fn fetch_or(&self, v: u32, off: usize, m: u8) -> u8 {
        self.get(v).and_then(|at| DirectMap.fetch_or_u8(at.frame, at.offset + off, m)).unwrap_or(0xFF)
    }

    /// Writes `data` at `off` of vCPU `v`'s `vcpu_info`.
    pub fn write(&self, v: u32, off: usize, data: &[u8]) {
        if let Some(at) = self.get(v) {
            if off + data.len() <= vi::SIZE {
                DirectMap.write(at.frame, at.offset + off, data);
            }
        }
    }

    /// The word at `off` of vCPU `v`'s `vcpu_info` (0 if it has none).
    pub fn read_u64(&self, v: u32, off: usize) -> u64 {
        let mut b = [0u8; 8];
        match self.get(v) {
            Some(at) if off + 8 <= vi::SIZE => {
                let _ = hv_core::mem::PhysMem::read(&DirectMap, at.frame, at.offset + off, &mut b);
            }
            _ => {}
        }
        u64::from_le_bytes(b)
    }

    /// Writes the aligned word at `off` of vCPU `v`'s `vcpu_info` (CR2) in one store.
    pub fn write_u64(&self, v: u32, off: usize, val: u64) {
        if let Some(at) = self.get(v) {
            let o = at.offset + off;
            if off + 8 <= vi::SIZE && o.is_multiple_of(8) {
                DirectMap.write_u64(at.frame, o / 8, val);
            } else {
                self.write(v, off, &val.to_le_bytes());
            }
        }
    }

    /// Is an upcall due for vCPU `v` (pending and not masked)?
    #[inline]
    pub fn upcall_due(&self, v: u32) -> bool {
        // `evtchn_upcall_pending` and `evtchn_upcall_mask` are bytes 0 and 1: one load.
        let Some(at) = self.get(v) else { return false };
        let w = match DirectMap.load_u16(at.frame, at.offset + vi::UPCALL_PENDING) {
            Some(w) => w,
            // An odd offset (`register_vcpu_info` allows any that fits): byte by byte.
            None => {
                let byte = |off: usize| DirectMap.load_u8(at.frame, at.offset + off).unwrap_or(0) as u16;
                byte(vi::UPCALL_PENDING) | byte(vi::UPCALL_MASK) << 8
            }
        };
        w & 0xFF != 0 && w >> 8 == 0
    }
}

/// Byte offsets in a `vcpu_info` (`guest_abi::shared_info::VcpuInfo`).
pub mod vi {
    use core::mem::{offset_of, size_of};
    use guest_abi::shared_info::{ArchVcpuInfo, VcpuInfo};
    pub const UPCALL_PENDING: usize = offset_of!(VcpuInfo, evtchn_upcall_pending);
    pub const UPCALL_MASK: usize = offset_of!(VcpuInfo, evtchn_upcall_mask);
    pub const PENDING_SEL: usize = offset_of!(VcpuInfo, evtchn_pending_sel);
    pub const CR2: usize = offset_of!(VcpuInfo, arch) + offset_of!(ArchVcpuInfo, cr2);
    pub const TIME: usize = offset_of!(VcpuInfo, time);
    pub const SIZE: usize = size_of::<VcpuInfo>();
}

/// Every domain, by id, as every CPU reaches it: written when a domain is made and when
/// its teardown is complete (read-mostly: a leaf lock, held for a lookup). A free slot's
/// id is handed out again.
static REGISTRY: spin::RwLock<alloc::vec::Vec<Option<alloc::sync::Arc<DomShared>>>> = spin::RwLock::new(alloc::vec::Vec::new());

/// Most domains at once (ids 0 to `MAX_DOMAINS - 1`).
pub const MAX_DOMAINS: usize = 1024;

/// Makes boot-time domain `d` reachable by id.
pub fn register(d: alloc::sync::Arc<DomShared>) {
    let mut r = REGISTRY.write();
    let i = d.id as usize;
    if r.len() <= i {
        r.resize(i + 1, None);
    }
    assert!(r[i].is_none(), "domain id {} registered twice", i);
    r[i] = Some(d);
}

/// Makes a new domain with `make(id)` under id `want` if that is free, or the lowest free
/// id from 1 (`want` = None), and registers it. `Err(true)`: the id is taken or none is
/// left; `Err(false)`: `make` failed.
pub fn create(want: Option<DomId>, make: impl FnOnce(DomId) -> Option<alloc::sync::Arc<DomShared>>) -> Result<alloc::sync::Arc<DomShared>, bool> {
    let mut r = REGISTRY.write();
    let free = |i: usize| r.get(i).is_none_or(|s| s.is_none());
    let id = match want {
        Some(id) if (id as usize) < MAX_DOMAINS && free(id as usize) => id as usize,
        Some(_) => return Err(true),
        None => (1..MAX_DOMAINS).find(|&i| free(i)).ok_or(true)?,
    };
    let d = make(id as DomId).ok_or(false)?;
    if r.len() <= id {
        r.resize(id + 1, None);
    }
    r[id] = Some(d.clone());
    Ok(d)
}

/// Forgets domain `d` (its teardown is complete) if it is still the one registered under
/// its id: the id may be handed out again.
pub fn unregister(d: &alloc::sync::Arc<DomShared>) {
    if let Some(s) = REGISTRY.write().get_mut(d.id as usize) {
        if s.as_ref().is_some_and(|x| alloc::sync::Arc::ptr_eq(x, d)) {
            *s = None;
        }
    }
}

/// Is `d` the domain registered under its id (not one torn down whose id went to another)?
pub fn is_registered(d: &alloc::sync::Arc<DomShared>) -> bool {
    REGISTRY.read().get(d.id as usize).and_then(|s| s.as_ref()).is_some_and(|x| alloc::sync::Arc::ptr_eq(x, d))
}

/// Domain `id` as every CPU reaches it (none for a bad id or the idle domain).
pub fn shared_of(id: DomId) -> Option<alloc::sync::Arc<DomShared>> {
    REGISTRY.read().get(id as usize).cloned().flatten()
}

/// Every registered domain (a snapshot taken one id at a time, lowest first).
pub fn all() -> impl Iterator<Item = alloc::sync::Arc<DomShared>> {
    all_from(0)
}

/// The registered domains with an id at or above `first`, lowest id first.
pub fn all_from(first: DomId) -> impl Iterator<Item = alloc::sync::Arc<DomShared>> {
    let n = REGISTRY.read().len();
    (first as usize..n).filter_map(|i| shared_of(i as DomId))
}

/// The first registered domain with an id at or above `id`.
pub fn next_from(id: DomId) -> Option<alloc::sync::Arc<DomShared>> {
    let r = REGISTRY.read();
    r.iter().skip(id as usize).flatten().next().cloned()
}

/// Most vCPUs per domain: the legacy `vcpu_info` slots of shared_info (every vCPU then has
/// a `vcpu_info` from the start, as Xen requires before `VCPUOP_initialise`).
pub const MAX_VCPUS: usize = shared_info::MAX_VIRT_CPUS;

/// Runs `f` with a view of `dom`'s address space through root `l4` for checked guest
/// accesses; with `cache` (the vCPU's, when `l4` is its validated current root) walks are
/// remembered until a table entry or an owner changes. `mm_held`: the caller holds `dom`'s
/// memory lock, so no frame of it changes hands or kind meanwhile; otherwise every copy
/// holds its frame (`hv_core::guest_access::Pins`).
#[inline]
pub fn with_view<R>(
    dom: DomId,
    l4: Mfn,
    mm_held: bool,
    cache: Option<&hv_core::guest_access::XlatCache>,
    f: impl FnOnce(&GuestView<'_>) -> R,
) -> R {
    let ft = crate::machine::frames();
    let owns = |m: Mfn| ft.owned_by(m, dom);
    let pins = hv_core::guest_access::FramePins { ft, dom };
    let pins: Option<&dyn hv_core::guest_access::Pins> = if mm_held { None } else { Some(&pins) };
    f(&GuestView { l4, owns: &owns, cache: cache.map(|c| (c, ft.xlat_gen(dom))), pins })
}
