//! `physdev_op`: a device's interrupt as a PIRQ (`map_gsi`, then `events::bind_pirq`), its
//! EOI and status.

use crate::hypercall::hypercall5;
use guest_abi::hypercall as nr;
use guest_abi::physdev::*;

/// `physdev_op(cmd, &arg)` on an argument array of words.
pub fn op(cmd: u64, arg: &mut [u32]) -> i64 {
    // SAFETY: `arg` is valid for reads and writes of its length during the call.
    unsafe { hypercall5(nr::PHYSDEV_OP, cmd, arg.as_mut_ptr() as u64, 0, 0, 0) }
}

/// `map_pirq` of GSI `gsi` for `dom` (`DOMID_SELF`), asking for PIRQ `pirq` (-1: any).
/// The PIRQ given, or the error.
pub fn map_gsi(dom: u16, gsi: i32, pirq: i32) -> Result<u32, i64> {
    let mut a = [0u32; map_pirq::SIZE / 4];
    a[map_pirq::DOMID / 4] = dom as u32;
    a[map_pirq::TYPE / 4] = MAP_PIRQ_TYPE_GSI;
    a[map_pirq::INDEX / 4] = gsi as u32;
    a[map_pirq::PIRQ / 4] = pirq as u32;
    match op(PHYSDEVOP_MAP_PIRQ, &mut a) {
        0 => Ok(a[map_pirq::PIRQ / 4]),
        e => Err(e),
    }
}

pub fn unmap(dom: u16, pirq: u32) -> i64 {
    op(PHYSDEVOP_UNMAP_PIRQ, &mut [dom as u32, pirq])
}

/// Why [`bind_gsi`] failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BindError {
    /// `map_pirq` refused the GSI.
    Map(i64),
    /// `bind_pirq` refused the PIRQ mapped (-EEXIST: another driver of this domain has it).
    Bind(u32, i64),
}

/// A device's GSI as this domain's PIRQ on an event channel: (PIRQ, port).
pub fn bind_gsi(gsi: i32) -> Result<(u32, u32), BindError> {
    let pirq = map_gsi(guest_abi::DOMID_SELF, gsi, -1).map_err(BindError::Map)?;
    crate::events::bind_pirq(pirq, 0).map(|port| (pirq, port)).map_err(|e| BindError::Bind(pirq, e))
}

/// `PHYSDEVOP_eoi`: a level-triggered line may interrupt again.
pub fn eoi(pirq: u32) -> i64 {
    op(PHYSDEVOP_EOI, &mut [pirq])
}

/// `irq_status_query`: the `XENIRQSTAT_*` flags, or the error.
pub fn status(pirq: u32) -> Result<u32, i64> {
    let mut a = [pirq, 0];
    match op(PHYSDEVOP_IRQ_STATUS_QUERY, &mut a) {
        0 => Ok(a[1]),
        e => Err(e),
    }
}
