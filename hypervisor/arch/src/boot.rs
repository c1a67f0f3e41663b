//! From the bootloader to Rust: the multiboot2 header, the Xen PVH note, the 32-bit entry
//! that enters long mode on an early page table, and the parse of the boot information.
//!
//! Early page table: 2 MiB pages mapping physical [0, 4 GiB) three times: identity (for the
//! jump into long mode), at the direct map (slot 262), and the first GiB at the image's
//! virtual base (slot 261). `paging` replaces it with the real tables.

use crate::layout::{phys_to_virt, IMAGE_BASE};
use core::arch::global_asm;
use hv_core::memmap::{Range, RangeSet};

/// Multiboot2 loader magic in EAX.
pub const MB2_LOADER_MAGIC: u32 = 0x36D7_6289;
/// PVH `hvm_start_info` magic.
pub const PVH_MAGIC: u32 = 0x336E_C578;

global_asm!(
    r#"
    .section .multiboot2, "a"
    .balign 8
mb2_header:
    .long 0xE85250D6
    .long 0
    .long mb2_header_end - mb2_header
    .long 0x100000000 - (0xE85250D6 + (mb2_header_end - mb2_header))
    /* Console flags (type 4, optional): EGA text is supported (else GRUB would set a
       graphics mode under a BIOS too). */
    .balign 8
    .short 4, 1
    .long 12
    .long 2
    /* A framebuffer request (type 5), optional (flags 1), no preferred mode: GRUB then
       hands over the UEFI framebuffer, or VGA text under a BIOS (`gfxpayload=text`). */
    .balign 8
    .short 5, 1
    .long 20
    .long 0, 0, 0
    .balign 8
    .short 0, 0
    .long 8
mb2_header_end:

    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 8
    .long {PHYS32_ENTRY}
    .asciz "Xen"
    .quad _start_pvh

    .section .boot.text, "ax"
    .code32
    .global _start32
_start32:
    mov %eax, %edi
    mov %ebx, %esi
    jmp 1f
    .global _start_pvh
_start_pvh:
    mov ${PVH_MAGIC}, %edi
    mov %ebx, %esi
1:
    cli
    cld
    mov $boot32_stack_top, %esp

    /* Long mode and NX are required. */
    mov $0x80000001, %eax
    cpuid
    test $(1 << 29), %edx
    jz 9f
    test $(1 << 20), %edx
    jz 9f

    /* Zero the early tables (7 pages), then fill them. */
    push %edi
    mov $early_l4, %edi
    mov $(7 * 1024), %ecx
    xor %eax, %eax
    rep stosl
    pop %edi

    mov $early_l2, %ebx
    mov $0x83, %eax           /* P | RW | PS */
    xor %edx, %edx
    mov $2048, %ecx
2:  mov %eax, (%ebx)
    mov %edx, 4(%ebx)
    add $0x200000, %eax
    adc $0, %edx
    add $8, %ebx
    loop 2b

    mov $early_l2, %eax
    or $3, %eax
    mov %eax, early_l3_low + 0
    add $0x1000, %eax
    mov %eax, early_l3_low + 8
    add $0x1000, %eax
    mov %eax, early_l3_low + 16
    add $0x1000, %eax
    mov %eax, early_l3_low + 24
    mov $early_l2, %eax
    or $3, %eax
    mov %eax, early_l3_img + {IMG_L3} * 8
    mov $early_l3_low, %eax
    or $3, %eax
    mov %eax, early_l4 + 0
    mov %eax, early_l4 + {DM_SLOT} * 8
    mov $early_l3_img, %eax
    or $3, %eax
    mov %eax, early_l4 + {IMG_SLOT} * 8

    mov %cr4, %eax
    or $(1 << 5), %eax        /* PAE */
    mov %eax, %cr4
    mov $early_l4, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    rdmsr
    or $((1 << 8) | (1 << 11)), %eax   /* LME | NXE */
    wrmsr
    mov %cr0, %eax
    or $((1 << 31) | (1 << 16) | 1), %eax  /* PG | WP | PE */
    mov %eax, %cr0
    lgdt early_gdtr
    ljmp $0x08, $long_entry
9:  hlt
    jmp 9b

    .code64
long_entry:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    mov %edi, %r12d
    mov %esi, %r13d
    movabs $__bss_start, %rdi
    movabs $__bss_end, %rcx
    sub %rdi, %rcx
    shr $3, %rcx
    xor %eax, %eax
    rep stosq
    movabs $boot_stack_top, %rsp
    xor %ebp, %ebp
    mov %r12, %rdi
    mov %r13, %rsi
    movabs $hv_arch_entry, %rax
    call *%rax
    ud2

    .section .boot.data, "aw"
    .balign 8
early_gdt:
    .quad 0
    .quad 0x00AF9B000000FFFF
    .quad 0x00CF93000000FFFF
early_gdtr:
    .short early_gdtr - early_gdt - 1
    .long early_gdt

    .balign 4096
early_l4:     .fill 4096, 1, 0
early_l3_low: .fill 4096, 1, 0
early_l3_img: .fill 4096, 1, 0
early_l2:     .fill 4 * 4096, 1, 0
    .fill 1024, 1, 0
boot32_stack_top:

    // The boot CPU's stack: hv_main and then its idle loop run on it for good (guest
    // entries switch to the guarded per-CPU stack). 64 KiB proved too small once bring-up
    // was split into functions: the overflow silently cleared the statics below it
    // (DEBUG_EXIT), so runs no longer ended. No guard page: keep it generous.
    .section .bss.boot_stack, "aw", @nobits
    .balign 16
    .global boot_stack_top
boot_stack_bottom:
    .fill 262144, 1, 0
boot_stack_top:
"#,
    PHYS32_ENTRY = const guest_abi::elfnote::PHYS32_ENTRY,
    PVH_MAGIC = const PVH_MAGIC,
    IMG_L3 = const ((IMAGE_BASE >> 30) & 511),
    IMG_SLOT = const ((IMAGE_BASE >> 39) & 511),
    DM_SLOT = const crate::layout::SLOT_DIRECTMAP,
    options(att_syntax)
);

extern "C" {
    static __image_phys_start: u8;
    static __image_end: u8;
}

/// Physical extent of the loaded image, boot section included.
pub fn image_phys_range() -> Range {
    // SAFETY: linker-defined symbols; only their addresses are taken.
    let (s, e) = unsafe { (&__image_phys_start as *const u8 as u64, &__image_end as *const u8 as u64) };
    Range::new(s, crate::layout::image_to_phys(e))
}

/// How the hypervisor was booted.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BootKind {
    Multiboot2,
    Pvh,
}

/// A boot module.
#[derive(Copy, Clone, Debug, Default)]
pub struct Module {
    pub start: u64,
    pub end: u64,
    pub cmdline: &'static str,
}

impl Module {
    /// The module's bytes (direct-mapped; the range stays reserved for good).
    pub fn bytes(&self) -> &'static [u8] {
        // SAFETY: module ranges are RAM the bootloader filled, reserved from the allocator
        // and never written by the hypervisor; the direct map covers them.
        unsafe {
            core::slice::from_raw_parts(
                phys_to_virt(self.start) as *const u8,
                (self.end - self.start) as usize,
            )
        }
    }
}

/// Most modules recorded.
pub const MAX_MODULES: usize = 16;

/// What the bootloader told us, in one shape for both boot paths.
#[derive(Clone, Debug)]
pub struct BootInfo {
    pub kind: BootKind,
    pub cmdline: &'static str,
    pub loader: &'static str,
    /// Usable RAM as the firmware reports it.
    pub ram: RangeSet,
    /// Everything that must not be reused: boot information, strings, modules.
    pub reserved: RangeSet,
    pub modules: [Module; MAX_MODULES],
    pub nr_modules: usize,
    /// The CPUs the ACPI MADT lists (`None`: no usable ACPI tables).
    pub madt: Option<hv_core::acpi::Madt>,
    /// Where `ram` came from (for the boot log).
    pub ram_from: &'static str,
    /// Where the ACPI RSDP was found ("none" without one).
    pub rsdp_from: &'static str,
    /// The FADT's PM timer, if any.
    pub pm_timer: Option<hv_core::acpi::PmTimer>,
    /// The HPET's register block (from the ACPI HPET table), if any.
    pub hpet: Option<u64>,
    /// The FADT's power registers and the AML tables' places.
    pub acpi_power: Option<hv_core::acpi_power::Power>,
    /// The screen the bootloader set up (multiboot2's framebuffer tag: text or direct RGB;
    /// `screen::start` says whether it is usable).
    pub screen: Option<crate::screen::Mode>,
    /// An indexed-colour framebuffer's size and depth (not supported: for the boot log).
    pub screen_indexed: Option<(u32, u32, u8)>,
}

/// Whether the boot CPU still runs on the boot page tables (the early map of [0, 4 GiB)); the
/// first [`crate::paging::activate`] ends it.
static EARLY_MAP: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(true);

/// The early map is gone (the boot CPU switched to its own tables).
pub(crate) fn end_early_map() {
    EARLY_MAP.store(false, core::sync::atomic::Ordering::SeqCst);
}

/// The HPET's register block as the ACPI HPET table gave it (0: none).
static HPET: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The HPET's register at offset `off` (8-aligned, inside its 1 KiB block), while the early
/// map exists (TSC calibration); `None` after that, without an HPET, or for another offset.
pub fn hpet_read(off: u64) -> Option<u64> {
    let base = HPET.load(core::sync::atomic::Ordering::Relaxed);
    if base == 0 || !off.is_multiple_of(8) || off >= 0x400 || !EARLY_MAP.load(core::sync::atomic::Ordering::SeqCst) {
        return None;
    }
    // SAFETY: the early map covers [0, 4 GiB) and the block is below it (checked when it
    // was recorded); an aligned 64-bit read of an HPET register has no side effect.
    Some(unsafe { (phys_to_virt(base + off) as *const u64).read_volatile() })
}

/// Starts the HPET's main counter (its configuration register's enable bit), as
/// [`hpet_read`] reads; false when it cannot.
pub fn hpet_enable() -> bool {
    let Some(cfg) = hpet_read(0x10) else { return false };
    let base = HPET.load(core::sync::atomic::Ordering::Relaxed);
    // SAFETY: as for `hpet_read`: the HPET's general configuration register, with only its
    // enable bit added (no interrupt is routed: the legacy-replacement bit is kept).
    unsafe { (phys_to_virt(base + 0x10) as *mut u64).write_volatile(cfg | 1) };
    true
}

/// Reads firmware memory below 4 GiB (ACPI tables) while the early map exists, i.e. until
/// the boot CPU switches to its own tables; false after that, or out of range.
pub fn firmware_read(pa: u64, buf: &mut [u8]) -> bool {
    EARLY_MAP.load(core::sync::atomic::Ordering::SeqCst) && early_read(pa, buf)
}

/// Reads physical memory below 4 GiB through the early map (for firmware tables).
fn early_read(pa: u64, buf: &mut [u8]) -> bool {
    let Some(end) = pa.checked_add(buf.len() as u64) else { return false };
    if end > 1 << 32 {
        return false;
    }
    // SAFETY: the early map covers [0, 4 GiB) read/write; reading firmware memory has no
    // side effects, and the range was checked above.
    unsafe { core::ptr::copy_nonoverlapping(phys_to_virt(pa) as *const u8, buf.as_mut_ptr(), buf.len()) };
    true
}

/// Finds the CPUs: through the first valid RSDP of `rsdps` (what the bootloader gave, in
/// order of preference, each with its name), else by scanning the BIOS area. Says where
/// the RSDP was found.
fn find_cpus(bi: &mut BootInfo, rsdps: &[(Option<u64>, &'static str)]) {
    use hv_core::acpi;
    let given = rsdps.iter().find_map(|&(p, from)| p.filter(|&p| acpi::check_rsdp(&early_read, p)).map(|p| (p, from)));
    let Some((rsdp, from)) = given.or_else(|| acpi::find_rsdp(&early_read, 0xE0000, 0x10_0000).map(|p| (p, "the BIOS area"))) else {
        return;
    };
    bi.madt = acpi::parse(&early_read, rsdp).ok();
    bi.pm_timer = acpi::pm_timer(&early_read, rsdp);
    bi.acpi_power = hv_core::acpi_power::power(&early_read, rsdp);
    bi.hpet = acpi::hpet(&early_read, rsdp).filter(|&b| b < (1 << 32) - 0x400);
    HPET.store(bi.hpet.unwrap_or(0), core::sync::atomic::Ordering::Relaxed);
    bi.rsdp_from = from;
}

/// Why the boot information could not be used.
#[derive(Copy, Clone, Debug)]
pub enum BootInfoError {
    UnknownLoader(u32),
    BadMultiboot2,
    BadPvh,
    NoMemoryMap,
    TooManyRanges,
}

/// Reads a NUL-terminated string at a machine address below 4 GiB (at most 4 KiB).
fn cstr_at(pa: u64) -> (&'static str, Range) {
    if pa == 0 || pa > (1 << 32) - 4096 {
        return ("", Range::default());
    }
    // SAFETY: the early map covers [0, 4 GiB) and the 4 KiB read stays below it (checked);
    // the bootloader placed a string here and the range is reserved before memory is reused.
    let bytes = unsafe { core::slice::from_raw_parts(phys_to_virt(pa) as *const u8, 4096) };
    let n = bytes.iter().position(|&b| b == 0).unwrap_or(4095);
    (core::str::from_utf8(&bytes[..n]).unwrap_or(""), Range::new(pa, pa + n as u64 + 1))
}

fn read<T: Copy>(pa: u64) -> T {
    // SAFETY: the early map covers [0, 4 GiB); callers pass bootloader-provided addresses of
    // structures of type T (read unaligned, so any placement is fine).
    unsafe { core::ptr::read_unaligned(phys_to_virt(pa) as *const T) }
}

/// The usable RAM of the multiboot2 EFI memory-map tag at `tag` (in the MBI: type, size,
/// descriptor size and version, then the descriptors), if its layout is one we know.
fn efi_map(tag: *const u8) -> Option<RangeSet> {
    // SAFETY: `tag` is a tag of the loaded MBI (direct-mapped, reserved, never written):
    // its 16-byte head, then `size - 16` bytes of descriptors inside it.
    let (head, descs) = unsafe {
        let head = core::ptr::read_unaligned(tag as *const [u32; 4]);
        let len = (head[1] as usize).checked_sub(16)?;
        (head, core::slice::from_raw_parts(tag.add(16), len))
    };
    hv_core::memmap::efi_ram(descs, head[2], head[3]).ok()
}

fn parse_multiboot2(pa: u64) -> Result<BootInfo, BootInfoError> {
    use multiboot2::{BootInformation, BootInformationHeader, MemoryAreaType};
    // SAFETY: EAX held the multiboot2 magic, so EBX is the boot information address; the
    // early map covers it.
    let mbi = unsafe { BootInformation::load(phys_to_virt(pa) as *const BootInformationHeader) }
        .map_err(|_| BootInfoError::BadMultiboot2)?;
    let mut bi = BootInfo {
        kind: BootKind::Multiboot2,
        cmdline: "",
        loader: "",
        ram: RangeSet::default(),
        reserved: RangeSet::default(),
        modules: [Module::default(); MAX_MODULES],
        nr_modules: 0,
        madt: None,
        ram_from: "the multiboot2 memory map",
        rsdp_from: "none",
        pm_timer: None,
        acpi_power: None,
        hpet: None,
        screen: None,
        screen_indexed: None,
    };
    let size = (mbi.end_address() - mbi.start_address()) as u64;
    // The RSDP tags hold a copy of the RSDP (after the 8-byte tag header) inside the MBI;
    // under UEFI the firmware's system table names it too.
    let tag_pa = |va: u64| va - crate::layout::DIRECTMAP_BASE + 8;
    let v2 = mbi.rsdp_v2_tag().map(|t| tag_pa(t as *const _ as *const u8 as u64));
    let v1 = mbi.rsdp_v1_tag().map(|t| tag_pa(t as *const _ as *const u8 as u64));
    let efi = mbi.efi_sdt64_tag().and_then(|t| hv_core::acpi::rsdp_from_efi(&early_read, t.sdt_address() as u64));
    find_cpus(&mut bi, &[(v2, "multiboot2's ACPI 2.0 tag"), (v1, "multiboot2's ACPI 1.0 tag"), (efi, "the EFI system table")]);
    bi.reserved.add(Range::new(pa, pa + size)).map_err(|_| BootInfoError::TooManyRanges)?;
    // Strings point into the MBI, which stays reserved: extend their lifetime.
    let leak = |s: &str| -> &'static str {
        // SAFETY: the MBI range is reserved forever and never written.
        unsafe { core::str::from_utf8_unchecked(core::slice::from_raw_parts(s.as_ptr(), s.len())) }
    };
    if let Some(c) = mbi.command_line_tag().and_then(|t| t.cmdline().ok()) {
        bi.cmdline = leak(c);
    }
    if let Some(n) = mbi.boot_loader_name_tag().and_then(|t| t.name().ok()) {
        bi.loader = leak(n);
    }
    // Under UEFI (boot services exited), the firmware's own map as GRUB passed it is the
    // better one (attributes, no conversion); else, or if it cannot be read, GRUB's.
    if let Some(ram) = mbi.efi_memory_map_tag().and_then(|t| efi_map(t as *const _ as *const u8)) {
        bi.ram = ram;
        bi.ram_from = "the EFI memory map";
    } else {
        let mm = mbi.memory_map_tag().ok_or(BootInfoError::NoMemoryMap)?;
        for a in mm.memory_areas() {
            if a.typ() == MemoryAreaType::Available {
                bi.ram
                    .add(Range::new(a.start_address(), a.end_address()))
                    .map_err(|_| BootInfoError::TooManyRanges)?;
            }
        }
    }
    if let Some(Ok(fb)) = mbi.framebuffer_tag() {
        use crate::screen::Mode;
        use multiboot2::FramebufferType;
        let mode = match fb.buffer_type() {
            Ok(FramebufferType::Text) => Some(Mode::Text { pa: fb.address(), cols: fb.width(), rows: fb.height(), pitch: fb.pitch() }),
            Ok(FramebufferType::RGB { red, green, blue }) => Some(Mode::Rgb {
                pa: fb.address(),
                width: fb.width(),
                height: fb.height(),
                pitch: fb.pitch(),
                bpp: fb.bpp(),
                red: (red.position, red.size),
                green: (green.position, green.size),
                blue: (blue.position, blue.size),
            }),
            _ => None,
        };
        bi.screen = mode;
        if mode.is_none() {
            bi.screen_indexed = Some((fb.width(), fb.height(), fb.bpp()));
        }
    }
    for m in mbi.module_tags() {
        if bi.nr_modules == MAX_MODULES {
            break;
        }
        let (s, e) = (m.start_address() as u64, m.end_address() as u64);
        bi.modules[bi.nr_modules] =
            Module { start: s, end: e.max(s), cmdline: m.cmdline().map(leak).unwrap_or("") };
        bi.nr_modules += 1;
        bi.reserved.add(Range::new(s, e)).map_err(|_| BootInfoError::TooManyRanges)?;
    }
    Ok(bi)
}

#[repr(C)]
#[derive(Copy, Clone)]
struct HvmStartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

#[repr(C)]
#[derive(Copy, Clone)]
struct HvmModlistEntry {
    paddr: u64,
    size: u64,
    cmdline_paddr: u64,
    reserved: u64,
}

#[repr(C)]
#[derive(Copy, Clone)]
struct HvmMemmapEntry {
    addr: u64,
    size: u64,
    ty: u32,
    reserved: u32,
}

fn parse_pvh(pa: u64) -> Result<BootInfo, BootInfoError> {
    let si: HvmStartInfo = read(pa);
    if si.magic != PVH_MAGIC || si.version < 1 || si.memmap_entries == 0 {
        return Err(BootInfoError::BadPvh);
    }
    let mut bi = BootInfo {
        kind: BootKind::Pvh,
        cmdline: "",
        loader: "QEMU PVH",
        ram: RangeSet::default(),
        reserved: RangeSet::default(),
        modules: [Module::default(); MAX_MODULES],
        nr_modules: 0,
        madt: None,
        ram_from: "the PVH memory map",
        rsdp_from: "none",
        pm_timer: None,
        acpi_power: None,
        hpet: None,
        screen: None,
        screen_indexed: None,
    };
    let e = |_| BootInfoError::TooManyRanges;
    bi.reserved.add(Range::new(pa, pa + core::mem::size_of::<HvmStartInfo>() as u64)).map_err(e)?;
    let (c, r) = cstr_at(si.cmdline_paddr);
    bi.cmdline = c;
    bi.reserved.add(r).map_err(e)?;
    for i in 0..si.memmap_entries.min(256) as u64 {
        let m: HvmMemmapEntry = read(si.memmap_paddr + i * 24);
        if m.ty == 1 {
            bi.ram.add(Range::new(m.addr, m.addr.saturating_add(m.size))).map_err(e)?;
        }
    }
    bi.reserved
        .add(Range::new(si.memmap_paddr, si.memmap_paddr + 24 * si.memmap_entries as u64))
        .map_err(e)?;
    for i in 0..(si.nr_modules as usize).min(MAX_MODULES) {
        let m: HvmModlistEntry = read(si.modlist_paddr + 32 * i as u64);
        let (c, r) = cstr_at(m.cmdline_paddr);
        bi.modules[i] = Module { start: m.paddr, end: m.paddr + m.size, cmdline: c };
        bi.nr_modules += 1;
        bi.reserved.add(Range::new(m.paddr, m.paddr + m.size)).map_err(e)?;
        bi.reserved.add(r).map_err(e)?;
    }
    bi.reserved
        .add(Range::new(si.modlist_paddr, si.modlist_paddr + 32 * si.nr_modules as u64))
        .map_err(e)?;
    find_cpus(&mut bi, &[((si.rsdp_paddr != 0).then_some(si.rsdp_paddr), "the PVH start info")]);
    Ok(bi)
}

extern "Rust" {
    /// The hypervisor's main function, defined by the binary.
    fn hv_main(info: Result<BootInfo, BootInfoError>) -> !;
}

/// First Rust code: runs on the boot stack with the early page table.
#[no_mangle]
extern "C" fn hv_arch_entry(magic: u64, info: u64) -> ! {
    crate::time::mark_boot();
    crate::console::init();
    let bi = match magic as u32 {
        MB2_LOADER_MAGIC => parse_multiboot2(info),
        PVH_MAGIC => parse_pvh(info),
        m => Err(BootInfoError::UnknownLoader(m)),
    };
    // SAFETY: `hv_main` is defined by the hypervisor binary with exactly this signature.
    unsafe { hv_main(bi) }
}
