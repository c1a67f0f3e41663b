//! Continuation arithmetic: how a preempted hypercall encodes where it stopped in the
//! arguments the guest re-issues it with (Xen's encodings, `xen/include/public/xen.h` and
//! `memory.h`). The trap-frame rewind itself is the arch layer's.
//!
//! - Batches (`mmu_update`, `mmuext_op`): the array pointer moves past the entries done and
//!   the count becomes what is left, with `MMU_UPDATE_PREEMPTED` set (so the continued call
//!   knows to carry on the guest's `done` word rather than restart it).
//! - Reservations (`memory_op`): the command keeps the operation in its low 6 bits and the
//!   next extent in the bits above (`MEMOP_EXTENT_SHIFT`).

use guest_abi::mm::MMU_UPDATE_PREEMPTED;

/// Bits of a `memory_op` command that are the operation.
pub const MEMOP_CMD_MASK: u64 = 0x3F;
/// Where the start extent of a continued reservation begins.
pub const MEMOP_EXTENT_SHIFT: u32 = 6;

/// A batch hypercall's `count` argument: (entries to do, is this a continuation?), or `None`
/// when bits above 31 are set (`-EINVAL`). Bit 31 is `MMU_UPDATE_PREEMPTED`.
pub fn batch_count(arg: u64) -> Option<(u64, bool)> {
    let count = arg & !MMU_UPDATE_PREEMPTED;
    (count <= u32::MAX as u64).then_some((count, arg & MMU_UPDATE_PREEMPTED != 0))
}

/// The first two arguments that continue a batch at `array` of `count` entries of `size`
/// bytes, `done` of them done by this call: (array past them, entries left | preempted).
pub fn batch_rest(array: u64, size: u64, count: u64, done: u64) -> (u64, u64) {
    (array.wrapping_add(size.wrapping_mul(done)), (count - done) | MMU_UPDATE_PREEMPTED)
}

/// A `memory_op` command: (operation, start extent).
pub fn memop_split(cmd: u64) -> (u64, u64) {
    (cmd & MEMOP_CMD_MASK, cmd >> MEMOP_EXTENT_SHIFT)
}

/// The command that continues operation `op` at extent `start` (`start` below 2^58: the
/// callers bound extents to 2^40).
pub fn memop_join(op: u64, start: u64) -> u64 {
    (op & MEMOP_CMD_MASK) | (start << MEMOP_EXTENT_SHIFT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn counts() {
        assert_eq!(batch_count(5), Some((5, false)));
        assert_eq!(batch_count(5 | MMU_UPDATE_PREEMPTED), Some((5, true)));
        // Bit 31 is the flag (Xen's counts are 32-bit): the largest count is 2^31 - 1.
        assert_eq!(batch_count(u32::MAX as u64), Some((0x7FFF_FFFF, true)));
        assert_eq!(batch_count(1 << 32), None);
        assert_eq!(memop_split(memop_join(1, 0)), (1, 0));
    }

    proptest! {
        /// A batch continued at any point resumes with exactly the entries left, after the
        /// ones done, and says it is a continuation.
        #[test]
        fn batches_resume_where_they_stopped(array in any::<u64>(), size in 1u64..64, count in 1u64..(1 << 31), cut in any::<u64>()) {
            let done = cut % count;
            let (a, c) = batch_rest(array, size, count, done);
            prop_assert_eq!(a, array.wrapping_add(size * done));
            prop_assert_eq!(batch_count(c), Some((count - done, true)));
        }

        /// A reservation's command round-trips its operation and start extent.
        #[test]
        fn memop_commands_round_trip(op in 0u64..64, start in 0u64..(1 << 58)) {
            prop_assert_eq!(memop_split(memop_join(op, start)), (op, start));
        }
    }
}
