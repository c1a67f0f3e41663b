//! What dom0's device backends (block, network) share: a device's XenStore directories
//! written as libxl writes them, the frontend's keys read, the backend's state set, and
//! the directories removed when the device goes.

use crate::xs;
use alloc::format;
use alloc::string::String;

/// `dom`'s device `devid` of `class` (`vbd`, `vif`): (frontend, backend) directories.
pub fn paths(class: &str, dom: u16, devid: u32) -> (String, String) {
    (format!("/local/domain/{dom}/device/{class}/{devid}"), format!("/local/domain/0/backend/{class}/{dom}/{devid}"))
}

/// Writes both directories in one transaction: the backend's owned by dom0 and readable by
/// `dom`, the frontend's owned by `dom` and readable by dom0; then watches the frontend's
/// `state` under `token`.
pub fn create(dom: u16, fe: &str, be: &str, be_keys: &[(&str, String)], fe_keys: &[(&str, String)], token: &str) -> Result<(), String> {
    let (me, ro) = (format!("n{dom}"), format!("r{dom}"));
    xs::in_transaction(|tx| {
        xs::write(tx, be, b"")?;
        xs::set_perms(tx, be, &["n0", &ro])?;
        for (k, v) in be_keys {
            xs::write(tx, &format!("{be}/{k}"), v.as_bytes())?;
        }
        xs::write(tx, fe, b"")?;
        xs::set_perms(tx, fe, &[&me, "r0"])?;
        for (k, v) in fe_keys {
            xs::write(tx, &format!("{fe}/{k}"), v.as_bytes())?;
        }
        Ok(())
    })?;
    if let Err(e) = xs::watch(&format!("{fe}/state"), token) {
        remove(fe, be, token);
        return Err(e);
    }
    Ok(())
}

/// A number the frontend (or anyone) wrote at `path`.
pub fn read_u32(path: &str) -> Option<u32> {
    let v = xs::read(path).ok()?;
    core::str::from_utf8(&v).ok()?.trim_end_matches('\0').trim().parse().ok()
}

/// The backend's `state`.
pub fn set_state(be: &str, s: u32) {
    let _ = xs::write(0, &format!("{be}/state"), format!("{s}").as_bytes());
}

/// The backend's `error` and `Closing`: what a backend does when a frontend broke its ring.
pub fn fail(be: &str, why: &str) {
    let _ = xs::write(0, &format!("{be}/error"), why.as_bytes());
    set_state(be, guest_abi::io::blkif::STATE_CLOSING);
}

/// Removes what `create` wrote.
pub fn remove(fe: &str, be: &str, token: &str) {
    let _ = xs::unwatch(&format!("{fe}/state"), token);
    let _ = xs::rm(0, be);
    let _ = xs::rm(0, fe);
}
