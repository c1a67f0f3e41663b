//! Turning the machine off and restarting it, as dom0's `poweroff` and `reboot` ask, as
//! the `R` debug key asks, and after a crash.
//!
//! At boot ([`init`], while the firmware's tables are still mapped) the FADT's registers
//! and the `\_S5` sleep type (read from the DSDT's and SSDTs' AML by
//! `hv_core::acpi_power::sleep_type`) are found and logged; ending the run then needs no
//! allocation and no table. Before the machine is switched off or reset, the other CPUs
//! are stopped (an NMI each, as Xen's `smp_send_stop`).

use hv_arch::boot::BootInfo;
use hv_arch::{cpu, power};
use hv_core::acpi_power::{self, Gas, Power};
use hv_core::cmdline::{Options, RebootMethod};

/// What the firmware offers.
struct Plan {
    fadt: Option<Power>,
    /// `\_S5`'s (SLP_TYPa, SLP_TYPb).
    s5: Option<(u8, u8)>,
}

static PLAN: spin::Once<Plan> = spin::Once::new();
/// `reboot=` and `noreboot` (the defaults until the command line is read).
static POLICY: spin::Once<(RebootMethod, bool)> = spin::Once::new();

/// Records the options (from the command line, before anything can end the run).
pub fn set_options(opts: &Options<'_>) {
    POLICY.call_once(|| (opts.reboot, opts.noreboot));
}

fn policy() -> (RebootMethod, bool) {
    POLICY.get().copied().unwrap_or((RebootMethod::Acpi, false))
}

/// Finds how to power off and reset (the heap must exist, the early map still).
pub fn init(boot: &BootInfo) {
    let fadt = boot.acpi_power;
    let s5 = fadt.as_ref().and_then(|p| {
        if p.pm1a_cnt == 0 {
            log::warn!("ACPI: no PM1a control register{}: poweroff halts", if p.hw_reduced { " (hardware-reduced ACPI)" } else { "" });
            return None;
        }
        for &(pa, len) in p.aml() {
            log::debug!("ACPI: AML table at {:#x}, {} bytes", pa, len);
        }
        if !p.fadt_checksum_ok {
            log::warn!("ACPI: the FADT's checksum is wrong: used anyway");
        }
        let aml: u64 = p.aml().iter().map(|&(_, l)| u64::from(l)).sum();
        match acpi_power::sleep_type(acpi_power::aml_tables(&hv_arch::boot::firmware_read, p), 5) {
            Ok(t) => {
                log::info!("ACPI: poweroff by S5 (SLP_TYP {}/{} from {} AML table(s), {} KiB; PM1a control {:#x}, PM1b {:#x})", t.0, t.1, p.aml().len(), aml.div_ceil(1024), p.pm1a_cnt, p.pm1b_cnt);
                Some(t)
            }
            Err(e) => {
                log::warn!("ACPI: no S5 sleep type ({:?}): poweroff halts", e);
                None
            }
        }
    });
    match fadt.and_then(|p| p.reset) {
        Some((g, v)) => log::info!("ACPI: reset register {} {:#x} := {:#x}", space_name(g.space), g.addr, v),
        None => log::info!("ACPI: no reset register: reboot through the keyboard controller, then a triple fault"),
    }
    if fadt.is_none() {
        log::warn!("ACPI: no usable FADT: poweroff halts");
    }
    PLAN.call_once(|| Plan { fadt, s5 });
}

fn space_name(s: u8) -> &'static str {
    match s {
        Gas::IO => "I/O port",
        Gas::MEMORY => "memory",
        Gas::PCI_CONFIG => "PCI config",
        _ => "space?",
    }
}

/// Stops every other CPU (`hv_arch::stop`: an NMI each, as Xen's `smp_send_stop`) and
/// says how many halted. From here on only emergency console writes.
fn stop_others() {
    let (halted, sent) = hv_arch::stop::stop_others();
    if sent > 0 {
        say(format_args!("{} of {} other CPU(s) stopped\n", halted, sent));
    }
}

/// Powers the machine off through ACPI S5; halts where that is impossible or fails.
pub fn poweroff() -> ! {
    stop_others();
    if let Some(Plan { fadt: Some(p), s5: Some(t) }) = PLAN.get() {
        say(format_args!("powering off: ACPI S5\n"));
        power::acpi_sleep(p.pm1a_cnt, p.pm1b_cnt, *t);
        say(format_args!("ACPI S5 did not power the machine off\n"));
    }
    say(format_args!("halted: it is safe to switch the machine off\n"));
    cpu::halt_forever()
}

fn say(a: core::fmt::Arguments<'_>) {
    hv_arch::console::emergency_write_fmt(format_args!("(XEN) {}", a));
}

/// Restarts the machine: the method the command line names first, then the others
/// (`reboot=no`: halts).
pub fn reboot() -> ! {
    stop_others();
    for m in policy().0.chain() {
        match m {
            RebootMethod::Acpi => {
                if let Some((g, v)) = PLAN.get().and_then(|p| p.fadt).and_then(|p| p.reset) {
                    say(format_args!("rebooting: ACPI reset register\n"));
                    if !power::acpi_reset(g, v) {
                        say(format_args!("the ACPI reset register is in {}: not reachable\n", space_name(g.space)));
                    }
                }
            }
            RebootMethod::Kbd => {
                say(format_args!("rebooting: keyboard controller\n"));
                power::kbc_reset();
            }
            RebootMethod::Triple => {
                say(format_args!("rebooting: triple fault\n"));
                power::triple_fault();
            }
            RebootMethod::No => {}
        }
    }
    say(format_args!("reboot=no: halted\n"));
    cpu::halt_forever()
}

/// After a crash: restarts in five seconds, as Xen does, or halts with `noreboot`.
pub fn after_crash() -> ! {
    stop_others();
    if policy().1 {
        say(format_args!("noreboot: halted\n"));
        cpu::halt_forever()
    }
    say(format_args!("Reboot in five seconds...\n"));
    hv_arch::time::delay_us(5_000_000);
    reboot()
}
