//! dom0's toolstack logic, independent of the machine and host-tested: so far `xl`'s verbs
//! as the shell parses and prints them ([`xl`]) and the `xl.cfg` parser ([`xlcfg`]).

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod blkif;
pub mod netif;
pub mod xl;
pub mod xlcfg;
