//! The hypervisor's symbol table, as `cargo xtask build` writes it into the image (the
//! `RXEN_SYMBOLS` array, `hv_arch::symbols`) so a fatal fault prints a symbolised
//! backtrace without any file beside the image.
//!
//! Layout (little endian): `b"RXSYMS02"`, the entry count (u32), the string area's offset
//! (u32); then the entries, sorted by address: address (u64), name offset into the string
//! area (u32), name length (u16), two bytes of padding; then the names (UTF-8).

use alloc::vec::Vec;

pub const MAGIC: &[u8; 8] = b"RXSYMS02";
const HEADER: usize = 16;
const ENTRY: usize = 24;

fn u32_at(t: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(t.get(o..o + 4)?.try_into().ok()?))
}

fn u64_at(t: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(t.get(o..o + 8)?.try_into().ok()?))
}

/// Encodes `(address, size, name)` triples (any order) as a table.
pub fn encode(syms: &[(u64, u32, &str)]) -> Vec<u8> {
    let mut s: Vec<(u64, u32, &str)> = syms.to_vec();
    // At one address the largest size wins (a size-0 alias must not hide the function).
    s.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(b.2)));
    s.dedup_by_key(|x| x.0);
    let strings = HEADER + ENTRY * s.len();
    let mut out = Vec::with_capacity(strings + s.iter().map(|x| x.2.len()).sum::<usize>());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(&(strings as u32).to_le_bytes());
    let mut off = 0u32;
    for &(addr, size, name) in &s {
        let n = name.len().min(u16::MAX as usize);
        out.extend_from_slice(&addr.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&off.to_le_bytes());
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.extend_from_slice(&[0; 6]);
        off += n as u32;
    }
    for &(_, _, name) in &s {
        out.extend_from_slice(&name.as_bytes()[..name.len().min(u16::MAX as usize)]);
    }
    out
}

/// The function containing `addr` in `table`: its name and `addr`'s offset into it. `None`
/// for an empty or malformed table, or an address in no function.
pub fn lookup(table: &[u8], addr: u64) -> Option<(&str, u64)> {
    if table.get(..8)? != MAGIC {
        return None;
    }
    let (count, strings) = (u32_at(table, 8)? as usize, u32_at(table, 12)? as usize);
    let entry = |i: usize| -> Option<(u64, u32, usize, usize)> {
        let o = HEADER.checked_add(i.checked_mul(ENTRY)?)?;
        let len = u16::from_le_bytes(table.get(o + 16..o + 18)?.try_into().ok()?);
        Some((u64_at(table, o)?, u32_at(table, o + 8)?, u32_at(table, o + 12)? as usize, len as usize))
    };
    // The last entry at or below `addr` (binary search over the sorted addresses).
    let (mut lo, mut hi) = (0usize, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if entry(mid)?.0 <= addr {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let (start, size, off, len) = entry(lo.checked_sub(1)?)?;
    if size != 0 && addr - start >= u64::from(size) {
        return None;
    }
    let from = strings.checked_add(off)?;
    let name = core::str::from_utf8(table.get(from..from.checked_add(len)?)?).ok()?;
    Some((name, addr - start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finds_the_enclosing_function() {
        let t = encode(&[(0x2000, 0x100, "b"), (0x1000, 0, "a"), (0x3000, 0x20, "c::d")]);
        assert_eq!(lookup(&t, 0x1000), Some(("a", 0)));
        assert_eq!(lookup(&t, 0x1fff), Some(("a", 0xfff)));
        assert_eq!(lookup(&t, 0x3010), Some(("c::d", 0x10)));
        assert_eq!(lookup(&t, 0x3020), None, "past the last function's end");
        assert_eq!(lookup(&t, 0x2100), None, "between functions");
        assert_eq!(lookup(&t, 0xfff), None);
        assert_eq!(lookup(&[0u8; 64], 0x1000), None);
        // An alias of size 0 at a function's address does not hide its size.
        let t = encode(&[(0x1000, 0, "alias"), (0x1000, 0x40, "real")]);
        assert_eq!(lookup(&t, 0x1030), Some(("real", 0x30)));
        assert_eq!(lookup(&encode(&[]), 0x1000), None);
    }

    proptest! {
        /// A cut or corrupted table never panics.
        #[test]
        fn never_panics(cut in 0usize..200, flip in 0usize..200, addr in any::<u64>()) {
            let mut t = encode(&[(0x1000, 0x10, "alpha"), (0x2000, 0, "beta"), (0x3000, 8, "gamma")]);
            if flip < t.len() { t[flip] ^= 0xFF; }
            t.truncate(cut.max(8));
            let _ = lookup(&t, addr);
        }
    }
}
