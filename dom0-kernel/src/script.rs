//! `run=<file>` on dom0's command line: a file of the boot bundle whose lines are shell
//! commands, run in order once the autostart domains are up (for scenarios that need
//! domains one after another). Two more commands wait, dom0 serving meanwhile:
//! `wait-gone <name>` until no domain of `xl`'s has that name (a domain that reboots keeps
//! it), `wait-data <name> <key>` until that domain wrote `data/<key>`.

use alloc::string::String;
use alloc::vec::Vec;

static SCRIPT: spin::Mutex<Option<(Vec<String>, usize)>> = spin::Mutex::new(None);

/// Takes the script's text.
pub fn start(text: &str) {
    let lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect();
    *SCRIPT.lock() = Some((lines, 0));
    resume();
}

fn waiting(line: &str) -> bool {
    let w: Vec<&str> = line.split_ascii_whitespace().collect();
    match w.as_slice() {
        ["wait-gone", name] => crate::xl::id_of(name).is_some(),
        ["wait-data", name, key] => match crate::xl::id_of(name) {
            Some(id) => crate::xs::read(&alloc::format!("/local/domain/{id}/data/{key}")).is_err(),
            None => false,
        },
        _ => false,
    }
}

/// Runs lines until one waits for what has not happened yet (called again after the
/// events that may change that).
pub fn resume() {
    loop {
        let line = {
            let mut g = SCRIPT.lock();
            let Some((lines, at)) = g.as_mut() else { return };
            let Some(l) = lines.get(*at).cloned() else {
                *g = None;
                return;
            };
            if waiting(&l) {
                return;
            }
            *at += 1;
            l
        };
        if !line.starts_with("wait-") {
            pv_runtime::println!("dom0# {}", line);
            crate::run(&line);
        }
    }
}
