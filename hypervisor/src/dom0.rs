//! Building domains from boot modules: dom0 from the first, and boot-time domUs (in the
//! spirit of Xen's dom0less/hyperlaunch) from further modules whose string starts with
//! `domU`: `domU [mem=<size>] [vcpus=<n>] [weight=<n>] [cap=<pct>] [-- <guest command line>]`.

use crate::domain::DomShared;
use crate::vcpu::Vcpu;
use crate::mm::Mm;
use guest_abi::shared_info;
use guest_abi::start_info::{SIF_INITDOMAIN, SIF_PRIVILEGED};
use hv_arch::entry::TrapFrame;
use hv_arch::physmem::DirectMap;
use hv_core::builder::{self, BuildParams};
use hv_core::frame::{Owner, PageType};
use hv_core::mem::PhysMem;
use hv_core::pv_image;

/// Frames kept back for the hypervisor when sizing dom0.
const HYPERVISOR_RESERVE_PAGES: u64 = 1024;

/// Why dom0 could not be built; printed with the module's name.
pub enum Dom0Error {
    NoModule,
    Image(pv_image::ImageError),
    Build(builder::BuildError),
    TooMuchMemory { want: u64, free: u64 },
    OutOfMemory,
}

impl core::fmt::Display for Dom0Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Dom0Error::NoModule => write!(f, "no boot module: nothing to run as dom0"),
            Dom0Error::Image(e) => write!(f, "bad image: {}", e),
            Dom0Error::Build(e) => write!(f, "cannot build: {}", e),
            Dom0Error::TooMuchMemory { want, free } => write!(
                f,
                "dom0_mem of {} MiB is more than the {} MiB of free memory",
                want >> 8,
                free >> 8
            ),
            Dom0Error::OutOfMemory => write!(f, "out of memory while building"),
        }
    }
}

/// Options of a boot-time domU module.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DomUOpts<'a> {
    pub mem: u64,
    pub weight: u32,
    pub cap: u32,
    pub vcpus: u32,
    /// The CPUs its vCPUs may run on (xl's `cpus=`, hard affinity; all by default).
    pub cpus: u64,
    pub cmdline: &'a str,
}

/// Parses a module string: `Some` for a domU module, `None` for anything else.
pub fn parse_domu(s: &str) -> Option<Result<DomUOpts<'_>, &str>> {
    let s = s.trim();
    let rest = s.strip_prefix("domU")?;
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    let (opts, cmdline) = match rest.find(" -- ") {
        Some(i) => (&rest[..i], rest[i + 4..].trim()),
        None => (rest, ""),
    };
    let mut o = DomUOpts { mem: 16 << 20, weight: hv_core::sched::DEFAULT_WEIGHT, cap: 0, vcpus: 1, cpus: u64::MAX, cmdline };
    for w in opts.split_ascii_whitespace() {
        let ok = match w.split_once('=') {
            Some(("mem", v)) => hv_core::cmdline::parse_size(v).map(|m| o.mem = m).is_some(),
            Some(("weight", v)) => v.parse().ok().filter(|&x: &u32| (1..=65535).contains(&x)).map(|x| o.weight = x).is_some(),
            Some(("cap", v)) => v.parse().ok().filter(|&x: &u32| x <= 100).map(|x| o.cap = x).is_some(),
            Some(("cpus", v)) => hv_core::cmdline::parse_cpu_list(v).map(|m| o.cpus = m).is_some(),
            Some(("vcpus", v)) => {
                v.parse().ok().filter(|&x: &u32| (1..=crate::domain::MAX_VCPUS as u32).contains(&x)).map(|x| o.vcpus = x).is_some()
            }
            _ => false,
        };
        if !ok {
            return Some(Err(w));
        }
    }
    Some(Ok(o))
}

/// Builds domain `id` from `image` with `nr_pages` pages, command line `cmdline` and
/// `nr_vcpus` vCPUs. Returns the domain and its vCPU 0, ready to run (the other vCPUs are
/// created down, for `VCPUOP_initialise`).
pub fn build(
    mm: &mut Mm,
    id: guest_abi::DomId,
    image: &[u8],
    nr_pages: u64,
    cmdline: &str,
    nr_vcpus: u32,
    module: &[u8],
) -> Result<(alloc::sync::Arc<DomShared>, Vcpu), Dom0Error> {
    let privileged = id == 0;
    let img = pv_image::parse(image).map_err(Dom0Error::Image)?;
    let free = mm.free_frames();
    if nr_pages + HYPERVISOR_RESERVE_PAGES > free {
        return Err(Dom0Error::TooMuchMemory { want: nr_pages, free: free.saturating_sub(HYPERVISOR_RESERVE_PAGES) });
    }
    let layout = builder::compute_layout_with_module(&img, nr_pages, module.len() as u64).map_err(Dom0Error::Build)?;
    log::info!(
        "d{}: {} '{}' virt_base {:#x} image {:#x}-{:#x} entry {:#x}, {} MiB",
        id,
        img.guest_os,
        img.guest_version,
        img.virt_base,
        img.vstart,
        img.vend,
        img.entry,
        nr_pages >> 8
    );
    let mut p2m = alloc::vec::Vec::new();
    p2m.try_reserve_exact(nr_pages as usize).map_err(|_| Dom0Error::OutOfMemory)?;
    for _ in 0..nr_pages {
        p2m.push(mm.alloc.alloc().ok_or(Dom0Error::OutOfMemory)?);
    }
    for &m in &p2m {
        let _ = mm.ft.set_owner(m, Owner::Free);
    }

    // shared_info: a page the hypervisor writes (event bits, vcpu_info, time) and the domain
    // may map. It holds a permanent writable type reference (Xen's share_xen_page_with_guest),
    // so it can never become a page table or descriptor page while the hypervisor writes it.
    let si = mm.alloc.alloc().ok_or(Dom0Error::OutOfMemory)?;
    let _ = mm.ft.set_owner(si, Owner::Dom(id));
    mm.ft.get_page_and_type(si, id, Some(PageType::Writable)).map_err(|_| Dom0Error::OutOfMemory)?;
    DirectMap.zero(si).ok_or(Dom0Error::OutOfMemory)?;
    for v in 0..shared_info::MAX_VIRT_CPUS {
        DirectMap.store_u8(si, shared_info::upcall_mask_offset(v), 1);
    }

    let params = BuildParams {
        domid: id,
        flags: if privileged { SIF_PRIVILEGED | SIF_INITDOMAIN } else { 0 },
        cmdline: cmdline.as_bytes(),
        shared_info_maddr: si.maddr(),
        module,
    };
    let built = builder::build(&mut DirectMap, mm.ft, &img, &layout, &p2m, &params)
        .map_err(Dom0Error::Build)?;
    for (pfn, &mfn) in p2m.iter().enumerate() {
        mm.set_m2p(mfn, pfn as u64);
    }
    log::info!(
        "d{}: start_info {:#x}, page tables {:#x} ({} frames, L4 {:?}), stack top {:#x}",
        id,
        built.start_info_va,
        layout.pt_va,
        layout.nr_pt_frames,
        built.l4,
        built.stack_top
    );

    let n = (nr_vcpus as usize).clamp(1, crate::domain::MAX_VCPUS);
    let mut d = DomShared::new(id, privileged, si, n, nr_pages);
    d.set_pv64(!img.ring1);
    log::info!("d{}: {}", id, if d.pv64 { "Xen pv64 mode (kernel in ring 3)" } else { "ring-1 mode (rxen's own ABI note)" });
    let dom = alloc::sync::Arc::new(d);
    for &m in p2m.iter().chain([&si]) {
        dom.note_frame(m);
    }
    let mut vcpu = Vcpu::new(0, built.l4, dom.clone());
    vcpu.frame = TrapFrame {
        rip: built.entry,
        cs: guest_abi::selectors::kernel_cs(!img.ring1) as u64,
        rflags: 0x202,
        rsp: built.stack_top,
        ss: guest_abi::selectors::kernel_ss(!img.ring1) as u64,
        rsi: built.start_info_va,
        ..TrapFrame::default()
    };
    Ok((dom, vcpu))
}


