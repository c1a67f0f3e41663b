//! Turning the machine off and restarting it: ACPI S5 through the PM1 control registers,
//! the FADT's reset register, the keyboard controller's reset line, a triple fault. Each but
//! the triple fault (which cannot fail) returns when the machine did not react within a
//! moment, so that the caller tries the next.

use crate::cpu::{inb, outb, port_in, port_out};
use hv_core::acpi_power::{pm1_sleep_value, Gas};

/// Enters ACPI sleep type `(a, b)` through the PM1a (and PM1b, if any) control registers.
pub fn acpi_sleep(pm1a: u16, pm1b: u16, (a, b): (u8, u8)) {
    x86_64::instructions::interrupts::disable();
    // As ACPICA: SLP_TYP first, then SLP_TYP with SLP_EN (some chipsets want them apart).
    for set_en in [false, true] {
        for (port, typ) in [(pm1a, a), (pm1b, b)] {
            if port != 0 {
                let cur = port_in(port, 2) as u16;
                let v = pm1_sleep_value(cur, typ);
                port_out(port, 2, u32::from(if set_en { v } else { v & !(1 << 13) }));
            }
        }
    }
    // The machine may take a moment to act.
    crate::time::delay_us(100_000);
}

/// Writes `value` to the FADT's reset register `gas`; false when its address space is not
/// one the hypervisor can reach (system memory: not in the direct map; PCI configuration
/// space past the 256 bytes the 0xCF8 mechanism reaches).
pub fn acpi_reset(gas: Gas, value: u8) -> bool {
    match gas.space {
        Gas::IO if gas.addr <= 0xFFFF => outb(gas.addr as u16, value),
        Gas::PCI_CONFIG if gas.addr & 0xFFFF <= 0xFF => {
            // Bus 0; the address holds the device (bits 32–47), function (16–31) and
            // register (0–15).
            let (dev, func, reg) = ((gas.addr >> 32) as u32 & 0x1F, (gas.addr >> 16) as u32 & 0x7, gas.addr as u32 & 0xFF);
            port_out(0xCF8, 4, 0x8000_0000 | dev << 11 | func << 8 | (reg & 0xFC));
            port_out(0xCFC + (reg & 3) as u16, 1, u32::from(value));
        }
        _ => return false,
    }
    // The machine may take a moment to act.
    crate::time::delay_us(100_000);
    true
}

/// Pulses the CPU reset line through the i8042 keyboard controller (command 0xFE).
pub fn kbc_reset() {
    for _ in 0..100_000 {
        if inb(0x64) & 0b10 == 0 {
            break;
        }
        core::hint::spin_loop();
    }
    outb(0x64, 0xFE);
    // The machine may take a moment to act.
    crate::time::delay_us(100_000);
}

/// Resets the CPU by a triple fault: an empty IDT, then an exception.
pub fn triple_fault() -> ! {
    use x86_64::structures::DescriptorTablePointer;
    x86_64::instructions::interrupts::disable();
    let empty = DescriptorTablePointer { limit: 0, base: x86_64::VirtAddr::zero() };
    // SAFETY: this ends the machine on purpose: with a zero-limit IDT the breakpoint cannot
    // be delivered, nor the #GP and #DF that follow, and the CPU resets. Nothing runs after.
    unsafe {
        x86_64::instructions::tables::lidt(&empty);
        core::arch::asm!("int3", options(nomem, nostack));
    }
    crate::cpu::halt_forever()
}
