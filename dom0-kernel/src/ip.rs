//! dom0's own port on its switch (what Linux's dom0 has as the bridge's address): with
//! `dom0-ip` on dom0's command line, an IP interface (`pv_net`'s `smoltcp` stack, its
//! address by DHCP from the uplink's network, written to dom0's `data/ip`) with the
//! switch's uplink MAC, answering pings, and a TCP sink on port 5001 that checks the test
//! pattern (`guest_abi::harness::net_pattern`) of each connection and says how fast it came.
//!
//! The switch hands frames for this port to [`input`] (queued: the switch's lock is held);
//! [`poll`] runs the stack from the executor (after the switch's tasks and on the timer
//! the stack asks for) and gives its frames to the switch.

use crate::executor::{self, Task};
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use guest_abi::harness::net_pattern;
use pv_net::smoltcp::iface::{SocketHandle, SocketStorage};

use pv_net::smoltcp::phy::{Device, DeviceCapabilities, Medium};
use pv_net::smoltcp::socket::tcp;
use pv_net::smoltcp::time::Instant;
use pv_net::Stack;
use pv_runtime::{events, println};

/// Frames waiting for the stack, and waiting to go out, at most.
const QUEUE: usize = 256;
/// The sink's port.
pub const SINK_PORT: u16 = 5001;

/// The stack's device: frames in from the switch, frames out to it.
pub struct Port {
    rx: VecDeque<Vec<u8>>,
    out: Vec<Vec<u8>>,
}

pub struct Rx(Vec<u8>);
pub struct Tx<'a>(&'a mut Vec<Vec<u8>>);

impl pv_net::smoltcp::phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl pv_net::smoltcp::phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = alloc::vec![0u8; len.min(pv_net::MTU)];
        let r = f(&mut b);
        self.0.push(b);
        r
    }
}

impl Device for Port {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _t: Instant) -> Option<(Rx, Tx<'_>)> {
        let f = self.rx.pop_front()?;
        Some((Rx(f), Tx(&mut self.out)))
    }

    fn transmit(&mut self, _t: Instant) -> Option<Tx<'_>> {
        (self.out.len() < QUEUE).then_some(Tx(&mut self.out))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = pv_net::MTU;
        c
    }
}

struct Sink {
    h: SocketHandle,
    got: u64,
    wrong: u64,
    t0: u64,
    /// When it last reported a connection (at most one report a second: a domU opening and
    /// closing connections in a loop cannot flood dom0's console).
    said: u64,
}

struct Ip {
    stack: Stack<'static, Port>,
    sink: Sink,
    /// The address last said and written to `data/ip`.
    said: Option<pv_net::smoltcp::wire::Ipv4Cidr>,
}

static IP: spin::Mutex<Option<Ip>> = spin::Mutex::new(None);
static INPUT: spin::Mutex<VecDeque<Vec<u8>>> = spin::Mutex::new(VecDeque::new());
static ON: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Is dom0's port on the switch up?
pub fn on() -> bool {
    ON.load(core::sync::atomic::Ordering::Relaxed)
}

/// Brings the port up with MAC `mac` (the uplink's), if dom0's command line asks.
pub fn init(mac: [u8; 6]) {
    if crate::cmdline_words().all(|w| w != "dom0-ip") {
        return;
    }
    match events::bind_virq(guest_abi::evtchn::VIRQ_TIMER, 0) {
        Ok(p) if executor::register(p, Task::Timer) => {}
        _ => {
            println!("dom0: ip: the timer VIRQ is not bound: no IP interface");
            return;
        }
    }
    let storage: &'static mut [SocketStorage<'static>] = &mut Box::leak(Box::new(pv_net::storage::<4>()))[..];
    let mut stack = Stack::on(Port { rx: VecDeque::new(), out: Vec::new() }, mac, storage);
    let rx: &'static mut [u8] = Box::leak(alloc::vec![0u8; 65535].into_boxed_slice());
    let tx: &'static mut [u8] = Box::leak(alloc::vec![0u8; 4096].into_boxed_slice());
    let h = stack.sockets.add(sink_socket(rx, tx));
    let _ = stack.sockets.get_mut::<tcp::Socket>(h).listen(SINK_PORT);
    *IP.lock() = Some(Ip { stack, sink: Sink { h, got: 0, wrong: 0, t0: 0, said: 0 }, said: None });
    ON.store(true, core::sync::atomic::Ordering::Relaxed);
    crate::netback::bind_local(mac);
    println!("dom0: ip: an interface on xenbr0 (DHCP), a TCP sink on port {}", SINK_PORT);
    poll();
}

/// A frame from the switch for this port (dropped when the queue is full).
pub fn input(frame: &[u8]) {
    let mut q = INPUT.lock();
    if q.len() < QUEUE {
        q.push_back(frame.to_vec());
    }
}

/// Runs the stack: frames in, the sink served, frames out to the switch, the timer set
/// for the stack's next deadline.
pub fn poll() {
    if !on() {
        return;
    }
    for _ in 0..64 {
        let (out, more) = {
            let mut g = IP.lock();
            let Some(ip) = g.as_mut() else { return };
            ip.stack.nic.rx.extend(INPUT.lock().drain(..));
            ip.stack.poll();
            serve_sink(ip);
            if ip.stack.addr != ip.said {
                // Every change of the lease is said and written (a new address, or none).
                ip.said = ip.stack.addr;
                match ip.said {
                    Some(a) => {
                        println!("dom0: ip: DHCP: {} via {:?}", a, ip.stack.router);
                        let _ = crate::xs::write(0, "/local/domain/0/data/ip", alloc::format!("{}", a.address()).as_bytes());
                    }
                    None => {
                        println!("dom0: ip: the DHCP lease is gone");
                        let _ = crate::xs::rm(0, "/local/domain/0/data/ip");
                    }
                }
                crate::script::resume();
            }
            let next = ip.stack.next_poll().unwrap_or(events::system_time() + 1_000_000_000);
            events::set_timer(next.max(events::system_time() + 100_000));
            (core::mem::take(&mut ip.stack.nic.out), !ip.stack.nic.rx.is_empty())
        };
        let sent = !out.is_empty();
        crate::netback::from_local(out);
        if !sent && !more && INPUT.lock().is_empty() {
            return;
        }
    }
}

/// The sink's socket: a connection quiet for 10 s (or a handshake that never completes)
/// is dropped, so no sender can hold the one sink.
fn sink_socket(rx: &'static mut [u8], tx: &'static mut [u8]) -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx));
    s.set_timeout(Some(pv_net::smoltcp::time::Duration::from_secs(10)));
    s.set_keep_alive(Some(pv_net::smoltcp::time::Duration::from_secs(2)));
    s
}

fn serve_sink(ip: &mut Ip) {
    let s = ip.stack.sockets.get_mut::<tcp::Socket>(ip.sink.h);
    let k = &mut ip.sink;
    let mut buf = [0u8; 2048];
    while s.can_recv() {
        let Ok(n) = s.recv_slice(&mut buf) else { break };
        if n == 0 {
            break;
        }
        if k.got == 0 {
            k.t0 = events::system_time();
        }
        for (i, &b) in buf[..n].iter().enumerate() {
            if b != net_pattern(k.got + i as u64) {
                k.wrong += 1;
            }
        }
        k.got += n as u64;
    }
    if s.state() == tcp::State::CloseWait || (!s.is_open() && k.got > 0) {
        let now = events::system_time();
        // An empty connection says nothing (its figures would be meaningless).
        if k.got > 0 && (k.said == 0 || now.saturating_sub(k.said) >= 1_000_000_000) {
            k.said = now;
            let us = ((now - k.t0) / 1000).max(1);
            println!("dom0: sink: {} bytes in {} ms ({} KiB/s), {} wrong", k.got, us / 1000, k.got * 1_000_000 / 1024 / us, k.wrong);
            println!("BENCH net_tcp_domu_dom0_kib_s={}", k.got * 1_000_000 / 1024 / us);
        }
        s.close();
        k.got = 0;
        k.wrong = 0;
    }
    if !s.is_open() {
        let _ = s.listen(SINK_PORT);
    }
}
