//! PCI configuration mechanism #1: ports 0xCF8 (address) and 0xCFC (data).

use virtio_drivers::transport::pci::bus::{BarInfo, Command, ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::PciTransport;
use x86_64::instructions::port::Port;

/// The address/data pair is one access at a time.
static LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// Configuration space through the legacy ports. A domain without them in its I/O bitmap
/// takes a #GP on the first access.
#[derive(Debug)]
pub struct PortCam;

fn address(df: DeviceFunction, off: u8) -> u32 {
    0x8000_0000 | (df.bus as u32) << 16 | (df.device as u32 & 31) << 11 | (df.function as u32 & 7) << 8 | (off as u32 & 0xFC)
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, df: DeviceFunction, off: u8) -> u32 {
        let _g = LOCK.lock();
        // SAFETY: configuration cycles through the standard ports have no effect on memory.
        unsafe {
            Port::<u32>::new(0xCF8).write(address(df, off));
            Port::<u32>::new(0xCFC).read()
        }
    }

    fn write_word(&mut self, df: DeviceFunction, off: u8, data: u32) {
        let _g = LOCK.lock();
        // SAFETY: as for `read_word`. What the write does to the device (a BAR, the command
        // register) is the caller's business: the device layer writes the command register.
        unsafe {
            Port::<u32>::new(0xCF8).write(address(df, off));
            Port::<u32>::new(0xCFC).write(data);
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam
    }
}

/// The root of bus 0 onwards through the ports.
pub fn root() -> PciRoot<PortCam> {
    PciRoot::new(PortCam)
}

/// The interrupt line the firmware routed the device's INTx to (config byte 0x3C; 0xFF or 0:
/// none).
pub fn interrupt_line(df: DeviceFunction) -> Option<u8> {
    let l = PortCam.read_word(df, 0x3C) as u8;
    (l != 0 && l != 0xFF).then_some(l)
}

/// The virtio devices of type `ty` on bus 0.
pub fn virtio_devices(root: &PciRoot<PortCam>, ty: virtio_drivers::transport::DeviceType) -> alloc::vec::Vec<DeviceFunction> {
    root.enumerate_bus(0).filter(|(_, info)| virtio_drivers::transport::pci::virtio_device_type(info) == Some(ty)).map(|(df, _)| df).collect()
}

/// Why a virtio device's transport could not be had.
#[derive(Debug)]
pub enum TransportError {
    /// A memory BAR the hypervisor would not map (its address and the error).
    Bar(u64, i64),
    /// The configuration space or the virtio capabilities are not usable.
    Transport,
}

/// A virtio device's PCI transport: its memory BARs mapped first (a refusal is an error
/// here, not a panic in the transport), decoding and bus mastering on.
pub fn virtio_transport(root: &mut PciRoot<PortCam>, df: DeviceFunction) -> Result<PciTransport, TransportError> {
    let bars = root.bars(df).map_err(|_| TransportError::Transport)?;
    for b in bars.iter().flatten() {
        if let BarInfo::Memory { address, size, .. } = *b {
            if address != 0 && size != 0 && size <= 16 * 4096 {
                crate::dma::map_mmio(address, size as usize).map_err(|e| TransportError::Bar(address, e))?;
            }
        }
    }
    root.set_command(df, Command::IO_SPACE | Command::MEMORY_SPACE | Command::BUS_MASTER);
    PciTransport::new::<crate::dma::XenHal, PortCam>(root, df).map_err(|_| TransportError::Transport)
}
