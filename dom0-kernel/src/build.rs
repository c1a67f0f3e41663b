//! The domain builder in dom0 (`xl create`): Xen's 64-bit PV build sequence from dom0's
//! hypercalls, with the layout arithmetic of the hypervisor's own builder
//! (`hv_core::builder`, one host-tested crate for both).
//!
//! createdomain, max_mem, populate; the image's segments, the P2M list, start_info and the
//! bootstrap page tables (the region 1:1, every table frame read-only) written into the new
//! domain's frames through a foreign mapping; its L4 pinned for it; its hypercall page
//! filled; vCPU 0's context set (entry, boot stack, RSI = start_info); scheduler
//! parameters and affinity; unpaused.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use guest_abi::domctl::*;
use guest_abi::mm::ext;
use hv_core::builder::{compute_layout, start_info_bytes, start_info_for, Layout};
use pv_runtime::ctl::{boot_context, mmuext_for, populate, set_vcpu_context, Domctl};
use pv_runtime::foreign::Window;
use pv_runtime::mm::{A, D, P, RW};
use pv_runtime::StartInfo;
use toolstack::xlcfg::Config;

const PAGE: u64 = 4096;

/// A domain being built: destroyed unless [`Building::done`] is reached.
struct Building {
    dom: u16,
    ok: bool,
}

impl Drop for Building {
    fn drop(&mut self) {
        if !self.ok {
            let _ = Domctl::new(DESTROYDOMAIN, self.dom).call();
        }
    }
}

fn fail(what: &str, rc: i64) -> String {
    format!("libxl: error: {} failed: {}", what, crate::xl::errno(rc))
}

/// The bootstrap page tables of `l` over frames `p2m`: (PFN, contents) of each table
/// frame, L4 first, as the hypervisor's builder lays them out.
fn tables(l: &Layout, p2m: &[u64]) -> Vec<(u64, Vec<u64>)> {
    let pt0 = l.pfn(l.pt_va);
    let mut frames: Vec<(u64, Vec<u64>)> = vec![(pt0, vec![0; 512])];
    let mut next = pt0 + 1;
    let pt_range = pt0..pt0 + l.nr_pt_frames;
    let inner = P | RW | A;
    for pfn in 0..l.region_pages() {
        let va = l.virt_base + pfn * PAGE;
        let mut t = 0usize; // index into `frames`
        for level in (2..=4u32).rev() {
            let idx = ((va >> (12 + 9 * (level - 1))) & 511) as usize;
            let e = frames[t].1[idx];
            t = if e & P != 0 {
                let child = (e >> 12) & 0xF_FFFF_FFFF;
                frames.iter().position(|(q, _)| p2m[*q as usize] == child).unwrap_or(0)
            } else {
                let child = next;
                next += 1;
                frames[t].1[idx] = p2m[child as usize] << 12 | inner;
                frames.push((child, vec![0; 512]));
                frames.len() - 1
            };
        }
        let flags = if pt_range.contains(&pfn) { P | A | D } else { P | RW | A | D };
        frames[t].1[((va >> 12) & 511) as usize] = p2m[pfn as usize] << 12 | flags;
    }
    frames
}

/// Builds and starts the domain of config `cfg` from PV image `image`; its id.
pub fn create(si: &StartInfo, cfg: &Config, image: &[u8]) -> Result<u16, String> {
    let img = hv_core::pv_image::parse(image).map_err(|e| format!("libxl: error: {}: {}", cfg.kernel, e))?;
    let nr_pages = cfg.memory * 256;
    let l = compute_layout(&img, nr_pages).map_err(|e| format!("libxl: error: {}: {}", cfg.kernel, e))?;
    let mut op = Domctl::new(CREATEDOMAIN, 0)
        .u32(create::MAX_VCPUS, cfg.maxvcpus)
        .u32(create::MAX_EVTCHN_PORT, 1023)
        .u32(create::MAX_GRANT_FRAMES, u32::MAX)
        .u32(create::MAX_MAPTRACK_FRAMES, u32::MAX);
    let rc = op.call();
    if rc != 0 {
        return Err(fail("createdomain", rc));
    }
    let mut b = Building { dom: op.dom(), ok: false };
    let dom = b.dom;
    let rc = Domctl::new(MAX_MEM, dom).u64(0, cfg.maxmem * 1024).call();
    if rc != 0 {
        return Err(fail("max_mem", rc));
    }
    let mut p2m: Vec<u64> = (0..nr_pages).collect();
    for chunk in p2m.chunks_mut(4096) {
        let n = populate(dom, chunk);
        if n != chunk.len() as i64 {
            // A short count is the allocator running dry: -ENOMEM.
            return Err(fail("populate_physmap", if n < 0 { n } else { -12 }));
        }
    }
    let mut info = Domctl::new(GETDOMAININFO, dom);
    let rc = info.call();
    if rc != 0 {
        return Err(fail("getdomaininfo", rc));
    }
    let shared_info = info.get64(info::SHARED_INFO_FRAME) << 12;

    // Every frame of the region, written once through the window.
    let mut w = Window::new(si);
    let mut page = vec![0u8; PAGE as usize];
    let region = l.region_pages();
    let tabs = tables(&l, &p2m);
    let start_info = start_info_bytes(&start_info_for(&l, shared_info, 0, cfg.cmdline.as_bytes()));
    let in_segment = |va: u64| img.segments().iter().any(|s| s.filesz > 0 && s.vaddr < va + PAGE && va < s.vaddr + s.filesz as u64);
    for pfn in 0..region {
        let va = l.virt_base + pfn * PAGE;
        let table = tabs.iter().find(|(q, _)| *q == pfn);
        let p2m_page = (l.p2m_va..l.p2m_va + l.p2m_pages * PAGE).contains(&va);
        // Only what holds something is written: populated frames are zeroed already.
        if !(table.is_some() || p2m_page || va == l.start_info_va || in_segment(va)) {
            continue;
        }
        page.fill(0);
        for s in img.segments() {
            let (lo, hi) = (s.vaddr.max(va), (s.vaddr + s.filesz as u64).min(va + PAGE));
            if lo < hi {
                let src = s.file_offset + (lo - s.vaddr) as usize;
                page[(lo - va) as usize..(hi - va) as usize].copy_from_slice(&img.data[src..src + (hi - lo) as usize]);
            }
        }
        if p2m_page {
            let first = ((va - l.p2m_va) / 8) as usize;
            for (i, m) in p2m.iter().skip(first).take(512).enumerate() {
                page[8 * i..8 * i + 8].copy_from_slice(&m.to_le_bytes());
            }
        }
        if va == l.start_info_va {
            page[..start_info.len()].copy_from_slice(&start_info);
        }
        if let Some((_, words)) = table {
            for (i, e) in words.iter().enumerate() {
                page[8 * i..8 * i + 8].copy_from_slice(&e.to_le_bytes());
            }
        }
        w.map(dom, p2m[pfn as usize]).map_err(|e| fail("mapping a frame of the new domain", e))?;
        w.write(0, &page);
    }
    w.restore();

    let l4 = p2m[l.pfn(l.pt_va) as usize];
    let rc = mmuext_for(dom, ext::PIN_L4_TABLE, l4);
    if rc != 0 {
        return Err(fail("pinning the bootstrap tables", rc));
    }
    if let Some(hp) = img.hypercall_page {
        let rc = Domctl::new(HYPERCALL_INIT, dom).u64(0, p2m[l.pfn(hp) as usize]).call();
        if rc != 0 {
            return Err(fail("hypercall_init", rc));
        }
    }
    let mut ctx = vec![0u8; guest_abi::vcpu::ctx::SIZE];
    boot_context(&mut ctx, img.entry, l.stack_top(), l.start_info_va, l4);
    let rc = set_vcpu_context(dom, 0, &mut ctx);
    if rc != 0 {
        return Err(fail("setvcpucontext", rc));
    }
    let mut op = Domctl::new(SCHEDULER_OP, dom)
        .u32(sched::SCHED_ID, sched::CREDIT)
        .u32(sched::CMD, sched::PUTINFO)
        .u16(sched::WEIGHT, cfg.weight as u16)
        .u16(sched::CAP, cfg.cap as u16);
    let rc = op.call();
    if rc != 0 {
        return Err(fail("sched-credit", rc));
    }
    if let Some(cpus) = cfg.cpus {
        for v in 0..cfg.maxvcpus {
            let mut map = cpus.to_le_bytes();
            let rc = Domctl::new(SETVCPUAFFINITY, dom)
                .u32(affinity::VCPU, v)
                .u32(affinity::FLAGS, affinity::HARD_FLAG)
                .u64(affinity::HARD, map.as_mut_ptr() as u64)
                .u32(affinity::HARD + 8, 64)
                .call();
            if rc != 0 {
                return Err(fail("vcpu affinity", rc));
            }
        }
    }
    let rc = Domctl::new(UNPAUSEDOMAIN, dom).call();
    if rc != 0 {
        return Err(fail("unpause", rc));
    }
    b.ok = true;
    Ok(dom)
}
