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

#[cfg(test)]
mod tests {
    use super::*;

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
}
