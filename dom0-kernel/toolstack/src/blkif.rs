//! PV block, the parts that need no hypervisor: `disk = [...]` specs, virtual device
//! numbers, the backend's reading of a frontend's ring (indexes, requests, segments) with
//! every rule a hostile frontend could break, and GPT partition tables.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use guest_abi::io::blkif::*;

/// One `disk = [...]` entry: `[phy:]<target>,<vdev>[,<mode>]` (positional, as xl's
/// `xl-disk-configuration`): `target` names one of dom0's virtio disks (`vda`, `vdb`, ...
/// in PCI order) or a GPT partition of one (`vda1`, ...); `vdev` the guest's name for it
/// (`xvda`...); `mode` `w` (default) or `r`. `target=`, `vdev=` and `access=` keys may be
/// given instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    pub target: String,
    pub vdev: String,
    pub devid: u32,
    pub readonly: bool,
}

/// The IDE majors of `hda`–`hdd` (two disks each, minor 0 and 64), as `xen-vbd-interface`.
const HD_MAJORS: [u32; 2] = [3, 22];
const SD_MAJOR: u32 = 8;

/// A virtual device name → its Xen virtual device number (`xen-vbd-interface`): `xvd<letters>`
/// (202 << 8 | disk << 4 below disk 16, the extended form above), `hda`–`hdd` (majors 3 and
/// 22, minor 0 or 64; Mini-OS's blkfront asks for 768, `hda`) and `sda`–`sdp` (8 << 8 |
/// disk << 4).
pub fn vdev_devid(vdev: &str) -> Option<u32> {
    let one = |s: &str, n: u8| s.len() == 1 && (b'a'..b'a' + n).contains(&s.as_bytes()[0]);
    if let Some(l) = vdev.strip_prefix("hd").filter(|l| one(l, 4)) {
        let d = (l.as_bytes()[0] - b'a') as u32;
        return Some((HD_MAJORS[d as usize / 2] << 8) | ((d % 2) * 64));
    }
    if let Some(l) = vdev.strip_prefix("sd").filter(|l| one(l, 16)) {
        return Some(SD_MAJOR << 8 | ((l.as_bytes()[0] - b'a') as u32) << 4);
    }
    let letters = vdev.strip_prefix("xvd")?;
    if letters.is_empty() || letters.len() > 2 || !letters.bytes().all(|b| b.is_ascii_lowercase()) {
        return None;
    }
    let idx = letters.bytes().fold(0u32, |n, b| n * 26 + (b - b'a') as u32 + 1) - 1;
    Some(if idx < 16 { 202 << 8 | idx << 4 } else { 1 << 28 | idx << 8 })
}

/// The name of a virtual device number (`xvd`, or `hd`/`sd` in their ranges).
pub fn devid_name(devid: u32) -> String {
    let letter = |i: u32| (b'a' + i as u8) as char;
    let (major, minor) = (devid >> 8, devid & 0xFF);
    if devid & (1 << 28) == 0 {
        if let Some(k) = HD_MAJORS.iter().position(|&m| m == major).filter(|_| minor == 0 || minor == 64) {
            return format!("hd{}", letter(2 * k as u32 + minor / 64));
        }
        if major == SD_MAJOR && minor & 15 == 0 {
            return format!("sd{}", letter(minor >> 4));
        }
    }
    let idx = if devid & (1 << 28) != 0 { (devid >> 8) & 0xFFFFF } else { (devid >> 4) & 15 };
    let mut s = String::new();
    let mut n = idx + 1;
    while n > 0 {
        n -= 1;
        s.insert(0, (b'a' + (n % 26) as u8) as char);
        n /= 26;
    }
    format!("xvd{s}")
}

/// A dom0 disk target: (disk index, partition number; 0 = the whole disk).
pub fn target_disk(target: &str) -> Option<(usize, usize)> {
    let t = target.strip_prefix("/dev/").unwrap_or(target).strip_prefix("vd")?;
    let letter = *t.as_bytes().first()?;
    if !letter.is_ascii_lowercase() {
        return None;
    }
    let part = &t[1..];
    let p = if part.is_empty() { 0 } else { part.parse::<usize>().ok().filter(|p| (1..=128).contains(p))? };
    Some(((letter - b'a') as usize, p))
}

pub fn parse_disk(spec: &str) -> Result<DiskSpec, String> {
    let bad = |why: &str| format!("invalid disk spec '{spec}': {why}");
    let (mut target, mut vdev, mut mode) = (None, None, None);
    let mut positional = 0;
    for part in spec.split(',').map(str::trim) {
        match part.split_once('=') {
            Some(("target", v)) => target = Some(v),
            Some(("vdev", v)) => vdev = Some(v),
            Some(("access", v)) => mode = Some(v),
            Some(("format" | "devtype" | "backendtype" | "script", _)) => {}
            Some((k, _)) => return Err(bad(&format!("unknown key '{k}'"))),
            None => {
                match positional {
                    0 => target = Some(part),
                    1 => vdev = Some(part),
                    2 => mode = Some(part),
                    _ => return Err(bad("too many fields")),
                }
                positional += 1;
            }
        }
    }
    let target = target.ok_or_else(|| bad("no target"))?;
    let target = target.strip_prefix("phy:").unwrap_or(target);
    target_disk(target).ok_or_else(|| bad("the target must be one of dom0's disks (vda, vdb, ...) or a partition of one (vda1, ...)"))?;
    let vdev = vdev.ok_or_else(|| bad("no vdev"))?;
    let devid = vdev_devid(vdev).ok_or_else(|| bad("the vdev must be xvda, xvdb, ..., hda-hdd or sda-sdp"))?;
    let readonly = match mode.unwrap_or("w") {
        "w" | "rw" => false,
        "r" | "ro" => true,
        m => return Err(bad(&format!("unknown mode '{m}'"))),
    };
    Ok(DiskSpec { target: target.to_string(), vdev: vdev.to_string(), devid, readonly })
}

/// What the backend serves: sectors `[start, start + sectors)` of a disk.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Vbd {
    pub start: u64,
    pub sectors: u64,
    pub readonly: bool,
    pub flush: bool,
    /// `feature-max-indirect-segments` offered (0: none).
    pub max_indirect: u32,
}

/// One segment: sectors `first..=last` of granted page `gref`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Seg {
    pub gref: u32,
    pub first: u8,
    pub last: u8,
}

impl Seg {
    pub fn sectors(&self) -> u64 {
        (self.last - self.first) as u64 + 1
    }
}

/// A request as read from the ring (copied out first: the frontend may change the entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// A read or write with its segments in the entry.
    Io { write: bool, sector: u64, segs: Vec<Seg> },
    /// A read or write whose segments are in granted pages (`OP_INDIRECT`).
    Indirect { write: bool, sector: u64, nr_segments: u32, pages: Vec<u32> },
    Flush,
    /// Known but not offered here (barrier, discard), or not known at all.
    Unsupported(u8),
}

fn u16le(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32le(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64le(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]))
}

/// Reads one ring entry: the request's id (for the response), its operation and what it
/// asks. A direct request's segment count past 11 is `Err` (with the id): refused.
pub fn parse(e: &[u8; ENTRY_SIZE]) -> (u64, u8, Result<Request, i16>) {
    let op = e[req::OPERATION];
    if op == OP_INDIRECT {
        let id = u64le(e, indirect::ID);
        let iop = e[indirect::OP];
        let n = u16le(e, indirect::NR_SEGMENTS) as u32;
        let pages = (n as usize).div_ceil(SEGS_PER_INDIRECT_FRAME);
        let r = match iop {
            OP_READ | OP_WRITE if n >= 1 && pages <= MAX_INDIRECT_PAGES => Ok(Request::Indirect {
                write: iop == OP_WRITE,
                sector: u64le(e, indirect::SECTOR),
                nr_segments: n,
                pages: (0..pages).map(|k| u32le(e, indirect::GREFS + 4 * k)).collect(),
            }),
            OP_READ | OP_WRITE => Err(RSP_ERROR),
            _ => Err(RSP_EOPNOTSUPP),
        };
        return (id, iop, r);
    }
    let id = u64le(e, req::ID);
    let n = e[req::NR_SEGMENTS] as usize;
    let r = match op {
        OP_READ | OP_WRITE if (1..=MAX_SEGMENTS_PER_REQUEST).contains(&n) => Ok(Request::Io {
            write: op == OP_WRITE,
            sector: u64le(e, req::SECTOR),
            segs: (0..n).map(|k| seg_at(e, req::SEG + req::SEG_SIZE * k)).collect(),
        }),
        OP_READ | OP_WRITE => Err(RSP_ERROR),
        OP_FLUSH_DISKCACHE => Ok(Request::Flush),
        other => Ok(Request::Unsupported(other)),
    };
    (id, op, r)
}

fn seg_at(b: &[u8], o: usize) -> Seg {
    Seg { gref: u32le(b, o), first: b[o + 4], last: b[o + 5] }
}

/// The segments of an indirect request: `n` of them from its pages (each page's bytes
/// given in order; at most [`SEGS_PER_INDIRECT_FRAME`] per page).
pub fn indirect_segments(pages: &[&[u8]], n: u32) -> Vec<Seg> {
    (0..n as usize)
        .filter_map(|k| pages.get(k / SEGS_PER_INDIRECT_FRAME).map(|p| (p, 8 * (k % SEGS_PER_INDIRECT_FRAME))))
        .filter(|(p, o)| p.len() >= o + 8)
        .map(|(p, o)| seg_at(p, o))
        .collect()
}

/// Checks a read or write against the vbd: every segment inside its page
/// (`first <= last < 8`), at most the offered count, inside the vbd, no write to a
/// read-only one. The disk sector it starts at and its sectors, or the status to answer.
pub fn check(vbd: &Vbd, write: bool, sector: u64, segs: &[Seg], indirect: bool) -> Result<(u64, u64), i16> {
    let max = if indirect { vbd.max_indirect as usize } else { MAX_SEGMENTS_PER_REQUEST };
    if segs.is_empty() || segs.len() > max {
        return Err(RSP_ERROR);
    }
    if write && vbd.readonly {
        return Err(RSP_ERROR);
    }
    if segs.iter().any(|s| s.first > s.last || s.last >= SECTORS_PER_PAGE) {
        return Err(RSP_ERROR);
    }
    let n: u64 = segs.iter().map(Seg::sectors).sum();
    match sector.checked_add(n) {
        Some(end) if end <= vbd.sectors => Ok((vbd.start + sector, n)),
        _ => Err(RSP_ERROR),
    }
}

/// A frontend's ring indexes that no ring can have.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BadIndexes;

/// New requests between the backend's `req_cons` and the frontend's `req_prod`, or `Err`
/// when the frontend claims more than the ring holds beyond the responses not yet pushed
/// (`rsp_prod_pvt`): garbage indexes, and the ring is not read any further.
pub fn pending(req_prod: u32, req_cons: u32, rsp_prod_pvt: u32) -> Result<u32, BadIndexes> {
    ring_pending(RING_SIZE, req_prod, req_cons, rsp_prod_pvt)
}

/// [`pending`] for a ring of `size` entries (every `io/ring.h` ring).
pub fn ring_pending(size: u32, req_prod: u32, req_cons: u32, rsp_prod_pvt: u32) -> Result<u32, BadIndexes> {
    let n = req_prod.wrapping_sub(req_cons);
    if n > size || req_prod.wrapping_sub(rsp_prod_pvt) > size {
        return Err(BadIndexes);
    }
    Ok(n)
}

/// A response entry.
pub fn response(id: u64, op: u8, status: i16) -> [u8; 16] {
    let mut r = [0u8; 16];
    r[rsp::ID..rsp::ID + 8].copy_from_slice(&id.to_le_bytes());
    r[rsp::OPERATION] = op;
    r[rsp::STATUS..rsp::STATUS + 2].copy_from_slice(&status.to_le_bytes());
    r
}

/// Byte offset of ring entry `idx` in the ring page.
pub fn entry_offset(idx: u32) -> usize {
    RING_HEADER + ENTRY_SIZE * (idx % RING_SIZE) as usize
}

/// CRC-32 (IEEE, reflected), as GPT uses.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}

/// A GPT partition: its first and last sector (inclusive).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub first: u64,
    pub last: u64,
}

/// The partitions of a GPT disk of `sectors` sectors: `header` is LBA 1, `entries` the
/// partition entry array it names (read by the caller from `entries_at()`). The header's
/// signature, size and CRC, the array's CRC and every entry's bounds are checked; unused
/// entries come back as `None` (so numbering stays the table's, 1-based).
pub fn gpt(header: &[u8], entries: &[u8], sectors: u64) -> Result<Vec<Option<Partition>>, String> {
    let (n, size, _) = gpt_array(header)?;
    if entries.len() < n * size {
        return Err("partition array cut short".into());
    }
    if crc32(&entries[..n * size]) != u32le(header, 88) {
        return Err("partition array CRC mismatch".into());
    }
    // Partitions lie in the header's usable LBAs (after the table, before the backup) and
    // do not overlap: a partition's domain cannot reach the table or another partition.
    let (usable_first, usable_last) = (u64le(header, 40), u64le(header, 48));
    if usable_first < 2 || usable_first > usable_last || usable_last >= sectors {
        return Err("bad usable LBAs in the GPT header".into());
    }
    let mut out: Vec<Option<Partition>> = Vec::new();
    for k in 0..n {
        let e = &entries[k * size..(k + 1) * size];
        if e[..16].iter().all(|&b| b == 0) {
            out.push(None);
            continue;
        }
        let (first, last) = (u64le(e, 32), u64le(e, 40));
        if first > last || first < usable_first || last > usable_last {
            return Err(format!("partition {} out of the disk's usable sectors", k + 1));
        }
        if let Some(j) = out.iter().position(|p| p.is_some_and(|p| p.first <= last && first <= p.last)) {
            return Err(format!("partitions {} and {} overlap", j + 1, k + 1));
        }
        out.push(Some(Partition { first, last }));
    }
    Ok(out)
}

/// From a GPT header (LBA 1): (number of entries, entry size, first LBA of the array),
/// the header checked.
pub fn gpt_array(h: &[u8]) -> Result<(usize, usize, u64), String> {
    if h.len() < 92 || &h[..8] != b"EFI PART" {
        return Err("no GPT".into());
    }
    let hsize = u32le(h, 12) as usize;
    if !(92..=h.len()).contains(&hsize) {
        return Err("bad GPT header size".into());
    }
    let mut copy = h[..hsize].to_vec();
    copy[16..20].fill(0);
    if crc32(&copy) != u32le(h, 16) {
        return Err("GPT header CRC mismatch".into());
    }
    let (n, size) = (u32le(h, 80) as usize, u32le(h, 84) as usize);
    if n == 0 || n > 128 || !(128..=512).contains(&size) || size % 8 != 0 {
        return Err("bad GPT partition array".into());
    }
    Ok((n, size, u64le(h, 72)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vdevs() {
        assert_eq!(vdev_devid("xvda"), Some(51712));
        assert_eq!(vdev_devid("xvdb"), Some(51728));
        assert_eq!(vdev_devid("xvdp"), Some(202 << 8 | 15 << 4));
        assert_eq!(vdev_devid("xvdq"), Some(1 << 28 | 16 << 8));
        assert_eq!(vdev_devid("xvd"), None);
        assert_eq!(vdev_devid("hda"), Some(768), "Mini-OS's blkfront device");
        assert_eq!(vdev_devid("hdb"), Some(832));
        assert_eq!(vdev_devid("hdd"), Some(22 << 8 | 64));
        assert_eq!(vdev_devid("sdb"), Some(8 << 8 | 16));
        assert_eq!(vdev_devid("hde"), None);
        assert_eq!(vdev_devid("sdq"), None);
        assert_eq!(vdev_devid("hd"), None);
        assert_eq!(vdev_devid("sdaa"), None);
        assert_eq!(vdev_devid("xvdA"), None);
        for n in ["xvda", "xvdb", "xvdp", "xvdq", "xvdz", "xvdaa", "xvdzz", "hda", "hdb", "hdc", "hdd", "sda", "sdp"] {
            assert_eq!(devid_name(vdev_devid(n).unwrap()), n);
        }
    }

    #[test]
    fn disk_specs() {
        let d = parse_disk("vda,xvda,w").unwrap();
        assert_eq!(d, DiskSpec { target: "vda".into(), vdev: "xvda".into(), devid: 51712, readonly: false });
        assert!(parse_disk("phy:vda2,xvdb,r").unwrap().readonly);
        assert_eq!(parse_disk("phy:vda2,xvdb").unwrap().target, "vda2");
        assert_eq!(parse_disk("target=vdb1,vdev=xvdc,access=ro").unwrap(), DiskSpec { target: "vdb1".into(), vdev: "xvdc".into(), devid: 51744, readonly: true });
        assert_eq!(parse_disk("vda,hda,w").unwrap().devid, 768);
        for bad in ["", "vda", "vda,hde,w", "/img/x.img,xvda,w", "vda,xvda,x", "vda,xvda,w,extra", "vda0,xvda", "vda129,xvda", "color=red,vda,xvda"] {
            assert!(parse_disk(bad).is_err(), "{bad}");
        }
        assert_eq!(target_disk("vda"), Some((0, 0)));
        assert_eq!(target_disk("/dev/vdb12"), Some((1, 12)));
    }

    fn vbd() -> Vbd {
        Vbd { start: 2048, sectors: 1000, readonly: false, flush: true, max_indirect: 32 }
    }

    fn entry(op: u8, n: u8, id: u64, sector: u64, segs: &[(u32, u8, u8)]) -> [u8; ENTRY_SIZE] {
        let mut e = [0u8; ENTRY_SIZE];
        e[req::OPERATION] = op;
        e[req::NR_SEGMENTS] = n;
        e[req::ID..req::ID + 8].copy_from_slice(&id.to_le_bytes());
        e[req::SECTOR..req::SECTOR + 8].copy_from_slice(&sector.to_le_bytes());
        for (k, &(g, f, l)) in segs.iter().enumerate() {
            let o = req::SEG + req::SEG_SIZE * k;
            e[o..o + 4].copy_from_slice(&g.to_le_bytes());
            e[o + 4] = f;
            e[o + 5] = l;
        }
        e
    }

    #[test]
    fn requests() {
        let (id, op, r) = parse(&entry(OP_WRITE, 2, 77, 10, &[(9, 0, 7), (10, 0, 3)]));
        assert_eq!((id, op), (77, OP_WRITE));
        let Ok(Request::Io { write: true, sector: 10, segs }) = r else { panic!("{r:?}") };
        assert_eq!(check(&vbd(), true, 10, &segs, false), Ok((2058, 12)));
        assert_eq!(check(&Vbd { readonly: true, ..vbd() }, true, 10, &segs, false), Err(RSP_ERROR));
        assert_eq!(check(&vbd(), false, 989, &segs, false), Err(RSP_ERROR), "one sector past the end");
        assert_eq!(check(&vbd(), false, 988, &segs, false), Ok((2048 + 988, 12)));
        assert_eq!(check(&vbd(), false, u64::MAX - 3, &segs, false), Err(RSP_ERROR), "wrapping");
        assert_eq!(check(&vbd(), false, 0, &[Seg { gref: 1, first: 4, last: 3 }], false), Err(RSP_ERROR));
        assert_eq!(check(&vbd(), false, 0, &[Seg { gref: 1, first: 0, last: 8 }], false), Err(RSP_ERROR));
        assert_eq!(check(&vbd(), false, 0, &[], false), Err(RSP_ERROR));
        assert_eq!(parse(&entry(OP_READ, 0, 1, 0, &[])).2, Err(RSP_ERROR));
        assert_eq!(parse(&entry(OP_READ, 12, 1, 0, &[])).2, Err(RSP_ERROR));
        assert_eq!(parse(&entry(OP_FLUSH_DISKCACHE, 0, 5, 0, &[])), (5, OP_FLUSH_DISKCACHE, Ok(Request::Flush)));
        assert_eq!(parse(&entry(OP_DISCARD, 0, 5, 0, &[])).2, Ok(Request::Unsupported(OP_DISCARD)));
        assert_eq!(parse(&entry(200, 0, 5, 0, &[])).2, Ok(Request::Unsupported(200)));
        // Indirect: 40 segments in one page; more than the offered 32 refused at the check.
        let mut e = [0u8; ENTRY_SIZE];
        e[0] = OP_INDIRECT;
        e[indirect::OP] = OP_READ;
        e[indirect::NR_SEGMENTS..indirect::NR_SEGMENTS + 2].copy_from_slice(&40u16.to_le_bytes());
        e[indirect::ID..indirect::ID + 8].copy_from_slice(&9u64.to_le_bytes());
        e[indirect::GREFS..indirect::GREFS + 4].copy_from_slice(&33u32.to_le_bytes());
        let (id, op, r) = parse(&e);
        assert_eq!((id, op), (9, OP_READ));
        assert_eq!(r, Ok(Request::Indirect { write: false, sector: 0, nr_segments: 40, pages: alloc::vec![33] }));
        let mut page = alloc::vec![0u8; 4096];
        for k in 0..40 {
            page[8 * k..8 * k + 4].copy_from_slice(&(100 + k as u32).to_le_bytes());
            page[8 * k + 5] = 7;
        }
        let segs = indirect_segments(&[&page], 40);
        assert_eq!(segs.len(), 40);
        assert_eq!(segs[39], Seg { gref: 139, first: 0, last: 7 });
        assert_eq!(check(&vbd(), false, 0, &segs, true), Err(RSP_ERROR));
        assert_eq!(check(&vbd(), false, 0, &segs[..32], true), Ok((2048, 256)));
        assert_eq!(check(&vbd(), false, 0, &segs[..12], false), Err(RSP_ERROR), "12 direct segments");
        e[indirect::NR_SEGMENTS..indirect::NR_SEGMENTS + 2].copy_from_slice(&5000u16.to_le_bytes());
        assert_eq!(parse(&e).2, Err(RSP_ERROR), "more pages than an indirect request has");
        e[indirect::NR_SEGMENTS..indirect::NR_SEGMENTS + 2].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(parse(&e).2, Err(RSP_ERROR));
        e[indirect::OP] = OP_DISCARD;
        assert_eq!(parse(&e).2, Err(RSP_EOPNOTSUPP));
    }

    #[test]
    fn ring_indexes() {
        assert_eq!(pending(5, 5, 5), Ok(0));
        assert_eq!(pending(37, 5, 5), Ok(32));
        assert_eq!(pending(38, 5, 5), Err(BadIndexes));
        assert_eq!(pending(3, u32::MAX - 2, u32::MAX - 2), Ok(6), "wrapping");
        assert_eq!(pending(4, 5, 5), Err(BadIndexes), "req_prod behind req_cons");
        assert_eq!(pending(40, 30, 5), Err(BadIndexes), "more than the ring beyond the unanswered");
        assert_eq!(entry_offset(33), 64 + 112);
        let r = response(0x1122, OP_READ, RSP_ERROR);
        assert_eq!(&r[10..12], &(-1i16).to_le_bytes());
    }

    /// A GPT of `parts` on a disk of `sectors`, as `cargo xtask` writes it: (LBA 1, array).
    fn make_gpt(parts: &[(u64, u64)], sectors: u64) -> (Vec<u8>, Vec<u8>) {
        let mut arr = alloc::vec![0u8; 128 * 128];
        for (k, &(f, l)) in parts.iter().enumerate() {
            let e = &mut arr[k * 128..];
            e[..16].copy_from_slice(&[0xAF; 16]);
            e[16..32].copy_from_slice(&[k as u8 + 1; 16]);
            e[32..40].copy_from_slice(&f.to_le_bytes());
            e[40..48].copy_from_slice(&l.to_le_bytes());
        }
        let mut h = alloc::vec![0u8; 512];
        h[..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&1u64.to_le_bytes());
        h[32..40].copy_from_slice(&(sectors - 1).to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&(sectors - 34).to_le_bytes());
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32(&arr).to_le_bytes());
        let c = crc32(&h[..92]);
        h[16..20].copy_from_slice(&c.to_le_bytes());
        (h, arr)
    }

    #[test]
    fn gpt_tables() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let (h, a) = make_gpt(&[(34, 1000), (1001, 2000)], 2048);
        let p = gpt(&h, &a, 2048).unwrap();
        assert_eq!(p[0], Some(Partition { first: 34, last: 1000 }));
        assert_eq!(p[1], Some(Partition { first: 1001, last: 2000 }));
        assert_eq!(p[2], None);
        let (h2, a2) = make_gpt(&[(34, 1000), (1001, 2000)], 1500);
        assert!(gpt(&h2, &a2, 1500).is_err(), "partition 2 past the usable sectors");
        let (h3, a3) = make_gpt(&[(34, 1000), (900, 2000)], 2048);
        assert!(gpt(&h3, &a3, 2048).is_err(), "overlapping partitions");
        let (h4, a4) = make_gpt(&[(2, 1000)], 2048);
        assert!(gpt(&h4, &a4, 2048).is_err(), "a partition over the table");
        assert!(gpt(&h, &a, 1500).is_err(), "the header's usable range past the disk");
        let mut bad = h.clone();
        bad[40] ^= 1;
        assert!(gpt(&bad, &a, 2048).is_err(), "header CRC");
        let mut bad = a.clone();
        bad[33] ^= 1;
        assert!(gpt(&h, &bad, 2048).is_err(), "array CRC");
        assert!(gpt(&h[..50], &a, 2048).is_err());
        assert!(gpt(&[0u8; 512], &a, 2048).is_err());
    }

    proptest! {
        /// No entry bytes make `parse`/`check` panic, and whatever `check` accepts lies
        /// inside the vbd.
        #[test]
        fn any_entry(bytes in proptest::collection::vec(any::<u8>(), ENTRY_SIZE), page in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let e: [u8; ENTRY_SIZE] = bytes.try_into().unwrap();
            let v = vbd();
            match parse(&e).2 {
                Ok(Request::Io { write, sector, segs }) => {
                    if let Ok((start, n)) = check(&v, write, sector, &segs, false) {
                        prop_assert!(start >= v.start && start + n <= v.start + v.sectors);
                    }
                }
                Ok(Request::Indirect { write, sector, nr_segments, .. }) => {
                    let segs = indirect_segments(&[&page], nr_segments);
                    if let Ok((start, n)) = check(&v, write, sector, &segs, true) {
                        prop_assert!(start >= v.start && start + n <= v.start + v.sectors && segs.len() <= 32);
                    }
                }
                _ => {}
            }
        }

        #[test]
        fn any_gpt(h in proptest::collection::vec(any::<u8>(), 0..600), a in proptest::collection::vec(any::<u8>(), 0..2000)) {
            if let Ok(ps) = gpt(&h, &a, 1 << 20) {
                for p in ps.into_iter().flatten() {
                    prop_assert!(p.first <= p.last && p.last < 1 << 20);
                }
            }
        }
    }
}
