//! The privileged instructions a PV kernel may issue that the hypervisor emulates (Xen's
//! `arch/x86/pv/emul-priv-op.c`, a subset): on a #GP from guest kernel mode the bytes at RIP
//! (read through the checked guest access path: the error code says nothing of the
//! instruction) are decoded here; anything not recognised exactly is bounced as the #GP
//! it was.
//!
//! - `mov r64, crN` for CR0, CR2, CR3 and CR4: the guest's view of each (its CR0 with its
//!   own TS, the CR2 of its last page fault, its root as a machine address, a CR4 of the
//!   features it may rely on);
//! - `mov cr0, r64` that changes TS only (as `fpu_taskswitch`) and `mov cr3, r64` (as
//!   `MMUEXT_NEW_BASEPTR`, the frame validated as an L4); in the Xen pv64 mode `mov cr4,
//!   r64` sets the vCPU's own FSGSBASE (the rest dropped, as Xen); other CR writes are
//!   refused;
//! - `rdmsr` / `wrmsr` of the FS, GS and shadow GS bases (as `set_segment_base`) and a
//!   read of EFER; every other MSR is refused;
//! - in the Xen pv64 mode, from guest kernel and user mode: `cli`, `sti`, and `in` / `out`
//!   with an immediate port or DX ([`decode_io`]), allowed by the vCPU's virtual IOPL
//!   ([`iopl_ok`], Xen's `iopl_ok`): `cli`/`sti` set and clear the upcall mask, port I/O
//!   reaches the ports the domain has rights to (others read as all ones and ignore
//!   writes, as Xen's `admin_io_okay` failing);
//! - in the Xen pv64 mode, on CPUs with UMIP (which the hypervisor turns on), `sgdt`,
//!   `sidt`, `sldt`, `str` and `smsw` from kernel and user mode ([`decode_umip`]), as a PV
//!   guest on Xen (which leaves UMIP off) runs them natively.

/// A decoded instruction and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `mov gpr, crN`.
    ReadCr { cr: u8, gpr: u8 },
    /// `mov crN, gpr`.
    WriteCr { cr: u8, gpr: u8 },
    Rdmsr,
    Wrmsr,
    /// `mov gpr, drN` and `mov drN, gpr`.
    ReadDr { dr: u8, gpr: u8 },
    WriteDr { dr: u8, gpr: u8 },
}

/// Decodes the instruction at the start of `b`: the operation and its length. Only a REX
/// prefix is taken (no operand-size, segment, lock or repeat prefix), and control-register
/// moves only with a register operand (`mod` = 3), as the CPU encodes them.
pub fn decode(b: &[u8]) -> Option<(Op, usize)> {
    let (rex, at) = match b.first()? {
        r @ 0x40..=0x4F => (*r, 1),
        _ => (0, 0),
    };
    if *b.get(at)? != 0x0F {
        return None;
    }
    match *b.get(at + 1)? {
        0x30 if rex == 0 => Some((Op::Wrmsr, at + 2)),
        0x32 if rex == 0 => Some((Op::Rdmsr, at + 2)),
        op @ 0x20..=0x23 => {
            let m = *b.get(at + 2)?;
            if m >> 6 != 3 {
                return None;
            }
            let n = (m >> 3 & 7) | (rex >> 2 & 1) << 3;
            let gpr = (m & 7) | (rex & 1) << 3;
            let op = match op {
                0x20 => Op::ReadCr { cr: n, gpr },
                0x22 => Op::WriteCr { cr: n, gpr },
                0x21 => Op::ReadDr { dr: n, gpr },
                _ => Op::WriteDr { dr: n, gpr },
            };
            Some((op, at + 3))
        }
        _ => None,
    }
}

/// CR0 bits a PV guest sees set: PE, MP, ET, NE, WP, AM, PG (TS is its own).
pub const CR0_VIEW: u64 = 1 | 1 << 1 | 1 << 4 | 1 << 5 | 1 << 16 | 1 << 18 | 1 << 31;
pub const CR0_TS: u64 = 1 << 3;
/// CR4 bits of the machine's a PV guest may see: PSE, PAE, PGE, OSFXSR, OSXMMEXCPT,
/// OSXSAVE.
pub const CR4_VISIBLE: u64 = 1 << 4 | 1 << 5 | 1 << 7 | 1 << 9 | 1 << 10 | 1 << 18;

/// The guest's CR0, with its TS.
pub fn cr0_view(ts: bool) -> u64 {
    CR0_VIEW | if ts { CR0_TS } else { 0 }
}

/// The guest's CR4 from the machine's.
pub fn cr4_view(machine: u64) -> u64 {
    machine & CR4_VISIBLE
}

pub const CR4_FSGSBASE: u64 = 1 << 16;

/// A Xen pv64 vCPU's CR4: the machine's visible bits and its own FSGSBASE.
pub fn cr4_view_pv64(machine: u64, fsgsbase: bool) -> u64 {
    cr4_view(machine) | if fsgsbase { CR4_FSGSBASE } else { 0 }
}

/// A Xen pv64 CR4 write, never refused (Xen's `pv_fixup_guest_cr4`): the vCPU's new
/// FSGSBASE, set only where the machine has the instructions; every other bit is the
/// hypervisor's choice and is dropped.
pub fn cr4_write_pv64(machine_fsgsbase: bool, new: u64) -> bool {
    machine_fsgsbase && new & CR4_FSGSBASE != 0
}

/// A CR0 write: the new TS, or `None` when another bit would change (refused, as Xen).
pub fn cr0_write(ts: bool, new: u64) -> Option<bool> {
    ((new ^ cr0_view(ts)) & !CR0_TS == 0).then_some(new & CR0_TS != 0)
}

pub const MSR_EFER: u32 = 0xC000_0080;
pub const MSR_FS_BASE: u32 = 0xC000_0100;
pub const MSR_GS_BASE: u32 = 0xC000_0101;
pub const MSR_SHADOW_GS_BASE: u32 = 0xC000_0102;
/// EFER as a 64-bit PV guest sees it: SCE, LME, LMA, NXE.
pub const EFER_VIEW: u64 = 1 | 1 << 8 | 1 << 10 | 1 << 11;

/// The segment base an MSR names: `set_segment_base`'s 0 (FS), 1 (shadow GS) or 2 (GS).
pub fn base_msr(msr: u32) -> Option<u64> {
    match msr {
        MSR_FS_BASE => Some(0),
        MSR_SHADOW_GS_BASE => Some(1),
        MSR_GS_BASE => Some(2),
        _ => None,
    }
}

/// A vCPU's debug registers as a PV guest sees them (`set_debugreg`, `get_debugreg`,
/// `mov drN`). Their values are kept and checked as Xen's `set_debugreg` checks them, but
/// no breakpoint can be armed: a DR7 with an enable bit (L0-3, G0-3, LE, GE) is refused,
/// so the values stay inert and the machine's DR7 stays clear while guests run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebugRegs {
    pub addr: [u64; 4],
    pub dr6: u64,
    pub dr7: u64,
}

/// DR6's reserved bits: read as one (4-11, 16-31), as zero (12, 32-63).
pub const DR6_DEFAULT: u64 = 0xFFFF_0FF0;
/// DR7's reserved bit 10 reads as one; 11, 12, 14, 15 and 32-63 as zero.
pub const DR7_DEFAULT: u64 = 0x400;
const DR7_ENABLES: u64 = 0x3FF;
const DR7_GD: u64 = 1 << 13;

impl Default for DebugRegs {
    fn default() -> DebugRegs {
        DebugRegs { addr: [0; 4], dr6: DR6_DEFAULT, dr7: DR7_DEFAULT }
    }
}

/// Why a debug-register write is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrError {
    /// Not a register (Xen: -ENODEV; `mov` would be #UD).
    NoSuchRegister,
    /// An address the guest may not watch (a hypervisor or non-canonical address), DR7.GD,
    /// or breakpoints enabled (Xen: -EPERM for the first two; it arms the third).
    Refused,
}

impl DebugRegs {
    /// DR4 and DR5 are DR6 and DR7 (CR4.DE is never set for a PV guest here).
    fn alias(reg: u8) -> u8 {
        match reg {
            4 => 6,
            5 => 7,
            r => r,
        }
    }

    /// A #DB the CPU raised in the guest (a single step, `icebp`): its DR6 status bits (B0-3,
    /// BD, BS, BT) are added to the guest's, as Xen's `do_debug` does.
    pub fn note_debug_exception(&mut self, hw_dr6: u64) {
        self.dr6 |= hw_dr6 & 0xE00F;
    }

    pub fn get(&self, reg: u8) -> Result<u64, DrError> {
        match Self::alias(reg) {
            r @ 0..=3 => Ok(self.addr[r as usize]),
            6 => Ok(self.dr6),
            7 => Ok(self.dr7),
            _ => Err(DrError::NoSuchRegister),
        }
    }

    pub fn set(&mut self, reg: u8, v: u64) -> Result<(), DrError> {
        match Self::alias(reg) {
            r @ 0..=3 => {
                if !guest_abi::layout::is_guest_va(v) {
                    return Err(DrError::Refused);
                }
                self.addr[r as usize] = v;
            }
            6 => self.dr6 = (v & 0xFFFF_FFFF & !(1 << 12)) | DR6_DEFAULT,
            7 => {
                let v = (v & 0xFFFF_FFFF & !(0b1101_1000 << 8)) | DR7_DEFAULT;
                if v & (DR7_GD | DR7_ENABLES) != 0 {
                    return Err(DrError::Refused);
                }
                self.dr7 = v;
            }
            _ => return Err(DrError::NoSuchRegister),
        }
        Ok(())
    }
}

/// An instruction the virtual IOPL governs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    Cli,
    Sti,
    /// `in` (into AL, AX or EAX) of `size` bytes from the immediate port or, for `None`, DX.
    In { size: u8, port: Option<u8> },
    /// `out` (from AL, AX or EAX).
    Out { size: u8, port: Option<u8> },
}

/// Decodes `cli`, `sti` (no prefix) or a non-string `in`/`out` (an operand-size prefix
/// only) at the start of `b`: the operation and its length.
pub fn decode_io(b: &[u8]) -> Option<(IoOp, usize)> {
    match *b.first()? {
        0xFA => return Some((IoOp::Cli, 1)),
        0xFB => return Some((IoOp::Sti, 1)),
        _ => {}
    }
    let (wide16, at) = if b[0] == 0x66 { (true, 1) } else { (false, 0) };
    let op = *b.get(at)?;
    let size = if op & 1 == 0 { 1 } else if wide16 { 2 } else { 4 };
    let (out, imm) = match op {
        0xE4 | 0xE5 => (false, true),
        0xE6 | 0xE7 => (true, true),
        0xEC | 0xED => (false, false),
        0xEE | 0xEF => (true, false),
        _ => return None,
    };
    let port = if imm { Some(*b.get(at + 1)?) } else { None };
    let len = at + 1 + imm as usize;
    Some((if out { IoOp::Out { size, port } } else { IoOp::In { size, port } }, len))
}

/// A descriptor-table or machine-status store that UMIP makes fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UmipOp {
    Sgdt,
    Sidt,
    Sldt,
    Str,
    Smsw,
}

/// Where such a store goes: general-purpose register `reg` (written with `size` bytes: 2,
/// 4 or 8), or memory at `base + index * scale + disp` (`rip_relative`: from the end of
/// the instruction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    Reg { reg: u8, size: u8 },
    Mem { base: Option<u8>, index: Option<(u8, u8)>, disp: i64, rip_relative: bool },
}

/// Decodes `sgdt`/`sidt m` (0F 01 /0, /1), `smsw r/m` (0F 01 /4), `sldt`/`str r/m`
/// (0F 00 /0, /1) at the start of `b`, with at most an operand-size prefix and a REX
/// prefix after it (no segment, address-size, lock or repeat prefix): the operation, its
/// operand and the instruction's length.
pub fn decode_umip(b: &[u8]) -> Option<(UmipOp, Operand, usize)> {
    let mut at = 0;
    let o16 = *b.first()? == 0x66;
    if o16 {
        at += 1;
    }
    let rex = match *b.get(at)? {
        r @ 0x40..=0x4F => {
            at += 1;
            r
        }
        _ => 0,
    };
    if *b.get(at)? != 0x0F {
        return None;
    }
    let group = *b.get(at + 1)?;
    let m = *b.get(at + 2)?;
    at += 3;
    let (md, reg, rm) = (m >> 6, m >> 3 & 7, m & 7);
    let op = match (group, reg) {
        (0x01, 0) if md != 3 => UmipOp::Sgdt,
        (0x01, 1) if md != 3 => UmipOp::Sidt,
        (0x01, 4) => UmipOp::Smsw,
        (0x00, 0) => UmipOp::Sldt,
        (0x00, 1) => UmipOp::Str,
        _ => return None,
    };
    if md == 3 {
        let size = if rex & 8 != 0 { 8 } else if o16 { 2 } else { 4 };
        return Some((op, Operand::Reg { reg: rm | (rex & 1) << 3, size }, at));
    }
    let rd = |at: usize, n: usize| -> Option<i64> {
        let s = b.get(at..at + n)?;
        Some(match n {
            1 => s[0] as i8 as i64,
            _ => i32::from_le_bytes([s[0], s[1], s[2], s[3]]) as i64,
        })
    };
    let (mut base, mut index, mut rip_relative) = (Some(rm | (rex & 1) << 3), None, false);
    let mut no_base_disp32 = false;
    if rm == 4 {
        let sib = *b.get(at)?;
        at += 1;
        let (ss, idx, bs) = (sib >> 6, (sib >> 3 & 7) | (rex >> 1 & 1) << 3, sib & 7);
        if idx != 4 {
            index = Some((idx, 1 << ss));
        }
        base = Some(bs | (rex & 1) << 3);
        if bs == 5 && md == 0 {
            base = None;
            no_base_disp32 = true;
        }
    } else if rm == 5 && md == 0 {
        base = None;
        rip_relative = true;
    }
    let dlen = match md {
        1 => 1,
        2 => 4,
        _ if rip_relative || no_base_disp32 => 4,
        _ => 0,
    };
    let disp = if dlen == 0 { 0 } else { rd(at, dlen)? };
    at += dlen;
    Some((op, Operand::Mem { base, index, disp, rip_relative }, at))
}

/// Xen's `iopl_ok`: the virtual IOPL lets the vCPU's virtual CPL run an IOPL-sensitive
/// instruction. Guest user mode counts as CPL 3; the kernel as CPL 1 (`PHYSDEVOP_set_iopl`'s
/// ABI), or 0 under `VMASST_TYPE_architectural_iopl`.
pub fn iopl_ok(viopl: u8, user: bool, architectural: bool) -> bool {
    let cpl = if user {
        3
    } else if architectural {
        0
    } else {
        1
    };
    viopl >= cpl
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn debug_registers() {
        let mut d = DebugRegs::default();
        assert_eq!((d.get(6), d.get(7), d.get(4), d.get(5)), (Ok(DR6_DEFAULT), Ok(DR7_DEFAULT), Ok(DR6_DEFAULT), Ok(DR7_DEFAULT)));
        assert_eq!(d.set(0, 0x1000), Ok(()));
        assert_eq!(d.set(3, 0xFFFF_8800_0000_0000), Ok(()), "the guest half of the upper canonical range");
        assert_eq!((d.get(0), d.get(3)), (Ok(0x1000), Ok(0xFFFF_8800_0000_0000)));
        for bad in [0xFFFF_8000_0000_0000, 0xFFFF_87FF_FFFF_FFFF, 0x0000_8000_0000_0000] {
            assert_eq!(d.set(1, bad), Err(DrError::Refused), "{bad:#x}");
        }
        assert_eq!(d.get(1), Ok(0), "a refused write changes nothing");
        assert_eq!(d.set(6, 0), Ok(()));
        assert_eq!(d.get(6), Ok(DR6_DEFAULT), "reserved bits forced");
        assert_eq!(d.set(6, 0xF | 1 << 14 | 1 << 12 | 1 << 40), Ok(()));
        assert_eq!(d.get(6), Ok(DR6_DEFAULT | 0xF | 1 << 14));
        assert_eq!(d.set(7, 0), Ok(()));
        assert_eq!(d.get(7), Ok(DR7_DEFAULT));
        assert_eq!(d.set(7, 3 << 16), Ok(()), "a condition without an enable is inert");
        for bad in [1, 1 << 1, 1 << 7, 1 << 8, 1 << 9, DR7_GD] {
            assert_eq!(d.set(7, bad), Err(DrError::Refused), "{bad:#x}");
        }
        assert_eq!(d.get(7), Ok(DR7_DEFAULT | 3 << 16));
        d.note_debug_exception(DR6_DEFAULT | 1 << 14);
        assert_eq!(d.get(6), Ok(DR6_DEFAULT | 0xF | 1 << 14), "BS from a single step");
        d.note_debug_exception(u64::MAX);
        assert_eq!(d.get(6).map(|v| v & !0xE00F), Ok(DR6_DEFAULT), "status bits only");
        assert_eq!(d.set(8, 0), Err(DrError::NoSuchRegister));
        assert_eq!(d.get(15), Err(DrError::NoSuchRegister));
    }

    #[test]
    fn decodes_io() {
        assert_eq!(decode_io(&[0xFA]), Some((IoOp::Cli, 1)));
        assert_eq!(decode_io(&[0xFB, 0x90]), Some((IoOp::Sti, 1)));
        assert_eq!(decode_io(&[0xE6, 0x80]), Some((IoOp::Out { size: 1, port: Some(0x80) }, 2))); // out 0x80, al
        assert_eq!(decode_io(&[0x66, 0xE5, 0x71]), Some((IoOp::In { size: 2, port: Some(0x71) }, 3))); // in ax, 0x71
        assert_eq!(decode_io(&[0xED]), Some((IoOp::In { size: 4, port: None }, 1))); // in eax, dx
        assert_eq!(decode_io(&[0x66, 0xEE]), Some((IoOp::Out { size: 1, port: None }, 2))); // out dx, al
        // String forms, other prefixes, a missing immediate, other instructions: not here.
        assert_eq!(decode_io(&[0x6E]), None);
        assert_eq!(decode_io(&[0xF3, 0xEE]), None);
        assert_eq!(decode_io(&[0x66, 0xFA]), None);
        assert_eq!(decode_io(&[0xE4]), None);
        assert_eq!(decode_io(&[0x0F, 0x32]), None);
        assert_eq!(decode_io(&[]), None);
    }

    #[test]
    fn decodes_umip() {
        use Operand::*;
        // sidt [rsp + 6]: 0F 01 4C 24 06
        assert_eq!(decode_umip(&[0x0F, 0x01, 0x4C, 0x24, 0x06]), Some((UmipOp::Sidt, Mem { base: Some(4), index: None, disp: 6, rip_relative: false }, 5)));
        // sgdt [rax]: 0F 01 00
        assert_eq!(decode_umip(&[0x0F, 0x01, 0x00]), Some((UmipOp::Sgdt, Mem { base: Some(0), index: None, disp: 0, rip_relative: false }, 3)));
        // sgdt [rip - 16]: 0F 01 05 F0 FF FF FF
        assert_eq!(decode_umip(&[0x0F, 0x01, 0x05, 0xF0, 0xFF, 0xFF, 0xFF]), Some((UmipOp::Sgdt, Mem { base: None, index: None, disp: -16, rip_relative: true }, 7)));
        // sidt [r9 + r10*8 + 0x100]: 43 0F 01 8C D1 00 01 00 00
        assert_eq!(decode_umip(&[0x43, 0x0F, 0x01, 0x8C, 0xD1, 0x00, 0x01, 0, 0]), Some((UmipOp::Sidt, Mem { base: Some(9), index: Some((10, 8)), disp: 0x100, rip_relative: false }, 9)));
        // sgdt [0x1000] (SIB, no base, no index): 0F 01 04 25 00 10 00 00
        assert_eq!(decode_umip(&[0x0F, 0x01, 0x04, 0x25, 0, 0x10, 0, 0]), Some((UmipOp::Sgdt, Mem { base: None, index: None, disp: 0x1000, rip_relative: false }, 8)));
        // sldt eax: 0F 00 C0; str r11d: 41 0F 00 CB; smsw ax: 66 0F 01 E0; smsw rdx: 48 0F 01 E2
        assert_eq!(decode_umip(&[0x0F, 0x00, 0xC0]), Some((UmipOp::Sldt, Reg { reg: 0, size: 4 }, 3)));
        assert_eq!(decode_umip(&[0x41, 0x0F, 0x00, 0xCB]), Some((UmipOp::Str, Reg { reg: 11, size: 4 }, 4)));
        assert_eq!(decode_umip(&[0x66, 0x0F, 0x01, 0xE0]), Some((UmipOp::Smsw, Reg { reg: 0, size: 2 }, 4)));
        assert_eq!(decode_umip(&[0x48, 0x0F, 0x01, 0xE2]), Some((UmipOp::Smsw, Reg { reg: 2, size: 8 }, 4)));
        // Register forms of 0F 01 /0 and /1 are other instructions (vmcall, monitor, ...);
        // lgdt (/2), a segment prefix, a truncated displacement: not these.
        assert_eq!(decode_umip(&[0x0F, 0x01, 0xC1]), None);
        assert_eq!(decode_umip(&[0x0F, 0x01, 0xC8]), None);
        assert_eq!(decode_umip(&[0x0F, 0x01, 0x10]), None);
        assert_eq!(decode_umip(&[0x64, 0x0F, 0x01, 0x00]), None);
        assert_eq!(decode_umip(&[0x0F, 0x01, 0x80, 0, 0]), None);
        assert_eq!(decode_umip(&[0x0F, 0x00, 0xD0]), None, "lldt");
    }

    /// XTF's `pv-iopl` expectations: with `PHYSDEVOP_set_iopl` the kernel is CPL 1, with the
    /// architectural IOPL CPL 0; user mode needs IOPL 3 either way.
    #[test]
    fn virtual_iopl() {
        for (iopl, kern, user) in [(0, false, false), (1, true, false), (2, true, false), (3, true, true)] {
            assert_eq!(iopl_ok(iopl, false, false), kern, "hypercall ABI, kernel, vIOPL {iopl}");
            assert_eq!(iopl_ok(iopl, true, false), user, "hypercall ABI, user, vIOPL {iopl}");
            assert!(iopl_ok(iopl, false, true), "architectural, kernel, vIOPL {iopl}");
            assert_eq!(iopl_ok(iopl, true, true), iopl == 3, "architectural, user, vIOPL {iopl}");
        }
    }

    #[test]
    fn decodes() {
        assert_eq!(decode(&[0x0F, 0x20, 0xC0]), Some((Op::ReadCr { cr: 0, gpr: 0 }, 3))); // mov rax, cr0
        assert_eq!(decode(&[0x0F, 0x20, 0xD8]), Some((Op::ReadCr { cr: 3, gpr: 0 }, 3))); // mov rax, cr3
        assert_eq!(decode(&[0x41, 0x0F, 0x20, 0xE3]), Some((Op::ReadCr { cr: 4, gpr: 11 }, 4))); // mov r11, cr4
        assert_eq!(decode(&[0x44, 0x0F, 0x20, 0xC0]), Some((Op::ReadCr { cr: 8, gpr: 0 }, 4))); // mov rax, cr8
        assert_eq!(decode(&[0x0F, 0x22, 0xDF]), Some((Op::WriteCr { cr: 3, gpr: 7 }, 3))); // mov cr3, rdi
        assert_eq!(decode(&[0x0F, 0x32]), Some((Op::Rdmsr, 2)));
        assert_eq!(decode(&[0x0F, 0x30, 0x90]), Some((Op::Wrmsr, 2)));
        assert_eq!(decode(&[0x0F, 0x21, 0xC0]), Some((Op::ReadDr { dr: 0, gpr: 0 }, 3))); // mov rax, dr0
        assert_eq!(decode(&[0x0F, 0x23, 0xFC]), Some((Op::WriteDr { dr: 7, gpr: 4 }, 3))); // mov dr7, rsp
        assert_eq!(decode(&[0x44, 0x0F, 0x21, 0xC0]), Some((Op::ReadDr { dr: 8, gpr: 0 }, 4)));
        // A memory operand, a prefix, another instruction, too few bytes: not emulated.
        assert_eq!(decode(&[0x0F, 0x20, 0x00]), None);
        assert_eq!(decode(&[0x66, 0x0F, 0x20, 0xC0]), None);
        assert_eq!(decode(&[0xFA]), None);
        assert_eq!(decode(&[0x0F, 0x20]), None);
        assert_eq!(decode(&[0x48, 0x0F, 0x32]), None);
    }

    #[test]
    fn control_registers() {
        assert_eq!(cr0_view(false) & CR0_TS, 0);
        assert_eq!(cr0_write(false, cr0_view(false) | CR0_TS), Some(true));
        assert_eq!(cr0_write(true, cr0_view(false)), Some(false));
        assert_eq!(cr0_write(false, 0), None);
        assert_eq!(cr0_write(false, cr0_view(false) & !(1 << 16)), None);
        assert_eq!(cr4_view(!0), CR4_VISIBLE);
        assert_eq!(cr4_view_pv64(!0, false) & CR4_FSGSBASE, 0, "the machine's FSGSBASE is not the guest's");
        assert_eq!(cr4_view_pv64(0, true), CR4_FSGSBASE);
        assert!(cr4_write_pv64(true, cr4_view_pv64(!0, false) | CR4_FSGSBASE));
        assert!(!cr4_write_pv64(false, CR4_FSGSBASE), "not on a CPU without it");
        assert!(!cr4_write_pv64(true, !CR4_FSGSBASE));
        assert_eq!(base_msr(MSR_GS_BASE), Some(2));
        assert_eq!(base_msr(0xC000_0082), None);
    }

    proptest! {
        /// No bytes make the decoder panic; what it takes is at most 4 bytes long and lies
        /// inside what it was given.
        #[test]
        fn any_bytes(b in proptest::collection::vec(any::<u8>(), 0..16)) {
            if let Some((_, n)) = decode(&b) {
                prop_assert!(n <= b.len() && n <= 4);
            }
            if let Some((_, o, n)) = decode_umip(&b) {
                prop_assert!(n <= b.len() && n <= 10);
                if let Operand::Reg { reg, size } = o {
                    prop_assert!(reg < 16 && matches!(size, 2 | 4 | 8));
                }
            }
            if let Some((op, n)) = decode_io(&b) {
                prop_assert!(n <= b.len() && n <= 3);
                if let IoOp::In { size, .. } | IoOp::Out { size, .. } = op {
                    prop_assert!(matches!(size, 1 | 2 | 4));
                }
            }
        }
    }
}
