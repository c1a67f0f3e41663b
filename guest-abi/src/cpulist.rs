//! Xen's CPU list syntax (`0`, `0-2`, `1,3`, `0-1,4`), shared by the hypervisor's command
//! line and the toolstack's `xl` and `xl.cfg`.

/// Parses a CPU list such as `0`, `0-2`, `1,3` or `0-1,4` into a bit mask (CPUs 0-63);
/// `None` for anything else, an empty list, or a CPU above 63.
pub fn parse(s: &str) -> Option<u64> {
    let mut mask = 0u64;
    for part in s.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let a = part.parse::<u32>().ok()?;
                (a, a)
            }
        };
        if a > b || b > 63 {
            return None;
        }
        for c in a..=b {
            mask |= 1 << c;
        }
    }
    (mask != 0).then_some(mask)
}
