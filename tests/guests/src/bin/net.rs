//! A domU on a PV network interface (`pv_runtime::netfront` against dom0's netback and
//! switch), with TCP/IP from `pv_net` (smoltcp, DHCP from QEMU's user network through the
//! switch's uplink). What it does comes from its command line:
//!
//! - `http <n>`: serves `n` HTTP requests on port 80 (a "hello" page), then powers off.
//! - `sink <port> <bytes>`: takes one TCP connection on `port` and checks that `bytes`
//!   bytes of the pattern arrive, in order.
//! - `source <ip> <port> <bytes>`: pings `ip`, then sends it `bytes` bytes of the pattern
//!   over TCP to `port`.
//! - `fetch <port> <bytes>`: fetches `/pattern/<bytes>` over HTTP from the DHCP router's
//!   `port` (QEMU's user network: the host's loopback) and checks every byte.
//! - `post <port> <bytes>`: sends `bytes` bytes of the pattern to the same server
//!   (`PUT /sink`), which checks them and says how many it got.
//! - `hot <port> <bytes>`: no interface at first: waits for one (`xl network-attach`),
//!   then fetches as `fetch` does.
//! - `flood`: sends frames as fast as the ring takes them until the device is detached.
//! - `hostile`: transmit requests no frontend should send, each answered with an error
//!   while a good frame still goes, a frame with another vif's MAC; then a packet in more
//!   slots than allowed, and the backend closes the device.
//! - `stall`: never takes a frame off its receive ring (the backend queues some for it,
//!   then drops), until it is destroyed.
//! - `indexes tx|rx`: a transmit (or receive) ring whose `req_prod` claims more than the
//!   ring holds: the backend closes the device.
//!
//! Every verdict line says `SUCCESS` or `FAILURE`; the domain powers off (or crashes on a
//! failure).
#![no_std]
#![no_main]

use guest_abi::io::netif::*;
use guest_abi::sched::ShutdownReason;
use pv_net::smoltcp::iface::SocketStorage;
use pv_net::smoltcp::socket::{icmp, tcp};
use pv_net::smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, IpAddress, Ipv4Address};
use pv_net::Stack;
use pv_runtime::events::system_time;
use pv_runtime::netfront::Netfront;
use pv_runtime::{hvprintln as println, hypercall, xenbus};

const SEC: u64 = 1_000_000_000;

fn end(ok: bool, what: &str) -> ! {
    println!("net: {}: {}", what, if ok { "SUCCESS" } else { "FAILURE" });
    hypercall::shutdown(if ok { ShutdownReason::Poweroff } else { ShutdownReason::Crash })
}

/// Byte `i` of the pattern every transfer carries.
use guest_abi::harness::net_pattern as pattern;

/// `buf` filled with the pattern from byte `at` on (no further than `total`): how many.
fn fill(buf: &mut [u8], at: u64, total: u64) -> usize {
    let k = (total - at).min(buf.len() as u64) as usize;
    for (i, b) in buf[..k].iter_mut().enumerate() {
        *b = pattern(at + i as u64);
    }
    k
}

/// Queues as much of the pattern from byte `*sent` on (up to `total`) as the socket takes.
fn send_pattern(s: &mut tcp::Socket<'_>, sent: &mut u64, total: u64, sum: &mut Sum) {
    let mut buf = [0u8; 4096];
    while s.can_send() && *sent < total {
        let k = fill(&mut buf, *sent, total);
        let Ok(n) = s.send_slice(&buf[..k]) else { break };
        if n == 0 {
            break;
        }
        sum.add(&buf[..n]);
        *sent += n as u64;
    }
}

/// A running Fletcher-64 of what went by (printed by both ends).
#[derive(Default)]
struct Sum(u64, u64);

impl Sum {
    fn add(&mut self, b: &[u8]) {
        for &x in b {
            self.0 = (self.0 + x as u64) % 0xFFFF_FFFF;
            self.1 = (self.1 + self.0) % 0xFFFF_FFFF;
        }
    }
    fn value(&self) -> u64 {
        self.1 << 32 | self.0
    }
}

static mut SOCKETS: [SocketStorage<'static>; 4] = pv_net::storage::<4>();
static mut TCP_RX: [u8; 65535] = [0; 65535];
static mut TCP_TX: [u8; 65535] = [0; 65535];
static mut ICMP_RX: [u8; 1024] = [0; 1024];
static mut ICMP_TX: [u8; 1024] = [0; 1024];
static mut ICMP_RX_META: [icmp::PacketMetadata; 4] = [icmp::PacketMetadata::EMPTY; 4];
static mut ICMP_TX_META: [icmp::PacketMetadata; 4] = [icmp::PacketMetadata::EMPTY; 4];

/// The buffers, taken once.
fn tcp_socket() -> tcp::Socket<'static> {
    // SAFETY: called at most once per boot (each mode makes one TCP socket), so these
    // statics are borrowed by that socket alone.
    let (rx, tx) = unsafe { (&mut *core::ptr::addr_of_mut!(TCP_RX), &mut *core::ptr::addr_of_mut!(TCP_TX)) };
    tcp::Socket::new(tcp::SocketBuffer::new(&mut rx[..]), tcp::SocketBuffer::new(&mut tx[..]))
}

fn icmp_socket() -> icmp::Socket<'static> {
    // SAFETY: as for `tcp_socket` (one ICMP socket per boot).
    let (rm, rb, tm, tb) = unsafe {
        (
            &mut *core::ptr::addr_of_mut!(ICMP_RX_META),
            &mut *core::ptr::addr_of_mut!(ICMP_RX),
            &mut *core::ptr::addr_of_mut!(ICMP_TX_META),
            &mut *core::ptr::addr_of_mut!(ICMP_TX),
        )
    };
    icmp::Socket::new(icmp::PacketBuffer::new(&mut rm[..], &mut rb[..]), icmp::PacketBuffer::new(&mut tm[..], &mut tb[..]))
}

fn write_data(key: &str, value: &str) {
    let p = xenbus::Path::of(format_args!("data/{key}"));
    let _ = xenbus::write(p.as_str(), value.as_bytes());
}

/// `http <n>`: a tiny web server.
fn http(st: &mut Stack<'static>, n: u32) -> ! {
    let h = st.sockets.add(tcp_socket());
    let page = "hello from an rxen domU, over netfront, dom0's switch and smoltcp\n";
    let mut served = 0;
    let mut req = [0u8; 1024];
    while served < n {
        {
            let s = st.sockets.get_mut::<tcp::Socket>(h);
            if s.listen(80).is_err() {
                end(false, "http: listen");
            }
        }
        if served == 0 {
            println!("net: http: listening on port 80");
            write_data("http", "listening");
        }
        let mut got = 0;
        let mut answered = false;
        let ok = st.run_until(system_time() + 120 * SEC, |st| {
            let s = st.sockets.get_mut::<tcp::Socket>(h);
            if s.can_recv() && !answered {
                if let Ok(k) = s.recv_slice(&mut req[got..]) {
                    got += k;
                }
                if req[..got].windows(4).any(|w| w == b"\r\n\r\n") || got == req.len() {
                    let head = xenbus::Path::of(format_args!("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", page.len()));
                    let _ = s.send_slice(head.as_str().as_bytes());
                    let _ = s.send_slice(page.as_bytes());
                    s.close();
                    answered = true;
                }
            }
            answered && !s.is_active()
        });
        if !ok {
            end(false, "http: serving");
        }
        served += 1;
        let line = core::str::from_utf8(&req[..got]).unwrap_or("").lines().next().unwrap_or("");
        println!("net: http: answered '{}' ({} of {})", line, served, n);
    }
    end(true, "http")
}

/// `sink <port> <bytes>`.
fn sink(st: &mut Stack<'static>, port: u16, total: u64) -> ! {
    let h = st.sockets.add(tcp_socket());
    if st.sockets.get_mut::<tcp::Socket>(h).listen(port).is_err() {
        end(false, "sink: listen");
    }
    println!("net: sink: listening on port {}", port);
    write_data("sink", "listening");
    let mut got = 0u64;
    let mut bad = 0u64;
    let mut sum = Sum::default();
    let mut t0 = 0;
    let mut buf = [0u8; 4096];
    let ok = st.run_until(system_time() + 300 * SEC, |st| {
        let s = st.sockets.get_mut::<tcp::Socket>(h);
        while s.can_recv() {
            let Ok(k) = s.recv_slice(&mut buf) else { break };
            if k == 0 {
                break;
            }
            if t0 == 0 {
                t0 = system_time();
            }
            for (i, &b) in buf[..k].iter().enumerate() {
                if b != pattern(got + i as u64) {
                    bad += 1;
                }
            }
            sum.add(&buf[..k]);
            got += k as u64;
        }
        if got >= total || (!s.may_recv() && s.state() != tcp::State::Listen && s.state() != tcp::State::SynReceived) {
            s.close();
            return true;
        }
        false
    });
    let us = (system_time() - t0) / 1000;
    st.run_until(system_time() + 5 * SEC, |st| !st.sockets.get_mut::<tcp::Socket>(h).is_active());
    println!("net: sink: {} of {} bytes in {} ms ({} KiB/s), {} bytes wrong, Fletcher-64 {:#018x}", got, total, us / 1000, got * 1_000_000 / 1024 / us.max(1), bad, sum.value());
    end(ok && got == total && bad == 0, "sink")
}

/// Pings `ip` `n` times: replies, the mean round trip and the fastest (µs).
fn ping(st: &mut Stack<'static>, ip: Ipv4Address, n: u16) -> (u16, u64, u64) {
    let h = st.sockets.add(icmp_socket());
    let _ = st.sockets.get_mut::<icmp::Socket>(h).bind(icmp::Endpoint::Ident(0x5258));
    let (mut replies, mut total, mut best) = (0u16, 0u64, u64::MAX);
    for seq in 0..n {
        let sent = system_time();
        let mut sent_ok = false;
        let caps = pv_net::smoltcp::phy::ChecksumCapabilities::default();
        st.run_until(sent + 2 * SEC, |st| {
            let s = st.sockets.get_mut::<icmp::Socket>(h);
            if !sent_ok && s.can_send() {
                let repr = Icmpv4Repr::EchoRequest { ident: 0x5258, seq_no: seq, data: b"rxen ping" };
                if let Ok(b) = s.send(repr.buffer_len(), IpAddress::Ipv4(ip)) {
                    repr.emit(&mut Icmpv4Packet::new_unchecked(b), &caps);
                    sent_ok = true;
                }
            }
            while s.can_recv() {
                let Ok((data, _)) = s.recv() else { break };
                if let Ok(p) = Icmpv4Packet::new_checked(data) {
                    if let Ok(Icmpv4Repr::EchoReply { seq_no, .. }) = Icmpv4Repr::parse(&p, &caps) {
                        if seq_no == seq {
                            replies += 1;
                            total += system_time() - sent;
                            best = best.min(system_time() - sent);
                            return true;
                        }
                    }
                }
            }
            false
        });
    }
    st.sockets.remove(h);
    (replies, total / 1000 / replies.max(1) as u64, best / 1000)
}

/// Connects to `ip:port` (up to 30 s of tries): the socket.
fn connect(st: &mut Stack<'static>, ip: Ipv4Address, port: u16) -> pv_net::smoltcp::iface::SocketHandle {
    let h = st.sockets.add(tcp_socket());
    let local = 49152 + (pv_runtime::rdtsc() % 10000) as u16;
    let cx = st.iface.context();
    if st.sockets.get_mut::<tcp::Socket>(h).connect(cx, (IpAddress::Ipv4(ip), port), local).is_err() {
        end(false, "connect");
    }
    let up = st.run_until(system_time() + 30 * SEC, |st| {
        let s = st.sockets.get_mut::<tcp::Socket>(h);
        s.may_send() || !s.is_open()
    });
    if !up || !st.sockets.get_mut::<tcp::Socket>(h).may_send() {
        println!("net: connecting to {}:{} failed", ip, port);
        end(false, "connect");
    }
    h
}

/// `source <ip> <port> <bytes>`.
fn source(st: &mut Stack<'static>, ip: Ipv4Address, port: u16, total: u64) -> ! {
    // The first one also resolves the address (ARP): it is not counted.
    let (first, first_us, _) = ping(st, ip, 1);
    println!("net: source: ping {}: the first (with ARP) {} reply in {} us", ip, first, first_us);
    let (replies, rtt, best) = ping(st, ip, 8);
    println!("net: source: ping {}: {} of 8 replies, mean round trip {} us, fastest {} us", ip, replies, rtt, best);
    println!("BENCH net_ping_domu_domu_us={}", rtt);
    println!("BENCH net_ping_domu_domu_best_us={}", best);
    let h = connect(st, ip, port);
    let t0 = system_time();
    let mut sent = 0u64;
    let mut sum = Sum::default();
    let ok = st.run_until(t0 + 300 * SEC, |st| {
        let s = st.sockets.get_mut::<tcp::Socket>(h);
        send_pattern(s, &mut sent, total, &mut sum);
        if sent == total {
            s.close();
        }
        sent == total && !s.is_active() || !s.is_open() && sent < total
    });
    let us = (system_time() - t0) / 1000;
    println!("net: source: {} of {} bytes to {}:{} in {} ms ({} KiB/s), Fletcher-64 {:#018x}", sent, total, ip, port, us / 1000, sent * 1_000_000 / 1024 / us.max(1), sum.value());
    println!("BENCH net_tcp_domu_domu_kib_s={}", sent * 1_000_000 / 1024 / us.max(1));
    end(ok && sent == total && replies == 8 && first == 1, "source")
}

/// `fetch <port> <bytes>`.
fn fetch(st: &mut Stack<'static>, port: u16, total: u64) -> ! {
    let Some(router) = st.router else { end(false, "fetch: no router") };
    let h = connect(st, router, port);
    let req = xenbus::Path::of(format_args!("GET /pattern/{total} HTTP/1.0\r\nHost: host\r\n\r\n"));
    let _ = st.sockets.get_mut::<tcp::Socket>(h).send_slice(req.as_str().as_bytes());
    let t0 = system_time();
    let mut head = [0u8; 512];
    let mut hn = 0;
    let mut body: Option<u64> = None;
    let (mut bad, mut sum) = (0u64, Sum::default());
    let mut buf = [0u8; 4096];
    let ok = st.run_until(t0 + 300 * SEC, |st| {
        let s = st.sockets.get_mut::<tcp::Socket>(h);
        while s.can_recv() {
            let Ok(k) = s.recv_slice(&mut buf) else { break };
            if k == 0 {
                break;
            }
            let mut data = &buf[..k];
            if body.is_none() {
                let take = data.len().min(head.len() - hn);
                head[hn..hn + take].copy_from_slice(&data[..take]);
                hn += take;
                if let Some(e) = head[..hn].windows(4).position(|w| w == b"\r\n\r\n") {
                    let rest = hn - (e + 4);
                    data = &data[take - rest..];
                    body = Some(0);
                } else {
                    continue;
                }
            }
            let got = body.unwrap_or(0);
            for (i, &b) in data.iter().enumerate() {
                if b != pattern(got + i as u64) {
                    bad += 1;
                }
            }
            sum.add(data);
            body = Some(got + data.len() as u64);
        }
        !s.may_recv() && s.state() != tcp::State::SynSent
    });
    let got = body.unwrap_or(0);
    let us = (system_time() - t0) / 1000;
    let line_end = head[..hn].windows(2).position(|w| w == b"\r\n").unwrap_or(0);
    let status = core::str::from_utf8(&head[..line_end]).unwrap_or("");
    println!("net: fetch: '{}' from {}:{}", status, router, port);
    println!("net: fetch: {} of {} bytes in {} ms ({} KiB/s), {} bytes wrong, Fletcher-64 {:#018x}", got, total, us / 1000, got * 1_000_000 / 1024 / us.max(1), bad, sum.value());
    println!("BENCH net_tcp_host_domu_kib_s={}", got * 1_000_000 / 1024 / us.max(1));
    end(ok && got == total && bad == 0 && status.contains(" 200 "), "fetch")
}

/// `post <port> <bytes>`: the pattern uploaded to the host's server, which checks it.
fn post(st: &mut Stack<'static>, port: u16, total: u64) -> ! {
    let Some(router) = st.router else { end(false, "post: no router") };
    let h = connect(st, router, port);
    let head = xenbus::Path::of(format_args!("PUT /sink HTTP/1.0\r\nContent-Length: {total}\r\n\r\n"));
    let _ = st.sockets.get_mut::<tcp::Socket>(h).send_slice(head.as_str().as_bytes());
    let t0 = system_time();
    let mut sent = 0u64;
    let mut answer = [0u8; 256];
    let mut an = 0;
    let ok = st.run_until(t0 + 300 * SEC, |st| {
        let s = st.sockets.get_mut::<tcp::Socket>(h);
        send_pattern(s, &mut sent, total, &mut Sum::default());
        while s.can_recv() && an < answer.len() {
            let Ok(k) = s.recv_slice(&mut answer[an..]) else { break };
            if k == 0 {
                break;
            }
            an += k;
        }
        !s.may_recv() && sent == total
    });
    let us = (system_time() - t0) / 1000;
    let text = core::str::from_utf8(&answer[..an]).unwrap_or("");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").trim();
    println!("net: post: {} of {} bytes to {}:{} in {} ms ({} KiB/s)", sent, total, router, port, us / 1000, sent * 1_000_000 / 1024 / us.max(1));
    println!("net: post: the host says '{}'", body);
    println!("BENCH net_tcp_domu_host_kib_s={}", sent * 1_000_000 / 1024 / us.max(1));
    let want = xenbus::Path::of(format_args!("received {total} bytes, 0 wrong"));
    end(ok && body == want.as_str(), "post")
}

/// `flood`: frames to this interface's own MAC (the switch drops them after taking them
/// off the ring) as fast as the ring takes them, until the backend closes the device.
fn flood(nf: &mut Netfront) -> ! {
    let mut f = [0u8; 60];
    f[0..6].copy_from_slice(&nf.mac);
    f[6..12].copy_from_slice(&nf.mac);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    let mut sent = 0u64;
    let t0 = system_time();
    while !nf.closed {
        if nf.send(&f) {
            sent += 1;
            if sent == 1000 {
                write_data("flood", "started");
                println!("net: flood: 1000 frames sent");
            }
        } else {
            nf.wait(system_time() + SEC / 10);
        }
        if system_time() - t0 > 300 * SEC {
            end(false, "flood: never detached");
        }
    }
    let s = nf.close();
    println!("net: flood: the backend closed the device after {} frames (its state {}); closed", sent, s);
    end(sent >= 1000, "flood")
}

/// Status of transmit response at ring index `i`.
fn tx_status(nf: &Netfront, i: u32) -> (u16, i16) {
    let mut r = [0u8; 4];
    nf.tx_ring().read(RING_HEADER + TX_ENTRY * (i % RING_SIZE) as usize, &mut r);
    (u16::from_le_bytes([r[0], r[1]]), i16::from_le_bytes([r[2], r[3]]))
}

/// A hostile transmit request: what it is, gref, offset, flags, size, and the statuses
/// its slots must get.
type Case = (&'static str, u32, u16, u16, u16, &'static [i16]);

/// `hostile`: bad transmit requests.
fn hostile(nf: &mut Netfront) -> ! {
    let g = nf.tx_gref(0);
    let mut ok = true;
    let cases: &[Case] = &[
        ("a zero-length packet", g, 0, 0, 0, &[RSP_ERROR]),
        ("a packet shorter than an Ethernet header", g, 0, 0, 13, &[RSP_ERROR]),
        ("a packet longer than the MTU", g, 0, 0, 2000, &[RSP_ERROR]),
        ("a grant that does not exist", 480, 0, 0, 60, &[RSP_ERROR]),
        ("GSO extra info the backend did not offer", g, 0, NETTXF_EXTRA_INFO, 60, &[RSP_ERROR, RSP_NULL]),
        ("a good frame after all that", g, 0, 0, 60, &[RSP_OKAY]),
    ];
    let mut f = [0u8; 60];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&nf.mac);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    // Transmit page 0 holds a well-formed broadcast frame for every case.
    if !nf.send(&f) {
        end(false, "hostile: the first send");
    }
    nf.drain_tx(system_time() + 5 * SEC);
    let mut at = nf.tx_ring().read_u32(REQ_PROD);
    for &(what, gref, off, flags, size, want) in cases {
        nf.queue_tx(gref, off, flags, 500, size);
        if flags & NETTXF_EXTRA_INFO != 0 {
            // The extra-info slot: type GSO, no more.
            nf.queue_tx(EXTRA_TYPE_GSO as u32, 0, 0, 0, 0);
        }
        nf.publish_tx();
        nf.drain_tx(system_time() + 5 * SEC);
        let got: [(u16, i16); 2] = [tx_status(nf, at), tx_status(nf, at + 1)];
        let good = want.iter().enumerate().all(|(k, &w)| got[k].1 == w);
        println!("net: hostile: {}: {:?} (want {:?}): {}", what, &got[..want.len()], want, if good { "ok" } else { "WRONG" });
        ok &= good;
        at += want.len() as u32;
    }
    // 300 broadcasts (an unused ethertype): every other vif gets them, a stalled one
    // (`stall`) has them queued and then dropped.
    let mut sent = 0;
    for _ in 0..300 {
        while !nf.send(&f) {
            nf.wait(system_time() + SEC / 10);
        }
        sent += 1;
    }
    nf.drain_tx(system_time() + 5 * SEC);
    println!("net: hostile: {} broadcasts sent", sent);
    // A frame with another vif's source MAC (netsink's): taken off the ring (OKAY), but the
    // switch drops it (dom0 says so).
    let mut spoof = f;
    spoof[6..12].copy_from_slice(&[0x00, 0x16, 0x3e, 0x00, 0x00, 0x02]);
    ok &= nf.send(&spoof);
    nf.drain_tx(system_time() + 5 * SEC);
    // A DHCP server's answer (UDP from port 67, broadcast): a vif may not hand out
    // addresses; the switch drops it (dom0 says so).
    let mut offer = [0u8; 60];
    offer[0..6].copy_from_slice(&[0xff; 6]);
    offer[6..12].copy_from_slice(&nf.mac);
    offer[12..14].copy_from_slice(&[0x08, 0x00]);
    offer[14] = 0x45;
    offer[23] = 17;
    offer[34..38].copy_from_slice(&[0, 67, 0, 68]);
    ok &= nf.send(&offer);
    nf.drain_tx(system_time() + 5 * SEC);
    // A packet in 19 slots (more than XEN_NETIF_NR_SLOTS_MIN): the backend stops reading
    // the ring and closes the device.
    for k in 0..19u16 {
        nf.queue_tx(g, 0, if k < 18 { NETTXF_MORE_DATA } else { 0 }, 600 + k, 60);
    }
    nf.publish_tx();
    let t0 = system_time();
    while !nf.closed && system_time() - t0 < 20 * SEC {
        nf.wait(system_time() + SEC);
    }
    println!("net: hostile: a packet in 19 slots: the backend closed the device: {}", nf.closed);
    ok &= nf.closed;
    nf.close();
    end(ok, "hostile")
}

/// `indexes tx|rx`.
fn indexes(nf: &mut Netfront, which: &str) -> ! {
    if which == "tx" {
        let r = nf.tx_ring();
        r.write_u32(REQ_PROD, r.read_u32(REQ_PROD).wrapping_add(1000));
        pv_runtime::events::send(nf.port());
    } else {
        let r = nf.rx_ring();
        r.write_u32(REQ_PROD, r.read_u32(REQ_PROD).wrapping_add(5000));
        // An ARP request for the gateway: its answer comes to this vif's receive ring.
        let mut f = [0u8; 42];
        f[0..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&nf.mac);
        f[12..22].copy_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f[22..28].copy_from_slice(&nf.mac);
        f[28..32].copy_from_slice(&[10, 0, 2, 99]);
        f[38..42].copy_from_slice(&[10, 0, 2, 2]);
        nf.send(&f);
    }
    let t0 = system_time();
    while !nf.closed && system_time() - t0 < 20 * SEC {
        nf.wait(system_time() + SEC);
    }
    println!("net: indexes {}: the backend closed the device: {}", which, nf.closed);
    let ok = nf.closed;
    nf.close();
    end(ok, "indexes")
}

#[no_mangle]
fn guest_main(si: &'static pv_runtime::StartInfo) -> ! {
    let cmd = core::str::from_utf8(si.cmdline_bytes()).unwrap_or("");
    let mut w = cmd.split_ascii_whitespace();
    let mode = w.next().unwrap_or("");
    let args: [&str; 3] = [w.next().unwrap_or(""), w.next().unwrap_or(""), w.next().unwrap_or("")];
    if mode == "hot" {
        let up = Netfront::await_device(si, 0);
        println!("net: hot: vif 0 appeared: {}", up);
    }
    let mut nf = match Netfront::connect(si, 0) {
        Ok(f) => f,
        Err(e) => {
            println!("net: connecting vif 0 failed: {:?}", e);
            end(false, mode)
        }
    };
    let m = nf.mac;
    println!("net: vif0 connected, MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5]);
    match mode {
        "hostile" => hostile(&mut nf),
        "flood" => flood(&mut nf),
        "indexes" => indexes(&mut nf, args[0]),
        "stall" => {
            // Words a hostile domain would like dom0's scripts to run (`${netstall/evil}`).
            write_data("evil", "x' 'kernel=/boot/other");
            write_data("stall", "ready");
            println!("net: stall: connected; taking no frames");
            loop {
                xenbus::wait_for_watch();
                let mut ev = [0u8; 160];
                while xenbus::next_watch(&mut ev).is_some() {}
            }
        }
        _ => {}
    }
    // SAFETY: taken once, here.
    let storage = unsafe { &mut *core::ptr::addr_of_mut!(SOCKETS) };
    let mut st = Stack::new(nf, &mut storage[..]);
    let t0 = system_time();
    let Some(addr) = st.dhcp(t0 + 60 * SEC) else {
        println!("net: no DHCP lease in 60 s");
        end(false, mode)
    };
    println!("net: DHCP: {} via {:?} after {} ms", addr, st.router, (system_time() - t0) / 1_000_000);
    let ip = xenbus::Path::of(format_args!("{}", addr.address()));
    write_data("ip", ip.as_str());
    let num = |s: &str| s.parse::<u64>().unwrap_or(0);
    match mode {
        "http" => http(&mut st, num(args[0]).max(1) as u32),
        "sink" => sink(&mut st, num(args[0]) as u16, num(args[1])),
        "source" => match args[0].parse::<Ipv4Address>() {
            Ok(ip) => source(&mut st, ip, num(args[1]) as u16, num(args[2])),
            Err(_) => end(false, "source: bad address"),
        },
        "fetch" | "hot" => fetch(&mut st, num(args[0]) as u16, num(args[1])),
        "post" => post(&mut st, num(args[0]) as u16, num(args[1])),
        _ => {
            println!("net: unknown mode '{}'", mode);
            end(false, "net")
        }
    }
}
