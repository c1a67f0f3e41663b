//! Node permissions: the first entry names the owner and the access of every domain not
//! listed; each further entry one domain's access. `n` none, `r` read, `w` write, `b` both.

use crate::{DomId, Error};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Perm {
    pub dom: DomId,
    pub read: bool,
    pub write: bool,
}

impl Perm {
    /// `r0`, `b5`, ...
    pub fn parse(s: &str) -> Result<Perm, Error> {
        let mut c = s.chars();
        let (read, write) = match c.next() {
            Some('n') => (false, false),
            Some('r') => (true, false),
            Some('w') => (false, true),
            Some('b') => (true, true),
            _ => return Err(Error::EINVAL),
        };
        let rest = c.as_str();
        if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::EINVAL);
        }
        let dom = rest.parse::<DomId>().map_err(|_| Error::EINVAL)?;
        Ok(Perm { dom, read, write })
    }

    pub fn format(&self) -> String {
        let c = match (self.read, self.write) {
            (false, false) => 'n',
            (true, false) => 'r',
            (false, true) => 'w',
            (true, true) => 'b',
        };
        format!("{}{}", c, self.dom)
    }
}

/// A node's permissions (at least one entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Perms(pub Vec<Perm>);

/// What an access needs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    /// Changing the permissions.
    Owner,
}

impl Perms {
    /// Owned by `dom`, no access for others.
    pub fn owned_by(dom: DomId) -> Perms {
        Perms(alloc::vec![Perm { dom, read: false, write: false }])
    }

    pub fn owner(&self) -> DomId {
        self.0[0].dom
    }

    /// May a client of domain `dom` (acting for `target`, if set) make access `a`? Owners
    /// (and whoever acts for the owner) may do everything; other domains get their own
    /// entry or else the first entry's. Privileged clients are not asked.
    pub fn allows(&self, dom: DomId, target: Option<DomId>, a: Access) -> bool {
        let is = |d: DomId| d == dom || Some(d) == target;
        if is(self.owner()) {
            return true;
        }
        let p = self.0[1..].iter().find(|p| is(p.dom)).unwrap_or(&self.0[0]);
        match a {
            Access::Read => p.read,
            Access::Write => p.write,
            Access::Owner => false,
        }
    }

    /// From the `perm\0perm\0...` list of `SET_PERMS`; at most `max` entries (`ENOSPC`).
    pub fn parse_list<'a>(items: impl Iterator<Item = &'a str>, max: usize) -> Result<Perms, Error> {
        let mut v = Vec::new();
        for s in items {
            if v.len() == max {
                return Err(Error::ENOSPC);
            }
            v.push(Perm::parse(s)?);
        }
        if v.is_empty() {
            return Err(Error::EINVAL);
        }
        Ok(Perms(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perms() {
        assert_eq!(Perm::parse("b12"), Ok(Perm { dom: 12, read: true, write: true }));
        for bad in ["", "x1", "r", "r-1", "r70000", "r1a"] {
            assert_eq!(Perm::parse(bad), Err(Error::EINVAL), "{bad:?}");
        }
        let p = Perms::parse_list(["n5", "r7", "w8"].into_iter(), 5).unwrap();
        assert!(p.allows(5, None, Access::Owner) && p.allows(5, None, Access::Write));
        assert!(p.allows(7, None, Access::Read) && !p.allows(7, None, Access::Write));
        assert!(!p.allows(8, None, Access::Read) && p.allows(8, None, Access::Write));
        assert!(!p.allows(9, None, Access::Read) && !p.allows(9, None, Access::Write));
        assert!(p.allows(9, Some(5), Access::Owner), "acting for the owner");
        assert_eq!(Perms::parse_list(["r1"; 6].into_iter(), 5), Err(Error::ENOSPC));
        assert_eq!(p.0[1].format(), "r7");
    }
}
