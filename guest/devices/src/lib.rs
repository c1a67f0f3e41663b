//! dom0's device layer: what a PV kernel needs under `virtio-drivers` to drive a machine's
//! devices through the hypervisor.
//!
//! - [`pci`]: configuration space through ports 0xCF8/0xCFC (in dom0's I/O bitmap).
//! - [`dma`]: memory a device can reach. A PV domain's pseudo-physical frames are scattered
//!   over machine memory, so the pool is machine-contiguous extents from `XENMEM_exchange`
//!   (as Linux's `xen_create_contiguous_region`), and a buffer whose pages are not
//!   machine-contiguous is bounced through it (as swiotlb-xen). Devices see machine
//!   addresses. BARs are mapped uncached into windows of this image (`DOMID_IO` rights).
//! - [`blk`]: a virtio-blk driver over the crate's PCI transport and split virtqueue,
//!   request by request without waiting: completions come with the device's interrupt (a
//!   PIRQ bound to an event channel), never by polling.
#![no_std]

extern crate alloc;

pub mod blk;
pub mod dma;
pub mod net;
pub mod pci;
