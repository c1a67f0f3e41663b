//! The toolstack hypercalls of a privileged domain: `domctl` (#36: make, pause, query,
//! limit and destroy domains) and `sysctl` (#35: the machine). Layouts are Xen 4.17's
//! (`guest_abi::domctl`); every other domain gets `-EPERM`, a wrong interface version
//! `-EACCES`, an unknown command `-ENOSYS`.
//!
//! Destruction ([`destroy`]) is the domain's whole teardown, in steps that each CPU may
//! resume (a continuation re-issues `destroydomain` until it returns 0): its vCPUs off the
//! CPUs, its grant mappings and event channels gone, its vCPUs' and pinned tables'
//! references dropped, then every frame it owns scrubbed and freed. A frame another domain
//! still holds (a grant it maps) keeps the domain registered, dying, until the last
//! reference goes ([`reap`]); then its id is free for the next `createdomain`.

use super::bytes::{put16, put32, put64, u16at, u32at, u64at};
use super::{continuation, read_guest, write_guest, HcResult};
use crate::domain::{self, DomShared, Limits};
use crate::vcpu::{sched_id, Slot, Vcpu, VcpuState};
use crate::Hv;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use guest_abi::domctl::*;
use guest_abi::errno::Errno;
use guest_abi::hypercall as nr;
use hv_arch::entry::TrapFrame;
use hv_arch::physmem::DirectMap;
use hv_core::frame::{Owner, PageType};
use hv_core::mem::{Mfn, PhysMem};


/// A toolstack op of `N` bytes at `arg` with interface version `version` (at offset 4):
/// `-EPERM` for an unprivileged caller (before anything is read), `-EACCES` for another
/// version.
fn read_op<const N: usize>(hv: &Hv, arg: u64, version: u32) -> Result<[u8; N], Errno> {
    if !hv.dom().privileged {
        return Err(Errno::EPERM);
    }
    let mut b = [0u8; N];
    read_guest(hv, arg, &mut b)?;
    if u32at(&b, 4) != version {
        return Err(Errno::EACCES);
    }
    Ok(b)
}

/// `domctl(op)`.
pub fn domctl(hv: &mut Hv, f: &mut TrapFrame, arg: u64) -> HcResult {
    let mut b: [u8; DOMCTL_SIZE] = read_op(hv, arg, DOMCTL_INTERFACE_VERSION)?;
    let (cmd, id) = (u32at(&b, 0), u16at(&b, 8));
    if cmd == CREATEDOMAIN {
        let d = create(hv, id, &b[U_OFFSET..])?;
        put16(&mut b, 8, d);
        write_guest(hv, arg, &b)?;
        return Ok(0);
    }
    if cmd == GETDOMAININFO {
        if id >= guest_abi::DOMID_SELF {
            return Err(Errno::EINVAL);
        }
        let d = domain::next_from(id).ok_or(Errno::ESRCH)?;
        put16(&mut b, 8, d.id);
        info(&d, &mut b[U_OFFSET..U_OFFSET + info::SIZE]);
        write_guest(hv, arg, &b)?;
        return Ok(0);
    }
    let d = domain::shared_of(id).ok_or(Errno::ESRCH)?;
    let me = d.id == hv.pc.cur.dom;
    let u = &b[U_OFFSET..];
    match cmd {
        DESTROYDOMAIN if me || d.id == 0 => Err(Errno::EINVAL),
        DESTROYDOMAIN => match destroy(hv, &d)? {
            true => Ok(0),
            false => continuation(f, nr::DOMCTL, [arg, 0, 0, 0]),
        },
        PAUSEDOMAIN if me => Err(Errno::EINVAL),
        PAUSEDOMAIN if d.is_dying() => Err(Errno::EINVAL),
        PAUSEDOMAIN => crate::schedule::pause(hv, &d).then_some(0).ok_or(Errno::EOVERFLOW),
        UNPAUSEDOMAIN => crate::schedule::unpause(hv, &d).then_some(0).ok_or(Errno::EINVAL),
        MAX_MEM => {
            d.max_pages.store((u64at(u, 0) >> 2).min(u32::MAX as u64), Ordering::Relaxed);
            Ok(0)
        }
        MAX_VCPUS if me || u32at(u, 0) != d.nr_vcpus() => Err(Errno::EINVAL),
        MAX_VCPUS => Ok(0),
        SETDOMAINHANDLE => {
            d.handle.lock().copy_from_slice(&u[..16]);
            Ok(0)
        }
        SETTIMEOFFSET => {
            d.time_offset.store(u64at(u, 0) as i64, Ordering::Relaxed);
            Ok(0)
        }
        SCHEDULER_OP => {
            if u32at(u, sched::SCHED_ID) != sched::CREDIT {
                return Err(Errno::EINVAL);
            }
            match u32at(u, sched::CMD) {
                sched::GETINFO => {
                    put16(&mut b, U_OFFSET + sched::WEIGHT, d.sched.weight() as u16);
                    put16(&mut b, U_OFFSET + sched::CAP, d.sched.cap() as u16);
                    write_guest(hv, arg, &b)?;
                    Ok(0)
                }
                sched::PUTINFO => {
                    let (w, c) = (u16at(u, sched::WEIGHT) as u32, u16at(u, sched::CAP) as u32);
                    let weight = if w == 0 { d.sched.weight() } else { w };
                    let cap = if c == 0xFFFF { d.sched.cap() } else { c };
                    if cap > 100 * d.nr_vcpus() {
                        return Err(Errno::EINVAL);
                    }
                    d.sched.set_params(weight, cap);
                    Ok(0)
                }
                _ => Err(Errno::EINVAL),
            }
        }
        GETVCPUINFO => {
            let v = u32at(u, vcpuinfo::VCPU);
            if v >= d.nr_vcpus() {
                return Err(Errno::EINVAL);
            }
            let now = crate::events::now();
            let id = sched_id(d.id, v);
            let got = crate::state::with_owner(&d, v, |rq| {
                let cpu = rq.cpu();
                rq.payload(id).map(|s| (!s.state.down, s.state.blocked, s.state.on_cpu, s.state.runstate_at(now).2[crate::vcpu::RUNSTATE_RUNNING as usize], cpu))
            });
            let (online, blocked, on_cpu, time, cpu) = got.flatten().ok_or(Errno::ESRCH)?;
            let o = U_OFFSET;
            b[o + vcpuinfo::ONLINE] = online as u8;
            b[o + vcpuinfo::BLOCKED] = blocked as u8;
            b[o + vcpuinfo::RUNNING] = on_cpu.is_some() as u8;
            put64(&mut b, o + vcpuinfo::CPU_TIME, time);
            put32(&mut b, o + vcpuinfo::CPU, on_cpu.unwrap_or(cpu) as u32);
            write_guest(hv, arg, &b)?;
            Ok(0)
        }
        SETVCPUAFFINITY | GETVCPUAFFINITY => affinity(hv, &d, cmd == SETVCPUAFFINITY, u),
        SETVCPUCONTEXT | GETVCPUCONTEXT if me || d.is_dying() => Err(Errno::EINVAL),
        SETVCPUCONTEXT | GETVCPUCONTEXT if u32at(u, vcpucontext::VCPU) >= d.nr_vcpus() => Err(Errno::EINVAL),
        SETVCPUCONTEXT => set_context(hv, &d, u32at(u, vcpucontext::VCPU), u64at(u, vcpucontext::CTXT)),
        GETVCPUCONTEXT => get_context(hv, &d, u32at(u, vcpucontext::VCPU), u64at(u, vcpucontext::CTXT)),
        HYPERCALL_INIT if d.is_dying() => Err(Errno::EINVAL),
        HYPERCALL_INIT => {
            // As Xen: a frame of the domain that can take a writable type (never one of its
            // page tables or descriptor pages), filled with the stubs.
            let m = Mfn(u64at(u, 0));
            let owner = crate::guest::foreign_owner(hv.pc.cur.dom, hv.pc.cur.id);
            {
                let mut mm = d.mm();
                if d.is_dying() {
                    return Err(Errno::ESRCH);
                }
                let mut dm = DirectMap;
                crate::guest::pt!(hv.pc, dm, mm.jobs, owner).get_writable_page(m, d.id).map_err(|_| Errno::EINVAL)?;
            }
            for n in 0..nr::NR_STUBS {
                let stub = if d.pv64 { nr::stub_pv64(n as u32) } else { nr::stub(n as u32) };
                DirectMap.write(m, n * nr::STUB_SIZE, &stub);
            }
            let _ = crate::machine::frames().put_page_and_type(m, true);
            Ok(0)
        }
        SET_MAX_EVTCHN => {
            if let Some(t) = crate::ports::Locked::new(&d, None).ports_mut(d.id) {
                t.set_max_port(u32at(u, 0));
            }
            Ok(0)
        }
        IOPORT_PERMISSION => {
            let (first, n) = (u32at(u, 0) as u64, u32at(u, 4) as u64);
            if first + n <= first || first + n > 65536 {
                return Err(Errno::EINVAL);
            }
            permit(&mut d.perms.lock().ioports, first, first + n - 1, u[perm::IOPORT_ALLOW] != 0)
        }
        IOMEM_PERMISSION => {
            let (first, n) = (u64at(u, 0), u64at(u, 8));
            let last = first.checked_add(n.wrapping_sub(1)).filter(|_| n != 0).ok_or(Errno::EINVAL)?;
            permit(&mut d.perms.lock().iomem, first, last, u[perm::IOMEM_ALLOW] != 0)
        }
        IRQ_PERMISSION => {
            let pirq = u32at(u, 0);
            if pirq >= perm::NR_PIRQS {
                return Err(Errno::EINVAL);
            }
            permit(&mut d.perms.lock().irqs, pirq as u64, pirq as u64, u[perm::IRQ_ALLOW] != 0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// `setvcpucontext`: gives vCPU `v` of `d` (not the caller's domain) its first context,
/// checked as `VCPUOP_initialise` checks it; `VGCF_online` also brings it up (it runs once
/// the domain is unpaused). A vCPU that has a context already: -EEXIST (Xen allows
/// re-setting one's registers; docs/abi-deviations.md). A null context (Xen: reset the
/// vCPU): -EOPNOTSUPP.
fn set_context(hv: &mut Hv, d: &Arc<DomShared>, v: u32, ptr: u64) -> HcResult {
    if ptr == 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    let mut c = alloc::vec![0u8; guest_abi::vcpu::ctx::SIZE];
    read_guest(hv, ptr, &mut c)?;
    let k = super::context::parse(&c, d.pv64)?;
    let bit = 1u64 << v;
    if d.claimed.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
        return Err(Errno::EEXIST);
    }
    let owner = crate::guest::foreign_owner(hv.pc.cur.dom, hv.pc.cur.id);
    if let Err(e) = super::context::install(hv, d, v, owner, &k) {
        d.claimed.fetch_and(!bit, Ordering::AcqRel);
        return Err(e);
    }
    if k.flags & super::context::VGCF_ONLINE != 0 {
        super::vcpu::up(hv, d, v)?;
    }
    Ok(0)
}

/// `getvcpucontext`: vCPU `v`'s context as a `vcpu_guest_context` (-ENODATA before it has
/// one). The domain is paused meanwhile, so the registers are those it stopped with.
fn get_context(hv: &mut Hv, d: &Arc<DomShared>, v: u32, ptr: u64) -> HcResult {
    if !crate::schedule::pause(hv, d) {
        return Err(Errno::EOVERFLOW);
    }
    let mut c = alloc::vec![0u8; guest_abi::vcpu::ctx::SIZE];
    let got = crate::state::with_owner(d, v, |rq| {
        let s = rq.payload(sched_id(d.id, v))?;
        if !s.state.initialised {
            return Some(Err(Errno::ENODATA));
        }
        // Paused: its context is back in its slot.
        let ctx = s.ctx.as_ref()?;
        super::context::write(ctx, !s.state.down, &mut c);
        Some(Ok(()))
    })
    .flatten()
    .unwrap_or(Err(Errno::EBUSY));
    crate::schedule::unpause(hv, d);
    got?;
    write_guest(hv, ptr, &c)?;
    Ok(0)
}

/// Records an I/O permission (`*_permission`): granted or revoked.
fn permit(set: &mut alloc::vec::Vec<(u64, u64)>, first: u64, last: u64, allow: bool) -> HcResult {
    if crate::domain::Perms::change(set, first, last, allow) {
        Ok(0)
    } else {
        Err(Errno::ENOMEM)
    }
}

/// `setvcpuaffinity` / `getvcpuaffinity`: the hard affinity (a CPU bitmap, bit n for CPU
/// n) reaches the scheduler; a soft one is accepted and reported as hard ∩ soft, and not
/// used. The effective masks are written back, as Xen.
fn affinity(hv: &mut Hv, d: &DomShared, set: bool, u: &[u8]) -> HcResult {
    let (v, flags) = (u32at(u, affinity::VCPU), u32at(u, affinity::FLAGS));
    if v >= d.nr_vcpus() {
        return Err(Errno::EINVAL);
    }
    let maps: [(u32, usize); 2] = [(affinity::HARD_FLAG, affinity::HARD), (affinity::SOFT_FLAG, affinity::SOFT)];
    if flags & (affinity::HARD_FLAG | affinity::SOFT_FLAG) == 0 || maps.iter().any(|&(fl, o)| flags & fl != 0 && u64at(u, o) == 0) {
        return Err(Errno::EINVAL);
    }
    let ncpus = crate::machine::get().cpus.len();
    let online = if ncpus >= 64 { u64::MAX } else { (1u64 << ncpus) - 1 };
    let read_map = |hv: &Hv, o: usize| -> Result<u64, Errno> {
        let (ptr, bits) = (u64at(u, o), u32at(u, o + 8));
        let n = (bits as usize).div_ceil(8).min(8);
        let mut b = [0u8; 8];
        read_guest(hv, ptr, &mut b[..n])?;
        let m = u64::from_le_bytes(b);
        Ok(if bits >= 64 { m } else { m & ((1u64 << bits) - 1) })
    };
    let write_map = |hv: &Hv, o: usize, m: u64| -> Result<(), Errno> {
        let (ptr, bits) = (u64at(u, o), u32at(u, o + 8));
        // At most the bytes of 4096 CPUs (Xen copies what its CPU count needs).
        let n = (bits as usize).div_ceil(8).min(512);
        let mut chunk = [0u8; 64];
        chunk[..8].copy_from_slice(&m.to_le_bytes());
        let mut off = 0;
        while off < n {
            let k = (n - off).min(64);
            write_guest(hv, ptr.wrapping_add(off as u64), &chunk[..k])?;
            chunk[..8].fill(0);
            off += k;
        }
        Ok(())
    };
    let id = sched_id(d.id, v);
    let hard = crate::state::with_owner(d, v, |rq| rq.affinity_of(id)).flatten().ok_or(Errno::ESRCH)?;
    let mut hard = hard;
    if set && flags & affinity::HARD_FLAG != 0 {
        let want = read_map(hv, affinity::HARD)? & online;
        if want == 0 {
            return Err(Errno::EINVAL);
        }
        let moved = crate::state::with_owner(d, v, |rq| {
            let away = rq.set_affinity(id, want);
            (away && rq.current() == Some(id)).then(|| rq.cpu())
        });
        if let Some(Some(cpu)) = moved {
            crate::schedule::stopped_on(hv.pc, d, v, cpu);
        }
        if let Some(k) = crate::state::idle_cpu_in(want, hv.pc.id) {
            crate::schedule::poke(hv.pc, k);
        }
        hard = want;
    }
    if flags & affinity::HARD_FLAG != 0 {
        write_map(hv, affinity::HARD, hard)?;
    }
    if flags & affinity::SOFT_FLAG != 0 {
        let soft = if set { read_map(hv, affinity::SOFT)? & online & hard } else { hard };
        write_map(hv, affinity::SOFT, soft)?;
    }
    Ok(0)
}

/// `createdomain`: a paused PV domain with no memory (`max_mem` and a foreign
/// `populate_physmap` give it some), its shared_info page, and its vCPUs, all down and
/// without context. `want`: the id asked for (0 or reserved: the lowest free).
fn create(hv: &mut Hv, want: u16, u: &[u8]) -> Result<u16, Errno> {
    let flags = u32at(u, create::FLAGS);
    let max_vcpus = u32at(u, create::MAX_VCPUS);
    if flags & !create::CDF_RXEN_RING1 != 0 || u32at(u, create::IOMMU_OPTS) != 0 || u32at(u, create::GRANT_OPTS) & !0xF != 0 || u32at(u, create::GRANT_OPTS) > 2 || u32at(u, create::VMTRACE_SIZE) != 0 {
        return Err(Errno::EINVAL);
    }
    if max_vcpus == 0 || max_vcpus as usize > domain::MAX_VCPUS || u32at(u, create::EMULATION_FLAGS) != 0 {
        return Err(Errno::EINVAL);
    }
    let dflt = Limits::default();
    let or_default = |v: u32, d: u32| if (v as i32) < 0 { d } else { v };
    // Above the hypervisor's maxima (Xen's `gnttab_max_frames`, `max_maptrack_frames`):
    // -EINVAL, as Xen.
    let (gf, mf) = (u32at(u, create::MAX_GRANT_FRAMES), u32at(u, create::MAX_MAPTRACK_FRAMES));
    if or_default(gf, 0) > dflt.max_grant_frames || or_default(mf, 0) > dflt.max_maptrack_frames {
        return Err(Errno::EINVAL);
    }
    let limits = Limits {
        max_vcpus,
        max_evtchn_port: u32at(u, create::MAX_EVTCHN_PORT).min(dflt.max_evtchn_port),
        max_grant_frames: or_default(u32at(u, create::MAX_GRANT_FRAMES), dflt.max_grant_frames),
        max_maptrack_frames: or_default(u32at(u, create::MAX_MAPTRACK_FRAMES), dflt.max_maptrack_frames),
        // `XEN_DOMCTL_GRANT_version`: 0 (which Xen refuses) is the hypervisor's maximum.
        max_grant_version: match u32at(u, create::GRANT_OPTS) { 1 => 1, _ => 2 },
    };
    // The heap holds every domain's records: keep room for the rest of the hypervisor.
    if hv_arch::heap::usage().1 < 512 << 10 {
        return Err(Errno::ENOMEM);
    }
    let want = (want != 0 && want < guest_abi::DOMID_SELF).then_some(want);
    let si = crate::mm::with(|mm| mm.alloc.alloc()).flatten().ok_or(Errno::ENOMEM)?;
    let ft = crate::machine::frames();
    let give_back = |si: Mfn| {
        let _ = ft.put_page_and_type(si, true);
        if ft.set_owner(si, Owner::Free).is_ok() {
            crate::mm::with(|mm| mm.alloc.free(si));
        }
    };
    let mut handle = [0u8; 16];
    handle.copy_from_slice(&u[create::HANDLE..create::HANDLE + 16]);
    let made = domain::create(want, |id| {
        if ft.set_owner(si, Owner::Dom(id)).is_err() || ft.get_page_and_type(si, id, Some(PageType::Writable)).is_err() {
            return None;
        }
        DirectMap.zero(si)?;
        for v in 0..guest_abi::shared_info::MAX_VIRT_CPUS {
            DirectMap.store_u8(si, guest_abi::shared_info::upcall_mask_offset(v), 1);
        }
        let mut d = DomShared::with_limits(id, false, si, limits, 0);
        d.set_pv64(flags & create::CDF_RXEN_RING1 == 0);
        d.max_pages.store(0, Ordering::Relaxed);
        d.up.store(0, Ordering::Relaxed);
        d.claimed.store(0, Ordering::Relaxed);
        d.pause_count().store(1, Ordering::Relaxed);
        *d.handle.lock() = handle;
        d.note_frame(si);
        // A `destroydomain` from another CPU waits until its vCPUs are in the run queues
        // (it would find no slots to drop, and the ones adopted after would leak).
        d.teardown.busy.store(true, Ordering::Relaxed);
        Some(Arc::new(d))
    });
    let d = match made {
        Ok(d) => d,
        Err(taken) => {
            give_back(si);
            // A taken id asked for is -EEXIST; no id left, or no memory, -ENOMEM.
            return Err(if taken && want.is_some() { Errno::EEXIST } else { Errno::ENOMEM });
        }
    };
    let ncpus = crate::machine::get().cpus.len();
    for n in 0..d.nr_vcpus() {
        let s = hv_core::sched::VcpuSched::new(sched_id(d.id, n), d.sched.clone(), u64::MAX, ncpus);
        let first = s.first_cpu();
        if let Some(o) = d.owner.get(n as usize) {
            o.store(first, Ordering::Relaxed);
        }
        crate::events::update_time(&d, n);
        let mut state = VcpuState::new(n);
        state.initialised = false;
        state.down = true;
        state.set_runstate(crate::vcpu::RUNSTATE_OFFLINE, crate::events::now());
        let ctx = alloc::boxed::Box::new(Vcpu::new(n, Mfn(0), d.clone()));
        crate::state::lock(first).adopt(s, Slot { shared: d.clone(), vcpu: n, state, ctx: Some(ctx) });
    }
    crate::events::set_wallclock(&d, hv_arch::time::rtc_unix_seconds());
    d.teardown.busy.store(false, Ordering::Release);
    log::info!("d{}: created by d{} ({} vCPU(s), paused, {})", d.id, hv.pc.cur.dom, d.nr_vcpus(), if d.pv64 { "Xen pv64 mode" } else { "ring-1 mode" });
    Ok(d.id)
}

/// Fills a `xen_domctl_getdomaininfo_t` for `d`.
fn info(d: &DomShared, o: &mut [u8]) {
    let now = crate::events::now();
    let (mut cpu_time, mut all_blocked, mut online) = (0u64, true, 0u32);
    let mut running = false;
    for v in 0..d.nr_vcpus() {
        let id = sched_id(d.id, v);
        crate::state::with_owner(d, v, |rq| {
            let Some(s) = rq.payload(id) else { return };
            cpu_time += s.state.runstate_at(now).2[crate::vcpu::RUNSTATE_RUNNING as usize];
            if !s.state.down {
                online += 1;
                all_blocked &= s.state.blocked;
                running |= s.state.on_cpu.is_some();
            }
        });
    }
    let mut flags = 0;
    if d.is_dying() {
        flags |= info::DYING;
    }
    if d.is_paused() {
        flags |= info::PAUSED;
    }
    if online > 0 && all_blocked {
        flags |= info::BLOCKED;
    }
    if running {
        flags |= info::RUNNING;
    }
    // As Xen: the shutdown code of a domain that never shut down is ~0.
    flags |= match d.ended() {
        Some(r) => info::SHUTDOWN | (r as u32) << info::SHUTDOWN_SHIFT,
        None => 0xFFFF << info::SHUTDOWN_SHIFT,
    };
    o.fill(0);
    put16(o, info::DOMAIN, d.id);
    put32(o, info::FLAGS, flags);
    put64(o, info::TOT_PAGES, d.tot_pages.load(Ordering::Relaxed));
    put64(o, info::MAX_PAGES, d.max_pages.load(Ordering::Relaxed));
    put64(o, info::SHARED_INFO_FRAME, d.shared_info.0);
    put64(o, info::CPU_TIME, cpu_time);
    put32(o, info::NR_ONLINE_VCPUS, online);
    put32(o, info::MAX_VCPU_ID, d.nr_vcpus().wrapping_sub(1));
    o[info::HANDLE..info::HANDLE + 16].copy_from_slice(&*d.handle.lock());
    o[info::GPADDR_BITS] = 52;
}

use crate::teardown::{finish_if_free, free_or_note, reap, DONE, FREE, HELD, PORTS, STOP, UNPIN, VCPUS, WAIT};

/// Maptrack handles looked at per unit of the hypercall's budget.
const RELEASES_PER_UNIT: u32 = 64;

/// Frames looked at per unit of the hypercall's budget.
const FRAMES_PER_UNIT: u64 = 16;

/// Advances domain `d`'s teardown as far as this hypercall's budget goes: true once its
/// resources are relinquished (it may stay registered, dying, while another domain holds
/// one of its frames), false to be re-issued.
fn destroy(hv: &mut Hv, d: &Arc<DomShared>) -> Result<bool, Errno> {
    let t = &d.teardown;
    if t.busy.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        return Ok(false);
    }
    let t0 = hv_arch::cpu::rdtsc();
    let r = steps(hv, d);
    t.stretches.fetch_add(1, Ordering::Relaxed);
    t.longest.fetch_max(hv_arch::cpu::rdtsc().wrapping_sub(t0), Ordering::Relaxed);
    if matches!(r, Ok(true)) {
        log::info!(
            "d{}: relinquished in {} hypercall stretch(es), the longest {} TSC ticks",
            d.id,
            t.stretches.load(Ordering::Relaxed),
            t.longest.load(Ordering::Relaxed)
        );
        finish_if_free(d);
    }
    t.busy.store(false, Ordering::Release);
    // A foreign reference that went during the teardown: look again.
    if matches!(r, Ok(true)) && t.reap.load(Ordering::Acquire) {
        reap(d);
    }
    r
}

fn steps(hv: &mut Hv, d: &Arc<DomShared>) -> Result<bool, Errno> {
    let t = &d.teardown;
    loop {
        let step = t.step.load(Ordering::Acquire);
        let next = match step {
            STOP => {
                if d.set_dying() {
                    log::info!("d{}: destroyed by d{}", d.id, hv.pc.cur.dom);
                }
                for v in 0..d.nr_vcpus() {
                    crate::schedule::stop(hv, d, v);
                }
                WAIT
            }
            WAIT => {
                // Every vCPU off the CPUs, and what the last one's CPU does then (release
                // its grant maps, audit) done; if none ever ran, that is done here.
                let ncpus = crate::machine::get().cpus.len();
                if (0..ncpus).any(|k| crate::shootdown::running(k).is_some_and(|r| r.dom == d.id)) {
                    return Ok(false);
                }
                if !d.exc_sent.swap(true, Ordering::SeqCst) {
                    d.finished.store(true, Ordering::Release);
                } else if !d.finished.load(Ordering::Acquire) {
                    return Ok(false);
                }
                PORTS
            }
            PORTS => {
                // Its grant mappings first, a chunk per unit of the budget.
                while !crate::teardown::release_grant_maps(d, RELEASES_PER_UNIT).1 {
                    if super::preempt(hv, 1) {
                        return Ok(false);
                    }
                }
                close_ports(d);
                VCPUS
            }
            VCPUS => {
                if !drop_vcpus(hv, d) {
                    return Ok(false);
                }
                t.cursor.store(d.frame_range().0, Ordering::Relaxed);
                UNPIN
            }
            UNPIN => {
                if !walk(hv, d, |pt, m, f| {
                    if f.pinned {
                        let _ = pt.unpin(m, d.id);
                    }
                }) {
                    return Ok(false);
                }
                HELD
            }
            HELD => {
                let ft = crate::machine::frames();
                let mut g = d.grant();
                for m in core::mem::take(&mut g.frames).into_iter().chain(core::mem::take(&mut g.status)) {
                    let _ = ft.put_page_and_type(m, true);
                }
                drop(g);
                let _ = ft.put_page_and_type(d.shared_info, true);
                // Frames the hypervisor handed out to its tables may sit in other CPUs'
                // TLBs no longer (every CPU flushes when it loads a vCPU; this covers
                // translations cached since): one flush before any frame is freed.
                use hv_core::pt::TlbFlush;
                crate::shootdown::FlushAll { apic_ids: &crate::machine::get().apic_ids, this: hv.pc.id }.flush_all();
                t.cursor.store(d.frame_range().0, Ordering::Relaxed);
                FREE
            }
            FREE => {
                if !walk(hv, d, |_, m, f| free_or_note(d, m, f)) {
                    return Ok(false);
                }
                DONE
            }
            _ => return Ok(true),
        };
        t.step.store(next, Ordering::Release);
        if super::preempt(hv, 1) {
            return Ok(false);
        }
    }
}

/// Closes every port of `d` (the remote ends of its interdomain channels return to
/// unbound, as Xen's).
fn close_ports(d: &DomShared) {
    let used: alloc::vec::Vec<u32> = crate::ports::Locked::new(d, None).ports(d.id).map(|t| t.used().collect()).unwrap_or_default();
    for p in used {
        crate::ports::on_port(d, p, |l| {
            let _ = crate::ports::close(l, d.id, p);
        });
        // (Its PIRQ lines, if any, all go below.)
    }
    crate::ports::fifo_destroy(d, false);
    crate::irq::release_domain(d.id);
}

/// Takes `d`'s vCPUs out of the run queues for good and drops what their contexts hold:
/// the root of an initialised vCPU, its GDT and LDT frames, a registered `vcpu_info`.
fn drop_vcpus(hv: &mut Hv, d: &DomShared) -> bool {
    let ft = crate::machine::frames();
    let registered = d.vcpu_info_registered.load(Ordering::Acquire);
    for v in 0..d.nr_vcpus() {
        // The devalidation the last root left pending is done first (within the budget).
        if teardown_pt(hv, d, true, |_| ()).is_none() {
            return false;
        }
        let id = sched_id(d.id, v);
        // A Xen pv64 vCPU's other root goes first, in a step of its own: each root's
        // devalidation may be long and is left pending, and only one may be.
        let other = crate::state::with_owner(d, v, |rq| {
            let c = rq.payload_mut(id)?.ctx.as_mut()?;
            Some(core::mem::replace(&mut c.other_l4, Mfn(0)))
        });
        if let Some(m) = other.flatten().filter(|&m| m != Mfn(0)) {
            teardown_pt(hv, d, false, |pt| pt.put_root(m));
            if teardown_pt(hv, d, true, |_| ()).is_none() {
                return false;
            }
        }
        let Some(Some((_, slot))) = crate::state::with_owner(d, v, |rq| rq.remove(id)) else { continue };
        // Its references go now; a long devalidation of its root stays pending (above).
        teardown_pt(hv, d, false, |pt| {
            if let Some(c) = &slot.ctx {
                if slot.state.initialised && c.l4 != Mfn(0) {
                    pt.put_root(c.l4);
                }
                for m in c.gdt.iter().chain(c.ldt.iter()).flatten() {
                    pt.put_segdesc(*m);
                }
            }
        });
        if registered & (1 << v) != 0 {
            if let Some(at) = d.vcpu_info.get(v) {
                let _ = ft.put_page_and_type(at.frame, true);
            }
        }
    }
    teardown_pt(hv, d, true, |_| ()).is_some()
}

use crate::guest::DomPt;

/// Runs `f` on dying domain `d`'s page tables under its memory lock, within this
/// hypercall's page-table budget: a devalidation that does not fit stays the domain's
/// pending job (nobody else touches a dying domain's tables), driven at the next call.
/// With `drain`, that pending work is driven first and `f` runs only once none is left
/// (`None`: the budget ran out first; the step is to be re-issued).
fn teardown_pt<R>(hv: &mut Hv, d: &DomShared, drain: bool, f: impl FnOnce(&mut DomPt<'_>) -> R) -> Option<R> {
    let mut mm = d.mm();
    let mut dm = DirectMap;
    let mut pt = crate::guest::pt!(hv.pc, dm, mm.jobs, 0);
    // `finish_all` also gives back a validation outcome no vCPU of it will claim now.
    if drain && pt.finish_all().is_err() {
        return None;
    }
    let r = f(&mut pt);
    let _ = pt.finish_all();
    Some(r)
}

/// Runs `f` on each frame `d` owns from the teardown's cursor on, with a page-table view
/// of `d`. False when the budget ran out first, or when `f` left a devalidation pending
/// (the cursor says where to go on; the pending work is driven first then).
fn walk(hv: &mut Hv, d: &DomShared, mut f: impl FnMut(&mut DomPt<'_>, Mfn, hv_core::frame::FrameInfo)) -> bool {
    let ft = crate::machine::frames();
    let (_, hi) = d.frame_range();
    let t = &d.teardown;
    let mut m = t.cursor.load(Ordering::Relaxed);
    let mut mm = d.mm();
    let mut dm = DirectMap;
    let pc = &mut *hv.pc;
    let mut pt = crate::guest::pt!(pc, dm, mm.jobs, 0);
    // Pending work first (and an outcome no vCPU of it will claim now).
    let mut done = pt.finish_all().is_ok();
    while done && m <= hi {
        if let Some(info) = ft.get(Mfn(m)) {
            if info.owner == Owner::Dom(d.id) {
                f(&mut pt, Mfn(m), info);
            }
        }
        m += 1;
        if pt.jobs.is_pending() || (m.is_multiple_of(FRAMES_PER_UNIT) && super::spend(&mut pc.budget, 1)) {
            done = false;
        }
    }
    let _ = pt.finish_all();
    t.cursor.store(m, Ordering::Relaxed);
    done && m > hi
}

/// `sysctl(op)`.
pub fn sysctl(hv: &mut Hv, arg: u64) -> HcResult {
    let mut b: [u8; SYSCTL_SIZE] = read_op(hv, arg, SYSCTL_INTERFACE_VERSION)?;
    const U: usize = SYSCTL_U_OFFSET;
    match u32at(&b, 0) {
        sys::READCONSOLE => {
            // {clear u8, incremental u8, index u32 @4, buffer @8, count u32 @16}
            let u = &b[U..];
            let (clear, incremental, index) = (u[0] != 0, u[1] != 0, u32at(u, 4));
            let (buf, count) = (u64at(u, 8), (u32at(u, 16) as usize).min(hv_arch::console::RING_SIZE));
            let mut out = alloc::vec![0u8; count];
            let (n, end) = hv_arch::console::read_ring(incremental.then_some(index), &mut out);
            write_guest(hv, buf, &out[..n])?;
            if clear {
                // Only once the bytes reached the reader: a faulting buffer loses nothing.
                hv_arch::console::clear_ring_to(end);
            }
            put32(&mut b, U + 4, end);
            put32(&mut b, U + 16, n as u32);
        }
        sys::GETCPUINFO => {
            // {max_cpus u32, info @8 (idletime u64 each), nr_cpus u32 @16}
            let u = &b[U..];
            let ncpus = crate::machine::get().cpus.len();
            let (max, info) = (u32at(u, 0) as usize, u64at(u, 8));
            let n = max.min(ncpus);
            for k in 0..n {
                write_guest(hv, info.wrapping_add(8 * k as u64), &crate::state::idle_ns(k).to_le_bytes())?;
            }
            put32(&mut b, U + 16, n as u32);
        }
        sys::PHYSINFO => {
            let m = crate::machine::get();
            let ncpus = m.cpus.len() as u32;
            let u = &mut b[U..U + 112];
            u.fill(0);
            put32(u, physinfo::THREADS_PER_CORE, 1);
            put32(u, physinfo::CORES_PER_SOCKET, ncpus);
            put32(u, physinfo::NR_CPUS, ncpus);
            put32(u, physinfo::MAX_CPU_ID, ncpus - 1);
            put32(u, physinfo::NR_NODES, 1);
            put32(u, physinfo::CPU_KHZ, hv_arch::time::tsc_khz() as u32);
            put32(u, physinfo::CAPABILITIES, physinfo::CAP_PV | physinfo::CAP_GNTTAB_V1);
            put64(u, physinfo::TOTAL_PAGES, m.ram_pages);
            put64(u, physinfo::FREE_PAGES, crate::mm::with(|mm| mm.free_frames()).unwrap_or(0));
            put64(u, physinfo::MAX_MFN, m.max_mfn - 1);
        }
        sys::SCHED_ID => put32(&mut b, U, sched::CREDIT),
        sys::GETDOMAININFOLIST => {
            let first = u16at(&b, U + infolist::FIRST_DOMAIN);
            let max = u32at(&b, U + infolist::MAX_DOMAINS);
            let buf = u64at(&b, U + infolist::BUFFER);
            let mut n = 0u32;
            let mut rec = [0u8; info::SIZE];
            for d in domain::all_from(first) {
                if n >= max {
                    break;
                }
                info(&d, &mut rec);
                write_guest(hv, buf.wrapping_add(n as u64 * info::SIZE as u64), &rec)?;
                n += 1;
            }
            put32(&mut b, U + infolist::NUM_DOMAINS, n);
        }
        _ => return Err(Errno::ENOSYS),
    }
    write_guest(hv, arg, &b)?;
    Ok(0)
}
