//! Device access (`hv_core::ioperm`). As dom0: PCI configuration space through ports
//! 0xCF8/0xCFC, a virtio disk's I/O BAR, and its MMIO BAR mapped uncached through
//! `update_va_mapping` and `mmu_update` with `DOMID_IO`, with the device answering; the
//! hypervisor's ports and MMIO (PIC, PIT, RTC, ELCR, COM1, debug-exit; local APIC, MSI
//! window, I/O APIC, HPET), RAM as MMIO and cache bits on RAM refused; PIRQs mapped, bound,
//! EOI'd and unmapped by Xen's rules, the hypervisor's GSIs refused. As a domU: none of it.
#![no_std]
#![no_main]

use guest_abi::errno::Errno::*;
use pv_runtime::hypercall::{self as hc, hypercall5};
use pv_runtime::mm::GuestMem;
use pv_runtime::traps::Fault;
use pv_runtime::{events, physdev};
use test_guests::*;

const GP: u8 = 13;
const P: u64 = 1;
const RW: u64 = 2;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
const A: u64 = 1 << 5;
const D: u64 = 1 << 6;
const NX: u64 = 1 << 63;

fn inl(port: u16) -> Result<u32, Fault> {
    let v: u32;
    let f = pv_runtime::probe!("mov dx, {p:x}", "in eax, dx", "mov {v:e}, eax"; p = in(reg) port, v = out(reg) v);
    f.map_or(Ok(v), Err)
}

fn inb(port: u16) -> Result<u8, Fault> {
    let v: u32;
    let f = pv_runtime::probe!("mov dx, {p:x}", "xor eax, eax", "in al, dx", "mov {v:e}, eax"; p = in(reg) port, v = out(reg) v);
    f.map_or(Ok(v as u8), Err)
}

fn outl(port: u16, val: u32) -> Result<(), Fault> {
    pv_runtime::probe!("mov dx, {p:x}", "mov eax, {v:e}", "out dx, eax"; p = in(reg) port, v = in(reg) val).map_or(Ok(()), Err)
}

/// Configuration dword `off` of bus 0, device `dev`, function 0.
fn cfg(dev: u8, off: u8) -> u32 {
    let _ = outl(0xCF8, 0x8000_0000 | (dev as u32) << 11 | (off as u32 & 0xFC));
    inl(0xCFC).unwrap_or(u32::MAX)
}

/// The hypervisor's ports (`hv_core::ioperm::HYPERVISOR_PORTS`), first and last of each.
const DENIED: &[u16] = &[0x20, 0x21, 0x40, 0x43, 0x61, 0x70, 0x71, 0xA0, 0xA1, 0xF4, 0x3F8, 0x3FF, 0x4D0, 0x4D1];

fn denied_ports() {
    for &p in DENIED {
        let ok = matches!(inb(p), Err(f) if f.vector == GP && f.error_code == 0);
        if !ok {
            println!("  port {:#x} reachable", p);
        }
        check("a hypervisor port raises #GP", ok);
    }
}

/// A virtio disk on bus 0: (device, the BAR holding its common configuration and the
/// offset in it, its legacy I/O BAR).
fn find_virtio_blk() -> Option<(u8, u64, u16)> {
    for dev in 0..32u8 {
        let id = cfg(dev, 0);
        if id & 0xFFFF != 0x1AF4 || !matches!(id >> 16, 0x1001 | 0x1042) {
            continue;
        }
        let bar0 = cfg(dev, 0x10);
        let io = if bar0 & 1 != 0 { (bar0 & 0xFFFC) as u16 } else { 0 };
        // The vendor capabilities: type 1 is the common configuration.
        let mut cap = (cfg(dev, 0x34) & 0xFC) as u8;
        let mut n = 0;
        while cap != 0 && n < 48 {
            let h = cfg(dev, cap);
            if h & 0xFF == 0x09 && (h >> 24) & 0xFF == 1 {
                let bar = (cfg(dev, cap + 4) & 0xFF) as u8;
                let off = cfg(dev, cap + 8) as u64;
                let lo = cfg(dev, 0x10 + 4 * bar);
                let hi = if lo & 0x6 == 0x4 { cfg(dev, 0x14 + 4 * bar) as u64 } else { 0 };
                return Some((dev, (hi << 32 | (lo & !0xF) as u64) + off, io));
            }
            cap = ((h >> 8) & 0xFC) as u8;
            n += 1;
        }
    }
    None
}

/// `map_pirq` with any type (the GSI wrapper covers type 1).
fn map_typed(dom: u16, ty: u32, index: i32, pirq: i32) -> i64 {
    use guest_abi::physdev::map_pirq as m;
    let mut a = [0u32; m::SIZE / 4];
    a[m::DOMID / 4] = dom as u32;
    a[m::TYPE / 4] = ty;
    a[m::INDEX / 4] = index as u32;
    a[m::PIRQ / 4] = pirq as u32;
    physdev::op(guest_abi::physdev::PHYSDEVOP_MAP_PIRQ, &mut a)
}

fn err(r: Result<u32, i64>) -> i64 {
    r.err().unwrap_or(0)
}

/// PIRQs as dom0: the hypervisor's GSIs and bad arguments refused, one line through its
/// whole life (map, bind, status, EOI, unmap), each step's misuse refused.
fn pirqs_dom0() {
    use guest_abi::physdev::*;
    const SELF: u16 = guest_abi::DOMID_SELF;
    for (what, gsi) in [("GSI 0 (the 8259's)", 0), ("GSI 2 (the PIT's)", 2), ("GSI 4 (COM1's)", 4), ("GSI 8 (the RTC's)", 8)] {
        expect_err(what, err(physdev::map_gsi(SELF, gsi, -1)), EPERM);
    }
    expect_err("GSI past the I/O APICs", err(physdev::map_gsi(SELF, 24, -1)), EINVAL);
    expect_err("GSI 200", err(physdev::map_gsi(SELF, 200, -1)), EINVAL);
    expect_err("GSI -1", err(physdev::map_gsi(SELF, -1, -1)), EINVAL);
    expect_err("PIRQ 256", err(physdev::map_gsi(SELF, 5, 256)), EINVAL);
    expect_err("MSI", map_typed(SELF, MAP_PIRQ_TYPE_MSI, -1, -1), EOPNOTSUPP);
    expect_err("type 7", map_typed(SELF, 7, 5, -1), EINVAL);
    expect_err("for another domain", err(physdev::map_gsi(1, 5, -1)), EPERM);
    check("GSI 5 as PIRQ 5", physdev::map_gsi(SELF, 5, -1) == Ok(5));
    check("the same mapping again", physdev::map_gsi(SELF, 5, -1) == Ok(5) && physdev::map_gsi(SELF, 5, 5) == Ok(5));
    expect_err("GSI 5 as another PIRQ", err(physdev::map_gsi(SELF, 5, 6)), EEXIST);
    expect_err("PIRQ 5 for another GSI", err(physdev::map_gsi(SELF, 6, 5)), EEXIST);
    check("PIRQ 5 needs its EOI", physdev::status(5) == Ok(XENIRQSTAT_NEEDS_EOI));
    expect_err("status of PIRQ 256", err(physdev::status(256)), EINVAL);
    expect_err("EOI of PIRQ 7", physdev::eoi(7), EINVAL);
    expect_err("bind PIRQ 7", err(events::bind_pirq(7, 0)), EINVAL);
    let port = events::bind_pirq(5, 0);
    check("bind PIRQ 5", port.is_ok());
    let port = port.unwrap_or(0);
    expect_err("bind it again", err(events::bind_pirq(5, 0)), EEXIST);
    check("its port says PIRQ 5", events::status(guest_abi::DOMID_SELF, port).is_ok_and(|(st, _, p, _)| st == guest_abi::evtchn::EVTCHNSTAT_PIRQ && p == 5));
    expect_err("send on it", events::send(port), EINVAL);
    expect_ret("EOI with nothing in flight", physdev::eoi(5), 0);
    expect_err("unmap while bound", physdev::unmap(SELF, 5), EBUSY);
    expect_ret("close its port", events::close(port), 0);
    expect_ret("unmap", physdev::unmap(SELF, 5), 0);
    expect_err("unmap again", physdev::unmap(SELF, 5), EINVAL);
    expect_err("bind it unmapped", err(events::bind_pirq(5, 0)), EINVAL);
    check("GSI 3 (edge) as any PIRQ", physdev::map_gsi(SELF, 3, -1) == Ok(3));
    expect_ret("EOI of an edge line", physdev::eoi(3), 0);
    let p3 = events::bind_pirq(3, 0).unwrap_or(0);
    check("bound", p3 != 0);
    expect_ret("close", events::close(p3), 0);
    expect_ret("unmap", physdev::unmap(SELF, 3), 0);
}

/// PIRQs as a domU: none.
fn pirqs_domu() {
    const SELF: u16 = guest_abi::DOMID_SELF;
    expect_err("map_pirq", err(physdev::map_gsi(SELF, 5, -1)), EPERM);
    expect_err("map_pirq of dom0's", err(physdev::map_gsi(0, 5, -1)), EPERM);
    expect_err("bind_pirq", err(events::bind_pirq(5, 0)), EPERM);
    expect_err("unmap_pirq", physdev::unmap(SELF, 5), EPERM);
    expect_err("EOI", physdev::eoi(5), EINVAL);
    expect_err("status out of range", err(physdev::status(300)), EINVAL);
}

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    settle();
    let dom0 = si.flags & guest_abi::start_info::SIF_PRIVILEGED != 0;
    start("iodev");
    let vb = pv_runtime::virt_base();
    let mem = GuestMem::new(si, vb);
    let t = Tables::new(si);
    let va = vb + (mem.region_end_pfn - 2) * 4096;
    let own = t.mfn_of_va(va);
    let pte_ma = t.entry_maddr(va, 1);
    let map = |mfn: u64, flags: u64| hc::update_va_mapping(va, mfn << 12 | flags, 2);
    let map_io = |mfn: u64, flags: u64| {
        let req = [pte_ma, mfn << 12 | flags];
        // SAFETY: one request on this guest's stack; mmu_update reads it.
        unsafe { hypercall5(guest_abi::hypercall::MMU_UPDATE, req.as_ptr() as u64, 1, 0, guest_abi::DOMID_IO as u64, 0) }
    };
    let mmio = P | RW | A | D | PCD | PWT | NX;
    denied_ports();
    // Machine frame 0 and the hypervisor's image are RAM, not MMIO; the APICs, the MSI window
    // and the HPET are the hypervisor's.
    expect_err("machine frame 0", map(0, P | A), EINVAL);
    expect_err("a hypervisor frame (1 MiB)", map(0x100, P | A), EINVAL);
    expect_err("own RAM uncached", map(own, P | RW | A | D | PCD | PWT), EINVAL);
    expect_err("own RAM, PAT bit", map(own, P | A | 0x80), EINVAL);
    expect_err("own RAM through DOMID_IO", map_io(own, P | A), EINVAL);
    for (what, mfn) in [("the local APIC", 0xFEE00u64), ("the MSI window", 0xFEEFF), ("the I/O APIC", 0xFEC00), ("the HPET", 0xFED00)] {
        expect_err(what, map(mfn, mmio), EPERM);
        expect_err(what, map_io(mfn, mmio), EPERM);
    }
    if !dom0 {
        check("no SIF_PRIVILEGED", true);
        for (what, p) in [("PCI address port", 0xCF8u16), ("PCI data port", 0xCFC), ("POST port", 0x80), ("a device's I/O BAR", 0xC000)] {
            expect_fault(what, inl(p).err(), GP, Some(0));
        }
        expect_err("VGA memory", map(0xA0, P | RW | A | D), EPERM);
        expect_err("MMIO below 4 GiB", map(0xFEB00, mmio), EPERM);
        expect_err("MMIO through DOMID_IO", map_io(0xFEB00, mmio), EPERM);
        pirqs_domu();
        check("still at CPL 1", pv_runtime::cpl() == 1);
        finish("iodev")
    }
    // PCI configuration space.
    let host = cfg(0, 0);
    println!("  host bridge {:04x}:{:04x}", host & 0xFFFF, host >> 16);
    check("the host bridge is Intel's", host & 0xFFFF == 0x8086);
    check("out to the POST port", outl(0x80, 0).is_ok());
    check("the ports next to COM1", inb(0x3F7).is_ok() && inb(0x400).is_ok());
    let Some((dev, common, io)) = find_virtio_blk() else {
        check("a virtio disk on bus 0", false);
        finish("iodev")
    };
    println!("  virtio-blk at 00:{:02x}.0: common config at {:#x}, I/O BAR {:#x}", dev, common, io);
    if io != 0 {
        // The legacy interface's device features (through the I/O BAR).
        check("the disk's I/O BAR answers", inl(io).is_ok_and(|f| f != u32::MAX));
    }
    // The common configuration, mapped uncached: num_queues, then the feature word with
    // VIRTIO_F_VERSION_1 (bit 32) after selecting word 1.
    let page = common >> 12;
    let at = va + (common & 0xFFF);
    // The three accessors are used only while the BAR page is mapped at `va`.
    // SAFETY: `at` is inside the mapped BAR page; the common configuration is 56 bytes.
    let rd16 = |o: u64| unsafe { ((at + o) as *const u16).read_volatile() };
    // SAFETY: as above.
    let rd32 = |o: u64| unsafe { ((at + o) as *const u32).read_volatile() };
    // SAFETY: as above.
    let wr32 = |o: u64, v: u32| unsafe { ((at + o) as *mut u32).write_volatile(v) };
    expect_ret("map the BAR uncached", map(page, mmio), 0);
    let queues = rd16(0x12);
    wr32(0, 1);
    let f1 = rd32(4);
    println!("  num_queues {}, features[32..64] {:#x}", queues, f1);
    check("the device reports its queues", (1..=64).contains(&queues));
    check("and VIRTIO_F_VERSION_1", f1 & 1 != 0);
    expect_ret("unmap", map(0, 0), 0);
    check("the mapping is gone", pv_runtime::probe!("mov eax, [{a}]"; a = in(reg) at).is_some_and(|f| f.vector == 14));
    expect_ret("map it through DOMID_IO", map_io(page, mmio), 0);
    check("the same device", rd16(0x12) == queues);
    expect_ret("unmap", map(0, 0), 0);
    expect_ret("VGA memory (a hole below 1 MiB)", map(0xA0, P | RW | A | D), 0);
    expect_ret("unmap", map(0, 0), 0);
    pirqs_dom0();
    check("still at CPL 1", pv_runtime::cpl() == 1);
    finish("iodev")
}
