//! dom0's disk: the first virtio-blk device on PCI bus 0, driven through `pv_devices` with
//! its interrupt as a PIRQ: the GSI the firmware routed its INTx to (the configuration
//! space's interrupt line), mapped with `PHYSDEVOP_map_pirq`, bound to an event channel
//! whose task ([`on_event`]) acknowledges the device, collects the completions and EOIs the
//! line. Nothing waits in a loop: [`io`] sleeps until the interrupt's event.

use crate::executor::{self, Task};
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use guest_abi::evtchn::Port;
use pv_devices::blk::{Disk, Done, Op, SubmitError};
use pv_runtime::{events, physdev, println};

struct State {
    disk: Disk,
    pirq: u32,
    port: Port,
    needs_eoi: bool,
    done: VecDeque<Done>,
    next_tag: u64,
}

static DISK: spin::Mutex<Option<State>> = spin::Mutex::new(None);

/// Finds and brings up the disk, with its DMA pool and interrupt (reports why not).
pub fn init(si: &'static pv_runtime::StartInfo, mem: &mut pv_runtime::mm::GuestMem) {
    let mut root = pv_devices::pci::root();
    let Some(&df) = pv_devices::blk::find(&root).first() else {
        println!("dom0: disk: no virtio disk on PCI bus 0");
        return;
    };
    let extents = pv_devices::dma::init(si, mem);
    if extents == 0 {
        println!("dom0: disk: no machine-contiguous memory for DMA (XENMEM_exchange refused)");
        return;
    }
    let disk = match Disk::probe(&mut root, df) {
        Ok(d) => d,
        Err(e) => {
            println!("dom0: disk: virtio-blk at {:02x}:{:02x}.{} not usable: {:?}", df.bus, df.device, df.function, e);
            return;
        }
    };
    let Some(line) = pv_devices::pci::interrupt_line(df) else {
        println!("dom0: disk: the firmware routed no interrupt line to the disk");
        return;
    };
    let (pirq, port) = match physdev::bind_gsi(line as i32) {
        Ok(x) => x,
        Err(e) => {
            println!("dom0: disk: GSI {}'s PIRQ refused: {:?}", line, e);
            return;
        }
    };
    let needs_eoi = physdev::status(pirq).is_ok_and(|f| f & guest_abi::physdev::XENIRQSTAT_NEEDS_EOI != 0);
    executor::init();
    if !executor::register(port, Task::Disk) {
        println!("dom0: disk: port {} is past what the executor tracks", port);
        return;
    }
    println!(
        "dom0: disk: virtio-blk at {:02x}:{:02x}.{}: {} sectors ({} MiB){}{}; GSI {} as PIRQ {} on port {}{}; DMA pool {} KiB",
        df.bus,
        df.device,
        df.function,
        disk.capacity,
        disk.capacity >> 11,
        if disk.readonly() { ", read-only" } else { "" },
        if disk.can_flush() { ", flush" } else { "" },
        line,
        pirq,
        port,
        if needs_eoi { " (level: EOI after each)" } else { "" },
        pv_devices::dma::free_pages() * 4
    );
    *DISK.lock() = Some(State { disk, pirq, port, needs_eoi, done: VecDeque::new(), next_tag: 1 });
}

/// The device's side of an interrupt: acknowledged (the line drops), completions taken,
/// the line EOI'd.
fn service(s: &mut State) {
    s.disk.ack_interrupt();
    while let Some(d) = s.disk.complete() {
        s.done.push_back(d);
    }
    if s.needs_eoi {
        physdev::eoi(s.pirq);
    }
}

/// The disk's event channel, if it is up.
pub fn port() -> Option<Port> {
    DISK.lock().as_ref().map(|s| s.port)
}

/// Tags of the block backend's requests: their completions go to it
/// ([`crate::blkback::completed`]).
pub const BACKEND_TAG: u64 = 1 << 63;

/// The disk's event (its task in the executor): the backend's completions handed to it,
/// then it may queue what waited for room.
pub fn on_event() -> bool {
    if crate::net::shared() {
        crate::net::on_event();
    }
    let backend: Vec<Done> = {
        let mut g = DISK.lock();
        let Some(s) = g.as_mut() else { return false };
        service(s);
        let (b, rest): (VecDeque<Done>, VecDeque<Done>) = s.done.drain(..).partition(|d| d.tag & BACKEND_TAG != 0);
        s.done = rest;
        b.into_iter().collect()
    };
    let any = !backend.is_empty();
    for d in backend {
        crate::blkback::completed(d);
    }
    if any {
        crate::blkback::push_all();
        crate::blkback::retry();
    }
    false
}

/// Queues a request of the block backend (`tag` with [`BACKEND_TAG`]); its completion
/// comes through [`on_event`].
pub fn submit(op: Op, sector: u64, data: Vec<u8>, tag: u64) -> Result<(), SubmitError> {
    match DISK.lock().as_mut() {
        Some(s) => s.disk.submit(op, sector, data, tag | BACKEND_TAG),
        None => Err(SubmitError::Invalid(data)),
    }
}

/// The disk's size in sectors, whether it flushes and is read-only (`None`: no disk).
pub fn geometry() -> Option<(u64, bool, bool)> {
    DISK.lock().as_ref().map(|s| (s.disk.capacity, s.disk.can_flush(), s.disk.readonly()))
}

/// Why [`io`] failed.
#[derive(Debug)]
pub enum IoError {
    NoDisk,
    /// Refused before it reached the device (bounds, read-only, no flush).
    Invalid,
    /// The device reported `VIRTIO_BLK_S_*` other than OK.
    #[allow(dead_code)] // read through `Debug` in reports
    Device(u8),
}

/// One request, waited for: submitted, then dom0 sleeps until the interrupt brings its
/// completion. Returns the buffer (read data, for a read).
pub fn io(op: Op, sector: u64, data: Vec<u8>) -> Result<Vec<u8>, IoError> {
    let (port, tag) = {
        let mut g = DISK.lock();
        let s = g.as_mut().ok_or(IoError::NoDisk)?;
        let tag = s.next_tag;
        s.next_tag += 1;
        let mut data = data;
        loop {
            match s.disk.submit(op, sector, data, tag) {
                Ok(()) => break,
                Err(SubmitError::Invalid(_)) => return Err(IoError::Invalid),
                Err(SubmitError::Full(d)) => {
                    data = d;
                    wait(s.port);
                    service(s);
                }
            }
        }
        (s.port, tag)
    };
    loop {
        {
            let mut g = DISK.lock();
            let s = g.as_mut().ok_or(IoError::NoDisk)?;
            if let Some(i) = s.done.iter().position(|d| d.tag == tag) {
                let d = s.done.remove(i).ok_or(IoError::NoDisk)?;
                return if d.status == pv_devices::blk::S_OK { Ok(d.data) } else { Err(IoError::Device(d.status)) };
            }
        }
        wait(port);
        on_event();
    }
}

/// Sleeps on the disk's interrupt until `done` holds (the disk's events handled meanwhile).
pub fn wait_until(mut done: impl FnMut() -> bool) {
    let Some(port) = DISK.lock().as_ref().map(|s| s.port) else { return };
    while !done() {
        wait(port);
        on_event();
    }
}

/// Sleeps until the disk's port has an event (taking it).
fn wait(port: Port) {
    events::block_until(|| executor::is_ready(port));
    executor::take(port);
}

/// The pattern the self-test writes: a byte of each disk offset.
pub fn pattern(offset: u64) -> u8 {
    (offset.wrapping_mul(7) ^ (offset >> 9)) as u8 ^ 0xA5
}

/// `disk-test=<sector>` on dom0's command line: 64 KiB of [`pattern`] written at that
/// sector, flushed, read back and compared (the host then checks the image file).
pub fn self_test(arg: &str) {
    let Ok(sector) = arg.parse::<u64>() else {
        println!("dom0: disk test: '{}' is no sector number", arg);
        return;
    };
    let len = 64 << 10;
    let data: Vec<u8> = (0..len as u64).map(|i| pattern(sector * 512 + i)).collect();
    let irq0 = DISK.lock().as_ref().map_or(0, |s| s.disk.interrupts);
    let w = io(Op::Write, sector, data.clone());
    let f = io(Op::Flush, 0, Vec::new());
    let r = io(Op::Read, sector, alloc::vec![0u8; len]);
    let irqs = DISK.lock().as_ref().map_or(0, |s| s.disk.interrupts) - irq0;
    let beyond = DISK.lock().as_ref().map_or(0, |s| s.disk.capacity);
    let past = io(Op::Read, beyond, alloc::vec![0u8; 512]);
    match (w, f, r) {
        (Ok(_), Ok(_), Ok(back)) if back == data => println!(
            "dom0: disk test: {} KiB written at sector {}, flushed, read back equal; {} interrupts; a read past the end: {:?}",
            len >> 10,
            sector,
            irqs,
            past.err()
        ),
        (w, f, r) => println!("dom0: disk test FAILED: write {:?}, flush {:?}, read {:?}", w.err(), f.err(), r.map(|b| b == data)),
    }
}

/// `bench-disk` on dom0's command line: dom0 reading and writing its disk directly:
/// sequential reads and writes of 4 KiB and 64 KiB requests over the first 16 MiB, and
/// 4 KiB reads at random places, one request at a time and then as many in flight as the
/// domU's benchmark keeps (8 of 4 KiB, 2 of 64 KiB). Prints ns per request (from the
/// pvclock, as the domU's `blk bench` does: `BENCH disk_dom0_<what>_qd<n>_ns=`).
pub fn bench() {
    let Some((cap, port)) = DISK.lock().as_ref().map(|s| (s.disk.capacity, s.port)) else {
        println!("dom0: disk bench: no disk");
        return;
    };
    let span = (16u64 << 11).min(cap);
    let mut seed = guest_abi::harness::DISK_BENCH_SEED;
    for (what, write, kib, random) in guest_abi::harness::DISK_BENCH {
        let op = if write { Op::Write } else { Op::Read };
        let sectors = kib * 2;
        let n = (span / sectors).min(1024);
        for qd in [1usize, (32 / (kib as usize / 4)).min(8)] {
            let mut bufs: Vec<Vec<u8>> = (0..qd).map(|_| alloc::vec![0x5Au8; (kib << 10) as usize]).collect();
            let (mut issued, mut done) = (0u64, 0u64);
            let t0 = events::system_time();
            while done < n {
                {
                    let mut g = DISK.lock();
                    let Some(s) = g.as_mut() else { return };
                    let mine: Vec<usize> = s.done.iter().enumerate().filter(|(_, d)| d.tag & BACKEND_TAG == 0 && d.tag < n).map(|(i, _)| i).collect();
                    for i in mine.into_iter().rev() {
                        if let Some(d) = s.done.remove(i) {
                            if d.status != pv_devices::blk::S_OK {
                                println!("dom0: disk bench: {} failed", what);
                                return;
                            }
                            bufs.push(d.data);
                            done += 1;
                        }
                    }
                    if done >= n {
                        break;
                    }
                    while issued < n && (issued - done) < qd as u64 {
                        let Some(b) = bufs.pop() else { break };
                        let at = guest_abi::harness::disk_bench_sector(random, &mut seed, issued, sectors, span);
                        match s.disk.submit(op, at, b, issued) {
                            Ok(()) => issued += 1,
                            Err(SubmitError::Full(b)) => {
                                bufs.push(b);
                                break;
                            }
                            Err(SubmitError::Invalid(_)) => {
                                println!("dom0: disk bench: {} refused at sector {}", what, at);
                                return;
                            }
                        }
                    }
                }
                wait(port);
                on_event();
            }
            let per = (events::system_time() - t0) / n.max(1);
            println!("BENCH disk_dom0_{}_qd{}_ns={}", what, qd, per);
        }
    }
}
