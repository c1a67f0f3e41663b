//! A virtio-blk driver: `virtio-drivers`' PCI transport and split virtqueue, with requests
//! submitted and completed one by one ([`Disk::submit`], [`Disk::complete`]) so the caller
//! can sleep until the device's interrupt instead of waiting in a loop. Reads, writes and
//! cache flushes; each request owns its buffers until it completes.

use crate::dma::XenHal;
use crate::pci::PortCam;
use alloc::boxed::Box;
use alloc::vec::Vec;
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::pci::bus::{DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};

/// Descriptors in the queue (a request takes 2 or 3).
const QUEUE_SIZE: usize = 64;
pub const SECTOR: usize = 512;

bitflags::bitflags! {
    /// The virtio-blk features this driver takes.
    #[derive(Copy, Clone, Debug, PartialEq, Eq)]
    pub struct Features: u64 {
        const RO = 1 << 5;
        const FLUSH = 1 << 9;
        const VERSION_1 = 1 << 32;
    }
}

/// What a request does.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
    Flush,
}

/// `VIRTIO_BLK_S_*`.
pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;

/// A request the device finished: the caller's tag, and its buffer back (filled, for a read).
#[derive(Debug)]
pub struct Done {
    pub tag: u64,
    pub op: Op,
    /// `VIRTIO_BLK_S_*` (anything else the device wrote reads as an I/O error).
    pub status: u8,
    pub data: Vec<u8>,
}

/// The request header, aligned so it never straddles a page (no bounce needed).
#[repr(C, align(16))]
struct Hdr([u8; 16]);

struct Req {
    tag: u64,
    op: Op,
    hdr: Box<Hdr>,
    data: Vec<u8>,
    status: Box<[u8; 1]>,
}

/// Why a request was not queued; its buffer comes back.
#[derive(Debug)]
pub enum SubmitError {
    /// The queue is full: submit again after a completion.
    Full(Vec<u8>),
    /// Not a whole number of sectors, empty, past the end, a write to a read-only disk, or
    /// a flush the disk does not do.
    Invalid(Vec<u8>),
}

/// A virtio disk.
pub struct Disk {
    transport: PciTransport,
    queue: VirtQueue<XenHal, QUEUE_SIZE>,
    /// Size in 512-byte sectors.
    pub capacity: u64,
    pub features: Features,
    pub device: DeviceFunction,
    inflight: Vec<(u16, Req)>,
    /// Data bytes of the requests in flight (at most `dma::INFLIGHT_BYTES`).
    inflight_bytes: usize,
    /// Interrupts the device raised (for reports).
    pub interrupts: u64,
}

/// The virtio block devices on bus 0.
pub fn find(root: &PciRoot<PortCam>) -> Vec<DeviceFunction> {
    crate::pci::virtio_devices(root, DeviceType::Block)
}

/// Why a disk could not be brought up.
#[derive(Debug)]
pub enum ProbeError {
    Transport(crate::pci::TransportError),
    Queue,
    NotBlock,
}

impl Disk {
    /// Brings up the virtio disk at `df` (`pci::virtio_transport`), features negotiated,
    /// one queue.
    pub fn probe(root: &mut PciRoot<PortCam>, df: DeviceFunction) -> Result<Disk, ProbeError> {
        let mut transport = crate::pci::virtio_transport(root, df).map_err(ProbeError::Transport)?;
        if transport.device_type() != DeviceType::Block {
            return Err(ProbeError::NotBlock);
        }
        let features = transport.begin_init(Features::all());
        let lo: u32 = transport.read_config_space(0).map_err(|_| ProbeError::Queue)?;
        let hi: u32 = transport.read_config_space(4).map_err(|_| ProbeError::Queue)?;
        let queue = VirtQueue::new(&mut transport, 0, false, false).map_err(|_| ProbeError::Queue)?;
        transport.finish_init();
        Ok(Disk { transport, queue, capacity: (hi as u64) << 32 | lo as u64, features, device: df, inflight: Vec::new(), inflight_bytes: 0, interrupts: 0 })
    }

    pub fn readonly(&self) -> bool {
        self.features.contains(Features::RO)
    }

    pub fn can_flush(&self) -> bool {
        self.features.contains(Features::FLUSH)
    }

    /// Requests queued and not completed.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Queues `op` at `sector` with `data` (a whole number of sectors for a read or write;
    /// empty for a flush); `tag` comes back with its completion.
    pub fn submit(&mut self, op: Op, sector: u64, data: Vec<u8>, tag: u64) -> Result<(), SubmitError> {
        let sectors = (data.len() / SECTOR) as u64;
        let valid = match op {
            Op::Read | Op::Write => {
                !data.is_empty()
                    && data.len() <= crate::dma::MAX_REQUEST
                    && data.len().is_multiple_of(SECTOR)
                    && sector.checked_add(sectors).is_some_and(|end| end <= self.capacity)
                    && !(op == Op::Write && self.readonly())
            }
            Op::Flush => data.is_empty() && self.can_flush(),
        };
        if !valid {
            return Err(SubmitError::Invalid(data));
        }
        if self.inflight_bytes + data.len() > crate::dma::INFLIGHT_BYTES || !crate::dma::shareable(data.as_ptr() as u64, data.len()) {
            return Err(SubmitError::Full(data));
        }
        let ty: u32 = match op {
            Op::Read => 0,
            Op::Write => 1,
            Op::Flush => 4,
        };
        let mut hdr = Box::new(Hdr([0u8; 16]));
        hdr.0[..4].copy_from_slice(&ty.to_le_bytes());
        hdr.0[8..].copy_from_slice(&sector.to_le_bytes());
        let mut req = Req { tag, op, hdr, data, status: Box::new([0xFF]) };
        // SAFETY: the header, data and status buffers are heap allocations owned by `req`,
        // which stays in `inflight` (its allocations never move) until `complete` pops this
        // token with the same buffers; the driver does not touch them meanwhile, and a
        // dropped disk resets the device before they are freed.
        let r = unsafe {
            match op {
                Op::Read => self.queue.add(&[&req.hdr.0[..]], &mut [&mut req.data[..], &mut req.status[..]]),
                Op::Write => self.queue.add(&[&req.hdr.0[..], &req.data[..]], &mut [&mut req.status[..]]),
                Op::Flush => self.queue.add(&[&req.hdr.0[..]], &mut [&mut req.status[..]]),
            }
        };
        match r {
            Ok(token) => {
                self.inflight_bytes += req.data.len();
                self.inflight.push((token, req));
                if self.queue.should_notify() {
                    self.transport.notify(0);
                }
                Ok(())
            }
            Err(_) => Err(SubmitError::Full(req.data)),
        }
    }

    /// The next request the device finished, if any.
    pub fn complete(&mut self) -> Option<Done> {
        let token = self.queue.peek_used()?;
        // A token the driver never issued (a broken device) cannot be popped without its
        // buffers: the queue stops there.
        let i = self.inflight.iter().position(|(t, _)| *t == token)?;
        let (_, mut req) = self.inflight.swap_remove(i);
        self.inflight_bytes -= req.data.len();
        // SAFETY: the same buffers `submit` added under this token.
        let r = unsafe {
            match req.op {
                Op::Read => self.queue.pop_used(token, &[&req.hdr.0[..]], &mut [&mut req.data[..], &mut req.status[..]]),
                Op::Write => self.queue.pop_used(token, &[&req.hdr.0[..], &req.data[..]], &mut [&mut req.status[..]]),
                Op::Flush => self.queue.pop_used(token, &[&req.hdr.0[..]], &mut [&mut req.status[..]]),
            }
        };
        let status = match (r, req.status[0]) {
            (Ok(_), s @ (S_OK | S_UNSUPP)) => s,
            _ => S_IOERR,
        };
        Some(Done { tag: req.tag, op: req.op, status, data: req.data })
    }

    /// Acknowledges the device's interrupt (it lowers its line); true if the queue has news.
    pub fn ack_interrupt(&mut self) -> bool {
        self.interrupts += 1;
        self.transport.ack_interrupt().contains(InterruptStatus::QUEUE_INTERRUPT)
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        // The device forgets the queue before the buffers of requests in flight are freed.
        self.transport.set_status(DeviceStatus::empty());
        self.transport.queue_unset(0);
    }
}
