//! dom0's network device: the first virtio-net device on PCI bus 0, driven through
//! `pv_devices::net` with its interrupt as a PIRQ (as the disk's, `crate::disk`). The
//! switch's uplink (`crate::netback`): frames it receives go into the switch, frames the
//! switch sends out go through [`send`]. With `net-test` on dom0's command line it first
//! asks the network for the gateway's address (ARP) and waits for the answer.

use crate::executor::{self, Task};
use alloc::vec::Vec;
use guest_abi::evtchn::Port;
use pv_devices::net::Nic;
use pv_runtime::{events, physdev, println};

struct State {
    nic: Nic,
    pirq: u32,
    port: Port,
    rx: Vec<Vec<u8>>,
    /// `net-test` waits for frames: they are kept in `rx` too.
    keep: bool,
    /// Frames for the device while its transmit queue is full, sent as it frees up (at most
    /// [`BACKLOG`]: past that the switch's frames to the uplink are dropped).
    backlog: alloc::collections::VecDeque<Vec<u8>>,
}

/// Frames waiting for the device's transmit queue at most (a TCP window and more).
const BACKLOG: usize = 256;

/// Frames from the backlog into the device's queue while it has room.
fn drain(s: &mut State) {
    s.nic.sent();
    while let Some(f) = s.backlog.front() {
        if !s.nic.send(f) {
            break;
        }
        s.backlog.pop_front();
    }
}

static NET: spin::Mutex<Option<State>> = spin::Mutex::new(None);
/// The line is the disk's too: the disk's event serves this device as well.
static SHARED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Finds and brings up the device (the DMA pool made if the disk did not).
pub fn init(si: &'static pv_runtime::StartInfo, mem: &mut pv_runtime::mm::GuestMem) {
    let mut root = pv_devices::pci::root();
    let Some(&df) = pv_devices::net::find(&root).first() else { return };
    if pv_devices::dma::init(si, mem) == 0 {
        println!("dom0: net: no DMA memory");
        return;
    }
    let nic = match Nic::probe(&mut root, df) {
        Ok(n) => n,
        Err(e) => {
            println!("dom0: net: virtio-net at {:02x}:{:02x}.{} not usable: {:?}", df.bus, df.device, df.function, e);
            return;
        }
    };
    let Some(line) = pv_devices::pci::interrupt_line(df) else {
        println!("dom0: net: the firmware routed no interrupt line to the device");
        return;
    };
    executor::init();
    let (pirq, port) = match physdev::bind_gsi(line as i32) {
        Ok((pirq, p)) if executor::register(p, Task::Net) => (pirq, p),
        Ok((_, p)) => {
            println!("dom0: net: port {} is past what the executor tracks", p);
            return;
        }
        // The disk has this line already: its event serves both.
        Err(physdev::BindError::Bind(pirq, -17)) => {
            SHARED.store(true, core::sync::atomic::Ordering::SeqCst);
            (pirq, 0)
        }
        Err(e) => {
            println!("dom0: net: GSI {}'s PIRQ refused: {:?}", line, e);
            return;
        }
    };
    let m = nic.mac;
    println!(
        "dom0: net: virtio-net at {:02x}:{:02x}.{}: MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}; GSI {} as PIRQ {}{}",
        df.bus, df.device, df.function, m[0], m[1], m[2], m[3], m[4], m[5], line, pirq,
        if port == 0 { ", shared with the disk".into() } else { alloc::format!(" on port {}", port) }
    );
    *NET.lock() = Some(State { nic, pirq, port, rx: Vec::new(), keep: false, backlog: alloc::collections::VecDeque::new() });
}

/// The device's MAC, if dom0 has one.
pub fn mac() -> Option<[u8; 6]> {
    NET.lock().as_ref().map(|s| s.nic.mac)
}

/// Is the device's line the disk's?
pub fn shared() -> bool {
    SHARED.load(core::sync::atomic::Ordering::SeqCst)
}

/// The device's interrupt: acknowledged, frames sent let go (and the backlog sent in
/// their place), frames received handed to the switch, the line EOI'd.
pub fn on_event() -> bool {
    let mut g = NET.lock();
    let Some(s) = g.as_mut() else { return false };
    s.nic.ack_interrupt();
    drain(s);
    let mut frames = Vec::new();
    while let Some(f) = s.nic.recv() {
        if s.keep {
            if s.rx.len() == 64 {
                s.rx.remove(0);
            }
            s.rx.push(f.clone());
        }
        frames.push(f);
    }
    if s.port != 0 {
        physdev::eoi(s.pirq);
    }
    drop(g);
    // Into the switch, to the vifs (without the device's lock held: the switch sends
    // floods back out through `send`).
    crate::netback::from_uplink(frames);
    false
}

/// Sends `frame` out of the device (the switch's uplink), or queues it until the device
/// has room: false if there is no device or the backlog is full too.
pub fn send(frame: &[u8]) -> bool {
    let mut g = NET.lock();
    let Some(s) = g.as_mut() else { return false };
    drain(s);
    if s.backlog.is_empty() && s.nic.send(frame) {
        return true;
    }
    if s.backlog.len() >= BACKLOG {
        return false;
    }
    s.backlog.push_back(frame.to_vec());
    true
}

/// `net-test`: an ARP request for QEMU's user-network gateway (10.0.2.2) from 10.0.2.15;
/// waits (on the device's interrupt) for the reply and prints who answered.
pub fn self_test() {
    let (mac, port) = match NET.lock().as_mut() {
        Some(s) => {
            s.keep = true;
            (s.nic.mac, s.port)
        }
        None => {
            println!("dom0: net test: no network device");
            return;
        }
    };
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xFF; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[10, 0, 2, 15]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[10, 0, 2, 2]);
    let sent = NET.lock().as_mut().is_some_and(|s| s.nic.send(&f));
    let is_reply = |fr: &Vec<u8>| fr.len() >= 42 && fr[12..14] == [0x08, 0x06] && fr[20..22] == [0, 2] && fr[28..32] == [10, 0, 2, 2];
    loop {
        if let Some(s) = NET.lock().as_mut() {
            if let Some(r) = s.rx.iter().find(|fr| is_reply(fr)) {
                let m = &r[22..28];
                println!(
                    "dom0: net test: ARP request sent: {}; 10.0.2.2 is at {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}; {} interrupts",
                    sent, m[0], m[1], m[2], m[3], m[4], m[5], s.nic.interrupts
                );
                s.keep = false;
                s.rx.clear();
                return;
            }
        }
        // Sleep until the device's (or the shared disk's) event.
        let p = if port != 0 { port } else { crate::disk::port().unwrap_or(0) };
        events::block_until(|| executor::is_ready(p));
        executor::take(p);
        on_event();
        if port == 0 {
            crate::disk::on_event();
        }
    }
}
