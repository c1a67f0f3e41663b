//! Hypercall semantics and argument checking: xen_version, vm_assist, callbacks,
//! stack_switch, sched_op and unknown numbers.
#![no_std]
#![no_main]

use guest_abi::errno::Errno;
use guest_abi::hypercall as nr;
use guest_abi::traps::*;
use guest_abi::version::*;
use pv_runtime::hypercall::{hypercall5 as hc, raw_hypercall};
use test_guests::*;

const NONCANON: u64 = 0x8000_0000_0000_0000;

#[no_mangle]
fn guest_main(_si: &'static pv_runtime::StartInfo) -> ! {
    start("hypercalls");
    // SAFETY: every pointer passed is to a local buffer of the size the call
    // writes, or deliberately invalid and expected to be refused.
    unsafe {
        expect_ret("xen_version(version)", hc(nr::XEN_VERSION, XENVER_VERSION, 0, 0, 0, 0), (4 << 16) | 19);
        let mut extra = [0xAAu8; 16];
        expect_ret("extraversion", hc(nr::XEN_VERSION, XENVER_EXTRAVERSION, extra.as_mut_ptr() as u64, 0, 0, 0), 0);
        let len = extra.iter().position(|&b| b == 0).unwrap_or(16);
        check("extraversion text", &extra[..len] == b".0-rxen");
        check("extraversion zero-filled", extra[len..].iter().all(|&b| b == 0));
        let mut caps = [0xAAu8; 1024];
        expect_ret("capabilities", hc(nr::XEN_VERSION, XENVER_CAPABILITIES, caps.as_mut_ptr() as u64, 0, 0, 0), 0);
        check("capabilities text", caps.starts_with(b"xen-3.0-x86_64"));
        let l = caps.iter().position(|&b| b == 0).unwrap_or(1024);
        check("capabilities zero-filled", caps[l..].iter().all(|&b| b == 0));
        let mut ci = [0xAAu8; 144];
        expect_ret("compile_info", hc(nr::XEN_VERSION, XENVER_COMPILE_INFO, ci.as_mut_ptr() as u64, 0, 0, 0), 0);
        check("compile_info: no 0xAA left", !ci.contains(&0xAA));
        let mut cs = [0xAAu8; 64];
        expect_ret("changeset", hc(nr::XEN_VERSION, XENVER_CHANGESET, cs.as_mut_ptr() as u64, 0, 0, 0), 0);
        check("changeset: no 0xAA left", !cs.contains(&0xAA));
        let mut fi = [0u32; 2];
        expect_ret("get_features(0)", hc(nr::XEN_VERSION, XENVER_GET_FEATURES, fi.as_mut_ptr() as u64, 0, 0, 0), 0);
        check("dom0 feature bit", fi[1] & (1 << feat::DOM0) != 0);
        fi[0] = 1;
        expect_err("get_features(1)", hc(nr::XEN_VERSION, XENVER_GET_FEATURES, fi.as_mut_ptr() as u64, 0, 0, 0), Errno::EINVAL);
        expect_ret("pagesize", hc(nr::XEN_VERSION, XENVER_PAGESIZE, 0, 0, 0, 0), 4096);
        let mut pp = 0u64;
        expect_ret("platform_parameters", hc(nr::XEN_VERSION, XENVER_PLATFORM_PARAMETERS, &mut pp as *mut u64 as u64, 0, 0, 0), 0);
        check("virt_start", pp == guest_abi::layout::HYPERVISOR_VIRT_START);
        expect_err("xen_version(unknown)", hc(nr::XEN_VERSION, 99, 0, 0, 0, 0), Errno::ENOSYS);

        // Unknown hypercalls, via the page and raw.
        expect_err("hypercall 60", hc(60, 0, 0, 0, 0, 0), Errno::ENOSYS);
        expect_err("hypercall 127", hc(127, 0, 0, 0, 0, 0), Errno::ENOSYS);
        expect_err("raw hypercall 0xffffffff", raw_hypercall(0xFFFF_FFFF, 0, 0, 0), Errno::ENOSYS);
        expect_err("raw hypercall 1<<63", raw_hypercall(1 << 63, 0, 0, 0), Errno::ENOSYS);

        // vm_assist.
        expect_ret("vm_assist enable writable_pagetables", hc(nr::VM_ASSIST, 0, 2, 0, 0, 0), 0);
        expect_ret("vm_assist enable m2p_strict", hc(nr::VM_ASSIST, 0, 32, 0, 0, 0), 0);
        expect_err("vm_assist type 6", hc(nr::VM_ASSIST, 0, 6, 0, 0, 0), Errno::EINVAL);
        expect_err("vm_assist type 64", hc(nr::VM_ASSIST, 0, 64, 0, 0, 0), Errno::EINVAL);
        expect_err("vm_assist type 2^40", hc(nr::VM_ASSIST, 0, 1 << 40, 0, 0, 0), Errno::EINVAL);
        expect_err("vm_assist cmd 7", hc(nr::VM_ASSIST, 7, 2, 0, 0, 0), Errno::ENOSYS);

        // callback_op / set_callbacks.
        let cb = |ty: u16, addr: u64| CallbackRegister { ty, flags: 0, _pad: 0, address: addr };
        let ev = cb(CALLBACKTYPE_EVENT, 0x10_1000);
        expect_ret("register event callback", hc(nr::CALLBACK_OP, CALLBACKOP_REGISTER, &ev as *const _ as u64, 0, 0, 0), 0);
        for ty in [CALLBACKTYPE_SYSCALL, CALLBACKTYPE_SYSCALL32, CALLBACKTYPE_SYSENTER, CALLBACKTYPE_FAILSAFE] {
            let c = cb(ty, 0x10_1000);
            expect_ret("register callback type", hc(nr::CALLBACK_OP, CALLBACKOP_REGISTER, &c as *const _ as u64, 0, 0, 0), 0);
        }
        let nmi = cb(CALLBACKTYPE_NMI, 0x10_1000);
        expect_err("NMI callback (NMIs are not delivered to guests)", hc(nr::CALLBACK_OP, CALLBACKOP_REGISTER, &nmi as *const _ as u64, 0, 0, 0), Errno::EINVAL);
        let bad = cb(99, 0x10_1000);
        expect_err("callback type 99", hc(nr::CALLBACK_OP, CALLBACKOP_REGISTER, &bad as *const _ as u64, 0, 0, 0), Errno::EINVAL);
        let nc = cb(CALLBACKTYPE_EVENT, NONCANON);
        expect_err("non-canonical callback", hc(nr::CALLBACK_OP, CALLBACKOP_REGISTER, &nc as *const _ as u64, 0, 0, 0), Errno::EINVAL);
        let hvcb = cb(CALLBACKTYPE_EVENT, 0xFFFF_82D0_4010_0000);
        expect_err("callback in hypervisor area", hc(nr::CALLBACK_OP, CALLBACKOP_REGISTER, &hvcb as *const _ as u64, 0, 0, 0), Errno::EINVAL);
        let un_ev = CallbackUnregister { ty: CALLBACKTYPE_EVENT, _pad: 0 };
        expect_err("unregister event", hc(nr::CALLBACK_OP, CALLBACKOP_UNREGISTER, &un_ev as *const _ as u64, 0, 0, 0), Errno::EINVAL);
        let un_nmi = CallbackUnregister { ty: CALLBACKTYPE_NMI, _pad: 0 };
        expect_ret("unregister nmi", hc(nr::CALLBACK_OP, CALLBACKOP_UNREGISTER, &un_nmi as *const _ as u64, 0, 0, 0), 0);
        expect_err("callback_op cmd 5", hc(nr::CALLBACK_OP, 5, &ev as *const _ as u64, 0, 0, 0), Errno::ENOSYS);
        expect_err("callback_op bad pointer", hc(nr::CALLBACK_OP, CALLBACKOP_REGISTER, 0xdead_0000, 0, 0, 0), Errno::EFAULT);
        expect_ret("set_callbacks", hc(nr::SET_CALLBACKS, 0x10_1000, 0x10_1000, 0, 0, 0), 0);
        expect_err("set_callbacks non-canonical", hc(nr::SET_CALLBACKS, NONCANON, 0, 0, 0, 0), Errno::EINVAL);

        // set_trap_table argument checks.
        let bad_tt = [
            TrapInfo { vector: 6, flags: 0, cs: guest_abi::selectors::FLAT_KERNEL_CS, _pad: 0, address: NONCANON },
            TrapInfo::default(),
        ];
        expect_err("trap handler non-canonical", hc(nr::SET_TRAP_TABLE, bad_tt.as_ptr() as u64, 0, 0, 0, 0), Errno::EINVAL);
        let bad_cs = [TrapInfo { vector: 6, flags: 0, cs: 0x10, _pad: 0, address: 0x10_1000 }, TrapInfo::default()];
        expect_err("trap handler with a non-existent CS", hc(nr::SET_TRAP_TABLE, bad_cs.as_ptr() as u64, 0, 0, 0, 0), Errno::EINVAL);
        expect_err("trap table unmapped", hc(nr::SET_TRAP_TABLE, 0x4000_0000, 0, 0, 0, 0), Errno::EFAULT);
        // The installed table still works after the refused updates.
        let f = probe!("ud2");
        expect_fault("#UD still delivered", f, 6, None);

        expect_err("stack_switch into the entry stack", pv_runtime::hypercall::stack_switch(0xE021, 0xFFFF_8200_0003_1000), Errno::EINVAL);
        expect_err("stack_switch non-canonical", pv_runtime::hypercall::stack_switch(0xE021, 0x0000_8000_0000_1000), Errno::EINVAL);
        expect_ret("stack_switch", pv_runtime::hypercall::stack_switch(0xE021, 0x20_0000), 0);
        expect_err("sched_op unknown", hc(nr::SCHED_OP, 77, 0, 0, 0, 0), Errno::ENOSYS);
        let bad_reason = guest_abi::sched::SchedShutdown { reason: 9 };
        expect_err("shutdown reason 9", hc(nr::SCHED_OP, 2, &bad_reason as *const _ as u64, 0, 0, 0), Errno::EINVAL);
        expect_err("shutdown unmapped arg", hc(nr::SCHED_OP, 2, 0x4000_0000, 0, 0, 0), Errno::EFAULT);
        expect_ret("yield", pv_runtime::hypercall::yield_now(), 0);
    }
    finish("hypercalls")
}
