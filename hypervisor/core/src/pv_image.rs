//! Parsing and checking a PV kernel image: an ELF64 x86-64 executable with Xen ELF notes.
//!
//! The image is hostile input as far as this module is concerned: any byte string yields
//! either a checked [`PvImage`] or an [`ImageError`] that names the reason, never a panic.

use core::fmt;
use elf::abi::{EM_X86_64, ET_EXEC, PF_X, PT_LOAD, PT_NOTE, SHT_NOTE};
use elf::endian::LittleEndian;
use elf::file::Class;
use elf::note::Note;
use elf::ElfBytes;
use guest_abi::{elfnote, layout};

/// Most loadable segments an image may have.
pub const MAX_SEGMENTS: usize = 16;
/// Largest image span accepted (1 GiB).
pub const MAX_IMAGE_SPAN: u64 = 1 << 30;

/// A loadable segment.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    /// Range of the file that is copied to `vaddr`.
    pub file_offset: usize,
    pub filesz: usize,
    pub executable: bool,
}

/// A checked PV image.
#[derive(Clone, Debug)]
pub struct PvImage<'a> {
    pub data: &'a [u8],
    pub segments: [Segment; MAX_SEGMENTS],
    pub nr_segments: usize,
    /// Lowest and one-past-highest virtual address of the loadable segments.
    pub vstart: u64,
    pub vend: u64,
    pub entry: u64,
    pub virt_base: u64,
    pub hypercall_page: Option<u64>,
    pub guest_os: &'a str,
    pub guest_version: &'a str,
    pub xen_version: &'a str,
    pub loader: &'a str,
    /// It carries rxen's ring-1 ABI note: it runs in the ring-1 model, else in the Xen
    /// pv64 mode.
    pub ring1: bool,
}

impl PvImage<'_> {
    pub fn segments(&self) -> &[Segment] {
        &self.segments[..self.nr_segments]
    }
}

/// Why an image was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ImageError {
    NotElf,
    NotElf64,
    NotLittleEndian,
    NotX86_64,
    NotExecutable,
    Malformed,
    NoLoadableSegments,
    TooManySegments,
    SegmentOutsideFile,
    FileszExceedsMemsz,
    SegmentWraps,
    SegmentsOverlap,
    TooLarge,
    NoXenNotes,
    MissingNote(&'static str),
    BadNote(&'static str),
    UnsupportedXenVersion,
    UnsupportedLoader,
    VirtBaseAboveImage,
    ReservedAddress,
    EntryOutsideImage,
    HypercallPageOutsideImage,
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ImageError::*;
        match self {
            NotElf => write!(f, "not an ELF file (bad magic)"),
            NotElf64 => write!(f, "not a 64-bit ELF file"),
            NotLittleEndian => write!(f, "not a little-endian ELF file"),
            NotX86_64 => write!(f, "not an x86-64 ELF file"),
            NotExecutable => write!(f, "not an executable ELF file (e_type != ET_EXEC)"),
            Malformed => write!(f, "malformed ELF headers"),
            NoLoadableSegments => write!(f, "no loadable segments"),
            TooManySegments => write!(f, "more than {} loadable segments", MAX_SEGMENTS),
            SegmentOutsideFile => write!(f, "a segment's file range lies outside the file"),
            FileszExceedsMemsz => write!(f, "a segment's file size exceeds its memory size"),
            SegmentWraps => write!(f, "a segment wraps around the address space"),
            SegmentsOverlap => write!(f, "loadable segments overlap"),
            TooLarge => write!(f, "image spans more than {} MiB", MAX_IMAGE_SPAN >> 20),
            NoXenNotes => write!(f, "no Xen ELF notes: not a Xen PV image"),
            MissingNote(n) => write!(f, "missing Xen ELF note {}", n),
            BadNote(n) => write!(f, "malformed Xen ELF note {}", n),
            UnsupportedXenVersion => write!(f, "XEN_VERSION note is not \"xen-3.0\""),
            UnsupportedLoader => write!(f, "LOADER note is not \"generic\""),
            VirtBaseAboveImage => write!(f, "VIRT_BASE lies above the image"),
            ReservedAddress => {
                write!(f, "image overlaps the hypervisor area or non-canonical addresses")
            }
            EntryOutsideImage => write!(f, "entry point outside the executable segments"),
            HypercallPageOutsideImage => {
                write!(f, "HYPERCALL_PAGE is unaligned or outside the image")
            }
        }
    }
}

fn note_str<'a>(desc: &'a [u8], name: &'static str) -> Result<&'a str, ImageError> {
    let end = desc.iter().position(|&b| b == 0).unwrap_or(desc.len());
    core::str::from_utf8(&desc[..end]).map_err(|_| ImageError::BadNote(name))
}

fn note_num(desc: &[u8], name: &'static str) -> Result<u64, ImageError> {
    match desc.len() {
        4 => Ok(u32::from_le_bytes(desc.try_into().map_err(|_| ImageError::BadNote(name))?) as u64),
        8 => Ok(u64::from_le_bytes(desc.try_into().map_err(|_| ImageError::BadNote(name))?)),
        _ => Err(ImageError::BadNote(name)),
    }
}

/// Is the whole range `[start, end)` made of guest addresses (canonical, outside the
/// hypervisor's slots, not wrapping)?
pub fn is_guest_range(start: u64, end: u64) -> bool {
    if end < start {
        return false;
    }
    if start == end {
        return layout::is_guest_va(start);
    }
    let last = end - 1;
    layout::is_guest_va(start)
        && layout::is_guest_va(last)
        // Both ends in the same half, and the range does not span the reserved slots.
        && ((start as i64) < 0) == ((last as i64) < 0)
        && !(start < layout::HYPERVISOR_VIRT_START && last >= layout::HYPERVISOR_VIRT_START)
}

/// The notes [`parse`] collects (those it keeps go straight into the image).
#[derive(Default)]
struct Notes<'a> {
    entry: Option<u64>,
    saw_xen_note: bool,
    guest_os: Option<&'a str>,
    xen_version: Option<&'a str>,
    loader: Option<&'a str>,
}

impl<'a> Notes<'a> {
    /// Takes one note of the image: rxen's ABI note, or a Xen note.
    fn take(&mut self, img: &mut PvImage<'a>, note: Note<'a>) -> Result<(), ImageError> {
        let Note::Unknown(n) = note else { return Ok(()) };
        let name = n.name.strip_suffix(b"\0").unwrap_or(n.name);
        if name == elfnote::RXEN_NAME && n.n_type as u32 == elfnote::RXEN_ABI {
            img.ring1 = note_num(n.desc, "rxen ABI")? == elfnote::RXEN_ABI_RING1 as u64;
            return Ok(());
        }
        if name != elfnote::NAME {
            return Ok(());
        }
        self.saw_xen_note = true;
        match n.n_type as u32 {
            elfnote::ENTRY => self.entry = Some(note_num(n.desc, "ENTRY")?),
            elfnote::VIRT_BASE => img.virt_base = note_num(n.desc, "VIRT_BASE")?,
            elfnote::HYPERCALL_PAGE => img.hypercall_page = Some(note_num(n.desc, "HYPERCALL_PAGE")?),
            elfnote::GUEST_OS => self.guest_os = Some(note_str(n.desc, "GUEST_OS")?),
            elfnote::GUEST_VERSION => img.guest_version = note_str(n.desc, "GUEST_VERSION")?,
            elfnote::XEN_VERSION => self.xen_version = Some(note_str(n.desc, "XEN_VERSION")?),
            elfnote::LOADER => self.loader = Some(note_str(n.desc, "LOADER")?),
            _ => {}
        }
        Ok(())
    }
}

/// Parses and checks a PV image.
pub fn parse(data: &[u8]) -> Result<PvImage<'_>, ImageError> {
    if data.len() < 16 || &data[..4] != b"\x7fELF" {
        return Err(ImageError::NotElf);
    }
    if data[4] != 2 {
        return Err(ImageError::NotElf64);
    }
    if data[5] != 1 {
        return Err(ImageError::NotLittleEndian);
    }
    let file = ElfBytes::<LittleEndian>::minimal_parse(data).map_err(|_| ImageError::Malformed)?;
    if file.ehdr.class != Class::ELF64 {
        return Err(ImageError::NotElf64);
    }
    if file.ehdr.e_machine != EM_X86_64 {
        return Err(ImageError::NotX86_64);
    }
    if file.ehdr.e_type != ET_EXEC {
        return Err(ImageError::NotExecutable);
    }
    let phdrs = file.segments().ok_or(ImageError::NoLoadableSegments)?;

    let mut img = PvImage {
        data,
        segments: [Segment::default(); MAX_SEGMENTS],
        nr_segments: 0,
        vstart: u64::MAX,
        vend: 0,
        entry: file.ehdr.e_entry,
        virt_base: 0,
        hypercall_page: None,
        guest_os: "",
        guest_version: "",
        xen_version: "",
        loader: "",
        ring1: false,
    };
    let mut n = Notes::default();

    for ph in phdrs.iter() {
        match ph.p_type {
            PT_LOAD if ph.p_memsz > 0 => {
                if img.nr_segments == MAX_SEGMENTS {
                    return Err(ImageError::TooManySegments);
                }
                if ph.p_filesz > ph.p_memsz {
                    return Err(ImageError::FileszExceedsMemsz);
                }
                let off = usize::try_from(ph.p_offset).map_err(|_| ImageError::SegmentOutsideFile)?;
                let len = usize::try_from(ph.p_filesz).map_err(|_| ImageError::SegmentOutsideFile)?;
                if off.checked_add(len).is_none_or(|e| e > data.len()) {
                    return Err(ImageError::SegmentOutsideFile);
                }
                let end = ph.p_vaddr.checked_add(ph.p_memsz).ok_or(ImageError::SegmentWraps)?;
                let seg = Segment {
                    vaddr: ph.p_vaddr,
                    memsz: ph.p_memsz,
                    file_offset: off,
                    filesz: len,
                    executable: ph.p_flags & PF_X != 0,
                };
                if img.segments().iter().any(|s| s.vaddr < end && ph.p_vaddr < s.vaddr + s.memsz) {
                    return Err(ImageError::SegmentsOverlap);
                }
                img.segments[img.nr_segments] = seg;
                img.nr_segments += 1;
                img.vstart = img.vstart.min(ph.p_vaddr);
                img.vend = img.vend.max(end);
            }
            PT_NOTE => {
                let notes =
                    file.segment_data_as_notes(&ph).map_err(|_| ImageError::BadNote("segment"))?;
                for note in notes {
                    n.take(&mut img, note)?;
                }
            }
            _ => {}
        }
    }
    // As Xen's libelf: without Xen notes in a PT_NOTE segment, those of the SHT_NOTE
    // sections (Mini-OS's image has no PT_NOTE).
    if !n.saw_xen_note {
        if let Some(shdrs) = file.section_headers() {
            for sh in shdrs.iter().filter(|s| s.sh_type == SHT_NOTE) {
                let notes = file.section_data_as_notes(&sh).map_err(|_| ImageError::BadNote("section"))?;
                for note in notes {
                    n.take(&mut img, note)?;
                }
            }
        }
    }
    if img.nr_segments == 0 {
        return Err(ImageError::NoLoadableSegments);
    }
    if !n.saw_xen_note {
        return Err(ImageError::NoXenNotes);
    }
    let entry_note = n.entry;
    img.guest_os = n.guest_os.ok_or(ImageError::MissingNote("GUEST_OS"))?;
    img.xen_version = n.xen_version.ok_or(ImageError::MissingNote("XEN_VERSION"))?;
    img.loader = n.loader.ok_or(ImageError::MissingNote("LOADER"))?;
    if img.xen_version != "xen-3.0" {
        return Err(ImageError::UnsupportedXenVersion);
    }
    if img.loader != "generic" {
        return Err(ImageError::UnsupportedLoader);
    }
    if img.vend - img.vstart > MAX_IMAGE_SPAN {
        return Err(ImageError::TooLarge);
    }
    if img.virt_base > img.vstart {
        return Err(ImageError::VirtBaseAboveImage);
    }
    if img.vstart - img.virt_base > MAX_IMAGE_SPAN {
        return Err(ImageError::TooLarge);
    }
    if !is_guest_range(img.virt_base, img.vend) {
        return Err(ImageError::ReservedAddress);
    }
    if let Some(e) = entry_note {
        img.entry = e;
    }
    let entry = img.entry;
    if !img.segments().iter().any(|s| s.executable && s.vaddr <= entry && entry < s.vaddr + s.memsz)
    {
        return Err(ImageError::EntryOutsideImage);
    }
    if let Some(hp) = img.hypercall_page {
        // Every value here comes from the image: checked arithmetic (segment ends are known not
        // to wrap, see SegmentWraps).
        let end = hp.checked_add(4096);
        let inside = end.is_some_and(|end| img.segments().iter().any(|s| s.vaddr <= hp && end <= s.vaddr + s.memsz));
        if !hp.is_multiple_of(4096) || !inside {
            return Err(ImageError::HypercallPageOutsideImage);
        }
    }
    Ok(img)
}

/// Writes minimal test images. Shared by this crate's tests.
#[cfg(test)]
pub mod testelf {
    use std::vec::Vec;

    pub struct Note {
        pub ty: u32,
        pub desc: Vec<u8>,
        /// The owner's name (`Xen`, or `rxen` for rxen's own).
        pub name: &'static [u8],
    }

    pub fn str_note(ty: u32, s: &str) -> Note {
        let mut d = s.as_bytes().to_vec();
        d.push(0);
        Note { ty, desc: d, name: b"Xen" }
    }

    pub fn num_note(ty: u32, v: u64) -> Note {
        Note { ty, desc: v.to_le_bytes().to_vec(), name: b"Xen" }
    }

    /// rxen's ring-1 ABI note (4-byte value).
    pub fn ring1_note() -> Note {
        use guest_abi::elfnote::*;
        Note { ty: RXEN_ABI, desc: RXEN_ABI_RING1.to_le_bytes().to_vec(), name: RXEN_NAME }
    }

    /// The standard notes plus the given extras.
    pub fn std_notes(virt_base: u64, hypercall_page: u64) -> Vec<Note> {
        use guest_abi::elfnote::*;
        std::vec![
            str_note(GUEST_OS, "test"),
            str_note(XEN_VERSION, "xen-3.0"),
            str_note(LOADER, "generic"),
            num_note(VIRT_BASE, virt_base),
            num_note(HYPERCALL_PAGE, hypercall_page),
        ]
    }

    /// [`build`] with no PT_NOTE segment: the notes in an SHT_NOTE section instead (after a
    /// null section header, as the ELF format wants).
    pub fn build_section_notes(entry: u64, segs: &[(u64, Vec<u8>, u64, bool)], notes: &[Note]) -> Vec<u8> {
        let mut out = build(entry, segs, &[]);
        let blob = note_blob(notes);
        let off = out.len() as u64;
        out.extend_from_slice(&blob);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let shoff = out.len() as u64;
        out.extend_from_slice(&[0; 64]);
        let mut sh = [0u8; 64];
        sh[4..8].copy_from_slice(&elf::abi::SHT_NOTE.to_le_bytes());
        sh[24..32].copy_from_slice(&off.to_le_bytes());
        sh[32..40].copy_from_slice(&(blob.len() as u64).to_le_bytes());
        sh[48..56].copy_from_slice(&4u64.to_le_bytes());
        out.extend_from_slice(&sh);
        out[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        out[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
        out[0x3C..0x3E].copy_from_slice(&2u16.to_le_bytes());
        out
    }

    fn note_blob(notes: &[Note]) -> Vec<u8> {
        let mut note_blob = Vec::new();
        for n in notes {
            note_blob.extend_from_slice(&(n.name.len() as u32 + 1).to_le_bytes());
            note_blob.extend_from_slice(&(n.desc.len() as u32).to_le_bytes());
            note_blob.extend_from_slice(&n.ty.to_le_bytes());
            note_blob.extend_from_slice(n.name);
            note_blob.push(0);
            while note_blob.len() % 4 != 0 {
                note_blob.push(0);
            }
            note_blob.extend_from_slice(&n.desc);
            while note_blob.len() % 4 != 0 {
                note_blob.push(0);
            }
        }
        note_blob
    }

    /// Segment: (vaddr, contents, memsz, executable).
    pub fn build(entry: u64, segs: &[(u64, Vec<u8>, u64, bool)], notes: &[Note]) -> Vec<u8> {
        let note_blob = note_blob(notes);
        let nph = segs.len() + usize::from(!notes.is_empty());
        let mut out = std::vec![0u8; 64 + 56 * nph];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2;
        out[5] = 1;
        out[6] = 1;
        out[16..18].copy_from_slice(&2u16.to_le_bytes());
        out[18..20].copy_from_slice(&62u16.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[24..32].copy_from_slice(&entry.to_le_bytes());
        out[32..40].copy_from_slice(&64u64.to_le_bytes());
        out[52..54].copy_from_slice(&64u16.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&(nph as u16).to_le_bytes());
        let mut phs = Vec::new();
        for (vaddr, data, memsz, x) in segs {
            let off = out.len() as u64;
            out.extend_from_slice(data);
            phs.push((1u32, if *x { 5u32 } else { 6 }, off, *vaddr, data.len() as u64, *memsz));
        }
        if !notes.is_empty() {
            let off = out.len() as u64;
            out.extend_from_slice(&note_blob);
            phs.push((4, 4, off, 0, note_blob.len() as u64, note_blob.len() as u64));
        }
        for (i, (ty, fl, off, va, fsz, msz)) in phs.into_iter().enumerate() {
            let b = 64 + 56 * i;
            out[b..b + 4].copy_from_slice(&ty.to_le_bytes());
            out[b + 4..b + 8].copy_from_slice(&fl.to_le_bytes());
            out[b + 8..b + 16].copy_from_slice(&off.to_le_bytes());
            out[b + 16..b + 24].copy_from_slice(&va.to_le_bytes());
            out[b + 24..b + 32].copy_from_slice(&va.to_le_bytes());
            out[b + 32..b + 40].copy_from_slice(&fsz.to_le_bytes());
            out[b + 40..b + 48].copy_from_slice(&msz.to_le_bytes());
            out[b + 48..b + 56].copy_from_slice(&4u64.to_le_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::testelf::*;
    use super::*;
    use proptest::prelude::*;
    use std::vec;

    const BASE: u64 = 0xFFFF_FFFF_8000_0000;

    fn good() -> std::vec::Vec<u8> {
        build(
            BASE + 0x1000,
            &[(BASE, vec![0x90; 0x2000], 0x3000, true), (BASE + 0x3000, vec![1; 16], 0x1000, false)],
            &std_notes(BASE, BASE + 0x1000),
        )
    }

    #[test]
    fn the_ring1_note_chooses_the_mode() {
        assert!(!parse(&good()).unwrap().ring1, "a Xen image runs in the pv64 mode");
        let seg = [(BASE, vec![0x90; 0x2000], 0x3000, true)];
        let mut notes = std_notes(BASE, BASE + 0x1000);
        notes.push(ring1_note());
        assert!(parse(&build(BASE + 0x1000, &seg, &notes)).unwrap().ring1);
        // Another value is not the ring-1 ABI.
        let mut other = std_notes(BASE, BASE + 0x1000);
        other.push(testelf::Note { ty: guest_abi::elfnote::RXEN_ABI, desc: 2u32.to_le_bytes().to_vec(), name: b"rxen" });
        assert!(!parse(&build(BASE + 0x1000, &seg, &other)).unwrap().ring1);
        let mut bad = std_notes(BASE, BASE + 0x1000);
        bad.push(testelf::Note { ty: guest_abi::elfnote::RXEN_ABI, desc: vec![1, 0, 0], name: b"rxen" });
        assert_eq!(parse(&build(BASE + 0x1000, &seg, &bad)).unwrap_err(), ImageError::BadNote("rxen ABI"));
    }

    /// Notes in an SHT_NOTE section only (no PT_NOTE segment, as Mini-OS's image) are
    /// read, as Xen's libelf falls back to them.
    #[test]
    fn section_notes() {
        let seg = [(BASE, vec![0x90; 0x2000], 0x3000, true)];
        let img = testelf::build_section_notes(BASE + 0x1000, &seg, &std_notes(BASE, BASE + 0x1000));
        let p = parse(&img).unwrap();
        assert_eq!((p.virt_base, p.hypercall_page, p.guest_os), (BASE, Some(BASE + 0x1000), "test"));
        assert_eq!(parse(&testelf::build_section_notes(BASE, &seg, &[])).unwrap_err(), ImageError::NoXenNotes);
    }

    #[test]
    fn accepts_a_good_image() {
        let data = good();
        let img = parse(&data).unwrap();
        assert_eq!(img.entry, BASE + 0x1000);
        assert_eq!(img.virt_base, BASE);
        assert_eq!(img.hypercall_page, Some(BASE + 0x1000));
        assert_eq!((img.vstart, img.vend), (BASE, BASE + 0x4000));
        assert_eq!(img.guest_os, "test");
        assert_eq!(img.nr_segments, 2);
    }

    #[test]
    fn refuses_bad_images_with_reasons() {
        assert_eq!(parse(b"garbage").unwrap_err(), ImageError::NotElf);
        let mut d = good();
        d[4] = 1;
        assert_eq!(parse(&d).unwrap_err(), ImageError::NotElf64);
        let mut d = good();
        d[18] = 3;
        assert_eq!(parse(&d).unwrap_err(), ImageError::NotX86_64);
        let no_notes = build(BASE, &[(BASE, vec![0; 16], 0x1000, true)], &[]);
        assert_eq!(parse(&no_notes).unwrap_err(), ImageError::NoXenNotes);
        let mut notes = std_notes(BASE, BASE);
        notes.remove(0);
        let d = build(BASE, &[(BASE, vec![0; 16], 0x1000, true)], &notes);
        assert_eq!(parse(&d).unwrap_err(), ImageError::MissingNote("GUEST_OS"));
        let overlap = build(
            BASE,
            &[(BASE, vec![0; 16], 0x2000, true), (BASE + 0x1000, vec![0; 16], 0x1000, false)],
            &std_notes(BASE, BASE),
        );
        assert_eq!(parse(&overlap).unwrap_err(), ImageError::SegmentsOverlap);
        let outside = build(BASE + 0x5000, &[(BASE, vec![0; 16], 0x1000, true)], &std_notes(BASE, BASE));
        assert_eq!(parse(&outside).unwrap_err(), ImageError::EntryOutsideImage);
        let data_entry = build(
            BASE + 0x1000,
            &[(BASE, vec![0; 16], 0x1000, true), (BASE + 0x1000, vec![0; 16], 0x1000, false)],
            &std_notes(BASE, BASE),
        );
        assert_eq!(parse(&data_entry).unwrap_err(), ImageError::EntryOutsideImage);
        let hv = 0xFFFF_8100_0000_0000;
        let reserved = build(hv, &[(hv, vec![0; 16], 0x1000, true)], &std_notes(hv, hv));
        assert_eq!(parse(&reserved).unwrap_err(), ImageError::ReservedAddress);
        let huge = build(BASE, &[(BASE, vec![0; 16], 0x5000_0000, true)], &std_notes(BASE, BASE));
        assert_eq!(parse(&huge).unwrap_err(), ImageError::TooLarge);
        let wraps = build(BASE, &[(BASE, vec![0; 16], 1 << 40, true)], &std_notes(BASE, BASE));
        assert_eq!(parse(&wraps).unwrap_err(), ImageError::SegmentWraps);
        let bad_hc = build(BASE, &[(BASE, vec![0; 16], 0x1000, true)], &std_notes(BASE, BASE + 8));
        assert_eq!(parse(&bad_hc).unwrap_err(), ImageError::HypercallPageOutsideImage);
        // A hypercall page whose end overflows: refused, no overflow (debug builds would panic).
        let top_hc = build(BASE, &[(BASE, vec![0; 16], 0x1000, true)], &std_notes(BASE, 0xFFFF_FFFF_FFFF_F000));
        assert_eq!(parse(&top_hc).unwrap_err(), ImageError::HypercallPageOutsideImage);
        let top_unaligned = build(BASE, &[(BASE, vec![0; 16], 0x1000, true)], &std_notes(BASE, u64::MAX - 8));
        assert_eq!(parse(&top_unaligned).unwrap_err(), ImageError::HypercallPageOutsideImage);
        let mut d = good();
        let n = d.len();
        d.truncate(n - 40); // cut the notes: segment data outside the file
        assert!(parse(&d).is_err());
    }

    #[test]
    fn low_images_are_fine_but_not_across_the_hole() {
        let d = build(0x10_0000, &[(0x10_0000, vec![0; 16], 0x1000, true)], &std_notes(0, 0x10_0000));
        assert_eq!(parse(&d).unwrap().virt_base, 0);
        let top = 0x7FFF_FFFF_F000;
        let d = build(top, &[(top, vec![0; 16], 0x2000, true)], &std_notes(top, top));
        assert_eq!(parse(&d).unwrap_err(), ImageError::ReservedAddress);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn corrupted_good_images_never_panic(idx in 0usize..400, val in any::<u8>()) {
            let mut d = good();
            let i = idx % d.len();
            d[i] = val;
            let _ = parse(&d);
        }
    }
}
