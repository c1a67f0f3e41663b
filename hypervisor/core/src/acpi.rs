//! Just enough ACPI to find the CPUs, the interrupt controllers and the timers: RSDP →
//! RSDT/XSDT → MADT local-APIC, I/O APIC and interrupt-source-override entries; the FADT's
//! PM timer; the HPET table's base.
//!
//! Firmware tables are read through a callback, every length and offset is bounds-checked
//! and every checksum verified, so a broken table is an error, never a panic.
//!
//! Why not the `acpi` crate: the hypervisor needs only the MADT's processor entries, before
//! its heap exists, from tables copied by the boot loader or found in low memory. The crate
//! wants an `AcpiHandler` that maps arbitrary physical ranges and an allocator for its
//! platform description; this parser is a few hundred host-tested lines read through a
//! bounded copy. The power side (the FADT's sleep and reset registers, `\_S5`) is in
//! `acpi_power`; rust-osdev's AML interpreter would need nightly Rust (its `aml` crate and
//! `acpi` 6+ use unstable features), so that reads `\_S5` alone.

/// Largest table read (on the boot stack: RSDTs and MADTs are far smaller).
pub const TABLE_MAX: usize = 8192;

/// Most CPUs recorded.
pub const MAX_CPUS: usize = 64;

/// What the MADT says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Madt {
    pub lapic_addr: u64,
    /// APIC ids of the usable (enabled) processors, in table order.
    pub apic_ids: [u32; MAX_CPUS],
    pub nr_cpus: usize,
    pub ioapics: [IoApic; MAX_IOAPICS],
    pub nr_ioapics: usize,
    /// Interrupt source overrides (ISA IRQ → GSI), in table order.
    pub overrides: [Override; MAX_OVERRIDES],
    pub nr_overrides: usize,
}

/// Most I/O APICs and interrupt source overrides recorded.
pub const MAX_IOAPICS: usize = 8;
pub const MAX_OVERRIDES: usize = 16;

/// An I/O APIC: its id, registers' physical address and first GSI.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct IoApic {
    pub id: u8,
    pub addr: u64,
    pub gsi_base: u32,
}

/// An interrupt source override: ISA IRQ `source` arrives at `gsi`, with MPS INTI `flags`
/// (bits 0–1 polarity: 0 bus default, 1 high, 3 low; bits 2–3 trigger: 0 bus default,
/// 1 edge, 3 level).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Override {
    pub source: u8,
    pub gsi: u32,
    pub flags: u16,
}

impl Madt {
    pub fn cpus(&self) -> &[u32] {
        &self.apic_ids[..self.nr_cpus]
    }

    pub fn ioapics(&self) -> &[IoApic] {
        &self.ioapics[..self.nr_ioapics]
    }

    pub fn overrides(&self) -> &[Override] {
        &self.overrides[..self.nr_overrides]
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AcpiError {
    NoRsdp,
    BadChecksum(&'static str),
    Unreadable,
    NoMadt,
    Malformed,
}

/// Reads `buf.len()` bytes at physical address `pa`; false if not readable.
pub type Reader<'a> = &'a dyn Fn(u64, &mut [u8]) -> bool;

pub(crate) fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
}

pub(crate) fn u32le(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

pub(crate) fn u64le(b: &[u8], o: usize) -> u64 {
    u32le(b, o) as u64 | (u32le(b, o + 4) as u64) << 32
}

/// Is there a valid RSDP at `pa`?
pub fn check_rsdp(read: Reader<'_>, pa: u64) -> bool {
    let mut b = [0u8; 20];
    read(pa, &mut b) && &b[..8] == b"RSD PTR " && sum(&b) == 0
}

/// Looks for the RSDP on 16-byte boundaries of `[start, end)` (the BIOS area).
pub fn find_rsdp(read: Reader<'_>, start: u64, end: u64) -> Option<u64> {
    (start..end).step_by(16).find(|&pa| check_rsdp(read, pa))
}

/// The RSDP through an EFI system table at `systab` (its configuration table's ACPI 2.0
/// entry, else its ACPI 1.0 one), as firmware hands it to a UEFI boot: the fallback when
/// the bootloader passed no RSDP of its own and there is no BIOS area to scan. At most 256
/// configuration entries are looked at.
pub fn rsdp_from_efi(read: Reader<'_>, systab: u64) -> Option<u64> {
    const ACPI20: [u8; 16] = [0x71, 0xe8, 0x68, 0x88, 0xf1, 0xe4, 0xd3, 0x11, 0xbc, 0x22, 0x00, 0x80, 0xc7, 0x3c, 0x88, 0x81];
    const ACPI10: [u8; 16] = [0x30, 0x2d, 0x9d, 0xeb, 0x88, 0x2d, 0xd3, 0x11, 0x9a, 0x16, 0x00, 0x90, 0x27, 0x3f, 0xc1, 0x4d];
    // EFI_SYSTEM_TABLE: the header's signature "IBI SYST", ..., NumberOfTableEntries at
    // 104, ConfigurationTable at 112; entries are {GUID, pointer}, 24 bytes.
    let mut st = [0u8; 120];
    if !read(systab, &mut st) || &st[..8] != b"IBI SYST" {
        return None;
    }
    let (n, table) = (u64le(&st, 104).min(256), u64le(&st, 112));
    let mut found = [None, None];
    for i in 0..n {
        let mut e = [0u8; 24];
        if !read(table.checked_add(24 * i)?, &mut e) {
            return None;
        }
        let at = u64le(&e, 16);
        if e[..16] == ACPI20 {
            found[0] = found[0].or(Some(at));
        } else if e[..16] == ACPI10 {
            found[1] = found[1].or(Some(at));
        }
    }
    found.into_iter().flatten().find(|&pa| check_rsdp(read, pa))
}

/// Reads a whole table (header length checked, at most [`TABLE_MAX`]) with its checksum verified.
fn table(read: Reader<'_>, pa: u64, buf: &mut [u8; TABLE_MAX]) -> Result<usize, AcpiError> {
    let mut h = [0u8; 36];
    if !read(pa, &mut h) {
        return Err(AcpiError::Unreadable);
    }
    let len = u32le(&h, 4) as usize;
    if !(36..=buf.len()).contains(&len) {
        return Err(AcpiError::Malformed);
    }
    if !read(pa, &mut buf[..len]) {
        return Err(AcpiError::Unreadable);
    }
    if sum(&buf[..len]) != 0 {
        return Err(AcpiError::BadChecksum("table"));
    }
    Ok(len)
}

/// The ACPI PM timer the FADT names: its I/O port and whether it counts 32 bits (else 24).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PmTimer {
    pub port: u16,
    pub bits32: bool,
}

/// The PM timer through the RSDP at `rsdp` (the FADT's `X_PM_TMR_BLK` when it is in I/O
/// space, else `PM_TMR_BLK`), if the machine has one.
pub fn pm_timer(read: Reader<'_>, rsdp: u64) -> Option<PmTimer> {
    let mut buf = [0u8; TABLE_MAX];
    let n = find_table(read, rsdp, b"FACP", &mut buf)?;
    if n < 116 {
        return None;
    }
    let bits32 = u32le(&buf, 112) & (1 << 8) != 0;
    // X_PM_TMR_BLK: a generic address (space id at 208, address at 212).
    let x = (n >= 220 && buf[208] == 1).then(|| u64le(&buf, 212)).filter(|&a| a != 0 && a <= 0xFFFF);
    let port = x.unwrap_or(u64::from(u32le(&buf, 76)));
    (port != 0 && port <= 0xFFFF).then_some(PmTimer { port: port as u16, bits32 })
}

/// The first table with signature `sig` through the RSDP at `rsdp`, read whole into `buf`
/// (checksummed, at most [`TABLE_MAX`] bytes): its length.
fn find_table(read: Reader<'_>, rsdp: u64, sig: &[u8; 4], buf: &mut [u8; TABLE_MAX]) -> Option<usize> {
    let (entries, count) = root_entries(read, rsdp).ok()?;
    for &pa in &entries[..count] {
        let mut s = [0u8; 4];
        if read(pa, &mut s) && &s == sig {
            return table(read, pa, buf).ok();
        }
    }
    None
}

/// The HPET's register block through the RSDP at `rsdp` (the HPET table's base address,
/// when it is in system memory), if the machine has one.
pub fn hpet(read: Reader<'_>, rsdp: u64) -> Option<u64> {
    let mut buf = [0u8; TABLE_MAX];
    let n = find_table(read, rsdp, b"HPET", &mut buf)?;
    // Event timer block id at 36, then the base address (a GAS) at 40.
    let addr = (n >= 56 && buf[40] == 0).then(|| u64le(&buf, 44))?;
    (addr != 0 && addr.is_multiple_of(1024)).then_some(addr)
}

/// The physical addresses the root table (XSDT, else RSDT) of the RSDP at `rsdp` lists.
pub(crate) fn root_entries(read: Reader<'_>, rsdp: u64) -> Result<([u64; 256], usize), AcpiError> {
    let mut r = [0u8; 36];
    if !read(rsdp, &mut r[..20]) || &r[..8] != b"RSD PTR " {
        return Err(AcpiError::NoRsdp);
    }
    if sum(&r[..20]) != 0 {
        return Err(AcpiError::BadChecksum("RSDP"));
    }
    let (root, entry_size) = if r[15] >= 2 && read(rsdp, &mut r) && sum(&r) == 0 && u64le(&r, 24) != 0 {
        (u64le(&r, 24), 8)
    } else {
        (u32le(&r, 16) as u64, 4)
    };
    let mut buf = [0u8; TABLE_MAX];
    let n = table(read, root, &mut buf)?;
    // Copied out: `buf` is reused for the tables themselves. (No allocation: this runs before
    // the hypervisor has a heap.)
    let mut entries = [0u64; 256];
    let mut count = 0;
    for c in buf[36..n].chunks_exact(entry_size).take(entries.len()) {
        entries[count] = if entry_size == 8 { u64le(c, 0) } else { u32le(c, 0) as u64 };
        count += 1;
    }
    Ok((entries, count))
}

/// Finds the MADT through the RSDP at `rsdp` and lists the enabled processors.
pub fn parse(read: Reader<'_>, rsdp: u64) -> Result<Madt, AcpiError> {
    let (entries, count) = root_entries(read, rsdp)?;
    let mut buf = [0u8; TABLE_MAX];
    for &pa in &entries[..count] {
        let mut sig = [0u8; 4];
        if !read(pa, &mut sig) || &sig != b"APIC" {
            continue;
        }
        let n = table(read, pa, &mut buf)?;
        if n < 44 {
            return Err(AcpiError::Malformed);
        }
        let mut m = Madt {
            lapic_addr: u32le(&buf, 36) as u64,
            apic_ids: [0; MAX_CPUS],
            nr_cpus: 0,
            ioapics: [IoApic::default(); MAX_IOAPICS],
            nr_ioapics: 0,
            overrides: [Override::default(); MAX_OVERRIDES],
            nr_overrides: 0,
        };
        let mut o = 44;
        while o + 2 <= n {
            let (ty, len) = (buf[o], buf[o + 1] as usize);
            if len < 2 || o + len > n {
                return Err(AcpiError::Malformed);
            }
            let e = &buf[o..o + len];
            let cpu = match (ty, len) {
                (0, 8) => Some((e[3] as u32, u32le(e, 4))),
                (9, 16) => Some((u32le(e, 4), u32le(e, 8))),
                (5, 12) => {
                    m.lapic_addr = u64le(e, 4);
                    None
                }
                (1, 12) => {
                    if m.nr_ioapics < MAX_IOAPICS {
                        m.ioapics[m.nr_ioapics] = IoApic { id: e[2], addr: u32le(e, 4) as u64, gsi_base: u32le(e, 8) };
                        m.nr_ioapics += 1;
                    }
                    None
                }
                (2, 10) => {
                    if m.nr_overrides < MAX_OVERRIDES {
                        m.overrides[m.nr_overrides] = Override { source: e[3], gsi: u32le(e, 4), flags: u16::from_le_bytes([e[8], e[9]]) };
                        m.nr_overrides += 1;
                    }
                    None
                }
                _ => None,
            };
            if let Some((id, flags)) = cpu {
                if flags & 1 != 0 && m.nr_cpus < MAX_CPUS && !m.cpus().contains(&id) {
                    m.apic_ids[m.nr_cpus] = id;
                    m.nr_cpus += 1;
                }
            }
            o += len;
        }
        return Ok(m);
    }
    Err(AcpiError::NoMadt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn fix(t: &mut [u8], sum_at: usize) {
        t[sum_at] = 0;
        t[sum_at] = 0u8.wrapping_sub(sum(t));
    }

    fn sdt(sig: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(sig);
        t.extend_from_slice(&((36 + body.len()) as u32).to_le_bytes());
        t.extend_from_slice(&[1, 0]);
        t.extend_from_slice(&[0; 26]);
        t.extend_from_slice(body);
        fix(&mut t, 9);
        t
    }

    /// Memory: RSDP at 0x1000, RSDT at 0x2000, MADT at 0x3000.
    fn machine(madt_body: &[u8]) -> Vec<u8> {
        let mut mem = std::vec![0u8; 0x4000 + madt_body.len() + 64];
        let mut rsdp = Vec::new();
        rsdp.extend_from_slice(b"RSD PTR ");
        rsdp.push(0);
        rsdp.extend_from_slice(b"OEMID ");
        rsdp.push(0);
        rsdp.extend_from_slice(&0x2000u32.to_le_bytes());
        fix(&mut rsdp, 8);
        mem[0x1000..0x1000 + 20].copy_from_slice(&rsdp);
        let rsdt = sdt(b"RSDT", &0x3000u32.to_le_bytes());
        mem[0x2000..0x2000 + rsdt.len()].copy_from_slice(&rsdt);
        let madt = sdt(b"APIC", madt_body);
        mem[0x3000..0x3000 + madt.len()].copy_from_slice(&madt);
        mem
    }

    fn madt_body(cpus: &[(u8, u8, u32)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0xFEE0_0000u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        for &(uid, id, flags) in cpus {
            b.extend_from_slice(&[0, 8, uid, id]);
            b.extend_from_slice(&flags.to_le_bytes());
        }
        b.extend_from_slice(&[1, 12, 0, 0, 0, 0, 0xC0, 0xFE, 0, 0, 0, 0]); // an I/O APIC
        b.extend_from_slice(&[2, 10, 0, 0, 2, 0, 0, 0, 0, 0]); // IRQ 0 -> GSI 2
        b.extend_from_slice(&[2, 10, 0, 9, 9, 0, 0, 0, 0x0D, 0]); // IRQ 9 -> GSI 9, level, high
        b
    }

    fn reader(mem: &[u8]) -> impl Fn(u64, &mut [u8]) -> bool + '_ {
        move |pa, buf| {
            let s = pa as usize;
            match mem.get(s..s + buf.len()) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        }
    }

    /// The RSDP through an EFI system table (at 0x3800 of `machine`'s memory, its
    /// configuration table after it): ACPI 2.0's entry first, a bad one skipped.
    #[test]
    fn rsdp_from_the_efi_system_table() {
        let mut mem = machine(&madt_body(&[(0, 0, 1)]));
        mem.resize(0x5000, 0);
        let (st, ct) = (0x3800usize, 0x3900usize);
        mem[st..st + 8].copy_from_slice(b"IBI SYST");
        mem[st + 104..st + 112].copy_from_slice(&3u64.to_le_bytes());
        mem[st + 112..st + 120].copy_from_slice(&(ct as u64).to_le_bytes());
        let acpi10 = [0x30, 0x2d, 0x9d, 0xeb, 0x88, 0x2d, 0xd3, 0x11, 0x9a, 0x16, 0x00, 0x90, 0x27, 0x3f, 0xc1, 0x4d];
        let acpi20 = [0x71, 0xe8, 0x68, 0x88, 0xf1, 0xe4, 0xd3, 0x11, 0xbc, 0x22, 0x00, 0x80, 0xc7, 0x3c, 0x88, 0x81];
        let entries: [([u8; 16], u64); 3] = [([7; 16], 0x1000), (acpi10, 0x1000), (acpi20, 0x1008)];
        for (i, (g, at)) in entries.iter().enumerate() {
            mem[ct + 24 * i..ct + 24 * i + 16].copy_from_slice(g);
            mem[ct + 24 * i + 16..ct + 24 * i + 24].copy_from_slice(&at.to_le_bytes());
        }
        // ACPI 2.0's entry names no RSDP: ACPI 1.0's is taken.
        assert_eq!(rsdp_from_efi(&reader(&mem), st as u64), Some(0x1000));
        mem[ct + 24 * 2 + 16..ct + 24 * 2 + 24].copy_from_slice(&0x1000u64.to_le_bytes());
        assert_eq!(rsdp_from_efi(&reader(&mem), st as u64), Some(0x1000));
        mem[st] = b'X';
        assert_eq!(rsdp_from_efi(&reader(&mem), st as u64), None, "not a system table");
    }

    /// The HPET table's base, when in system memory.
    #[test]
    fn hpet_base() {
        let mut mem = machine(&madt_body(&[(0, 0, 1)]));
        assert_eq!(hpet(&reader(&mem), 0x1000), None, "no HPET table");
        mem.resize(0x5000, 0);
        let mut body = std::vec![0u8; 56 - 36];
        body[44 - 36..52 - 36].copy_from_slice(&0xFED0_0000u64.to_le_bytes());
        let t = sdt(b"HPET", &body);
        mem[0x4000..0x4000 + t.len()].copy_from_slice(&t);
        let rsdt = sdt(b"RSDT", &[0x3000u32.to_le_bytes(), 0x4000u32.to_le_bytes()].concat());
        mem[0x2000..0x2000 + rsdt.len()].copy_from_slice(&rsdt);
        assert_eq!(hpet(&reader(&mem), 0x1000), Some(0xFED0_0000));
        // Not in system memory: not used.
        body[40 - 36] = 1;
        let t = sdt(b"HPET", &body);
        mem[0x4000..0x4000 + t.len()].copy_from_slice(&t);
        assert_eq!(hpet(&reader(&mem), 0x1000), None);
    }

    /// The PM timer from the FADT: `PM_TMR_BLK`, or `X_PM_TMR_BLK` when in I/O space.
    #[test]
    fn pm_timer_from_the_fadt() {
        let mut mem = machine(&madt_body(&[(0, 0, 1)]));
        assert_eq!(pm_timer(&reader(&mem), 0x1000), None, "no FADT");
        mem.resize(0x5000, 0);
        let mut body = std::vec![0u8; 244 - 36];
        body[76 - 36..80 - 36].copy_from_slice(&0x608u32.to_le_bytes());
        body[112 - 36..116 - 36].copy_from_slice(&(1u32 << 8).to_le_bytes());
        let fadt = sdt(b"FACP", &body);
        mem[0x4000..0x4000 + fadt.len()].copy_from_slice(&fadt);
        let mut entries = 0x3000u32.to_le_bytes().to_vec();
        entries.extend_from_slice(&0x4000u32.to_le_bytes());
        let rsdt = sdt(b"RSDT", &entries);
        mem[0x2000..0x2000 + rsdt.len()].copy_from_slice(&rsdt);
        assert_eq!(pm_timer(&reader(&mem), 0x1000), Some(PmTimer { port: 0x608, bits32: true }));
        // X_PM_TMR_BLK in I/O space wins.
        body[208 - 36] = 1;
        body[212 - 36..220 - 36].copy_from_slice(&0xB008u64.to_le_bytes());
        let fadt = sdt(b"FACP", &body);
        mem[0x4000..0x4000 + fadt.len()].copy_from_slice(&fadt);
        assert_eq!(pm_timer(&reader(&mem), 0x1000), Some(PmTimer { port: 0xB008, bits32: true }));
        assert_eq!(parse(&reader(&mem), 0x1000).map(|m| m.nr_cpus), Ok(1), "the MADT still found");
    }

    #[test]
    fn finds_enabled_cpus() {
        let mem = machine(&madt_body(&[(0, 0, 1), (1, 1, 1), (2, 4, 0), (3, 6, 1)]));
        let r = reader(&mem);
        assert_eq!(find_rsdp(&r, 0, 0x4000), Some(0x1000));
        let m = parse(&r, 0x1000).unwrap();
        assert_eq!(m.cpus(), &[0, 1, 6]);
        assert_eq!(m.lapic_addr, 0xFEE0_0000);
        assert_eq!(m.ioapics(), &[IoApic { id: 0, addr: 0xFEC0_0000, gsi_base: 0 }]);
        assert_eq!(m.overrides(), &[Override { source: 0, gsi: 2, flags: 0 }, Override { source: 9, gsi: 9, flags: 0x0D }]);
    }

    #[test]
    fn broken_tables_are_errors() {
        let mut mem = machine(&madt_body(&[(0, 0, 1)]));
        let r = reader(&mem);
        assert_eq!(parse(&r, 0x1008), Err(AcpiError::NoRsdp));
        drop(r);
        mem[0x3000 + 40] ^= 1; // corrupt the MADT
        assert_eq!(parse(&reader(&mem), 0x1000), Err(AcpiError::BadChecksum("table")));
        let mut mem = machine(&madt_body(&[(0, 0, 1)]));
        // An entry whose length runs past the table.
        let at = 0x3000 + 44;
        mem[at + 1] = 200;
        let len = u32le(&mem, 0x3004) as usize;
        let mut t = mem[0x3000..0x3000 + len].to_vec();
        fix(&mut t, 9);
        mem[0x3000..0x3000 + t.len()].copy_from_slice(&t);
        assert_eq!(parse(&reader(&mem), 0x1000), Err(AcpiError::Malformed));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x = 0x1234_5678u32;
        for _ in 0..200 {
            let mut mem = machine(&madt_body(&[(0, 0, 1), (1, 1, 1)]));
            for _ in 0..8 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let i = 0x1000 + (x as usize % 0x3000);
                mem[i] = (x >> 8) as u8;
            }
            let _ = parse(&reader(&mem), 0x1000);
        }
    }
}
