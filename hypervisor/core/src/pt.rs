//! Validated page-table and descriptor-table updates: the type system at work.
//!
//! This module applies the rules of [`crate::frame`] to guest page tables (see the model
//! there). Every path that makes a frame reachable goes through it:
//!
//! - **Taking a table type** (pin, root, or an entry of the level above pointing at it) for
//!   the first time validates all 512 entries, taking the references each one holds; the
//!   last type reference drops them again ("devalidation"), recursively.
//! - **An L1 entry** takes a general reference on its frame, plus a `Writable` type
//!   reference if it is writable. So a frame that is any kind of table can never be mapped
//!   writable, and a frame mapped writable can never become a table.
//! - **An entry of an L2/L3/L4** takes a general reference and a type reference of the level
//!   below. Linear (recursive) page tables are **refused outright**: an entry pointing at a
//!   table of its own level, or at its own table, is a type conflict.
//! - **Segment-descriptor pages** (GDT/LDT frames) get their own type; every descriptor is
//!   checked (and fixed up) when the type is taken.
//!
//! Entry rules (`-EINVAL` when broken): the frame belongs to the domain named as the owner of
//! mapped data (`fd`); no PSE, PWT, PCD or Global at L2–L4; no cache-attribute bits at L1
//! without I/O permission; no reserved bit (62) set; nothing in the hypervisor's L4 slots
//! 256–271; a non-present entry must be zero in its address bits or point above RAM (L1TF).
//!
//! Errors never leave references half-taken: every failing path undoes what it took.
//!
//! # Preemption (Xen's partial validation)
//!
//! Validating a tree and devalidating one cost up to 512 entries per table, and a guest can
//! build trees of thousands of tables: neither may run unbounded. Both are iterative (a stack
//! of at most four tables, one per level) and spend a per-call entry budget
//! ([`Pt::budget`]). When it runs out, the work becomes the domain's [`Jobs`] entry and the
//! operation reports [`PtError::Preempted`]: the hypercall continues later and every
//! page-table hypercall of the domain first calls [`Pt::drive`]. A validation belongs to the
//! vCPU that started it (only its hypercalls advance it; others are asked to retry); once it
//! is done its references are *parked* until that vCPU's re-issued operation claims them.
//! A devalidation belongs to the domain (any of its hypercalls advances it). Tables inside a
//! job are typed but not validated: busy, never updated, mapped writable or retyped.

use crate::frame::{FrameError, FrameSlot, FrameTable, Owner, PageType};
use crate::ioperm::IoMem;
use crate::mem::{Mfn, PhysMem};
use crate::pte::{Pte, PteFlags, ADDR_MASK, GRANT_BIT};
use guest_abi::errno::Errno;
use guest_abi::layout::is_reserved_l4_slot;
use guest_abi::DomId;

/// Why an update was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PtError {
    /// A frame-table rule refused it (ownership, type conflict, counter).
    Frame(FrameError),
    /// A flag not allowed at this level.
    BadFlags,
    /// MMIO the domain has no rights to (none at all, or the hypervisor's own devices).
    NoIoAccess,
    /// An entry in the hypervisor's L4 slots.
    ReservedSlot,
    /// A non-present entry whose address points into RAM (L1TF).
    L1tf,
    /// The table frame is not a validated table of a known level, or not the caller's.
    NotATable,
    /// A descriptor the guest may not install.
    BadDescriptor,
    /// Pin state wrong (already pinned / not pinned).
    PinState,
    /// The budget ran out: the work is the domain's pending job; call again later.
    Preempted,
    /// The table is being validated or devalidated by a pending job.
    Busy,
    /// The entry is a grant mapping (only the grant-table operations change it), or not the
    /// grant mapping the operation names.
    Granted,
}

impl From<FrameError> for PtError {
    fn from(e: FrameError) -> Self {
        PtError::Frame(e)
    }
}

impl From<PtError> for Errno {
    fn from(e: PtError) -> Errno {
        match e {
            PtError::Frame(FrameError::Overflow) => Errno::EOVERFLOW,
            PtError::Preempted => Errno::ERESTART,
            // As Xen's get_page_from_l1e for MMIO without iomem permission.
            PtError::NoIoAccess => Errno::EPERM,
            _ => Errno::EINVAL,
        }
    }
}

type Res<T = ()> = Result<T, PtError>;

const SOFT_BITS: u64 = 0x0E00 | (0x3FF << 52); // bits 9-11 and 52-61
const BASE: u64 = PteFlags::PRESENT.bits()
    | PteFlags::WRITABLE.bits()
    | PteFlags::USER_ACCESSIBLE.bits()
    | PteFlags::ACCESSED.bits()
    | PteFlags::DIRTY.bits()
    | PteFlags::NO_EXECUTE.bits()
    | SOFT_BITS;
const CACHE: u64 = PteFlags::WRITE_THROUGH.bits() | PteFlags::NO_CACHE.bits() | PteFlags::HUGE_PAGE.bits(); // PSE = PAT at L1
/// Flags an L1 entry may carry (cache bits only on I/O frames, see `Pt::io`).
const L1_ALLOWED: u64 = BASE | PteFlags::GLOBAL.bits();
/// Flags an L2–L4 entry may carry.
const UPPER_ALLOWED: u64 = BASE;
/// Flags whose change needs no revalidation (same frame, same presence and writability).
const FAST_BITS: u64 = PteFlags::ACCESSED.bits() | PteFlags::DIRTY.bits() | PteFlags::NO_EXECUTE.bits() | PteFlags::GLOBAL.bits() | PteFlags::USER_ACCESSIBLE.bits() | SOFT_BITS;

/// Drops every CPU's guest translations (and waits until they are gone): what a frame
/// whose type count fell to zero needs before it takes another kind of type (see the TLB
/// clock in [`crate::frame`]).
pub trait TlbFlush {
    fn flush_all(&mut self);
}

/// A [`TlbFlush`] for callers that have one CPU and no guest running during the operation
/// (the builder, host tests): counts the flushes.
#[derive(Debug, Default)]
pub struct CountFlushes(pub u64);

impl TlbFlush for CountFlushes {
    fn flush_all(&mut self) {
        self.0 += 1;
    }
}

/// One table of a job's stack: `next` is the next entry to validate (validation) or the
/// number of entries still holding references (devalidation).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
struct Level {
    mfn: Mfn,
    level: u32,
    next: u32,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum JobKind {
    /// Validating a tree for vCPU `owner`, whose entries name frames of `dom`.
    Validate { owner: u32, dom: DomId },
    /// Dropping the references of tables whose last type reference went.
    Devalidate,
}

/// Preempted work: a depth-first walk, one table per level.
#[derive(Copy, Clone, Debug)]
struct Job {
    kind: JobKind,
    stack: [Level; 4],
    depth: usize,
}

impl Job {
    fn new(kind: JobKind, mfn: Mfn, level: u32, next: u32) -> Job {
        let mut stack = [Level::default(); 4];
        stack[0] = Level { mfn, level, next };
        Job { kind, stack, depth: 1 }
    }
}

/// A validation that finished in [`Pt::drive`]: its outcome (on success, its root's general
/// and type reference) waits for the re-issued operation of vCPU `owner` that asked for it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Parked {
    mfn: Mfn,
    level: u32,
    owner: u32,
    result: Result<(), PtError>,
}

/// A domain's preempted page-table work (see the module's "Preemption").
#[derive(Clone, Debug, Default)]
pub struct Jobs {
    pending: Option<Job>,
    parked: Option<Parked>,
    /// The domain's kernel runs in ring 3 (the Xen pv64 mode): every present entry of its
    /// tables carries the User bit, added where it is missing as the entry is validated
    /// (a table being pinned, an `mmu_update`), as Xen's `adjust_guest_l*e`; kernel and
    /// user are kept apart by their roots instead. Fixed when the domain is created.
    pub user_entries: bool,
}

impl Jobs {
    /// Is work pending (the domain's page-table hypercalls must call [`Pt::drive`] first)?
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Is a finished validation waiting to be claimed?
    pub fn has_parked(&self) -> bool {
        self.parked.is_some()
    }

    /// The vCPU a pending validation belongs to.
    pub fn validation_owner(&self) -> Option<u32> {
        match self.pending.map(|j| j.kind) {
            Some(JobKind::Validate { owner, .. }) => Some(owner),
            _ => None,
        }
    }

    /// Gives a pending validation to vCPU `vcpu` (its owner went down and will not finish
    /// it); its outcome, unclaimed, is then given back before `vcpu`'s next validation.
    pub fn adopt(&mut self, vcpu: u32) {
        if let Some(Job { kind: JobKind::Validate { owner, .. }, .. }) = self.pending.as_mut() {
            *owner = vcpu;
        }
    }
}

/// What a run of a job came to.
enum Run {
    Done,
    Pending(Job),
}

/// One step of a validation.
enum Step {
    Next,
    Push(Mfn),
}

/// The state a page-table operation works on.
pub struct Pt<'a, M: PhysMem + ?Sized, S> {
    pub mem: &'a mut M,
    pub ft: &'a FrameTable<S>,
    /// One past the highest RAM frame (the L1TF boundary).
    pub ram_end: Mfn,
    /// The MMIO a domain with I/O rights may map (`None`: the tables' owner has none): only
    /// such frames may carry cache-attribute bits (PWT, PCD, PAT), and they hold no
    /// references (they are not RAM).
    pub io: Option<&'a IoMem>,
    /// Flushes every CPU when a type change needs it.
    pub tlb: &'a mut dyn TlbFlush,
    /// The domain's preempted work, the calling vCPU, and the entries this call may still
    /// validate or devalidate.
    pub jobs: &'a mut Jobs,
    pub vcpu: u32,
    pub budget: &'a mut u64,
}

/// Checks one segment descriptor and returns it fixed up: DPL raised to at least
/// `min_dpl` (the ring the guest's kernel runs in: 1 in the ring-1 model, 3 in the Xen pv64
/// mode, as Xen's `__fixup_guest_selector`), accessed bit set on code/data. Gates, TSS and
/// LDT descriptors are refused.
pub fn check_descriptor(d: u64, min_dpl: u64) -> Result<u64, PtError> {
    const P: u64 = 1 << 47;
    const S: u64 = 1 << 44;
    const ACCESSED: u64 = 1 << 40;
    if d & P == 0 {
        return Ok(d);
    }
    if d & S == 0 {
        // System descriptor: type 0 is reserved (loading it faults); all others (LDT, TSS,
        // call/interrupt/trap/task gates) are refused.
        return if (d >> 40) & 0xF == 0 { Ok(d) } else { Err(PtError::BadDescriptor) };
    }
    let dpl = (d >> 45) & 3;
    let d = if dpl < min_dpl { (d & !(3 << 45)) | (min_dpl << 45) } else { d };
    Ok(d | ACCESSED)
}

impl<M: PhysMem + ?Sized, S: AsRef<[FrameSlot]>> Pt<'_, M, S> {
    /// The lowest DPL a descriptor of the tables' owner may have: its kernel's ring (the
    /// Xen pv64 mode's owners are the ones whose entries get the User bit).
    fn min_dpl(&self) -> u64 {
        if self.jobs.user_entries { 3 } else { 1 }
    }

    /// Before `mfn` may take type `ty`: flushes everywhere if its last type reference went
    /// away since the last flush and the kind of type changes.
    fn prepare(&mut self, mfn: Mfn, ty: PageType) {
        if self.ft.needs_flush(mfn, ty) {
            let t = self.ft.flush_begin();
            self.tlb.flush_all();
            self.ft.flush_done(t);
        }
    }

    /// Takes a writable type reference on `mfn` (owned by `dom`) for a hypervisor write into
    /// it, flushing first if the frame was a table until now.
    pub fn get_writable(&mut self, mfn: Mfn, dom: DomId) -> Res {
        if !self.ft.owned_by(mfn, dom) {
            return Err(PtError::Frame(FrameError::NotOwner));
        }
        self.take_type(mfn, PageType::Writable, None)?;
        Ok(())
    }

    /// Takes a general and a writable type reference on `mfn` (owned by `dom`) for a page
    /// the hypervisor keeps writing for the guest (a registered `vcpu_info`), flushing first
    /// if the frame was a table until now.
    pub fn get_writable_page(&mut self, mfn: Mfn, dom: DomId) -> Res {
        if !self.ft.owned_by(mfn, dom) {
            return Err(PtError::Frame(FrameError::NotOwner));
        }
        self.take_type(mfn, PageType::Writable, Some(dom))?;
        Ok(())
    }

    /// Takes a type reference of `ty` on `mfn` (and a general one for `page`, if given),
    /// flushing first if the frame changes kind ([`Self::prepare`]). Tried again if the
    /// frame went stale in between (a hold of another CPU's guest copy ending right then
    /// stamps it afresh).
    fn take_type(&mut self, mfn: Mfn, ty: PageType, page: Option<DomId>) -> Result<bool, FrameError> {
        let mut tries = 0;
        loop {
            self.prepare(mfn, ty);
            let r = match page {
                Some(d) => self.ft.get_page_and_type(mfn, d, Some(ty)),
                None => self.ft.get_type(mfn, ty),
            };
            match r {
                Err(FrameError::StaleTlb) if tries < 2 => tries += 1,
                r => return r,
            }
        }
    }

    fn read(&self, t: Mfn, i: usize) -> Res<Pte> {
        self.mem.read_u64(t, i).map(Pte).ok_or(PtError::NotATable)
    }

    /// Every write the hypervisor makes into a guest table (or a plain frame through
    /// `update_entry`) goes through here, and makes cached guest translations stale.
    /// `owner` owns `t` (every caller checked).
    fn write(&mut self, t: Mfn, i: usize, e: Pte, owner: DomId) -> Res {
        let r = self.mem.write_u64(t, i, e.0).ok_or(PtError::NotATable);
        // After the write: a walk that read the old entry cached it under the old generation.
        self.ft.invalidate_translations(owner);
        r
    }

    fn check_non_present(&self, e: Pte) -> Res {
        let addr = e.0 & ADDR_MASK;
        if addr == 0 || Mfn::of(addr) >= self.ram_end {
            Ok(())
        } else {
            Err(PtError::L1tf)
        }
    }

    /// Takes the references an entry of a level-`level` table holds. `fd` owns the frame.
    pub fn get_entry(&mut self, level: u32, e: Pte, fd: DomId) -> Res {
        if !e.present() {
            return self.check_non_present(e);
        }
        let mfn = e.mfn();
        if level == 1 {
            let owner = self.ft.owner(mfn);
            if matches!(owner, Owner::None | Owner::Io) {
                // MMIO: only with I/O rights, never the hypervisor's devices, no references.
                if !self.io.is_some_and(|io| io.permits(mfn, owner)) {
                    return Err(PtError::NoIoAccess);
                }
                return self.check_flags(level, e, true);
            }
            self.check_flags(level, e, false)?;
            if e.writable() {
                self.take_type(mfn, PageType::Writable, Some(fd))?;
            } else {
                self.ft.get_page(mfn, fd)?;
            }
            return Ok(());
        }
        self.check_flags(level, e, false)?;
        self.get_table_ref(mfn, level - 1, fd)
    }

    fn check_flags(&self, level: u32, e: Pte, io: bool) -> Res {
        let allowed = if level == 1 {
            L1_ALLOWED | if io { CACHE } else { 0 }
        } else {
            UPPER_ALLOWED
        };
        if e.0 & !ADDR_MASK & !allowed != 0 {
            return Err(PtError::BadFlags);
        }
        Ok(())
    }

    /// Drops the references an entry holds (the entry was validated when it was installed).
    pub fn put_entry(&mut self, level: u32, e: Pte) {
        if !e.present() {
            return;
        }
        let mfn = e.mfn();
        if level == 1 {
            // A grant mapping's entry holds nothing itself (the maptrack does), nor does an
            // MMIO mapping (whether a frame is RAM never changes).
            if !e.granted() && !matches!(self.ft.owner(mfn), Owner::None | Owner::Io) {
                let _ = self.ft.put_page_and_type(mfn, e.writable());
            }
            return;
        }
        self.release_table(mfn, level - 1);
    }

    /// Takes a general and a level-`level` table type reference on `mfn` (owned by `dom`),
    /// validating the tree below it the first time, within the budget. `Preempted` leaves
    /// both references with the domain's pending job (the caller takes nothing back); the
    /// operation then claims them when it is re-issued.
    fn get_table_ref(&mut self, mfn: Mfn, level: u32, dom: DomId) -> Res {
        if let Some(p) = self.jobs.parked.filter(|p| (p.mfn, p.level, p.owner) == (mfn, level, self.vcpu)) {
            self.jobs.parked = None;
            return p.result;
        }
        // An outcome nobody claimed (its operation was abandoned or failed before claiming):
        // give its references back first, as budgeted work, so that a validation starting
        // below can never meet it (one job at a time).
        if let Some(old) = self.jobs.parked.take() {
            if old.result.is_ok() {
                self.release_table(old.mfn, old.level);
                if self.jobs.pending.is_some() {
                    return Err(PtError::Preempted);
                }
            }
        }
        if !self.take_table_ref(mfn, level, dom)? {
            return Ok(());
        }
        if self.jobs.pending.is_some() {
            // A second job while one is pending (callers drive the pending one first, so this
            // does not happen).
            let _ = self.ft.put_type(mfn);
            let _ = self.ft.put_page(mfn);
            return Err(PtError::Busy);
        }
        match self.validate(Job::new(JobKind::Validate { owner: self.vcpu, dom }, mfn, level, 0)) {
            Ok(Run::Done) => Ok(()),
            Ok(Run::Pending(job)) => {
                self.jobs.pending = Some(job);
                Err(PtError::Preempted)
            }
            Err(e) => Err(e),
        }
    }

    /// Takes a general and a level-`level` table type reference on `mfn` (owned by `dom`),
    /// flushing first if the TLB clock asks for it. `Ok(true)`: the first type reference (the
    /// caller validates); `Ok(false)`: an already validated table. A table inside a pending
    /// job is `Busy`. Nothing is held on error.
    fn take_table_ref(&mut self, mfn: Mfn, level: u32, dom: DomId) -> Result<bool, PtError> {
        let ty = PageType::table(level).ok_or(PtError::NotATable)?;
        self.ft.get_page(mfn, dom)?;
        match self.take_type(mfn, ty, None) {
            Ok(true) => Ok(true),
            Ok(false) if self.ft.get(mfn).is_some_and(|f| f.validated) => Ok(false),
            r => {
                if r.is_ok() {
                    let _ = self.ft.put_type(mfn);
                }
                let _ = self.ft.put_page(mfn);
                Err(r.err().map(PtError::from).unwrap_or(PtError::Busy))
            }
        }
    }

    /// Drops a general and a table type reference on `mfn`; the last type reference first
    /// drops the references of the table's entries (within the budget; the rest becomes the
    /// domain's pending devalidation, and the table stays busy until it is done).
    fn release_table(&mut self, mfn: Mfn, level: u32) {
        let last = self.ft.get(mfn).is_some_and(|f| f.type_count == 1);
        if !last {
            let _ = self.ft.put_type(mfn);
            let _ = self.ft.put_page(mfn);
            return;
        }
        let _ = self.ft.set_busy(mfn);
        self.devalidate_job(Job::new(JobKind::Devalidate, mfn, level, 512));
    }

    /// Runs a devalidation; what the budget does not cover becomes the pending job.
    fn devalidate_job(&mut self, job: Job) {
        if let Run::Pending(job) = self.devalidate(job, false) {
            if self.jobs.pending.is_none() {
                self.jobs.pending = Some(job);
            } else {
                // One job at a time: operations stop as soon as one is pending, a validation
                // starts only with none pending and no unclaimed outcome, so this is unreachable;
                // should it ever be reached, finishing the work beats leaking references.
                debug_assert!(false, "a second pending page-table job");
                self.devalidate(job, true);
            }
        }
    }

    /// Advances the domain's pending job. `Ok` when none is left; `Preempted` when work
    /// remains (or belongs to another vCPU, which will do it): the hypercall is to be
    /// re-issued unchanged.
    pub fn drive(&mut self) -> Res {
        let Some(job) = self.jobs.pending.take() else { return Ok(()) };
        match job.kind {
            JobKind::Validate { owner, .. } if owner != self.vcpu => {
                self.jobs.pending = Some(job);
                return Err(PtError::Preempted);
            }
            JobKind::Validate { owner, .. } => {
                let root = job.stack[0];
                let result = match self.validate(job) {
                    Ok(Run::Pending(job)) => {
                        self.jobs.pending = Some(job);
                        return Err(PtError::Preempted);
                    }
                    Ok(Run::Done) => Ok(()),
                    Err(e) => Err(e),
                };
                // Park the outcome for the re-issued operation. (An earlier unclaimed one
                // cannot exist: `get_table_ref` gives it back before a validation starts.)
                debug_assert!(self.jobs.parked.is_none());
                self.jobs.parked = Some(Parked { mfn: root.mfn, level: root.level, owner, result });
            }
            JobKind::Devalidate => {
                if let Run::Pending(job) = self.devalidate(job, false) {
                    self.jobs.pending = Some(job);
                }
            }
        }
        if self.jobs.pending.is_some() {
            Err(PtError::Preempted)
        } else {
            Ok(())
        }
    }

    /// Spends one unit of the budget; false when there is none left.
    fn spend(&mut self) -> bool {
        if *self.budget == 0 {
            return false;
        }
        *self.budget -= 1;
        true
    }

    /// Validates a job's tree depth-first. On an invalid entry every reference the job took
    /// is dropped again (a devalidation, pending if long) and the error returned.
    fn validate(&mut self, mut job: Job) -> Result<Run, PtError> {
        let JobKind::Validate { dom, .. } = job.kind else { return Ok(Run::Done) };
        loop {
            let top = job.stack[job.depth - 1];
            if top.next == 512 {
                self.ft.mark_validated(top.mfn)?;
                job.depth -= 1;
                if job.depth == 0 {
                    return Ok(Run::Done);
                }
                job.stack[job.depth - 1].next += 1;
                continue;
            }
            if !self.spend() {
                return Ok(Run::Pending(job));
            }
            match self.validate_entry(top, dom) {
                Ok(Step::Next) => job.stack[job.depth - 1].next += 1,
                Ok(Step::Push(child)) => {
                    job.stack[job.depth] = Level { mfn: child, level: top.level - 1, next: 0 };
                    job.depth += 1;
                }
                Err(e) => {
                    // Entries [0, next) of every table on the stack hold references, and each
                    // table above the bottom holds its own (taken by the entry below it).
                    job.kind = JobKind::Devalidate;
                    self.devalidate_job(job);
                    return Err(e);
                }
            }
        }
    }

    /// Takes the references of entry `t.next` of table `t` (frames of `dom`).
    fn validate_entry(&mut self, t: Level, dom: DomId) -> Result<Step, PtError> {
        let i = t.next as usize;
        let mut e = self.read(t.mfn, i)?;
        if t.level == 4 && is_reserved_l4_slot(i) {
            return if e.0 == 0 { Ok(Step::Next) } else { Err(PtError::ReservedSlot) };
        }
        if self.jobs.user_entries && e.present() && !e.flags().contains(PteFlags::USER_ACCESSIBLE) {
            // The table is typed already: the guest cannot write it meanwhile.
            e = Pte(e.0 | PteFlags::USER_ACCESSIBLE.bits());
            self.write(t.mfn, i, e, dom)?;
        }
        if !e.present() || t.level == 1 {
            return self.get_entry(t.level, e, dom).map(|_| Step::Next);
        }
        self.check_flags(t.level, e, false)?;
        let child = e.mfn();
        Ok(if self.take_table_ref(child, t.level - 1, dom)? { Step::Push(child) } else { Step::Next })
    }

    /// Drops the references of a job's tables, last entry first; a table's own general and
    /// type reference go once its entries are done. `unbounded` ignores the budget.
    fn devalidate(&mut self, mut job: Job, unbounded: bool) -> Run {
        loop {
            let top = job.stack[job.depth - 1];
            if top.next == 0 {
                let _ = self.ft.put_type(top.mfn);
                let _ = self.ft.put_page(top.mfn);
                job.depth -= 1;
                if job.depth == 0 {
                    return Run::Done;
                }
                continue;
            }
            if !unbounded && !self.spend() {
                return Run::Pending(job);
            }
            let i = top.next - 1;
            job.stack[job.depth - 1].next = i;
            if top.level == 4 && is_reserved_l4_slot(i as usize) {
                continue;
            }
            let Ok(e) = self.read(top.mfn, i as usize) else { continue };
            if !e.present() {
                continue;
            }
            if top.level == 1 {
                let _ = self.ft.put_page_and_type(e.mfn(), e.writable());
                continue;
            }
            let child = e.mfn();
            if self.ft.get(child).is_some_and(|f| f.type_count == 1) {
                let _ = self.ft.set_busy(child);
                job.stack[job.depth] = Level { mfn: child, level: top.level - 1, next: 512 };
                job.depth += 1;
            } else {
                let _ = self.ft.put_type(child);
                let _ = self.ft.put_page(child);
            }
        }
    }

    /// The level of a validated table frame owned by `dom`.
    pub fn table_level(&self, mfn: Mfn, dom: DomId) -> Option<u32> {
        let (ty, count, validated) = self.ft.typed_by(mfn, dom).ok()?;
        if count == 0 || !validated {
            return None;
        }
        match ty {
            PageType::L1 => Some(1),
            PageType::L2 => Some(2),
            PageType::L3 => Some(3),
            PageType::L4 => Some(4),
            _ => None,
        }
    }

    /// `MMU_NORMAL_PT_UPDATE`: writes `new` at entry `idx` of frame `table` (owned by `pfd`),
    /// mapping data owned by `fd`. A validated table is updated with full checks; any other
    /// frame of the domain is written as plain memory if it can be typed writable.
    pub fn update_entry(
        &mut self,
        table: Mfn,
        idx: usize,
        new: Pte,
        pfd: DomId,
        fd: DomId,
        preserve_ad: bool,
    ) -> Res {
        let (ty, count, validated) = match self.ft.typed_by(table, pfd) {
            Ok(x) => x,
            Err(FrameError::NoSuchFrame) => return Err(PtError::NotATable),
            Err(e) => return Err(PtError::Frame(e)),
        };
        let level = match (ty, count) {
            (PageType::L1 | PageType::L2 | PageType::L3 | PageType::L4, n) if n > 0 && !validated => {
                return Err(PtError::Busy)
            }
            (PageType::L1, n) if n > 0 => 1,
            (PageType::L2, n) if n > 0 => 2,
            (PageType::L3, n) if n > 0 => 3,
            (PageType::L4, n) if n > 0 => 4,
            (PageType::SegDesc, n) if n > 0 => return Err(PtError::NotATable),
            _ => {
                // Plain memory: a writable type reference for the duration of the write.
                self.take_type(table, PageType::Writable, None)?;
                let r = self.write(table, idx, new, pfd);
                let _ = self.ft.put_type(table);
                return r;
            }
        };
        if level > 1 && fd != pfd {
            return Err(PtError::Frame(FrameError::NotOwner));
        }
        if level == 4 && is_reserved_l4_slot(idx) {
            return Err(PtError::ReservedSlot);
        }
        let old = self.read(table, idx)?;
        if old.granted() {
            return Err(PtError::Granted);
        }
        let new = if preserve_ad {
            Pte(new.0 | (old.0 & (PteFlags::ACCESSED.bits() | PteFlags::DIRTY.bits())))
        } else {
            new
        };
        let new = if self.jobs.user_entries && new.present() { Pte(new.0 | PteFlags::USER_ACCESSIBLE.bits()) } else { new };
        // Fast path: same frame, same presence and writability, only harmless bits differ.
        if old.present() && new.present() && old.mfn() == new.mfn() && old.writable() == new.writable()
            && (old.0 ^ new.0) & !FAST_BITS == 0
        {
            // (An MMIO entry's cache bits are unchanged: they are not harmless bits.)
            let io = level == 1 && matches!(self.ft.owner(new.mfn()), Owner::None | Owner::Io);
            self.check_flags(level, new, io)?;
            return self.write(table, idx, new, pfd);
        }
        self.get_entry(level, new, fd)?;
        if let Err(e) = self.write(table, idx, new, pfd) {
            self.put_entry(level, new);
            return Err(e);
        }
        self.put_entry(level, old);
        Ok(())
    }

    /// A validated L1 of `dom`, entry `idx` of it: what the grant-table operations write.
    fn grant_slot(&self, table: Mfn, idx: usize, dom: DomId) -> Res<Pte> {
        if idx >= 512 || self.table_level(table, dom) != Some(1) {
            return Err(PtError::NotATable);
        }
        self.read(table, idx)
    }

    /// Writes a grant mapping's entry `new` (carrying [`GRANT_BIT`]; its references are held
    /// by the mapping domain's maptrack) at entry `idx` of `table`, a validated L1 of `dom`.
    /// The entry there before drops its references; `Granted` if it is a grant mapping.
    /// Returns whether that entry was present (the TLBs then need a flush).
    pub fn install_grant(&mut self, table: Mfn, idx: usize, new: Pte, dom: DomId) -> Res<bool> {
        let old = self.grant_slot(table, idx, dom)?;
        if old.granted() {
            return Err(PtError::Granted);
        }
        self.write(table, idx, Pte(new.0 | GRANT_BIT), dom)?;
        self.put_entry(1, old);
        Ok(old.present())
    }

    /// Replaces the grant mapping `expected` (exactly that entry: its frame, writability and
    /// user bit are what the unmapped handle's references stand for) at entry `idx` of
    /// `table` (a validated L1 of `dom`) with `new`: an entry [`Self::steal_entry`] took
    /// out of another L1 entry of `dom`, with its references (or, for a grant mapping, its
    /// handle's, which stay with that handle: only where its PTE lives changes), or none.
    /// `Granted` if the entry there is anything else.
    pub fn remove_grant(&mut self, table: Mfn, idx: usize, expected: Pte, new: Pte, dom: DomId) -> Res {
        let old = self.grant_slot(table, idx, dom)?;
        if !old.granted() || old != expected {
            return Err(PtError::Granted);
        }
        self.write(table, idx, new, dom)
    }

    /// Clears entry `idx` of `table` (a validated L1 of `dom`) and returns what it held,
    /// with its references, for another L1 entry of `dom` to take over (`unmap_and_replace`;
    /// a grant mapping's entry moves with its handle's references, as Xen lets it: the
    /// handle is unmapped at its new place).
    pub fn steal_entry(&mut self, table: Mfn, idx: usize, dom: DomId) -> Res<Pte> {
        let old = self.grant_slot(table, idx, dom)?;
        self.write(table, idx, Pte(0), dom)?;
        Ok(old)
    }

    /// Finishes the domain's pending work and gives back an outcome nobody will claim (its
    /// domain is torn down: no operation will be re-issued). `vcpu` takes over a pending
    /// validation of any vCPU. Within the budget; `Preempted` when work remains.
    pub fn finish_all(&mut self) -> Res {
        self.jobs.adopt(self.vcpu);
        self.drive()?;
        if let Some(old) = self.jobs.parked.take() {
            if old.result.is_ok() {
                self.release_table(old.mfn, old.level);
            }
        }
        self.drive()
    }

    /// `MMUEXT_PIN_Ln_TABLE`.
    pub fn pin(&mut self, mfn: Mfn, level: u32, dom: DomId) -> Res {
        let f = self.ft.get(mfn).ok_or(PtError::Frame(FrameError::NoSuchFrame))?;
        if f.owner != Owner::Dom(dom) {
            return Err(PtError::Frame(FrameError::NotOwner));
        }
        if f.pinned {
            return Err(PtError::PinState);
        }
        self.get_table_ref(mfn, level, dom)?;
        self.ft.set_pinned(mfn, true)?;
        Ok(())
    }

    /// `MMUEXT_UNPIN_TABLE`.
    pub fn unpin(&mut self, mfn: Mfn, dom: DomId) -> Res {
        let f = self.ft.get(mfn).ok_or(PtError::Frame(FrameError::NoSuchFrame))?;
        if f.owner != Owner::Dom(dom) {
            return Err(PtError::Frame(FrameError::NotOwner));
        }
        if !f.pinned {
            return Err(PtError::PinState);
        }
        let level = self.table_level(mfn, dom).ok_or(PtError::NotATable)?;
        self.ft.set_pinned(mfn, false)?;
        self.release_table(mfn, level);
        Ok(())
    }

    /// Takes the root reference for a new CR3 (an L4).
    pub fn get_root(&mut self, mfn: Mfn, dom: DomId) -> Res {
        self.get_table_ref(mfn, 4, dom)
    }

    /// Drops a root reference.
    pub fn put_root(&mut self, mfn: Mfn) {
        self.release_table(mfn, 4);
    }

    /// Takes a segment-descriptor type reference (GDT/LDT frame), checking and fixing up
    /// every descriptor the first time.
    pub fn get_segdesc(&mut self, mfn: Mfn, dom: DomId) -> Res {
        self.ft.get_page(mfn, dom)?;
        let first = match self.take_type(mfn, PageType::SegDesc, None) {
            Ok(f) => f,
            Err(e) => {
                let _ = self.ft.put_page(mfn);
                return Err(e.into());
            }
        };
        if first {
            let mut fixed = [0u64; 512];
            let mut bad = false;
            for (i, slot) in fixed.iter_mut().enumerate() {
                match self.read(mfn, i).and_then(|d| check_descriptor(d.0, self.min_dpl())) {
                    Ok(d) => *slot = d,
                    Err(_) => bad = true,
                }
            }
            if bad {
                let _ = self.ft.put_type(mfn);
                let _ = self.ft.put_page(mfn);
                return Err(PtError::BadDescriptor);
            }
            for (i, d) in fixed.iter().enumerate() {
                self.write(mfn, i, Pte(*d), dom)?;
            }
            self.ft.mark_validated(mfn)?;
        }
        Ok(())
    }

    /// Drops a segment-descriptor reference.
    pub fn put_segdesc(&mut self, mfn: Mfn) {
        let _ = self.ft.put_type(mfn);
        let _ = self.ft.put_page(mfn);
    }

    /// `update_descriptor`: writes one checked descriptor at machine address `maddr`.
    pub fn update_descriptor(&mut self, maddr: u64, desc: u64, dom: DomId) -> Res {
        if !maddr.is_multiple_of(8) {
            return Err(PtError::BadDescriptor);
        }
        let mfn = Mfn::of(maddr);
        let idx = ((maddr & 0xFFF) / 8) as usize;
        let d = check_descriptor(desc, self.min_dpl())?;
        let f = self.ft.get(mfn).ok_or(PtError::Frame(FrameError::NoSuchFrame))?;
        if f.owner != Owner::Dom(dom) {
            return Err(PtError::Frame(FrameError::NotOwner));
        }
        if f.ty == PageType::SegDesc && f.type_count > 0 {
            return self.write(mfn, idx, Pte(d), dom);
        }
        self.take_type(mfn, PageType::Writable, None)?;
        let r = self.write(mfn, idx, Pte(d), dom);
        let _ = self.ft.put_type(mfn);
        r
    }

    /// Finds the L1 table and index mapping `va` in the tables rooted at `l4`, requiring
    /// every level to be present, not a superpage, and owned by `dom`.
    pub fn l1_for_va(&self, l4: Mfn, va: u64, dom: DomId) -> Option<(Mfn, usize)> {
        if !guest_abi::layout::is_guest_va(va) {
            return None;
        }
        let mut t = l4;
        for level in (2..=4).rev() {
            let e = self.read(t, crate::pte::index(va, level)).ok()?;
            if !e.present() || e.flags().contains(PteFlags::HUGE_PAGE) {
                return None;
            }
            t = e.mfn();
        }
        (self.table_level(t, dom) == Some(1)).then_some((t, crate::pte::index(va, 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::VecMem;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    const N: u64 = 24;
    /// Frames 0..20 belong to dom 0, 20..22 to dom 1, 22..24 are free.
    fn world() -> (VecMem, FrameTable<Vec<FrameSlot>>) {
        let ft = FrameTable::new(crate::frame::slots(N as usize));
        for m in 0..N {
            let o = match m {
                0..=19 => Owner::Dom(0),
                20 | 21 => Owner::Dom(1),
                _ => Owner::Free,
            };
            ft.set_owner(Mfn(m), o).unwrap();
        }
        (VecMem::new(0, N as usize), ft)
    }

    /// What a `Pt` borrows besides memory and the frame table.
    struct Extra {
        tlb: CountFlushes,
        jobs: Jobs,
        budget: u64,
    }

    impl Default for Extra {
        fn default() -> Extra {
            Extra { tlb: CountFlushes::default(), jobs: Jobs::default(), budget: u64::MAX }
        }
    }

    fn pt<'a>(m: &'a mut VecMem, ft: &'a FrameTable<Vec<FrameSlot>>, x: &'a mut Extra) -> Pt<'a, VecMem, Vec<FrameSlot>> {
        Pt { mem: m, ft, ram_end: Mfn(N), io: None, tlb: &mut x.tlb, jobs: &mut x.jobs, vcpu: 0, budget: &mut x.budget }
    }

    const P: u64 = 1;
    const RW: u64 = 2;

    fn e(mfn: u64, f: u64) -> Pte {
        Pte(mfn << 12 | f)
    }

    #[test]
    fn l1_rules() {
        let (mut m, ft) = world();
        let mut x = Extra::default();
        let mut p = pt(&mut m, &ft, &mut x);
        p.pin(Mfn(1), 1, 0).unwrap();
        // Map frame 5 writable, frame 6 read-only.
        p.update_entry(Mfn(1), 0, e(5, P | RW), 0, 0, false).unwrap();
        p.update_entry(Mfn(1), 1, e(6, P), 0, 0, false).unwrap();
        assert_eq!(p.ft.get(Mfn(5)).unwrap().ty, PageType::Writable);
        // The L1 itself cannot be mapped writable, by itself or elsewhere.
        assert_eq!(p.update_entry(Mfn(1), 2, e(1, P | RW), 0, 0, false), Err(PtError::Frame(FrameError::TypeConflict)));
        // Read-only is fine.
        p.update_entry(Mfn(1), 2, e(1, P), 0, 0, false).unwrap();
        // A frame mapped writable cannot become a table.
        assert!(p.pin(Mfn(5), 1, 0).is_err());
        // Another domain's frame, a free frame, a frame beyond RAM.
        assert_eq!(p.update_entry(Mfn(1), 3, e(20, P), 0, 0, false), Err(PtError::Frame(FrameError::NotOwner)));
        assert_eq!(p.update_entry(Mfn(1), 3, e(22, P), 0, 0, false), Err(PtError::Frame(FrameError::NotOwner)));
        assert!(p.update_entry(Mfn(1), 3, e(500, P), 0, 0, false).is_err());
        // Cache bits only on MMIO; bit 62 is reserved.
        assert_eq!(p.update_entry(Mfn(1), 3, e(7, P | 0x10), 0, 0, false), Err(PtError::BadFlags));
        assert_eq!(p.update_entry(Mfn(1), 3, e(7, P | 1 << 62), 0, 0, false), Err(PtError::BadFlags));
        // L1TF: non-present entries must not point into RAM.
        assert_eq!(p.update_entry(Mfn(1), 3, e(7, 0), 0, 0, false), Err(PtError::L1tf));
        p.update_entry(Mfn(1), 3, Pte(0x2), 0, 0, false).unwrap();
        p.update_entry(Mfn(1), 3, e(1 << 30, 0), 0, 0, false).unwrap();
        // Fast path keeps accounting: toggle Accessed/NX on the writable mapping.
        p.update_entry(Mfn(1), 0, e(5, P | RW | 0x20 | 1 << 63), 0, 0, false).unwrap();
        assert_eq!(p.ft.get(Mfn(5)).unwrap().type_count, 1);
        // Remove the writable mapping: frame 5 may become a table now.
        p.update_entry(Mfn(1), 0, Pte(0), 0, 0, false).unwrap();
        assert_eq!(p.ft.get(Mfn(5)).unwrap().type_count, 0);
        p.pin(Mfn(5), 1, 0).unwrap();
        assert_eq!(p.pin(Mfn(5), 1, 0), Err(PtError::PinState), "double pin");
        p.unpin(Mfn(5), 0).unwrap();
        assert_eq!(p.unpin(Mfn(5), 0), Err(PtError::PinState));
    }

    /// The Xen pv64 mode: entries of validated tables get the User bit, whether they were
    /// there before the pin or come through an update; plain memory is written as given,
    /// and a domain of the ring-1 model keeps its entries as they are.
    #[test]
    fn user_entries() {
        const U: u64 = 4;
        for user in [true, false] {
            let (mut m, ft) = world();
            let mut x = Extra::default();
            x.jobs.user_entries = user;
            let mut p = pt(&mut m, &ft, &mut x);
            // An L2 → L1 tree written as plain memory, without User bits, then pinned.
            p.update_entry(Mfn(2), 0, e(1, P | RW), 0, 0, false).unwrap();
            p.update_entry(Mfn(1), 0, e(5, P | RW), 0, 0, false).unwrap();
            assert_eq!(p.read(Mfn(1), 0), Ok(e(5, P | RW)), "plain memory is written as given");
            p.update_entry(Mfn(1), 1, Pte(0x2), 0, 0, false).unwrap();
            p.pin(Mfn(2), 2, 0).unwrap();
            let want = |f: u64| if user { f | U } else { f };
            assert_eq!(p.read(Mfn(2), 0), Ok(e(1, want(P | RW))));
            assert_eq!(p.read(Mfn(1), 0), Ok(e(5, want(P | RW))));
            assert_eq!(p.read(Mfn(1), 1), Ok(Pte(0x2)), "non-present entries are left alone");
            // Updates of the validated tables.
            p.update_entry(Mfn(1), 2, e(6, P), 0, 0, false).unwrap();
            assert_eq!(p.read(Mfn(1), 2), Ok(e(6, want(P))));
            p.update_entry(Mfn(1), 0, e(5, P | RW | 0x20), 0, 0, false).unwrap();
            assert_eq!(p.read(Mfn(1), 0), Ok(e(5, want(P | RW | 0x20))), "the fast path too");
            p.unpin(Mfn(2), 0).unwrap();
        }
    }

    #[test]
    fn io_frames() {
        let (mut m, ft) = world();
        let mut x = Extra::default();
        let mut io = IoMem::new(Mfn(N), Mfn(N));
        io.deny(Mfn(600), Mfn(600));
        const PCD_PWT: u64 = 0x18;
        {
            // Without I/O rights: no MMIO, in an update or in a table being validated.
            let mut p = pt(&mut m, &ft, &mut x);
            assert_eq!(p.update_entry(Mfn(1), 0, e(500, P | RW), 0, 0, false), Ok(()), "plain memory write before the pin");
            assert_eq!(p.pin(Mfn(1), 1, 0), Err(PtError::NoIoAccess));
            p.update_entry(Mfn(1), 0, Pte(0), 0, 0, false).unwrap();
            p.pin(Mfn(1), 1, 0).unwrap();
            assert_eq!(p.update_entry(Mfn(1), 0, e(500, P), 0, 0, false), Err(PtError::NoIoAccess));
        }
        let counts = |ft: &FrameTable<Vec<FrameSlot>>| (0..N).map(|i| ft.get(Mfn(i)).map(|f| (f.count, f.type_count))).collect::<Vec<_>>();
        let before = counts(&ft);
        let mut p = pt(&mut m, &ft, &mut x);
        p.io = Some(&io);
        // MMIO, writable, uncached: allowed, and holds no reference.
        p.update_entry(Mfn(1), 0, e(500, P | RW | PCD_PWT), 0, 0, false).unwrap();
        p.update_entry(Mfn(1), 1, e(501, P | 0x80), 0, 0, false).unwrap(); // PAT
        // The hypervisor's device, RAM with cache bits, another domain's RAM, free RAM.
        assert_eq!(p.update_entry(Mfn(1), 2, e(600, P), 0, 0, false), Err(PtError::NoIoAccess));
        assert_eq!(p.update_entry(Mfn(1), 2, e(7, P | PCD_PWT), 0, 0, false), Err(PtError::BadFlags));
        assert_eq!(p.update_entry(Mfn(1), 2, e(20, P), 0, 0, false), Err(PtError::Frame(FrameError::NotOwner)));
        assert_eq!(p.update_entry(Mfn(1), 2, e(22, P), 0, 0, false), Err(PtError::Frame(FrameError::NotOwner)));
        // MMIO is never a table.
        assert!(p.update_entry(Mfn(2), 0, e(500, P), 0, 0, false).is_ok(), "plain memory write");
        assert!(p.pin(Mfn(2), 2, 0).is_err());
        p.update_entry(Mfn(2), 0, Pte(0), 0, 0, false).unwrap();
        // Flag changes and removal.
        p.update_entry(Mfn(1), 0, e(500, P | PCD_PWT | 0x20), 0, 0, false).unwrap();
        p.update_entry(Mfn(1), 0, Pte(0), 0, 0, false).unwrap();
        p.update_entry(Mfn(1), 1, Pte(0), 0, 0, false).unwrap();
        let after = counts(p.ft);
        assert_eq!(before, after, "MMIO mappings took or dropped references");
        p.unpin(Mfn(1), 0).unwrap();
    }

    #[test]
    fn upper_levels_and_linear_tables() {
        let (mut m, ft) = world();
        let mut x = Extra::default();
        let mut p = pt(&mut m, &ft, &mut x);
        // Build L4(2) -> L3(3) -> L2(4) -> L1(8) by writing plain memory, then pin the L4.
        p.update_entry(Mfn(2), 0, e(3, P | RW), 0, 0, false).unwrap();
        p.update_entry(Mfn(3), 0, e(4, P | RW), 0, 0, false).unwrap();
        p.update_entry(Mfn(4), 0, e(8, P | RW), 0, 0, false).unwrap();
        p.update_entry(Mfn(8), 0, e(9, P | RW), 0, 0, false).unwrap();
        p.pin(Mfn(2), 4, 0).unwrap();
        for (m, t) in [(2, PageType::L4), (3, PageType::L3), (4, PageType::L2), (8, PageType::L1), (9, PageType::Writable)] {
            assert_eq!(p.ft.get(Mfn(m)).unwrap().ty, t);
        }
        // Superpages, cache bits and Global at L2..L4.
        assert_eq!(p.update_entry(Mfn(4), 1, e(10, P | RW | 0x80), 0, 0, false), Err(PtError::BadFlags));
        assert_eq!(p.update_entry(Mfn(3), 1, e(10, P | 0x80), 0, 0, false), Err(PtError::BadFlags));
        assert_eq!(p.update_entry(Mfn(4), 1, e(10, P | 0x100), 0, 0, false), Err(PtError::BadFlags));
        // Linear page tables are refused at every level, read-only or not.
        assert!(p.update_entry(Mfn(2), 1, e(2, P), 0, 0, false).is_err(), "L4 self-map");
        assert!(p.update_entry(Mfn(4), 1, e(4, P), 0, 0, false).is_err(), "L2 self-map");
        assert!(p.update_entry(Mfn(3), 1, e(3, P | RW), 0, 0, false).is_err(), "L3 self-map");
        assert!(p.update_entry(Mfn(2), 1, e(4, P), 0, 0, false).is_err(), "L4 -> L2");
        // Reserved L4 slots.
        assert_eq!(p.update_entry(Mfn(2), 256, e(10, P), 0, 0, false), Err(PtError::ReservedSlot));
        assert_eq!(p.update_entry(Mfn(2), 271, Pte(0), 0, 0, false), Err(PtError::ReservedSlot));
        // A table with something in a reserved slot cannot become an L4.
        p.update_entry(Mfn(11), 260, e(12, P), 0, 0, false).unwrap(); // plain memory write
        assert_eq!(p.pin(Mfn(11), 4, 0), Err(PtError::ReservedSlot));
        assert_eq!(p.ft.get(Mfn(12)).unwrap().count, 0);
        p.update_entry(Mfn(11), 260, Pte(0), 0, 0, false).unwrap();
        // Unpin the whole hierarchy: everything returns to zero.
        p.unpin(Mfn(2), 0).unwrap();
        for m in 0..N {
            let f = p.ft.get(Mfn(m)).unwrap();
            assert_eq!((f.count, f.type_count), (0, 0), "mfn {m}");
        }
    }

    #[test]
    fn type_changes_flush_stale_translations() {
        let (mut m, ft) = world();
        let mut x = Extra::default();
        let mut p = pt(&mut m, &ft, &mut x);
        p.pin(Mfn(1), 1, 0).unwrap();
        // In one "batch": frame 5 mapped writable, unmapped, then hooked as an L1 (via an L2
        // entry): another CPU may still hold the writable translation, so a flush comes first.
        p.update_entry(Mfn(1), 0, e(5, P | RW), 0, 0, false).unwrap();
        p.update_entry(Mfn(1), 0, Pte(0), 0, 0, false).unwrap();
        assert_eq!(flushes(&p), 0);
        p.update_entry(Mfn(2), 0, e(5, P | RW), 0, 0, false).unwrap(); // plain write into 2
        p.pin(Mfn(2), 2, 0).unwrap();
        assert_eq!(flushes(&p), 1, "writable -> L1 flushed first");
        // Writable mappings come and go without flushes.
        p.update_entry(Mfn(1), 1, e(6, P | RW), 0, 0, false).unwrap();
        p.update_entry(Mfn(1), 1, Pte(0), 0, 0, false).unwrap();
        p.update_entry(Mfn(1), 1, e(6, P | RW), 0, 0, false).unwrap();
        assert_eq!(flushes(&p), 1);
        // The mirror: the L1 (5) unhooked, then written as plain memory or mapped writable.
        p.update_entry(Mfn(2), 0, Pte(0), 0, 0, false).unwrap();
        p.update_entry(Mfn(5), 3, e(7, P), 0, 0, false).unwrap();
        assert_eq!(flushes(&p), 2, "L1 -> writable flushed first");
        // Re-hooking a table as the same type needs nothing.
        p.update_entry(Mfn(1), 1, Pte(0), 0, 0, false).unwrap();
        p.update_entry(Mfn(5), 3, Pte(0), 0, 0, false).unwrap();
        p.update_entry(Mfn(2), 1, e(5, P), 0, 0, false).unwrap();
        let n = flushes(&p);
        p.update_entry(Mfn(2), 1, Pte(0), 0, 0, false).unwrap();
        p.update_entry(Mfn(2), 1, e(5, P), 0, 0, false).unwrap();
        assert_eq!(flushes(&p), n, "L1 -> L1 needs no flush");
        // A writable-mapped frame becomes a descriptor page only after a flush.
        p.update_entry(Mfn(1), 2, e(9, P | RW), 0, 0, false).unwrap();
        p.update_entry(Mfn(1), 2, Pte(0), 0, 0, false).unwrap();
        p.get_segdesc(Mfn(9), 0).unwrap();
        assert_eq!(flushes(&p), n + 1);
    }

    /// Flushes everywhere so far.
    fn flushes(p: &Pt<'_, VecMem, Vec<FrameSlot>>) -> u64 {
        u64::from(p.ft.tlb_clock())
    }

    /// Drives the pending job to its end, `budget` entries per call; returns the calls made.
    fn drive_to_end(p: &mut Pt<'_, VecMem, Vec<FrameSlot>>, budget: u64) -> u32 {
        let mut calls = 0;
        loop {
            *p.budget = budget;
            calls += 1;
            if p.drive().is_ok() {
                return calls;
            }
        }
    }

    /// Every frame in `frames` is back to no references.
    fn assert_unreferenced(p: &Pt<'_, VecMem, Vec<FrameSlot>>, frames: impl Iterator<Item = u64>) {
        for m in frames {
            let f = p.ft.get(Mfn(m)).unwrap();
            assert_eq!((f.count, f.type_count), (0, 0), "mfn {m}");
        }
    }

    #[test]
    fn descriptors() {
        // Flat DPL0 code: raised to DPL1, accessed set.
        let code0 = 0x00AF_9A00_0000_FFFFu64;
        assert_eq!(check_descriptor(code0, 1), Ok(0x00AF_BB00_0000_FFFF));
        // ... and to DPL3 for a Xen pv64 domain (its kernel runs in ring 3).
        assert_eq!(check_descriptor(code0, 3), Ok(0x00AF_FB00_0000_FFFF));
        assert_eq!(check_descriptor(0x00CF_F300_0000_FFFF, 1), Ok(0x00CF_F300_0000_FFFF));
        assert_eq!(check_descriptor(0, 1), Ok(0));
        // Call gate, interrupt gate, trap gate, TSS, LDT: refused.
        for ty in [0xC, 0xE, 0xF, 0x9, 0xB, 0x2, 0x5] {
            let d = (1u64 << 47) | (ty << 40);
            assert_eq!(check_descriptor(d, 1), Err(PtError::BadDescriptor), "type {ty:#x}");
        }
        let (mut m, ft) = world();
        let mut x = Extra::default();
        let mut p = pt(&mut m, &ft, &mut x);
        p.mem.write_u64(Mfn(6), 1, code0);
        p.get_segdesc(Mfn(6), 0).unwrap();
        assert_eq!(p.mem.read_u64(Mfn(6), 1), Some(0x00AF_BB00_0000_FFFF));
        // A descriptor page cannot be mapped writable.
        p.pin(Mfn(1), 1, 0).unwrap();
        assert!(p.update_entry(Mfn(1), 0, e(6, P | RW), 0, 0, false).is_err());
        // update_descriptor checks the new descriptor and keeps the type.
        p.update_descriptor(6 << 12 | 16, code0, 0).unwrap();
        assert_eq!(p.update_descriptor(6 << 12 | 16, (1 << 47) | (0xC << 40), 0), Err(PtError::BadDescriptor));
        assert_eq!(p.update_descriptor(6 << 12 | 17, 0, 0), Err(PtError::BadDescriptor));
        assert!(p.update_descriptor(20 << 12, 0, 0).is_err(), "other domain's frame");
        // A page with a gate in it cannot become a descriptor page; a writable-mapped page
        // neither.
        p.mem.write_u64(Mfn(7), 3, (1 << 47) | (0xC << 40));
        assert_eq!(p.get_segdesc(Mfn(7), 0), Err(PtError::BadDescriptor));
        p.update_entry(Mfn(1), 1, e(9, P | RW), 0, 0, false).unwrap();
        assert!(p.get_segdesc(Mfn(9), 0).is_err());
        p.put_segdesc(Mfn(6));
        assert_eq!(p.ft.get(Mfn(6)).unwrap().type_count, 0);
        assert_eq!(p.ft.get(Mfn(7)).unwrap().count, 0, "failed attempt left no reference");
    }

    /// Recomputes every count from the tables, pins and roots, and checks the invariants.
    fn audit(p: &Pt<'_, VecMem, Vec<FrameSlot>>, roots: &[Mfn]) {
        let mut cnt = vec![0u32; N as usize];
        let mut tcnt = vec![0u32; N as usize];
        for m in 0..N {
            let f = p.ft.get(Mfn(m)).unwrap();
            if f.pinned {
                cnt[m as usize] += 1;
                tcnt[m as usize] += 1;
            }
            let Some(level) = p.table_level(Mfn(m), 0) else { continue };
            assert!(f.validated, "table {m} in use but not validated");
            for i in 0..512 {
                if level == 4 && is_reserved_l4_slot(i) {
                    assert_eq!(p.mem.read_u64(Mfn(m), i), Some(0));
                    continue;
                }
                let e = Pte(p.mem.read_u64(Mfn(m), i).unwrap());
                if !e.present() {
                    continue;
                }
                let t = e.mfn().0 as usize;
                cnt[t] += 1;
                let tf = p.ft.get(e.mfn()).unwrap();
                if level > 1 {
                    tcnt[t] += 1;
                    assert_eq!(Some(tf.ty), PageType::table(level - 1));
                } else if e.writable() {
                    tcnt[t] += 1;
                    assert_eq!(tf.ty, PageType::Writable, "writable mapping of a {:?}", tf.ty);
                }
            }
        }
        for r in roots {
            cnt[r.0 as usize] += 1;
            tcnt[r.0 as usize] += 1;
        }
        for m in 0..N as usize {
            let f = p.ft.get(Mfn(m as u64)).unwrap();
            assert_eq!((f.count, f.type_count), (cnt[m], tcnt[m]), "mfn {m}: {f:?}");
        }
    }


    #[derive(Clone, Debug)]
    enum Op {
        Update { table: u64, idx: usize, target: u64, flags: u64, fd: DomId },
        Pin { mfn: u64, level: u32 },
        Unpin { mfn: u64 },
        NewRoot { mfn: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        let flags = prop::sample::select(vec![0u64, P, P | RW, P | RW | 0x80, P | 0x10, P | RW | 0x60, 2, P | 1 << 63]);
        prop_oneof![
            6 => (0..N, prop::sample::select(vec![0usize, 1, 2, 3, 256]), 0..N, flags, prop::sample::select(vec![0u16, 0, 0, 1]))
                .prop_map(|(table, idx, target, flags, fd)| Op::Update { table, idx, target, flags, fd }),
            2 => (0..N, 1..=4u32).prop_map(|(mfn, level)| Op::Pin { mfn, level }),
            1 => (0..N).prop_map(|mfn| Op::Unpin { mfn }),
            1 => (0..N).prop_map(|mfn| Op::NewRoot { mfn }),
        ]
    }

    fn run_op(p: &mut Pt<'_, VecMem, Vec<FrameSlot>>, o: &Op, root: &mut Option<Mfn>) -> Res {
        match *o {
            Op::Update { table, idx, target, flags, fd } => p.update_entry(Mfn(table), idx, e(target, flags), 0, fd, false),
            Op::Pin { mfn, level } => p.pin(Mfn(mfn), level, 0),
            Op::Unpin { mfn } => p.unpin(Mfn(mfn), 0),
            Op::NewRoot { mfn } => {
                let r = p.get_root(Mfn(mfn), 0);
                if r.is_ok() {
                    if let Some(old) = root.replace(Mfn(mfn)) {
                        p.put_root(old);
                    }
                }
                r
            }
        }
    }

    /// A tree of `n` L1s (frames 8..8+n) under L2 4, L3 3, L4 2, every L1 mapping frame 7.
    fn tree(p: &mut Pt<'_, VecMem, Vec<FrameSlot>>, n: u64) {
        for l1 in 8..8 + n {
            for i in 0..512 {
                p.mem.write_u64(Mfn(l1), i, e(7, P).0);
            }
            p.mem.write_u64(Mfn(4), (l1 - 8) as usize, e(l1, P | RW).0);
        }
        p.mem.write_u64(Mfn(3), 0, e(4, P | RW).0);
        p.mem.write_u64(Mfn(2), 0, e(3, P | RW).0);
    }

    #[test]
    fn validation_is_preemptible() {
        let (mut m, ft) = world();
        let mut x = Extra::default();
        let mut p = pt(&mut m, &ft, &mut x);
        tree(&mut p, 10);
        *p.budget = 700;
        assert_eq!(p.pin(Mfn(2), 4, 0), Err(PtError::Preempted));
        assert!(p.jobs.is_pending());
        // Inside the job: busy, not writable, not updatable, not pinnable elsewhere.
        // Frame 8 (the first L1) is validated already, frame 9 is halfway.
        assert_eq!(p.update_entry(Mfn(8), 0, e(7, P), 0, 0, false), Ok(()));
        assert_eq!(p.update_entry(Mfn(9), 0, Pte(0), 0, 0, false), Err(PtError::Busy));
        assert_eq!(p.pin(Mfn(9), 1, 0), Err(PtError::Busy));
        // Another vCPU cannot advance it; the owner can, a little at a time.
        p.vcpu = 1;
        *p.budget = 1_000_000;
        assert_eq!(p.drive(), Err(PtError::Preempted));
        p.vcpu = 0;
        let rounds = drive_to_end(&mut p, 700);
        assert!(rounds >= 6, "10 L1s of 512 entries take several budgets ({rounds})");
        assert!(p.jobs.has_parked());
        // The re-issued pin claims the parked references.
        assert_eq!(p.pin(Mfn(2), 4, 0), Ok(()));
        assert!(!p.jobs.has_parked());
        audit(&p, &[]);
        // Unpinning with a small budget leaves a pending devalidation; tables stay busy.
        // (Last entry first: the L4's, the L3's and the L2's empty entries, then into the
        // last L1, frame 17.)
        *p.budget = 2000;
        assert_eq!(p.unpin(Mfn(2), 0), Ok(()));
        assert!(p.jobs.is_pending());
        assert_eq!(p.pin(Mfn(17), 1, 0), Err(PtError::Busy), "a table being devalidated cannot be pinned");
        assert_eq!(p.update_entry(Mfn(17), 0, Pte(0), 0, 0, false), Err(PtError::Busy));
        p.vcpu = 1; // any vCPU advances a devalidation
        drive_to_end(&mut p, 100);
        assert_unreferenced(&p, 0..N);
    }

    #[test]
    fn a_pending_validation_can_be_adopted() {
        let (mut m, ft) = world();
        let mut x = Extra::default();
        let mut p = pt(&mut m, &ft, &mut x);
        tree(&mut p, 4);
        *p.budget = 300;
        assert_eq!(p.pin(Mfn(2), 4, 0), Err(PtError::Preempted));
        assert_eq!(p.jobs.validation_owner(), Some(0));
        p.vcpu = 1;
        *p.budget = 300;
        assert_eq!(p.drive(), Err(PtError::Preempted), "vCPU 0's work");
        p.jobs.adopt(1);
        drive_to_end(&mut p, 300);
        assert!(p.jobs.has_parked());
        // vCPU 1's own next operation gives the unclaimed outcome back.
        *p.budget = u64::MAX;
        assert_eq!(p.pin(Mfn(19), 1, 0), Ok(()));
        assert_eq!(p.unpin(Mfn(19), 0), Ok(()));
        assert_unreferenced(&p, (2..19).filter(|&m| m != 7));
    }

    #[test]
    fn failed_preempted_validation_drops_everything() {
        let (mut m, ft) = world();
        let mut x = Extra::default();
        let mut p = pt(&mut m, &ft, &mut x);
        tree(&mut p, 8);
        p.mem.write_u64(Mfn(15), 511, e(20, P).0); // the last L1's last entry: another domain's frame
        *p.budget = 600;
        assert_eq!(p.pin(Mfn(2), 4, 0), Err(PtError::Preempted));
        drive_to_end(&mut p, 600);
        assert!(p.jobs.has_parked(), "the failure waits for the re-issued pin");
        *p.budget = 600;
        assert_eq!(p.pin(Mfn(2), 4, 0), Err(PtError::Frame(FrameError::NotOwner)));
        assert!(!p.jobs.has_parked());
        drive_to_end(&mut p, 600);
        assert_unreferenced(&p, 0..N);
    }

    /// An unclaimed outcome (its operation failed before claiming it) is given back as
    /// budgeted work before the next validation, never all at once.
    #[test]
    fn unclaimed_outcomes_are_released_within_budget() {
        let (mut m, ft) = world();
        let mut x = Extra::default();
        let mut p = pt(&mut m, &ft, &mut x);
        tree(&mut p, 10);
        *p.budget = 600;
        assert_eq!(p.pin(Mfn(2), 4, 0), Err(PtError::Preempted));
        drive_to_end(&mut p, 600);
        assert!(p.jobs.has_parked(), "A's validation done, never claimed");
        // Another validation by the same vCPU: A's references go back first, 600 at a time.
        for i in 0..512 {
            p.mem.write_u64(Mfn(19), i, e(7, P).0);
        }
        *p.budget = 600;
        let r = p.pin(Mfn(19), 1, 0);
        assert_eq!(r, Err(PtError::Preempted), "A's release is pending work first");
        assert!(!p.jobs.has_parked() && p.jobs.is_pending());
        let calls = drive_to_end(&mut p, 600);
        assert!(calls >= 8, "5120+ entries released 600 at a time ({calls} calls)");
        *p.budget = 600;
        assert_eq!(p.pin(Mfn(19), 1, 0), Ok(()));
        assert_unreferenced(&p, (2..19).filter(|&m| m != 7));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// The same operations with budgets of a few entries (each operation re-issued until it
        /// is not preempted, pending work driven as later hypercalls would) give the same
        /// results and the same frame table as with no budget at all.
        #[test]
        fn preemption_gives_the_same_results(ops in prop::collection::vec(op(), 300), budgets in prop::collection::vec(1u64..40, 300), tree_l1s in 0u64..10) {
            let (mut ma, fta) = world();
            let (mut mb, ftb) = world();
            let (mut xa, mut xb) = (Extra::default(), Extra::default());
            let mut pa = pt(&mut ma, &fta, &mut xa);
            let mut pb = pt(&mut mb, &ftb, &mut xb);
            tree(&mut pa, tree_l1s);
            tree(&mut pb, tree_l1s);
            let (mut ra_root, mut rb_root) = (None, None);
            for (k, o) in ops.iter().enumerate() {
                let b = budgets[k];
                let ra = run_op(&mut pa, o, &mut ra_root);
                let mut reissues = 0;
                let rb = loop {
                    *pb.budget = b;
                    let r = run_op(&mut pb, o, &mut rb_root);
                    if r != Err(PtError::Preempted) {
                        break r;
                    }
                    reissues += 1;
                    prop_assert!(reissues < 1000, "op {} {:?} never completes", k, o);
                    let mut spins = 0;
                    loop {
                        *pb.budget = b;
                        if pb.drive().is_ok() {
                            break;
                        }
                        spins += 1;
                        prop_assert!(spins < 100_000, "drive makes no progress after op {} {:?}: {:?}", k, o, pb.jobs);
                    }
                };
                let mut spins = 0;
                while pb.jobs.is_pending() {
                    *pb.budget = b;
                    let _ = pb.drive();
                    spins += 1;
                    prop_assert!(spins < 100_000, "pending work never ends after op {} {:?}: {:?}", k, o, pb.jobs);
                }
                prop_assert_eq!(ra, rb, "op {} {:?}", k, o);
                prop_assert!(!pb.jobs.has_parked());
                for m in 0..N {
                    let (fa, fb) = (pa.ft.get(Mfn(m)).unwrap(), pb.ft.get(Mfn(m)).unwrap());
                    prop_assert_eq!((fa.count, fa.type_count, fa.validated, fa.pinned), (fb.count, fb.type_count, fb.validated, fb.pinned), "mfn {} after op {}", m, k);
                    if fa.type_count > 0 {
                        prop_assert_eq!(fa.ty, fb.ty);
                    }
                }
                audit(&pb, rb_root.as_slice());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]
        /// 100 cases × 1000 operations = 10^5 operations per run.
        #[test]
        fn random_sequences_keep_the_invariants(ops in prop::collection::vec(op(), 1000)) {
            let (mut m, ft) = world();
            let mut x = Extra::default();
        let mut p = pt(&mut m, &ft, &mut x);
            let mut root: Option<Mfn> = None;
            for o in ops {
                let r = match o {
                    Op::Update { table, idx, target, flags, fd } => {
                        p.update_entry(Mfn(table), idx, e(target, flags), 0, fd, false)
                    }
                    Op::Pin { mfn, level } => p.pin(Mfn(mfn), level, 0),
                    Op::Unpin { mfn } => p.unpin(Mfn(mfn), 0),
                    Op::NewRoot { mfn } => {
                        let r = p.get_root(Mfn(mfn), 0);
                        if r.is_ok() {
                            if let Some(old) = root.replace(Mfn(mfn)) { p.put_root(old); }
                        }
                        r
                    }
                };
                // Every path flushes before a type change that needs it (never refused for it).
                prop_assert_ne!(r, Err(PtError::Frame(FrameError::StaleTlb)));
                audit(&p, root.as_slice());
            }
            // Tear everything down: every count returns to zero.
            if let Some(r) = root.take() { p.put_root(r); }
            for m in 0..N {
                if p.ft.get(Mfn(m)).unwrap().pinned { p.unpin(Mfn(m), 0).unwrap(); }
            }
            for m in 0..N {
                let f = p.ft.get(Mfn(m)).unwrap();
                prop_assert_eq!((f.count, f.type_count), (0, 0), "mfn {} after teardown", m);
            }
        }
    }
}
