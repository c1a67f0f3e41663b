//! CPUID as a PV guest sees it through Xen's forced-emulation prefix
//! (`ud2; .ascii "xen"; cpuid`, `XEN_EMULATE_PREFIX`, pub/arch-x86/xen.h): the #UD is
//! trapped, the seven bytes checked, and the instruction emulated with the PV policy
//! (Xen's `arch/x86/cpuid.c` for PV guests):
//!
//! - the hypervisor leaves at 0x40000000: the `XenVMMXenVMM` signature and the highest
//!   leaf, the version (0x40000001), the hypercall page count and feature bits
//!   (0x40000002); the rest of that range reads as zeroes;
//! - the native leaves with what a PV guest must not use or cannot have hidden: VMX, SMX,
//!   MONITOR/MWAIT, the thermal and power-management bits, PCID, x2APIC, TSC-deadline,
//!   debug store and MTRRs gone, the hypervisor bit set; MONITOR in leaf 5 and the
//!   thermal leaf 6 read as zeroes.
//!
//! A guest's plain `cpuid` is not trapped (no CPUID faulting): it sees the machine.

/// The instruction bytes: `ud2` (0F 0B), `xen`, `cpuid` (0F A2).
pub const FORCED_CPUID: [u8; 7] = [0x0F, 0x0B, b'x', b'e', b'n', 0x0F, 0xA2];

/// The hypervisor leaves' base and the highest one served.
pub const HV_BASE: u32 = 0x4000_0000;
pub const HV_MAX: u32 = HV_BASE + 2;
/// `XenVMMXenVMM` in EBX, ECX, EDX.
pub const SIGNATURE: (u32, u32, u32) = (0x566e_6558, 0x6558_4d4d, 0x4d4d_566e);
/// Leaf 0x40000002 ECX: `XEN_CPUID_FEAT1_MMU_PT_UPDATE_PRESERVE_AD`.
pub const FEAT1_MMU_PT_UPDATE_PRESERVE_AD: u32 = 1;

/// Leaf 1 ECX bits hidden: MONITOR (3), DS-CPL (4), VMX (5), SMX (6), EST (7), TM2 (8),
/// PDCM (15), PCID (17), x2APIC (21), TSC-deadline (24).
pub const LEAF1_ECX_HIDDEN: u32 = 1 << 3 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 7 | 1 << 8 | 1 << 15 | 1 << 17 | 1 << 21 | 1 << 24;
/// Leaf 1 ECX bit 31: running under a hypervisor.
pub const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX bits hidden: MTRR (12), DS (21), ACPI (22), TM (29), PBE (31).
pub const LEAF1_EDX_HIDDEN: u32 = 1 << 12 | 1 << 21 | 1 << 22 | 1 << 29 | 1 << 31;

/// Are these the bytes of a forced-emulation `cpuid`?
pub fn is_forced_cpuid(bytes: &[u8]) -> bool {
    bytes.get(..FORCED_CPUID.len()) == Some(&FORCED_CPUID[..])
}

/// (EAX, EBX, ECX, EDX) of leaf `leaf` (sub-leaf `sub`) for a PV guest, `native` giving the
/// machine's and `version` the hypervisor's (`major << 16 | minor`).
pub fn pv_leaf(leaf: u32, sub: u32, version: u32, native: impl Fn(u32, u32) -> (u32, u32, u32, u32)) -> (u32, u32, u32, u32) {
    match leaf {
        HV_BASE => (HV_MAX, SIGNATURE.0, SIGNATURE.1, SIGNATURE.2),
        l if l == HV_BASE + 1 => (version, 0, 0, 0),
        // One hypercall page; its MSR (for HVM guests) at the base; PRESERVE_AD supported.
        l if l == HV_BASE + 2 => (1, HV_BASE, FEAT1_MMU_PT_UPDATE_PRESERVE_AD, 0),
        0x4000_0003..=0x4FFF_FFFF => (0, 0, 0, 0),
        _ => {
            let (a, b, c, d) = native(leaf, sub);
            match leaf {
                1 => (a, b, (c & !LEAF1_ECX_HIDDEN) | LEAF1_ECX_HYPERVISOR, d & !LEAF1_EDX_HIDDEN),
                5 | 6 => (0, 0, 0, 0),
                _ => (a, b, c, d),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn machine(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
        (leaf ^ 0xA5A5_0000, sub, !0, !0)
    }

    #[test]
    fn hypervisor_leaves() {
        assert_eq!(pv_leaf(HV_BASE, 0, 4 << 16 | 19, machine), (HV_MAX, 0x566e_6558, 0x6558_4d4d, 0x4d4d_566e));
        let sig: alloc::vec::Vec<u8> = [SIGNATURE.0, SIGNATURE.1, SIGNATURE.2].iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(&sig, b"XenVMMXenVMM");
        assert_eq!(pv_leaf(HV_BASE + 1, 0, 4 << 16 | 19, machine).0, 4 << 16 | 19);
        assert_eq!(pv_leaf(HV_BASE + 2, 0, 0, machine), (1, HV_BASE, 1, 0));
        assert_eq!(pv_leaf(HV_BASE + 0x100, 0, 0, machine), (0, 0, 0, 0));
    }

    #[test]
    fn masking() {
        let (_, _, c, d) = pv_leaf(1, 0, 0, machine);
        assert_eq!(c & LEAF1_ECX_HIDDEN, 0);
        assert_ne!(c & LEAF1_ECX_HYPERVISOR, 0);
        assert_eq!(d & LEAF1_EDX_HIDDEN, 0);
        assert_eq!(pv_leaf(5, 0, 0, machine), (0, 0, 0, 0));
        assert_eq!(pv_leaf(0, 0, 0, machine), machine(0, 0));
        assert_eq!(pv_leaf(7, 1, 0, machine), machine(7, 1));
    }

    #[test]
    fn prefix() {
        assert!(is_forced_cpuid(&FORCED_CPUID));
        assert!(is_forced_cpuid(&[0x0F, 0x0B, b'x', b'e', b'n', 0x0F, 0xA2, 0x90]));
        assert!(!is_forced_cpuid(&[0x0F, 0x0B, b'x', b'e', b'n', 0x90, 0x90]));
        assert!(!is_forced_cpuid(&[0x0F, 0x0B]));
    }

    proptest! {
        /// Whatever the machine says, a PV guest never sees the hidden leaf-1 bits, always
        /// sees the hypervisor bit, and every leaf in the hypervisor range is rxen's.
        #[test]
        fn policy(leaf in any::<u32>(), sub in any::<u32>(), n in any::<(u32, u32, u32, u32)>()) {
            let (a, b, c, d) = pv_leaf(leaf, sub, 0, |_, _| n);
            if leaf == 1 {
                prop_assert_eq!(c & LEAF1_ECX_HIDDEN, 0);
                prop_assert_eq!(d & LEAF1_EDX_HIDDEN, 0);
                prop_assert!(c & LEAF1_ECX_HYPERVISOR != 0);
            }
            if (HV_BASE..=0x4FFF_FFFF).contains(&leaf) && leaf > HV_MAX {
                prop_assert_eq!((a, b, c, d), (0, 0, 0, 0));
            }
        }
    }
}
