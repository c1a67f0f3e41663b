//! A virtio-net driver: `virtio-drivers`' raw device (its PCI transport and two split
//! virtqueues) with buffers owned here, so sending and receiving are safe calls that never
//! wait: frames go out with [`Nic::send`], come back done through [`Nic::sent`], and
//! arrive through [`Nic::recv`] after the device's interrupt.

use crate::dma::XenHal;
use crate::pci::PortCam;
use alloc::boxed::Box;
use alloc::vec::Vec;
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::pci::bus::{DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::{DeviceType, InterruptStatus};

const QUEUE: usize = 32;
/// Receive buffers posted (each a page: header and a full Ethernet frame).
const RX_BUFFERS: usize = 32;
const RX_LEN: usize = 2048;

/// The virtio-net devices on bus 0.
pub fn find(root: &PciRoot<PortCam>) -> Vec<DeviceFunction> {
    crate::pci::virtio_devices(root, DeviceType::Network)
}

/// Why a network device could not be brought up.
#[derive(Debug)]
pub enum ProbeError {
    Transport(crate::pci::TransportError),
    Device,
}

#[repr(C, align(4096))]
struct RxBuf([u8; RX_LEN]);

/// A virtio network device.
pub struct Nic {
    raw: VirtIONetRaw<XenHal, PciTransport, QUEUE>,
    pub mac: [u8; 6],
    pub device: DeviceFunction,
    /// Posted receive buffers by token.
    rx: Vec<(u16, Box<RxBuf>)>,
    /// Frames being sent, by token (header + frame).
    tx: Vec<(u16, Vec<u8>)>,
    pub interrupts: u64,
}

impl Nic {
    /// Brings up the device at `df` (`pci::virtio_transport`): the queues made and the
    /// receive buffers posted.
    pub fn probe(root: &mut PciRoot<PortCam>, df: DeviceFunction) -> Result<Nic, ProbeError> {
        let transport = crate::pci::virtio_transport(root, df).map_err(ProbeError::Transport)?;
        let raw = VirtIONetRaw::new(transport).map_err(|_| ProbeError::Device)?;
        let mac = raw.mac_address();
        let mut n = Nic { raw, mac, device: df, rx: Vec::new(), tx: Vec::new(), interrupts: 0 };
        for _ in 0..RX_BUFFERS {
            n.post(Box::new(RxBuf([0; RX_LEN])));
        }
        Ok(n)
    }

    fn post(&mut self, mut b: Box<RxBuf>) {
        // SAFETY: the buffer is a heap allocation kept in `rx` (it never moves) until
        // `recv` pops this token with the same buffer; nothing else touches it meanwhile,
        // and a dropped device is reset before its buffers are freed (the transport's drop).
        if let Ok(t) = unsafe { self.raw.receive_begin(&mut b.0) } {
            self.rx.push((t, b));
        }
    }

    /// Queues `frame` (an Ethernet frame) for sending; false if the queue is full.
    pub fn send(&mut self, frame: &[u8]) -> bool {
        let mut buf = alloc::vec![0u8; frame.len() + 12];
        // A buffer the DMA layer could not bounce is not queued (`share` must not fail).
        if !crate::dma::shareable(buf.as_ptr() as u64, buf.len()) {
            return false;
        }
        let Ok(h) = self.raw.fill_buffer_header(&mut buf) else { return false };
        buf.truncate(h + frame.len());
        buf[h..].copy_from_slice(frame);
        // SAFETY: as for `post`: the buffer stays in `tx` until `sent` pops its token.
        match unsafe { self.raw.transmit_begin(&buf) } {
            Ok(t) => {
                self.tx.push((t, buf));
                true
            }
            Err(_) => false,
        }
    }

    /// Frames the device has sent since the last call.
    pub fn sent(&mut self) -> usize {
        let mut n = 0;
        while let Some(t) = self.raw.poll_transmit() {
            let Some(i) = self.tx.iter().position(|(k, _)| *k == t) else { break };
            let (_, buf) = self.tx.swap_remove(i);
            // SAFETY: the buffer `send` queued under this token.
            let _ = unsafe { self.raw.transmit_complete(t, &buf) };
            n += 1;
        }
        n
    }

    /// The next frame received, if any (its buffer posted again).
    pub fn recv(&mut self) -> Option<Vec<u8>> {
        let t = self.raw.poll_receive()?;
        let i = self.rx.iter().position(|(k, _)| *k == t)?;
        let (_, mut b) = self.rx.swap_remove(i);
        // SAFETY: the buffer `post` queued under this token.
        let r = unsafe { self.raw.receive_complete(t, &mut b.0) };
        let frame = r.ok().and_then(|(h, len)| b.0.get(h..h + len).map(|f| f.to_vec()));
        self.post(b);
        frame
    }

    /// Acknowledges the device's interrupt (it lowers its line).
    pub fn ack_interrupt(&mut self) -> bool {
        self.interrupts += 1;
        self.raw.ack_interrupt().contains(InterruptStatus::QUEUE_INTERRUPT)
    }
}
