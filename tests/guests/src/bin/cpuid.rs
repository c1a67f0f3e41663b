//! Xen's forced-emulation CPUID (`ud2; .ascii "xen"; cpuid`): the hypervisor leaves with
//! Xen's signature, the version `xen_version` gives, one hypercall page; leaf 1 with the
//! hypervisor bit and without what a PV guest must not use (VMX, MONITOR, x2APIC, ...);
//! the machine's vendor in leaf 0. A plain `ud2`, and the prefix followed by something
//! else, still raise #UD in the guest.
#![no_std]
#![no_main]

use test_guests::*;

const UD: u8 = 6;

/// The forced-emulation `cpuid` of `leaf` / `sub`.
fn xen_cpuid(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    let (a, b, c, d): (u32, u32, u32, u32);
    // SAFETY: the hypervisor emulates the instruction (or the guest takes #UD, which the
    // runtime's handler reports: then the test fails on the values). RBX is saved around
    // it (LLVM reserves it).
    unsafe {
        core::arch::asm!(
            "mov {t:r}, rbx",
            "ud2",
            ".ascii \"xen\"",
            "cpuid",
            "xchg {t:r}, rbx",
            t = out(reg) b,
            inout("eax") leaf => a,
            inout("ecx") sub => c,
            out("edx") d,
        );
    }
    (a, b, c, d)
}

fn native_cpuid(leaf: u32) -> (u32, u32, u32, u32) {
    let r = core::arch::x86_64::__cpuid_count(leaf, 0);
    (r.eax, r.ebx, r.ecx, r.edx)
}

#[no_mangle]
fn guest_main(_si: &'static pv_runtime::StartInfo) -> ! {
    start("cpuid");
    let (max, b, c, d) = xen_cpuid(0x4000_0000, 0);
    let sig: [u8; 12] = {
        let mut s = [0u8; 12];
        s[..4].copy_from_slice(&b.to_le_bytes());
        s[4..8].copy_from_slice(&c.to_le_bytes());
        s[8..].copy_from_slice(&d.to_le_bytes());
        s
    };
    println!("cpuid: 0x40000000: max {:#x}, signature {:?}", max, core::str::from_utf8(&sig).unwrap_or("?"));
    check("signature XenVMMXenVMM", &sig == b"XenVMMXenVMM");
    check("highest hypervisor leaf", max >= 0x4000_0002);
    let v = xen_cpuid(0x4000_0001, 0).0;
    expect_ret("0x40000001 is xen_version's", v as i64, pv_runtime::hypercall::xen_version_number());
    let (pages, msr, feat, _) = xen_cpuid(0x4000_0002, 0);
    println!("cpuid: 0x40000002: {} hypercall page(s), MSR {:#x}, features {:#x}", pages, msr, feat);
    check("one hypercall page", pages == 1);
    check("past the highest leaf: zeroes", xen_cpuid(0x4000_0010, 0) == (0, 0, 0, 0));
    let (_, _, c1, d1) = xen_cpuid(1, 0);
    println!("cpuid: leaf 1: ecx {:#010x} edx {:#010x} (the machine's: {:#010x} {:#010x})", c1, d1, native_cpuid(1).2, native_cpuid(1).3);
    check("hypervisor bit", c1 & 1 << 31 != 0);
    check("no VMX", c1 & 1 << 5 == 0);
    check("no MONITOR", c1 & 1 << 3 == 0);
    check("no x2APIC", c1 & 1 << 21 == 0);
    check("no PCID", c1 & 1 << 17 == 0);
    check("no ACPI thermal", d1 & 1 << 22 == 0);
    let (m0, v0b, v0c, v0d) = xen_cpuid(0, 0);
    let n0 = native_cpuid(0);
    check("leaf 0 is the machine's", (m0, v0b, v0c, v0d) == n0);
    check("leaf 5 hidden", xen_cpuid(5, 0) == (0, 0, 0, 0));
    // Not the prefix: #UD reaches the guest as before.
    expect_fault("plain ud2", probe!("ud2"), UD, None);
    expect_fault("ud2; xen; nop", probe!("ud2", ".ascii \"xen\"", "nop"), UD, None);
    expect_fault("ud2; xe; cpuid", probe!("ud2", ".ascii \"xe\"", "cpuid"), UD, None);
    finish("cpuid")
}
