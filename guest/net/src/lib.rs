//! TCP/IP for PV guests: `smoltcp` (the standard no_std TCP/IP stack) over the runtime's
//! netfront (a domU) or any other `smoltcp` device (dom0's port on its own switch), with
//! its address from DHCP. No heap: the caller gives the socket storage.
//!
//! [`Stack::poll`] moves frames between the device and the sockets and follows the DHCP
//! lease; on a netfront, [`Stack::wait`] sleeps on the device's event channel until a frame
//! comes or the stack's next timer (a retransmission, the DHCP renewal) is due.
#![no_std]

pub use smoltcp;
use pv_runtime::events;
use pv_runtime::netfront::Netfront;
use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet, SocketStorage};
use smoltcp::phy::{Device, DeviceCapabilities, Medium};
use smoltcp::socket::dhcpv4;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address, Ipv4Cidr};

/// The largest frame: 1500 bytes of IP, the Ethernet header.
pub const MTU: usize = guest_abi::io::netif::MAX_FRAME;

/// The netfront as a `smoltcp` device.
pub struct Nic {
    pub nf: Netfront,
    rx: [u8; MTU],
}

pub struct Rx<'a>(&'a [u8]);
pub struct Tx<'a>(&'a mut Netfront);

impl smoltcp::phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl smoltcp::phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = [0u8; MTU];
        let len = len.min(MTU);
        let r = f(&mut b[..len]);
        // `transmit` saw a free page: the send cannot fail for room.
        self.0.send(&b[..len]);
        r
    }
}

impl Device for Nic {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _t: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        let Nic { nf, rx } = self;
        let n = nf.recv(rx)?;
        Some((Rx(&rx[..n]), Tx(nf)))
    }

    fn transmit(&mut self, _t: Instant) -> Option<Tx<'_>> {
        self.nf.can_send().then_some(Tx(&mut self.nf))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = MTU;
        c
    }
}

/// The time now, for `smoltcp`.
pub fn now() -> Instant {
    Instant::from_micros((events::system_time() / 1000) as i64)
}

/// An interface, its sockets and its DHCP client.
pub struct Stack<'a, D: Device = Nic> {
    pub nic: D,
    pub iface: Interface,
    pub sockets: SocketSet<'a>,
    dhcp: SocketHandle,
    /// The address DHCP gave, and the router.
    pub addr: Option<Ipv4Cidr>,
    pub router: Option<Ipv4Address>,
}

impl<'a> Stack<'a> {
    /// The stack over `nf`, its DHCP client started (one socket of `storage` is its).
    pub fn new(nf: Netfront, storage: &'a mut [SocketStorage<'a>]) -> Stack<'a> {
        let mac = nf.mac;
        Stack::on(Nic { nf, rx: [0; MTU] }, mac, storage)
    }
}

impl<'a, D: Device> Stack<'a, D> {
    /// The stack over device `dev` with MAC `mac`, its DHCP client started.
    pub fn on(mut nic: D, mac: [u8; 6], storage: &'a mut [SocketStorage<'a>]) -> Stack<'a, D> {
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        config.random_seed = pv_runtime::rdtsc();
        let iface = Interface::new(config, &mut nic, now());
        let mut sockets = SocketSet::new(storage);
        let dhcp = sockets.add(dhcpv4::Socket::new());
        Stack { nic, iface, sockets, dhcp, addr: None, router: None }
    }

    /// Frames in and out, timers run, the DHCP lease followed: true if a socket changed.
    pub fn poll(&mut self) -> bool {
        let changed = self.iface.poll(now(), &mut self.nic, &mut self.sockets) == PollResult::SocketStateChanged;
        match self.sockets.get_mut::<dhcpv4::Socket>(self.dhcp).poll() {
            Some(dhcpv4::Event::Configured(c)) => {
                self.iface.update_ip_addrs(|a| {
                    a.clear();
                    let _ = a.push(IpCidr::Ipv4(c.address));
                });
                match c.router {
                    Some(r) => {
                        let _ = self.iface.routes_mut().add_default_ipv4_route(r);
                    }
                    None => {
                        self.iface.routes_mut().remove_default_ipv4_route();
                    }
                }
                self.addr = Some(c.address);
                self.router = c.router;
            }
            Some(dhcpv4::Event::Deconfigured) => {
                self.iface.update_ip_addrs(|a| a.clear());
                self.iface.routes_mut().remove_default_ipv4_route();
                self.addr = None;
                self.router = None;
            }
            None => {}
        }
        changed
    }

    /// When the stack next wants to be polled (system time, ns), if it has a timer.
    pub fn next_poll(&mut self) -> Option<u64> {
        self.iface.poll_delay(now(), &self.sockets).map(|d| events::system_time() + d.total_micros() * 1000)
    }
}

impl<'a> Stack<'a> {
    /// Sleeps until a frame comes, the stack has a timer due, or `deadline` (system
    /// time, ns) passes.
    pub fn wait(&mut self, deadline: u64) {
        let until = match self.next_poll() {
            Some(n) if n < deadline => n,
            _ => deadline,
        };
        if until > events::system_time() {
            self.nic.nf.wait(until);
        }
    }

    /// Polls and waits until `done` holds (true) or `deadline` passes or the device
    /// closes (false).
    pub fn run_until(&mut self, deadline: u64, mut done: impl FnMut(&mut Stack<'a>) -> bool) -> bool {
        loop {
            self.poll();
            if done(self) {
                return true;
            }
            if events::system_time() >= deadline || self.nic.nf.closed {
                return false;
            }
            self.wait(deadline);
        }
    }

    /// Waits for a DHCP lease: the address, or `None` by `deadline`.
    pub fn dhcp(&mut self, deadline: u64) -> Option<Ipv4Cidr> {
        self.run_until(deadline, |s| s.addr.is_some());
        self.addr
    }
}

/// A socket storage array, for [`Stack::new`].
pub const fn storage<const N: usize>() -> [SocketStorage<'static>; N] {
    [SocketStorage::EMPTY; N]
}
