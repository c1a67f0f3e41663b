//! Node paths: validation and the relative form of domain clients.

use crate::{DomId, Error};
use alloc::format;
use alloc::string::{String, ToString};

/// Longest absolute path (`XENSTORE_ABS_PATH_MAX`).
pub const ABS_PATH_MAX: usize = 3072;
/// Longest relative path (`XENSTORE_REL_PATH_MAX`).
pub const REL_PATH_MAX: usize = 2048;

fn valid_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'/' | b'_' | b'@')
}

/// The home of domain `dom`'s relative paths.
pub fn domain_path(dom: DomId) -> String {
    format!("/local/domain/{}", dom)
}

/// The absolute path `p` names for a client of domain `dom`: relative paths are under its
/// home. `EINVAL` for an empty path, a bad character, `//`, a trailing `/` (but the root's)
/// or one over the length limit. Special paths (`@...`) are for watches only: `EINVAL`
/// here unless `special` is allowed.
pub fn canonical(dom: DomId, p: &str, special: bool) -> Result<String, Error> {
    let b = p.as_bytes();
    if b.is_empty() || !b.iter().all(|&c| valid_char(c)) {
        return Err(Error::EINVAL);
    }
    if b[0] == b'@' {
        return if special && b.len() <= ABS_PATH_MAX && !b.contains(&b'/') { Ok(p.to_string()) } else { Err(Error::EINVAL) };
    }
    if p.contains("//") || (b.len() > 1 && b[b.len() - 1] == b'/') {
        return Err(Error::EINVAL);
    }
    let abs = if b[0] == b'/' {
        if b.len() > ABS_PATH_MAX {
            return Err(Error::EINVAL);
        }
        p.to_string()
    } else {
        if b.len() > REL_PATH_MAX {
            return Err(Error::EINVAL);
        }
        format!("{}/{}", domain_path(dom), p)
    };
    if abs.len() > ABS_PATH_MAX {
        return Err(Error::EINVAL);
    }
    Ok(abs)
}

/// `p` as a client of `dom` that used a relative path sees it (watch events).
pub fn relative_to(dom: DomId, p: &str) -> String {
    let home = domain_path(dom);
    match p.strip_prefix(home.as_str()).and_then(|r| r.strip_prefix('/')) {
        Some(r) => r.to_string(),
        None => p.to_string(),
    }
}

/// The components of an absolute path (none for the root).
pub fn components(p: &str) -> impl Iterator<Item = &str> {
    p.split('/').filter(|c| !c.is_empty())
}

/// Is `p` the node `of` or below it?
pub fn is_under(p: &str, of: &str) -> bool {
    of == "/" || p == of || (p.starts_with(of) && p.as_bytes().get(of.len()) == Some(&b'/'))
}

/// The parent of a non-root absolute path.
pub fn parent(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &p[..i],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(canonical(3, "device/vbd", false).unwrap(), "/local/domain/3/device/vbd");
        assert_eq!(canonical(3, "/tool", false).unwrap(), "/tool");
        assert_eq!(canonical(0, "/", false).unwrap(), "/");
        for bad in ["", "a//b", "/a/", "a b", "a\u{0}", "/x.y", "@releaseDomain"] {
            assert_eq!(canonical(0, bad, false), Err(Error::EINVAL), "{bad:?}");
        }
        assert_eq!(canonical(0, "@releaseDomain", true).unwrap(), "@releaseDomain");
        assert!(canonical(0, &alloc::format!("/{}", "a".repeat(ABS_PATH_MAX)), false).is_err());
        assert_eq!(relative_to(3, "/local/domain/3/a/b"), "a/b");
        assert_eq!(relative_to(3, "/local/domain/30/a"), "/local/domain/30/a");
        assert!(is_under("/a/b", "/a") && is_under("/a", "/a") && !is_under("/ab", "/a") && is_under("/x", "/"));
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
    }
}
