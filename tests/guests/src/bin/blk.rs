//! A domU on a PV block device (`pv_runtime::blkfront` against dom0's blkback), its lines
//! on the hypervisor's console (`console_io`). What it does comes from its command line:
//!
//! - `persist <sector>`: on its first boot (the device's sector `<sector>` holds no
//!   marker) writes 256 KiB of a pattern there (4 KiB, 44 KiB direct and 128 KiB indirect
//!   requests), flushes and reboots: the toolstack destroys it and builds it again. On the
//!   second boot it reads the data back and compares, then powers off.
//! - `ro <sector>`: a read-only device: writes refused, reads served.
//! - `part <seed>`: the whole device written with the pattern of `<seed>` and read back.
//! - `hostile`: bad requests (each must be refused), then garbage ring indexes (the
//!   backend stops reading the ring and closes the device).
//! - `closemid`: closes the device with a request in flight, powers off with another.
//! - `hot`: no device at first: waits for one to be attached, reads partition 1's
//!   pattern from it, writes `data/blk`, and closes when the backend asks (detach).
//! - `eio`: the disk fails reads of sector 1000 (the blk-eio scenario): that read is
//!   answered with an error, the others are served.
//! - `count`: the demo of `etc/xen/disk.cfg`: a counter in the device's first sector
//!   counted up (written and flushed), so each run of the demo says how many came before.
//! - `bench`: sequential 4 KiB and 64 KiB writes and reads, random 4 KiB reads, each as
//!   `BENCH disk_domu_<what>_ns=` (ns per request, from the pvclock).
#![no_std]
#![no_main]

use guest_abi::io::blkif::*;
use guest_abi::sched::ShutdownReason;
use pv_runtime::blkfront::Blkfront;
use pv_runtime::hypercall;

/// Lines on the hypervisor's console (`console_io`: shown as `(dN) ...` at once, while the
/// PV console ring's output stays in dom0 until someone attaches).
use pv_runtime::hvprintln as println;

const XVDA: u32 = 51712;
const MARK: &[u8; 8] = b"RXENBLK1";

/// The pattern byte at byte `off` of the device for `seed` (the host checks it).
fn pattern(seed: u8, off: u64) -> u8 {
    (off.wrapping_mul(13) ^ (off >> 11)) as u8 ^ seed
}

fn fill(buf: &mut [u8], seed: u8, at: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern(seed, at + i as u64);
    }
}

fn matches(buf: &[u8], seed: u8, at: u64) -> bool {
    buf.iter().enumerate().all(|(i, &b)| b == pattern(seed, at + i as u64))
}

static mut BUF: [u8; 256 << 10] = [0; 256 << 10];

fn buf() -> &'static mut [u8] {
    // SAFETY: one vCPU, and the buffer is only reached through this function by one
    // caller at a time (each mode below takes it once).
    unsafe { &mut *core::ptr::addr_of_mut!(BUF) }
}

fn end(ok: bool, what: &str) -> ! {
    println!("blk: {}: {}", what, if ok { "SUCCESS" } else { "FAILURE" });
    hypercall::shutdown(if ok { ShutdownReason::Poweroff } else { ShutdownReason::Crash })
}

/// Writes at `sector` in three sizes of request: 4 KiB, 44 KiB (11 direct segments),
/// the rest in requests as large as the backend takes (indirect).
fn write_all(f: &mut Blkfront, sector: u64, data: &[u8]) -> Result<(), i16> {
    let (a, rest) = data.split_at(4096);
    let (b, c) = rest.split_at(44 << 10);
    f.write(sector, a)?;
    f.write(sector + 8, b)?;
    f.write(sector + 8 + 88, c)
}

fn persist(si: &pv_runtime::StartInfo, f: &mut Blkfront, sector: u64) -> ! {
    let _ = si;
    let mut head = [0u8; 512];
    if f.read(sector + 512, &mut head).is_err() {
        end(false, "persist: reading the marker");
    }
    let b = buf();
    let at = sector * 512;
    if &head[..8] != MARK {
        fill(b, b'P', at);
        let w = write_all(f, sector, b);
        let mut m = [0u8; 512];
        m[..8].copy_from_slice(MARK);
        let wm = f.write(sector + 512, &m);
        let fl = f.flush();
        println!("blk: persist: {} KiB written at sector {}: {:?}, marker {:?}, flush {:?}; rebooting", b.len() >> 10, sector, w, wm, fl);
        if w.is_err() || wm.is_err() || fl.is_err() {
            end(false, "persist: writing");
        }
        hypercall::shutdown(ShutdownReason::Reboot)
    }
    b.fill(0);
    let r = f.read(sector, b);
    let ok = r.is_ok() && matches(b, b'P', at);
    println!("blk: persist: after the reboot, {} KiB read back at sector {}: {}", b.len() >> 10, sector, if ok { "equal" } else { "DIFFERENT" });
    end(ok, "persist")
}

fn readonly(f: &mut Blkfront, sector: u64) -> ! {
    let b = buf();
    let mut ok = f.readonly;
    println!("blk: ro: the backend says read-only: {}", f.readonly);
    let w = f.write(sector, &b[..4096]);
    println!("blk: ro: a write: {:?}", w);
    ok &= w == Err(RSP_ERROR);
    let r = f.read(sector, &mut b[..64 << 10]);
    ok &= r.is_ok() && matches(&b[..64 << 10], b'P', sector * 512);
    println!("blk: ro: a read of what persist wrote: {:?}, {}", r, if ok { "equal" } else { "different" });
    end(ok, "ro")
}

fn partition(f: &mut Blkfront, seed: u8) -> ! {
    let b = buf();
    let chunk = b.len() as u64 / 512;
    let mut ok = f.sectors > 0;
    let mut s = 0;
    while s < f.sectors && ok {
        let n = chunk.min(f.sectors - s) as usize * 512;
        fill(&mut b[..n], seed, s * 512);
        ok &= f.write(s, &b[..n]).is_ok();
        s += chunk;
    }
    ok &= f.flush().is_ok();
    s = 0;
    while s < f.sectors && ok {
        let n = chunk.min(f.sectors - s) as usize * 512;
        b[..n].fill(0);
        ok &= f.read(s, &mut b[..n]).is_ok() && matches(&b[..n], seed, s * 512);
        s += chunk;
    }
    // One sector past its end is refused.
    let past = f.read(f.sectors, &mut b[..512]);
    ok &= past == Err(RSP_ERROR);
    println!("blk: part {}: {} sectors written and read back, all mine: {}; past the end: {:?}", seed as char, f.sectors, ok, past);
    end(ok, "part")
}

fn entry(op: u8, segs: &[(u32, u8, u8)], sector: u64) -> [u8; ENTRY_SIZE] {
    let mut e = [0u8; ENTRY_SIZE];
    e[req::OPERATION] = op;
    e[req::NR_SEGMENTS] = segs.len() as u8;
    e[req::SECTOR..req::SECTOR + 8].copy_from_slice(&sector.to_le_bytes());
    for (k, &(g, first, last)) in segs.iter().enumerate() {
        let o = req::SEG + req::SEG_SIZE * k;
        e[o..o + 4].copy_from_slice(&g.to_le_bytes());
        e[o + 4] = first;
        e[o + 5] = last;
    }
    e
}

fn hostile(f: &mut Blkfront) -> ! {
    let g = f.data_gref(0);
    let end_sector = f.sectors;
    let mut ok = true;
    let mut expect = |what: &str, got: i16, want: i16| {
        println!("blk: hostile: {}: {}", what, got);
        ok &= got == want;
    };
    expect("a good read", f.raw(&entry(OP_READ, &[(g, 0, 7)], 0)), RSP_OKAY);
    expect("past the end", f.raw(&entry(OP_READ, &[(g, 0, 7)], end_sector - 4)), RSP_ERROR);
    expect("sector 2^64-1", f.raw(&entry(OP_READ, &[(g, 0, 7)], u64::MAX)), RSP_ERROR);
    expect("no segments", f.raw(&entry(OP_WRITE, &[], 0)), RSP_ERROR);
    let twelve = [(g, 0u8, 7u8); 12];
    let mut e = entry(OP_READ, &twelve[..11], 0);
    e[req::NR_SEGMENTS] = 12;
    expect("12 segments", f.raw(&e), RSP_ERROR);
    e[req::NR_SEGMENTS] = 255;
    expect("255 segments", f.raw(&e), RSP_ERROR);
    expect("first sector past the last", f.raw(&entry(OP_READ, &[(g, 5, 2)], 0)), RSP_ERROR);
    expect("sector 8 of a page", f.raw(&entry(OP_READ, &[(g, 0, 8)], 0)), RSP_ERROR);
    expect("a grant that does not exist", f.raw(&entry(OP_READ, &[(4000, 0, 7)], 0)), RSP_ERROR);
    expect("a write barrier", f.raw(&entry(OP_WRITE_BARRIER, &[], 0)), RSP_EOPNOTSUPP);
    expect("discard", f.raw(&entry(OP_DISCARD, &[], 0)), RSP_EOPNOTSUPP);
    expect("operation 77", f.raw(&entry(77, &[], 0)), RSP_EOPNOTSUPP);
    let mut ind = [0u8; ENTRY_SIZE];
    ind[0] = OP_INDIRECT;
    ind[indirect::OP] = OP_READ;
    ind[indirect::NR_SEGMENTS..indirect::NR_SEGMENTS + 2].copy_from_slice(&33u16.to_le_bytes());
    ind[indirect::GREFS..indirect::GREFS + 4].copy_from_slice(&f.data_gref(1).to_le_bytes());
    expect("indirect, 33 segments", f.raw(&ind), RSP_ERROR);
    ind[indirect::NR_SEGMENTS..indirect::NR_SEGMENTS + 2].copy_from_slice(&0xFFFFu16.to_le_bytes());
    expect("indirect, 65535 segments", f.raw(&ind), RSP_ERROR);
    ind[indirect::NR_SEGMENTS..indirect::NR_SEGMENTS + 2].copy_from_slice(&1u16.to_le_bytes());
    ind[indirect::GREFS..indirect::GREFS + 4].copy_from_slice(&4001u32.to_le_bytes());
    expect("indirect page not granted", f.raw(&ind), RSP_ERROR);
    expect("still served", f.raw(&entry(OP_READ, &[(g, 0, 7)], 8)), RSP_OKAY);
    // Garbage indexes: the producer far ahead of the consumer. The backend stops reading
    // this ring (and says so); the domain then powers off without waiting.
    let ring = f.ring();
    let p = ring.read_u32(REQ_PROD);
    ring.write_u32(REQ_PROD, p.wrapping_add(1000));
    pv_runtime::events::send(f.port());
    let st = f.await_close();
    println!("blk: hostile: after the garbage indexes the backend closed the device: state {}", st);
    end(ok, "hostile")
}

/// A request in flight when the frontend closes: the backend lets go of the ring without
/// answering into it; then one more in flight when the domain powers off.
fn close_mid(f: &mut Blkfront) -> ! {
    let e = entry(OP_READ, &[(f.data_gref(0), 0, 7), (f.data_gref(1), 0, 7)], 16);
    let ring = f.ring();
    let put = |k: u32| {
        ring.write(RING_HEADER + ENTRY_SIZE * (k % RING_SIZE) as usize, &e);
        ring.write_u32(REQ_PROD, k + 1);
    };
    let p = ring.read_u32(REQ_PROD);
    put(p);
    pv_runtime::events::send(f.port());
    let st = f.close();
    println!("blk: closemid: closed with a request in flight: backend state {}", st);
    put(p + 1);
    pv_runtime::events::send(f.port());
    end(st >= STATE_CLOSING, "closemid")
}

fn bench(f: &mut Blkfront) -> ! {
    // The ring's round trip alone: a request the backend answers without the disk.
    let t0 = pv_runtime::events::system_time();
    for _ in 0..200 {
        f.raw(&entry(77, &[], 0));
    }
    println!("BENCH disk_domu_null_ns={}", (pv_runtime::events::system_time() - t0) / 200);
    let b = buf();
    let span: u64 = (16u64 << 11).min(f.sectors);
    let mut seed = guest_abi::harness::DISK_BENCH_SEED;
    for (what, write, kib, random) in guest_abi::harness::DISK_BENCH {
        let sectors = kib * 2;
        let n = (span / sectors).min(1024);
        let len = (kib << 10) as usize;
        let pages = len / 4096;
        // One request at a time, then as many as the data pages hold (at most 8).
        for qd in [1, (pv_runtime::blkfront::DATA_PAGES / pages).min(8)] {
            let mut slots: [Option<u64>; 8] = [None; 8];
            let t0 = pv_runtime::events::system_time();
            let finish = |f: &mut Blkfront, slots: &mut [Option<u64>; 8], b: &mut [u8]| -> usize {
                let (id, st) = f.next_response();
                if st != RSP_OKAY {
                    end(false, "bench");
                }
                let k = slots.iter().position(|s| *s == Some(id)).unwrap_or(0);
                slots[k] = None;
                if !write {
                    f.page_read(k * pages, &mut b[..len]);
                }
                k
            };
            for i in 0..n {
                let at = guest_abi::harness::disk_bench_sector(random, &mut seed, i, sectors, span);
                let k = match slots[..qd].iter().position(|s| s.is_none()) {
                    Some(k) => k,
                    None => finish(f, &mut slots, b),
                };
                if write {
                    f.page_write(k * pages, &b[..len]);
                }
                slots[k] = Some(f.start(write, at, sectors as usize, k * pages, k));
            }
            while slots.iter().any(|s| s.is_some()) {
                finish(f, &mut slots, b);
            }
            let per = (pv_runtime::events::system_time() - t0) / n.max(1);
            println!("BENCH disk_domu_{}_qd{}_ns={}", what, qd, per);
        }
    }
    end(true, "bench")
}

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    let cmd = core::str::from_utf8(si.cmdline_bytes()).unwrap_or("");
    let mut w = cmd.split_ascii_whitespace();
    let mode = w.next().unwrap_or("");
    let arg = w.next().unwrap_or("0");
    if mode == "hot" {
        let up = Blkfront::await_device(si, XVDA);
        println!("blk: hot: xvda appeared: {}", up);
    }
    let mut f = match Blkfront::connect(si, XVDA) {
        Ok(f) => f,
        Err(e) => {
            println!("blk: connecting xvda failed: {:?}", e);
            end(false, mode)
        }
    };
    println!("blk: xvda connected: {} sectors{}{}, up to {} sectors a request", f.sectors, if f.readonly { ", read-only" } else { "" }, if f.flush { ", flush" } else { "" }, f.max_sectors());
    match mode {
        "persist" => persist(si, &mut f, arg.parse().unwrap_or(0)),
        "ro" => readonly(&mut f, arg.parse().unwrap_or(0)),
        "part" => partition(&mut f, arg.bytes().next().unwrap_or(b'?')),
        "hostile" => hostile(&mut f),
        "closemid" => close_mid(&mut f),
        "bench" => bench(&mut f),
        "eio" => {
            let b = buf();
            let bad = f.read(1000, &mut b[..4096]);
            let good = f.read(0, &mut b[..4096]);
            let after = f.read(2000, &mut b[..4096]);
            println!("blk: eio: sector 1000: {:?}; sector 0: {:?}; sector 2000: {:?}", bad, good, after);
            end(bad == Err(RSP_ERROR) && good.is_ok() && after.is_ok(), "eio")
        }
        "count" => {
            let mut s0 = [0u8; 512];
            let r = f.read(0, &mut s0);
            let n = if &s0[..8] == b"RXENCNT1" { u64::from_le_bytes(s0[8..16].try_into().unwrap_or([0; 8])) } else { 0 } + 1;
            s0[..8].copy_from_slice(b"RXENCNT1");
            s0[8..16].copy_from_slice(&n.to_le_bytes());
            let w = if f.readonly { Err(RSP_ERROR) } else { f.write(0, &s0).and_then(|()| f.flush()) };
            println!("blk: xvda ({} MiB): this is run {} of the disk demo (read {:?}, write and flush {:?})", f.sectors >> 11, n, r, w);
            end(r.is_ok() && w.is_ok(), "count")
        }
        "hot" => {
            let b = buf();
            let r = f.read(0, &mut b[..64 << 10]);
            let ok = r.is_ok() && matches(&b[..64 << 10], b'1', 0) && f.readonly;
            println!("blk: hot: read {:?}, partition 1's data: {}", r, ok);
            let _ = pv_runtime::xenbus::write("data/blk", b"done");
            let st = f.await_close();
            println!("blk: hot: the backend asked to close (state {}): closed", st);
            end(ok, "hot")
        }
        _ => end(false, "no mode"),
    }
}
