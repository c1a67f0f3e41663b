//! ACPI power: what the FADT says about sleeping and resetting the machine, where the AML
//! tables are, and the `\_S5` sleep type those tables define.
//!
//! [`power`] runs before the heap exists (fixed-size results, bounded reads); [`aml_tables`]
//! and [`sleep_type`] run once it does. Firmware tables are trusted as in every kernel, but
//! every length and offset is still checked: a broken table means "no ACPI power", never a
//! panic.

use crate::acpi::{root_entries, sum, u32le, u64le, Reader};
use alloc::vec::Vec;

/// An ACPI generic address (GAS): where a register lives.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Gas {
    pub space: u8,
    pub width: u8,
    pub bit_offset: u8,
    pub access: u8,
    pub addr: u64,
}

impl Gas {
    pub const MEMORY: u8 = 0;
    pub const IO: u8 = 1;
    pub const PCI_CONFIG: u8 = 2;

    fn at(b: &[u8], o: usize) -> Gas {
        Gas { space: b[o], width: b[o + 1], bit_offset: b[o + 2], access: b[o + 3], addr: u64le(b, o + 4) }
    }
}

/// Most AML tables recorded (the DSDT and SSDTs).
pub const MAX_AML: usize = 32;

/// Largest AML table read (real DSDTs reach a few hundred KiB).
pub const AML_MAX: u32 = 4 << 20;

/// What the FADT says about power, and where the AML is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Power {
    /// I/O ports of the PM1a and PM1b control registers (0: absent).
    pub pm1a_cnt: u16,
    pub pm1b_cnt: u16,
    /// The reset register and the value to write, when the FADT says it is supported.
    pub reset: Option<(Gas, u8)>,
    /// A hardware-reduced ACPI platform (no PM1 blocks: sleep control registers instead).
    pub hw_reduced: bool,
    /// The FADT's checksum was right (a wrong one is reported, and the table used).
    pub fadt_checksum_ok: bool,
    /// Physical address and length of the DSDT (first) and the SSDTs.
    pub aml: [(u64, u32); MAX_AML],
    pub nr_aml: usize,
}

impl Power {
    pub fn aml(&self) -> &[(u64, u32)] {
        &self.aml[..self.nr_aml]
    }
}

/// The FADT's flag bits used here.
const RESET_REG_SUP: u32 = 1 << 10;
const HW_REDUCED_ACPI: u32 = 1 << 20;

/// A table's signature and length at `pa`.
fn header(read: Reader<'_>, pa: u64) -> Option<([u8; 4], u32)> {
    let mut h = [0u8; 36];
    read(pa, &mut h).then(|| ([h[0], h[1], h[2], h[3]], u32le(&h, 4)))
}

/// A register block's I/O port: the 64-bit `X_` field (a GAS at `x`, when the table is long
/// enough and it names I/O space) else the 32-bit one at `legacy`.
fn io_block(f: &[u8], x: usize, legacy: usize) -> u16 {
    let gas = (f.len() >= x + 12).then(|| Gas::at(f, x)).filter(|g| g.addr != 0);
    let addr = match gas {
        Some(g) if g.space == Gas::IO => g.addr,
        Some(_) => 0,
        None => u64::from(u32le(f, legacy)),
    };
    u16::try_from(addr).unwrap_or(0)
}

/// The FADT's power registers and the AML tables through the RSDP at `rsdp`.
pub fn power(read: Reader<'_>, rsdp: u64) -> Option<Power> {
    let (entries, count) = root_entries(read, rsdp).ok()?;
    let mut p = Power { pm1a_cnt: 0, pm1b_cnt: 0, reset: None, hw_reduced: false, fadt_checksum_ok: true, aml: [(0, 0); MAX_AML], nr_aml: 0 };
    let mut found = false;
    let mut ssdts = [(0u64, 0u32); MAX_AML];
    let mut nr_ssdts = 0;
    for &pa in &entries[..count] {
        let Some((sig, len)) = header(read, pa) else { continue };
        if &sig == b"SSDT" && (36..=AML_MAX).contains(&len) && nr_ssdts < MAX_AML - 1 {
            ssdts[nr_ssdts] = (pa, len);
            nr_ssdts += 1;
        }
        if &sig != b"FACP" || found {
            continue;
        }
        // Only what is used, at most the ACPI 6 size (276 bytes), checksummed whole.
        let mut f = [0u8; 276];
        let n = (len as usize).min(f.len());
        if len < 116 || !read(pa, &mut f[..n]) {
            return None;
        }
        // A bad checksum is common on shipped boards: noted, not fatal (as ACPICA).
        p.fadt_checksum_ok = table_sum(read, pa, len)? == 0;
        let f = &f[..n];
        let flags = u32le(f, 112);
        p.pm1a_cnt = io_block(f, 172, 64);
        p.pm1b_cnt = io_block(f, 184, 68);
        p.hw_reduced = flags & HW_REDUCED_ACPI != 0;
        if flags & RESET_REG_SUP != 0 && f.len() >= 129 {
            p.reset = Some((Gas::at(f, 116), f[128]));
        }
        let x_dsdt = if f.len() >= 148 { u64le(f, 140) } else { 0 };
        let dsdt = if x_dsdt != 0 { x_dsdt } else { u64::from(u32le(f, 40)) };
        match header(read, dsdt) {
            Some((s, l)) if &s == b"DSDT" && (36..=AML_MAX).contains(&l) => {
                p.aml[0] = (dsdt, l);
                p.nr_aml = 1;
            }
            _ => {}
        }
        found = true;
    }
    if !found {
        return None;
    }
    if p.nr_aml == 1 {
        for &s in &ssdts[..nr_ssdts] {
            p.aml[p.nr_aml] = s;
            p.nr_aml += 1;
        }
    }
    Some(p)
}

/// The byte sum of the `len` bytes at `pa`, read in pieces (no buffer of the table's size).
fn table_sum(read: Reader<'_>, pa: u64, len: u32) -> Option<u8> {
    let mut chunk = [0u8; 256];
    let mut s = 0u8;
    let mut off = 0u64;
    while off < u64::from(len) {
        let n = (u64::from(len) - off).min(chunk.len() as u64) as usize;
        if !read(pa.checked_add(off)?, &mut chunk[..n]) {
            return None;
        }
        s = s.wrapping_add(sum(&chunk[..n]));
        off += n as u64;
    }
    Some(s)
}

/// The AML tables `p` lists, read one at a time as the iterator is advanced (the DSDT
/// first; an unreadable table, or one the heap has no room for, is left out: tables are at
/// most [`AML_MAX`], the heap may be smaller). A wrong checksum does not drop a table: real
/// firmware ships them, and ACPICA only warns.
pub fn aml_tables<'a>(read: Reader<'a>, p: &'a Power) -> impl Iterator<Item = Vec<u8>> + 'a {
    p.aml().iter().filter_map(move |&(pa, len)| {
        let mut t = Vec::new();
        t.try_reserve_exact(len as usize).ok()?;
        t.resize(len as usize, 0);
        read(pa, &mut t).then_some(t)
    })
}

/// Why no sleep type could be found.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SleepError {
    NoDsdt,
    /// No `\_Sx` object in any table.
    NotDefined,
    /// `\_Sx` is there but not a package (or method returning one) of integer constants.
    Malformed,
}

/// Reads an AML PkgLength at `b[0..]`: (length, bytes it took).
fn pkg_length(b: &[u8]) -> Option<(usize, usize)> {
    let lead = *b.first()?;
    let extra = usize::from(lead >> 6);
    if extra == 0 {
        return Some((usize::from(lead & 0x3F), 1));
    }
    let mut len = usize::from(lead & 0x0F);
    for i in 0..extra {
        len |= usize::from(*b.get(1 + i)?) << (4 + 8 * i);
    }
    Some((len, 1 + extra))
}

/// An AML integer constant at `b[0..]`: (value, bytes it took).
fn integer(b: &[u8]) -> Option<(u64, usize)> {
    let le = |n: usize| b.get(1..1 + n).map(|x| x.iter().rev().fold(0u64, |a, &y| a << 8 | u64::from(y)));
    match *b.first()? {
        0x00 => Some((0, 1)),                 // ZeroOp
        0x01 => Some((1, 1)),                 // OneOp
        0xFF => Some((u64::MAX, 1)),          // OnesOp
        0x0A => Some((le(1)?, 2)),            // BytePrefix
        0x0B => Some((le(2)?, 3)),            // WordPrefix
        0x0C => Some((le(4)?, 5)),            // DWordPrefix
        0x0E => Some((le(8)?, 9)),            // QWordPrefix
        _ => None,
    }
}

/// A `Package (n) { integers... }` at `b[0..]` (PackageOp first): its first two integers.
fn package(b: &[u8]) -> Option<(u64, Option<u64>)> {
    if *b.first()? != 0x12 {
        return None;
    }
    let (len, n) = pkg_length(&b[1..])?;
    let body = b.get(1 + n..1 + len)?;
    let (&count, mut rest) = body.split_first()?;
    // NumElements may exceed the elements written (`Package (4) { 7 }`): the rest are
    // uninitialized.
    let mut v = [None, None];
    for slot in v.iter_mut().take(usize::from(count)) {
        if rest.is_empty() {
            break;
        }
        let (x, used) = integer(rest)?;
        *slot = Some(x);
        rest = &rest[used..];
    }
    Some((v[0]?, v[1]))
}

/// The sleep types (`SLP_TYPa`, `SLP_TYPb`) of sleep state `state` (0–5) from the AML
/// `tables` (whole tables, headers included; the DSDT first): the `\_Sx` package's first
/// two integers (one integer: its low two bytes, the old encoding).
///
/// Firmware defines `\_Sx` as `Name (_Sx, Package () {...})` of constants at the root, or
/// (rarely) as a method that returns such a package; both are read here. The scan does not
/// track scopes: the first such definition in the tables is taken, in whatever scope (no
/// firmware seen defines `_Sx` anywhere but the root). This is not an AML interpreter:
/// rust-osdev's (the `aml` crate, and `acpi` 6 and later, which absorbed it) needs nightly
/// Rust, and this tree builds on stable (docs/abi-deviations.md, 38). A `\_Sx` that
/// computes its answer is reported as malformed.
pub fn sleep_type<T: AsRef<[u8]>>(tables: impl IntoIterator<Item = T>, state: u8) -> Result<(u8, u8), SleepError> {
    let name = [b'_', b'S', b'0' + state.min(5), b'_'];
    let (mut seen, mut any) = (false, false);
    for (k, t) in tables.into_iter().enumerate() {
        let t = t.as_ref();
        any = true;
        if t.len() <= 36 {
            if k == 0 {
                return Err(SleepError::NoDsdt);
            }
            continue;
        }
        let aml = &t[36..];
        for at in (1..=aml.len().saturating_sub(4)).filter(|&i| aml[i..i + 4] == name) {
            // `NameOp [\] _Sx_ Package`, or `MethodOp PkgLength [\] _Sx_ flags ReturnOp Package`.
            let before = if aml[at - 1] == b'\\' { at - 1 } else { at };
            let after = &aml[at + 4..];
            let found = if before >= 1 && aml[before - 1] == 0x08 {
                Some(package(after))
            } else if (2..=5).any(|k| before >= k && aml[before - k] == 0x14 && pkg_length(&aml[before - k + 1..]).is_some_and(|(_, n)| n == k - 1)) {
                Some(after.get(1..).filter(|r| r.first() == Some(&0xA4)).and_then(|r| package(&r[1..])))
            } else {
                None
            };
            match found {
                Some(Some((a, b))) => {
                    let (a, b) = match b {
                        Some(b) => (a as u8, b as u8),
                        None => (a as u8, (a >> 8) as u8),
                    };
                    return Ok((a, b));
                }
                Some(None) => seen = true,
                None => {}
            }
        }
    }
    Err(if seen {
        SleepError::Malformed
    } else if !any {
        SleepError::NoDsdt
    } else {
        SleepError::NotDefined
    })
}

/// The PM1 control value that enters sleep type `typ` from the register's current value
/// `cur`: `SLP_TYP` (bits 10–12) replaced, `SLP_EN` (bit 13) set.
pub fn pm1_sleep_value(cur: u16, typ: u8) -> u16 {
    (cur & !(0b111 << 10)) | (u16::from(typ & 0b111) << 10) | (1 << 13)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    /// AML: `Name (_S5_, Package (4) { 5, 5, Zero, Zero })` in a DSDT.
    fn dsdt(body: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; 36];
        t[..4].copy_from_slice(b"DSDT");
        t.extend_from_slice(body);
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        t[9] = 0u8.wrapping_sub(sum(&t));
        t
    }

    const S5_PKG: &[u8] = &[0x08, b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00, 0x00];

    #[test]
    fn s5_from_a_name() {
        assert_eq!(sleep_type(&[dsdt(S5_PKG)], 5), Ok((5, 5)));
        assert_eq!(sleep_type(&[dsdt(S5_PKG)], 3), Err(SleepError::NotDefined));
    }

    #[test]
    fn s5_from_a_method() {
        // Method (_S5_, 0) { Return (Package (2) { 7, One }) }
        let m = [0x14, 0x0D, b'_', b'S', b'5', b'_', 0x00, 0xA4, 0x12, 0x05, 0x02, 0x0A, 0x07, 0x01];
        assert_eq!(sleep_type(&[dsdt(&m)], 5), Ok((7, 1)));
    }

    #[test]
    fn short_packages() {
        // Package (4) { 7 }: one element written of four: the old one-integer encoding.
        let t = [0x08, b'_', b'S', b'5', b'_', 0x12, 0x04, 0x04, 0x0A, 0x07];
        assert_eq!(sleep_type(&[dsdt(&t)], 5), Ok((7, 0)));
        // At the very end of the table.
        let t = [0x00, 0x08, b'_', b'S', b'5', b'_', 0x12, 0x05, 0x02, 0x0A, 0x03, 0x01];
        assert_eq!(sleep_type(&[dsdt(&t)], 5), Ok((3, 1)));
    }

    #[test]
    fn broken_tables_are_errors() {
        assert_eq!(sleep_type(&[] as &[Vec<u8>], 5), Err(SleepError::NoDsdt));
        assert!(sleep_type(&[dsdt(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x3F])], 5).is_err());
        // Not a package.
        assert_eq!(sleep_type(&[dsdt(&[0x08, b'_', b'S', b'5', b'_', 0x0A, 0x05])], 5), Err(SleepError::Malformed));
    }

    /// The DSDTs of QEMU's two machines as SeaBIOS hands them over (dumped from guest
    /// memory): `\_S5` is `Package { 0, 0, 0, 0 }` on both.
    #[test]
    fn qemu_dsdts() {
        for (name, t) in [("pc", &include_bytes!("../testdata/dsdt-qemu-pc.aml")[..]), ("q35", &include_bytes!("../testdata/dsdt-qemu-q35.aml")[..])] {
            assert_eq!(&t[..4], b"DSDT", "{name}");
            assert_eq!(sleep_type(&[t.to_vec()], 5), Ok((0, 0)), "{name}");
        }
    }

    fn table(sig: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut t = dsdt(body);
        t[..4].copy_from_slice(sig);
        t[9] = 0;
        t[9] = 0u8.wrapping_sub(sum(&t));
        t
    }

    /// RSDP (v1) at 0x1000 → RSDT at 0x2000 → FADT at 0x3000 (→ DSDT at 0x4000), SSDT at 0x5000.
    fn machine(fadt: &[u8]) -> Vec<u8> {
        let mut mem = vec![0u8; 0x6000];
        let mut rsdp = b"RSD PTR \0OEMID \0".to_vec();
        rsdp.extend_from_slice(&0x2000u32.to_le_bytes());
        rsdp[8] = 0u8.wrapping_sub(sum(&rsdp));
        mem[0x1000..0x1000 + 20].copy_from_slice(&rsdp);
        let rsdt = table(b"RSDT", &[0x3000u32.to_le_bytes(), 0x5000u32.to_le_bytes()].concat());
        let fadt = table(b"FACP", fadt);
        let d = dsdt(S5_PKG);
        let ssdt = table(b"SSDT", &[0x10, 0x05, b'\\', 0x00]);
        for (at, t) in [(0x2000, &rsdt), (0x3000, &fadt), (0x4000, &d), (0x5000, &ssdt)] {
            mem[at..at + t.len()].copy_from_slice(t);
        }
        mem
    }

    fn reader(mem: &[u8]) -> impl Fn(u64, &mut [u8]) -> bool + '_ {
        |pa, b| {
            let Some(src) = mem.get(pa as usize..pa as usize + b.len()) else { return false };
            b.copy_from_slice(src);
            true
        }
    }

    #[test]
    fn fadt_power_registers() {
        // An ACPI 1.0-sized FADT body (116 − 36 bytes) with PM1a/PM1b control, then the
        // ACPI 2.0 reset register.
        let mut f = vec![0u8; 244 - 36];
        f[40 - 36..44 - 36].copy_from_slice(&0x4000u32.to_le_bytes());
        f[64 - 36..68 - 36].copy_from_slice(&0x604u32.to_le_bytes());
        f[68 - 36..72 - 36].copy_from_slice(&0x804u32.to_le_bytes());
        f[112 - 36..116 - 36].copy_from_slice(&RESET_REG_SUP.to_le_bytes());
        f[116 - 36] = Gas::IO;
        f[117 - 36] = 8;
        f[120 - 36..122 - 36].copy_from_slice(&0xCF9u16.to_le_bytes());
        f[128 - 36] = 6;
        let mem = machine(&f);
        let read = reader(&mem);
        let p = power(&read, 0x1000).expect("power");
        assert_eq!((p.pm1a_cnt, p.pm1b_cnt), (0x604, 0x804));
        assert_eq!(p.reset, Some((Gas { space: Gas::IO, width: 8, bit_offset: 0, access: 0, addr: 0xCF9 }, 6)));
        assert_eq!(p.aml().iter().map(|a| a.0).collect::<Vec<_>>(), [0x4000, 0x5000]);
        let tables: Vec<Vec<u8>> = aml_tables(&read, &p).collect();
        assert_eq!(tables.len(), 2);
        assert_eq!(sleep_type(&tables, 5), Ok((5, 5)));

        // The 64-bit blocks win when present; a memory-space PM1 block is not usable.
        let mut f2 = f.clone();
        f2.resize(276 - 36, 0);
        f2[172 - 36] = Gas::IO;
        f2[176 - 36..178 - 36].copy_from_slice(&0xB004u16.to_le_bytes());
        f2[184 - 36] = Gas::MEMORY;
        f2[188 - 36..192 - 36].copy_from_slice(&0xFED0_0000u32.to_le_bytes());
        let mem2 = machine(&f2);
        let read2 = reader(&mem2);
        let p = power(&read2, 0x1000).expect("power");
        assert_eq!((p.pm1a_cnt, p.pm1b_cnt), (0xB004, 0));

        // A bad checksum is noted, the table still used; no reset flag: no reset register.
        let mut bad = machine(&f);
        bad[0x3000 + 130] ^= 1;
        let read3 = reader(&bad);
        let p3 = power(&read3, 0x1000).expect("power");
        assert!(!p3.fadt_checksum_ok && p.fadt_checksum_ok);
        assert_eq!(p3.pm1a_cnt, 0x604);
        let mut f4 = f.clone();
        f4[112 - 36..116 - 36].copy_from_slice(&0u32.to_le_bytes());
        let mem4 = machine(&f4);
        let read4 = reader(&mem4);
        assert_eq!(power(&read4, 0x1000).map(|p| p.reset), Some(None));
    }

    #[test]
    fn pm1_value() {
        assert_eq!(pm1_sleep_value(0x1C01, 5), 0x3401);
        assert_eq!(pm1_sleep_value(0, 0), 0x2000);
        assert_eq!(pm1_sleep_value(0xFFFF, 0xFF), 0xFFFF);
    }
}
