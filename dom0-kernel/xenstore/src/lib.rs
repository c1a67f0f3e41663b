//! The XenStore core, with Xen's semantics (`docs/misc/xenstore.txt`, `io/xs_wire.h`): a
//! tree of nodes, each with a value and permissions; watches; transactions; per-domain
//! quotas; and the wire protocol that carries them.
//!
//! It is transport-free: a [`Store`] takes whole request messages from numbered connections
//! and returns the reply and the watch events each connection is to receive. dom0's daemon
//! puts it behind the domains' ring pages; `cargo xtask xenstored` puts it behind unix
//! sockets, so that Debian's Xen client tools can be pointed at it.
//!
//! - The tree is persistent (nodes are shared `Arc`s, changed by path copying), so a
//!   transaction's snapshot costs one reference; every node carries the generation of its
//!   last change (its value, permissions or set of children).
//! - A transaction works on its own copy and records the generation of every node it looked
//!   at (or that it was absent); it commits only if all are unchanged in the live tree, by
//!   replaying its operations there (all or nothing): optimistic concurrency, serialisable.
//!   A conflict is `EAGAIN`, as Xen.

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

mod path;
pub mod ring;
mod perms;
mod store;
mod tree;
pub mod wire;

pub use path::{canonical, ABS_PATH_MAX, REL_PATH_MAX};
pub use perms::{Perm, Perms};
pub use store::{ConnId, Event, Quota, Store, EVENT_BYTES_PER_REQUEST};
pub use wire::{Msg, MsgType, HEADER, PAYLOAD_MAX};

/// A domain id.
pub type DomId = u16;

/// The errors XenStore reports (`xsd_errors`), sent as `E<NAME>\0`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms)]
pub enum Error {
    EINVAL,
    EACCES,
    EEXIST,
    EISDIR,
    ENOENT,
    ENOMEM,
    ENOSPC,
    EIO,
    ENOTEMPTY,
    ENOSYS,
    EROFS,
    EBUSY,
    EAGAIN,
    EISCONN,
    E2BIG,
    EPERM,
}

impl Error {
    pub fn name(self) -> &'static str {
        use Error::*;
        match self {
            EINVAL => "EINVAL",
            EACCES => "EACCES",
            EEXIST => "EEXIST",
            EISDIR => "EISDIR",
            ENOENT => "ENOENT",
            ENOMEM => "ENOMEM",
            ENOSPC => "ENOSPC",
            EIO => "EIO",
            ENOTEMPTY => "ENOTEMPTY",
            ENOSYS => "ENOSYS",
            EROFS => "EROFS",
            EBUSY => "EBUSY",
            EAGAIN => "EAGAIN",
            EISCONN => "EISCONN",
            E2BIG => "E2BIG",
            EPERM => "EPERM",
        }
    }
}
