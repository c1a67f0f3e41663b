//! Thin wrappers over privileged instructions: the `x86_64` crate's typed registers,
//! MSRs, port I/O and TLB instructions where they fit; inline assembly only where the crate
//! has no equivalent (`clts`, `wbinvd`, XSAVE/FXSAVE, XSETBV, selector loads with fault
//! fix-ups) or takes apart what `paging` computes as one value (the raw CR3 load).

use core::arch::asm;
use x86_64::instructions::port::Port;
use x86_64::registers::control::{Cr0, Cr2, Cr3, Cr4};
use x86_64::registers::model_specific::Msr;

/// Writes a byte to an I/O port.
pub fn outb(port: u16, v: u8) {
    // SAFETY: port I/O has no memory effects visible to Rust; callers name device ports.
    unsafe { Port::<u8>::new(port).write(v) }
}

/// Reads a byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    // SAFETY: as for `outb`.
    unsafe { Port::<u8>::new(port).read() }
}

/// Writes a 32-bit value to an I/O port.
pub fn outl(port: u16, v: u32) {
    // SAFETY: as for `outb`.
    unsafe { Port::<u32>::new(port).write(v) }
}

/// Reads `size` (1, 2 or 4) bytes from an I/O port (other sizes read nothing: all ones).
pub fn port_in(port: u16, size: u8) -> u32 {
    // SAFETY: as for `outb`.
    unsafe {
        match size {
            1 => Port::<u8>::new(port).read() as u32,
            2 => Port::<u16>::new(port).read() as u32,
            4 => Port::<u32>::new(port).read(),
            _ => u32::MAX,
        }
    }
}

/// Writes the low `size` (1, 2 or 4) bytes of `v` to an I/O port (other sizes: nothing).
pub fn port_out(port: u16, size: u8, v: u32) {
    // SAFETY: as for `outb`.
    unsafe {
        match size {
            1 => Port::<u8>::new(port).write(v as u8),
            2 => Port::<u16>::new(port).write(v as u16),
            4 => Port::<u32>::new(port).write(v),
            _ => {}
        }
    }
}

/// This CPU's GDTR and IDTR (limit, base), LDTR and TR selectors: what `sgdt`, `sidt`,
/// `sldt` and `str` give (for a Xen pv64 guest's, which UMIP makes fault).
pub fn descriptor_registers() -> ([(u16, u64); 2], u16, u16) {
    let (mut g, mut i) = ([0u8; 10], [0u8; 10]);
    let (ldt, tr): (u16, u16);
    // SAFETY: the stores write 10 bytes each into the local buffers; sldt/str only read.
    unsafe {
        asm!("sgdt [{}]", in(reg) g.as_mut_ptr(), options(nostack, preserves_flags));
        asm!("sidt [{}]", in(reg) i.as_mut_ptr(), options(nostack, preserves_flags));
        asm!("sldt {0:x}", "str {1:x}", out(reg) ldt, out(reg) tr, options(nomem, nostack, preserves_flags));
    }
    let split = |b: [u8; 10]| (u16::from_le_bytes([b[0], b[1]]), u64::from_le_bytes([b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9]]));
    ([split(g), split(i)], ldt, tr)
}

/// Reads DR6 and puts it back to its reset value (0xFFFF0FF0): the status of the #DB just
/// taken, for the guest that took it.
pub fn take_dr6() -> u64 {
    let v: u64;
    // SAFETY: DR6 holds only debug status; the hypervisor arms no breakpoint of its own.
    unsafe {
        asm!("mov {}, dr6", out(reg) v, options(nomem, nostack, preserves_flags));
        asm!("mov dr6, {}", in(reg) 0xFFFF_0FF0u64, options(nomem, nostack, preserves_flags));
    }
    v
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc only reads a counter.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) }
    ((hi as u64) << 32) | lo as u64
}

/// CPUID leaf/subleaf → (eax, ebx, ecx, edx).
pub fn cpuid(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    (r.eax, r.ebx, r.ecx, r.edx)
}

pub fn read_cr0() -> u64 {
    Cr0::read_raw()
}

pub fn read_cr2() -> u64 {
    Cr2::read_raw()
}

/// CR3 as loaded: root address and PCID.
pub fn read_cr3() -> u64 {
    let (frame, pcid) = Cr3::read_raw();
    frame.start_address().as_u64() | u64::from(pcid)
}

pub fn read_cr4() -> u64 {
    Cr4::read_raw()
}

/// Loads CR3 from one raw value (root, PCID and the bit-63 no-flush flag as computed by
/// `paging`; the crate's `Cr3` takes them as separate typed arguments).
///
/// # Safety
/// `v` must be the address of a root table that maps all code and data in use.
pub unsafe fn write_cr3(v: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("mov cr3, {}", in(reg) v, options(nostack)) }
}

/// Loads CR4.
///
/// # Safety
/// The bits must be supported and consistent with the rest of the CPU state.
pub unsafe fn write_cr4(v: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe { Cr4::write_raw(v) }
}

/// Sets or clears CR4.FSGSBASE (a vCPU's choice; only on CPUs that have it), writing CR4
/// only when it changes.
pub fn set_fsgsbase(on: bool) {
    let c = read_cr4();
    if (c & cr4::FSGSBASE != 0) != on {
        // SAFETY: the caller checked the CPU has FSGSBASE; the hypervisor itself never uses
        // the instructions, so only what guest code may do changes.
        unsafe { write_cr4(c ^ cr4::FSGSBASE) }
    }
}

/// Reads an MSR.
///
/// # Safety
/// The MSR must exist.
pub unsafe fn rdmsr(msr: u32) -> u64 {
    // SAFETY: guaranteed by the caller.
    unsafe { Msr::new(msr).read() }
}

/// Writes an MSR.
///
/// # Safety
/// The MSR must exist and the value must not break the hypervisor's invariants.
pub unsafe fn wrmsr(msr: u32, v: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe { Msr::new(msr).write(v) }
}

/// Reads address 0, which the hypervisor never maps: a deliberate page fault (the
/// `debug-crash=fault` test option), whose handler reports it and ends the run.
#[inline(never)]
pub fn fault_on_purpose() {
    // SAFETY: the load faults before it completes; the #PF handler never returns here.
    unsafe { asm!("mov rax, qword ptr [0]", out("rax") _, options(nostack, readonly)) };
}

/// Halts forever with interrupts disabled.
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Ends a QEMU run through isa-debug-exit (no effect where there is no such device), then
/// halts.
pub fn debug_exit(code: guest_abi::harness::ExitCode) -> ! {
    outl(guest_abi::harness::DEBUG_EXIT_PORT, code as u32);
    halt_forever()
}

/// CR4 bits.
pub mod cr4 {
    pub const PAE: u64 = 1 << 5;
    pub const PGE: u64 = 1 << 7;
    pub const OSFXSR: u64 = 1 << 9;
    pub const OSXMMEXCPT: u64 = 1 << 10;
    pub const UMIP: u64 = 1 << 11;
    pub const FSGSBASE: u64 = 1 << 16;
    pub const PCIDE: u64 = 1 << 17;
    pub const OSXSAVE: u64 = 1 << 18;
    pub const SMEP: u64 = 1 << 20;
    pub const SMAP: u64 = 1 << 21;
}

/// CPU features the hypervisor uses, read once.
#[derive(Copy, Clone, Debug, Default)]
pub struct Features {
    pub smep: bool,
    pub smap: bool,
    pub umip: bool,
    pub fsgsbase: bool,
    pub pcid: bool,
    pub invpcid: bool,
    pub xsave: bool,
    pub invariant_tsc: bool,
}

impl Features {
    pub fn detect() -> Features {
        let (_, _, ecx1, _) = cpuid(1, 0);
        let (max, ..) = cpuid(0, 0);
        let (_, ebx7, ecx7, _) = if max >= 7 { cpuid(7, 0) } else { (0, 0, 0, 0) };
        let (emax, ..) = cpuid(0x8000_0000, 0);
        let (_, _, _, edx87) = if emax >= 0x8000_0007 { cpuid(0x8000_0007, 0) } else { (0, 0, 0, 0) };
        Features {
            smep: ebx7 & (1 << 7) != 0,
            smap: ebx7 & (1 << 20) != 0,
            umip: ecx7 & (1 << 2) != 0,
            fsgsbase: ebx7 & 1 != 0,
            pcid: ecx1 & (1 << 17) != 0,
            invpcid: ebx7 & (1 << 10) != 0,
            xsave: ecx1 & (1 << 26) != 0,
            invariant_tsc: edx87 & (1 << 8) != 0,
        }
    }
}

/// Legacy PIC vectors after [`mask_legacy_pic`].
pub const PIC_VECTOR_BASE: u8 = 0x20;

/// Remaps the legacy 8259 PICs to vectors 0x20–0x2F (away from the exceptions) and masks
/// every line: the hypervisor takes no legacy interrupts.
pub fn mask_legacy_pic() {
    for (port, v) in [
        (0x20, 0x11),
        (0xA0, 0x11),
        (0x21, PIC_VECTOR_BASE),
        (0xA1, PIC_VECTOR_BASE + 8),
        (0x21, 4),
        (0xA1, 2),
        (0x21, 1),
        (0xA1, 1),
        (0x21, 0xFF),
        (0xA1, 0xFF),
    ] {
        outb(port, v);
    }
}

/// Acknowledges a (spurious) legacy interrupt; other vectors need nothing.
pub fn ack_legacy_irq(vector: u8) {
    if (PIC_VECTOR_BASE..PIC_VECTOR_BASE + 16).contains(&vector) {
        if vector >= PIC_VECTOR_BASE + 8 {
            outb(0xA0, 0x20);
        }
        outb(0x20, 0x20);
    }
}

/// Turns on the protections and extensions the hypervisor relies on, where the CPU has them:
/// SMEP, SMAP, UMIP, FSGSBASE, and SSE state support; and turns global pages off (the
/// hypervisor maps nothing global, and a guest's Global bit must never let a translation
/// survive the flushes the TLB clock and shootdowns rely on).
pub fn enable_features(f: &Features) {
    let mut c = (read_cr4() & !cr4::PGE) | cr4::OSFXSR | cr4::OSXMMEXCPT;
    for (has, bit) in [(f.smep, cr4::SMEP), (f.smap, cr4::SMAP), (f.umip, cr4::UMIP), (f.fsgsbase, cr4::FSGSBASE)] {
        if has {
            c |= bit;
        }
    }
    // SAFETY: every bit set was checked against CPUID; the hypervisor never touches user
    // pages (SMAP) nor executes them (SMEP).
    unsafe { write_cr4(c) }
}

/// Median TSC ticks of `n` back-to-back CR3 reloads (each flushes the non-global TLB, as a
/// root switch without PCID does), times two: the cost of one entry/exit switch pair.
pub fn measure_cr3_pair(n: usize) -> u64 {
    let cr3 = read_cr3();
    let mut best = u64::MAX;
    for _ in 0..n {
        let t0 = rdtsc();
        // SAFETY: reloads the current root: same mappings, only the TLB is flushed.
        unsafe {
            write_cr3(cr3);
            write_cr3(cr3);
        }
        best = best.min(rdtsc() - t0);
    }
    best
}

/// INVPCID type 1: drops every non-global TLB entry tagged `pcid` on this CPU.
pub fn invpcid_single(pcid: u64) {
    use x86_64::instructions::tlb::{flush_pcid, InvPcidCommand, Pcid};
    let Ok(p) = Pcid::new(pcid as u16) else { panic!("PCID {pcid} out of range") };
    // SAFETY: only called when INVPCID exists (see `paging::enable_pcid`); invalidating TLB
    // entries never breaks memory safety.
    unsafe { flush_pcid(InvPcidCommand::Single(p)) }
}

/// INVPCID type 0: drops the translation of `va` tagged `pcid`.
pub fn invpcid_address(pcid: u64, va: u64) {
    use x86_64::instructions::tlb::{flush_pcid, InvPcidCommand, Pcid};
    // Callers pass the hypervisor's PCIDs and addresses checked canonical (XSA-279); the
    // instruction itself would fault on anything else.
    let (Ok(p), Ok(a)) = (Pcid::new(pcid as u16), x86_64::VirtAddr::try_new(va)) else { panic!("INVPCID of PCID {pcid}, {va:#x}") };
    // SAFETY: as for `invpcid_single`; the address is only a lookup key.
    unsafe { flush_pcid(InvPcidCommand::Address(a, p)) }
}

/// MSRs a guest may set through `set_segment_base`.
#[derive(Copy, Clone, Debug)]
pub enum SegBase {
    Fs,
    Gs,
    KernelGs,
}

impl SegBase {
    /// The base's MSR.
    const fn msr(self) -> u32 {
        match self {
            SegBase::Fs => 0xC000_0100,
            SegBase::Gs => 0xC000_0101,
            SegBase::KernelGs => 0xC000_0102,
        }
    }
}

/// Sets a segment base. Returns false (and does nothing) for a non-canonical base, which
/// would make `wrmsr` fault.
pub fn set_segment_base(which: SegBase, base: u64) -> bool {
    if !guest_abi::layout::is_canonical(base) {
        return false;
    }
    // SAFETY: the FS/GS base MSRs exist in long mode and take any canonical value; the
    // hypervisor never uses FS or GS.
    unsafe { wrmsr(which.msr(), base) };
    true
}

/// Sets or clears CR0.TS (the guest's virtual `fpu_taskswitch`; the hypervisor uses no FPU).
pub fn set_ts(on: bool) {
    // SAFETY: TS only makes FPU/SSE instructions raise #NM; the hypervisor executes none.
    unsafe {
        if on {
            asm!("mov {t}, cr0", "or {t}, 8", "mov cr0, {t}", t = out(reg) _, options(nostack));
        } else {
            asm!("clts", options(nostack));
        }
    }
}

/// Writes back and invalidates the caches (`MMUEXT_FLUSH_CACHE` for privileged domains).
pub fn wbinvd() {
    // SAFETY: wbinvd has no effect on memory contents.
    unsafe { asm!("wbinvd", options(nostack)) }
}

/// Waits for an interrupt with interrupts enabled just for the wait (`sti; hlt` cannot lose
/// a wake-up: interrupts open only after `hlt` has begun), then disables them again.
pub fn wait_for_interrupt() {
    x86_64::instructions::interrupts::enable_and_hlt();
    x86_64::instructions::interrupts::disable();
}

/// Is a byte waiting in COM1's receive buffer (line status, without reading it)?
pub fn serial_has_input() -> bool {
    inb(crate::console::COM1 + 5) & 1 != 0
}

/// Reads a segment base MSR.
pub fn segment_base(which: SegBase) -> u64 {
    // SAFETY: the FS/GS base MSRs exist in long mode.
    unsafe { rdmsr(which.msr()) }
}

/// A vCPU's extended state (x87, SSE, AVX…): an XSAVE area, or an FXSAVE image where the CPU
/// has no XSAVE. 64-byte aligned, large enough for every component up to AVX-512.
#[repr(C, align(64))]
#[derive(Clone)]
pub struct FxArea(pub [u8; 4096]);

impl FxArea {
    /// The initial state: `fninit` control word, SSE exceptions masked, every XSAVE
    /// component in its init state.
    pub fn initial() -> FxArea {
        let mut a = [0u8; 4096];
        a[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
        a[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
        FxArea(a)
    }

    /// The state in a guest-supplied FXSAVE image (x87 and SSE registers; other XSAVE
    /// components in their init state). `None` if MXCSR has reserved bits set, which would
    /// make the restore fault.
    pub fn from_legacy(img: &[u8; 512]) -> Option<FxArea> {
        let mxcsr = u32::from_le_bytes([img[24], img[25], img[26], img[27]]);
        if mxcsr & !MXCSR_MASK != 0 {
            return None;
        }
        let mut a = [0u8; 4096];
        a[..512].copy_from_slice(img);
        // MXCSR_MASK (bytes 28-31) is ignored by the restore; clear it and the reserved area.
        a[28..32].fill(0);
        a[464..512].fill(0);
        // XSAVE header: XSTATE_BV = x87 | SSE, standard format.
        a[512] = 3;
        Some(FxArea(a))
    }
}

/// MXCSR bits every x86-64 CPU this hypervisor runs on implements (DAZ included).
const MXCSR_MASK: u32 = 0xFFFF;

/// XCR0 in use (0 = XSAVE not enabled: FXSAVE is used).
static XCR0: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Enables XSAVE with x87, SSE and (when present) AVX state, if the CPU has XSAVE and its
/// area fits [`FxArea`]. Returns the XCR0 chosen (0 = FXSAVE only).
pub fn enable_xsave(f: &Features) -> u64 {
    if !f.xsave {
        return 0;
    }
    let (supported_lo, _, _, supported_hi) = cpuid(0xD, 0);
    let supported = supported_lo as u64 | (supported_hi as u64) << 32;
    let want = supported & 0b111; // x87 | SSE | AVX
    // SAFETY: XSAVE is supported (CPUID); OSXSAVE only makes XGETBV/XSETBV usable and the
    // XCR0 value is a subset of the supported mask that includes x87.
    unsafe {
        write_cr4(read_cr4() | cr4::OSXSAVE);
        asm!("xsetbv", in("ecx") 0u32, in("eax") want as u32, in("edx") (want >> 32) as u32, options(nostack));
    }
    let (_, size, _, _) = cpuid(0xD, 0);
    if size as usize > core::mem::size_of::<FxArea>() {
        return 0;
    }
    XCR0.store(want, core::sync::atomic::Ordering::Relaxed);
    want
}

/// Saves this CPU's extended state (clears CR0.TS first; the caller restores the guest's TS).
pub fn fxsave(a: &mut FxArea) {
    let m = XCR0.load(core::sync::atomic::Ordering::Relaxed);
    // SAFETY: `a` is 4 KiB and 64-byte aligned, enough for the enabled components; clts only
    // re-enables FPU instructions.
    unsafe {
        if m != 0 {
            asm!("clts", "xsave64 [{}]", in(reg) a.0.as_mut_ptr(), in("eax") m as u32, in("edx") (m >> 32) as u32, options(nostack));
        } else {
            asm!("clts", "fxsave64 [{}]", in(reg) a.0.as_mut_ptr(), options(nostack));
        }
    }
}

/// Loads state saved by [`fxsave`] or [`FxArea::initial`].
pub fn fxrstor(a: &FxArea) {
    let m = XCR0.load(core::sync::atomic::Ordering::Relaxed);
    // SAFETY: as for `fxsave`; the image came from `fxsave` or `initial` (valid MXCSR, zero
    // XSAVE header), and guests cannot write it.
    unsafe {
        if m != 0 {
            asm!("clts", "xrstor64 [{}]", in(reg) a.0.as_ptr(), in("eax") m as u32, in("edx") (m >> 32) as u32, options(nostack));
        } else {
            asm!("clts", "fxrstor64 [{}]", in(reg) a.0.as_ptr(), options(nostack));
        }
    }
}

/// A guest's data segment selectors: DS, ES, FS, GS.
pub type DataSelectors = [u16; 4];

/// The data segment selectors loaded now (in the hypervisor these are still the guest's: the
/// hypervisor never loads DS, ES, FS or GS).
pub fn data_selectors() -> DataSelectors {
    let (ds, es, fs, gs): (u16, u16, u16, u16);
    // SAFETY: reading segment registers has no side effects.
    unsafe {
        asm!("mov {0:x}, ds", "mov {1:x}, es", "mov {2:x}, fs", "mov {3:x}, gs",
            out(reg) ds, out(reg) es, out(reg) fs, out(reg) gs, options(nomem, nostack, preserves_flags))
    }
    [ds, es, fs, gs]
}

// Loads of guest selectors that may fault (a descriptor the guest removed or never had):
// each `mov` has a fixup (see [`fixup`]) that loads the null selector instead and returns 1.
core::arch::global_asm!(
    r#"
    .pushsection .text.rxen_seg_loaders, "ax"
    .macro seg_loader name, reg
    .global rxen_load_\name
    .global rxen_load_\name\()_insn
    .global rxen_load_\name\()_fix
rxen_load_\name:
    xor %eax, %eax
rxen_load_\name\()_insn:
    mov %di, %\reg
    ret
rxen_load_\name\()_fix:
    xor %edi, %edi
    mov %di, %\reg
    mov $1, %eax
    ret
    .endm
    seg_loader ds, ds
    seg_loader es, es
    seg_loader fs, fs
    seg_loader gs, gs
    .popsection
"#,
    options(att_syntax)
);

extern "C" {
    fn rxen_load_ds(sel: u64) -> u64;
    fn rxen_load_es(sel: u64) -> u64;
    fn rxen_load_fs(sel: u64) -> u64;
    fn rxen_load_gs(sel: u64) -> u64;
    static rxen_load_ds_insn: u8;
    static rxen_load_es_insn: u8;
    static rxen_load_fs_insn: u8;
    static rxen_load_gs_insn: u8;
    static rxen_load_ds_fix: u8;
    static rxen_load_es_fix: u8;
    static rxen_load_fs_fix: u8;
    static rxen_load_gs_fix: u8;
}

/// Loads a guest's data selectors (DS, ES, FS, GS; FS and GS before their bases, which a
/// selector load overwrites). A selector the CPU refuses (#GP/#NP) is replaced by the null
/// selector; bit n of the result says selector n was refused.
pub fn load_data_selectors(s: DataSelectors) -> u8 {
    let mut failed = 0;
    // SAFETY: each loader only loads a segment register; a refused selector faults into the
    // hypervisor's handler, which resumes at the loader's fixup ([`fixup`]). The hypervisor
    // itself does not use DS, ES, FS or GS.
    unsafe {
        for (i, r) in [rxen_load_ds(s[0] as u64), rxen_load_es(s[1] as u64), rxen_load_fs(s[2] as u64), rxen_load_gs(s[3] as u64)]
            .into_iter()
            .enumerate()
        {
            failed |= (r as u8 & 1) << i;
        }
    }
    failed
}

/// The exception fixup for a hypervisor instruction at `rip` that may fault on guest input
/// (a selector load): where to resume instead. Only the handlers of #NP, #SS and #GP use it.
pub fn fixup(rip: u64) -> Option<u64> {
    let a = |s: &u8| s as *const u8 as u64;
    // SAFETY: linker symbols; only their addresses are taken.
    let table = unsafe {
        [
            (a(&rxen_load_ds_insn), a(&rxen_load_ds_fix)),
            (a(&rxen_load_es_insn), a(&rxen_load_es_fix)),
            (a(&rxen_load_fs_insn), a(&rxen_load_fs_fix)),
            (a(&rxen_load_gs_insn), a(&rxen_load_gs_fix)),
        ]
    };
    table.iter().find(|(insn, _)| *insn == rip).map(|&(_, fix)| fix)
}
