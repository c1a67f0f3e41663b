//! Time conversions for `vcpu_time_info` (pvclock): guests compute
//! `system_time + ((tsc - tsc_timestamp) << shift (or >> -shift)) * mul >> 32`.

/// The (mul, shift) pair that converts TSC ticks at `hz` to nanoseconds, as Xen's
/// `set_time_scale`: the shifted tick count is in (1e9, 2e9] per second so `mul` < 2^32.
pub fn scale(hz: u64) -> (u32, i8) {
    let hz = hz.max(1);
    let mut tps = hz;
    let mut shift: i8 = 0;
    while tps > 2_000_000_000 {
        tps >>= 1;
        shift -= 1;
    }
    while tps <= 1_000_000_000 {
        tps <<= 1;
        shift += 1;
    }
    let mul = ((1_000_000_000u128 << 32) / tps as u128) as u32;
    (mul, shift)
}

/// Applies a scale to a TSC delta, exactly as a guest does.
pub fn scale_delta(delta: u64, mul: u32, shift: i8) -> u64 {
    let d = if shift >= 0 { delta << shift } else { delta >> (-shift) };
    ((d as u128 * mul as u128) >> 32) as u64
}

/// The smallest TSC delta that [`scale_delta`] turns into at least `ns`: the inverse of the
/// same scale, so a timer armed with it never fires before the clock reads `ns`.
pub fn inverse_delta(ns: u64, mul: u32, shift: i8) -> u64 {
    if mul == 0 {
        return 0;
    }
    // d_shifted = ceil(ns * 2^32 / mul); then undo the shift, rounding up.
    let ds = ((ns as u128) << 32).div_ceil(mul as u128);
    let d = if shift >= 0 { ds.div_ceil(1u128 << shift) } else { ds << (-shift) };
    d.min(u64::MAX as u128) as u64
}

/// The factor [`inverse_delta_fast`] multiplies by for scale `mul`: 2^96 / `mul` rounded
/// up, as (high 64 bits, low 64 bits). Computed once per scale.
pub fn inverse_factor(mul: u32) -> (u64, u64) {
    if mul == 0 {
        return (0, 0);
    }
    let f = (1u128 << 96).div_ceil(mul as u128);
    ((f >> 64) as u64, f as u64)
}

/// [`inverse_delta`] with multiplications only (`factor` from [`inverse_factor`] of the same
/// `mul`): the same result.
pub fn inverse_delta_fast(ns: u64, mul: u32, shift: i8, factor: (u64, u64)) -> u64 {
    if mul == 0 {
        return 0;
    }
    // ceil(ns * 2^32 / mul): the product with the factor is at most one below it (the
    // factor's rounding adds under 1, the truncation drops under 1), and one exact check
    // tells.
    let mut ds = ns as u128 * factor.0 as u128 + ((ns as u128 * factor.1 as u128) >> 64);
    if ds * (mul as u128) < (ns as u128) << 32 {
        ds += 1;
    }
    // Rounding up by shifts, not a division.
    let d = if shift >= 0 { (ds + (1u128 << shift) - 1) >> shift } else { ds << (-shift) };
    d.min(u64::MAX as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn fast_inverse_is_the_inverse(hz in 1_000_000u64..8_000_000_000, ns in 0u64..(1 << 52)) {
            let (mul, shift) = scale(hz);
            let d = inverse_delta_fast(ns, mul, shift, inverse_factor(mul));
            proptest::prop_assert_eq!(d, inverse_delta(ns, mul, shift));
        }
    }

    #[test]
    fn one_second_is_one_second() {
        for hz in [1_000_000u64, 999_999_999, 1_000_000_000, 1_000_000_001, 2_500_000_000, 3_999_999_999, 7_000_000_000] {
            let (mul, shift) = scale(hz);
            let ns = scale_delta(hz, mul, shift);
            assert!((ns as i64 - 1_000_000_000).abs() <= 2, "{hz} Hz: {ns} ns");
            let ns = scale_delta(hz / 1000, mul, shift);
            assert!((ns as i64 - 1_000_000).abs() <= 2, "{hz} Hz: 1 ms = {ns} ns");
        }
    }

    #[test]
    fn inverse_is_never_early_and_tight() {
        for hz in [1_000_000u64, 999_999_999, 1_000_000_001, 2_500_000_000, 7_000_000_000] {
            let (mul, shift) = scale(hz);
            for ns in [0u64, 1, 999, 1_000_000, 123_456_789_012, 1 << 50] {
                let d = inverse_delta(ns, mul, shift);
                assert!(scale_delta(d, mul, shift) >= ns, "{hz} Hz, {ns} ns: early");
                // One tick less would be early (or the result is within a tick of exact).
                assert!(d == 0 || scale_delta(d - 1, mul, shift) < ns || scale_delta(d - 1, mul, shift) == ns,
                    "{hz} Hz, {ns} ns: not tight");
                assert!(scale_delta(d, mul, shift) - ns <= 1 + 1_000_000_000 / hz, "{hz} Hz, {ns} ns: late");
            }
        }
    }
}
