//! `xen_version`. Fixed-size outputs are zero-filled after their text (no stale bytes).

use super::{write_guest, HcResult};
use guest_abi::errno::Errno;
use guest_abi::version::*;

/// Capabilities: 64-bit PV with ring-1 kernels (a deviation, see docs/abi-deviations.md).
pub const CAPABILITIES: &str = "xen-3.0-x86_64r1";
/// What a Xen pv64 domain is told: Xen's own 64-bit PV ABI.
pub const CAPABILITIES_PV64: &str = "xen-3.0-x86_64";
pub const EXTRAVERSION: &str = ".0-rxen";

fn text<const N: usize>(s: &str) -> [u8; N] {
    let mut b = [0u8; N];
    let n = s.len().min(N - 1);
    b[..n].copy_from_slice(&s.as_bytes()[..n]);
    b
}

/// `xen_version(cmd, arg)`: the numbers without any lock ([`local`]), the rest under the
/// domain's memory lock (they copy into guest memory).
pub fn xen_version(hv: &impl super::OnCpu, cmd: u64, arg: u64) -> HcResult {
    match local(cmd) {
        Some(r) => r,
        None => xen_version_copying(hv, cmd, arg),
    }
}

/// The sub-operations that return a number (no guest memory, no shared state).
#[inline]
pub fn local(cmd: u64) -> Option<HcResult> {
    match cmd {
        XENVER_VERSION => Some(Ok(((VERSION_MAJOR << 16) | VERSION_MINOR) as i64)),
        XENVER_PAGESIZE => Some(Ok(4096)),
        _ => None,
    }
}

#[inline(never)]
fn xen_version_copying(hv: &impl super::OnCpu, cmd: u64, arg: u64) -> HcResult {
    let privileged = hv.pc().cur.shared.privileged;
    match cmd {
        XENVER_EXTRAVERSION => write_guest(hv, arg, &text::<EXTRAVERSION_LEN>(EXTRAVERSION)).map(|_| 0),
        XENVER_COMPILE_INFO => {
            let mut b = [0u8; 144];
            b[..64].copy_from_slice(&text::<64>("rustc (stable)"));
            b[64..80].copy_from_slice(&text::<16>("rxen"));
            b[80..112].copy_from_slice(&text::<32>("localdomain"));
            b[112..144].copy_from_slice(&text::<32>(option_env!("RXEN_BUILD_DATE").unwrap_or("unknown")));
            write_guest(hv, arg, &b).map(|_| 0)
        }
        XENVER_CAPABILITIES => {
            let caps = if hv.pc().cur.shared.pv64 { CAPABILITIES_PV64 } else { CAPABILITIES };
            write_guest(hv, arg, &text::<CAPABILITIES_LEN>(caps)).map(|_| 0)
        }
        XENVER_CHANGESET => {
            let cs = option_env!("RXEN_CHANGESET").unwrap_or("unavailable");
            write_guest(hv, arg, &text::<CHANGESET_LEN>(cs)).map(|_| 0)
        }
        XENVER_PLATFORM_PARAMETERS => {
            write_guest(hv, arg, &guest_abi::layout::HYPERVISOR_VIRT_START.to_le_bytes()).map(|_| 0)
        }
        XENVER_GET_FEATURES => {
            let mut b = [0u8; 8];
            super::read_guest(hv, arg, &mut b[..4])?;
            let idx = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if idx != 0 {
                return Err(Errno::EINVAL);
            }
            let mut map = 0u32;
            if privileged {
                map |= 1 << feat::DOM0;
            }
            b[4..8].copy_from_slice(&map.to_le_bytes());
            write_guest(hv, arg, &b).map(|_| 0)
        }
        XENVER_GUEST_HANDLE => write_guest(hv, arg, &[0u8; GUEST_HANDLE_LEN]).map(|_| 0),
        XENVER_COMMANDLINE => {
            if !privileged {
                return Err(Errno::EPERM);
            }
            write_guest(hv, arg, &text::<COMMANDLINE_LEN>(crate::machine::get().cmdline)).map(|_| 0)
        }
        _ => Err(Errno::ENOSYS),
    }
}
