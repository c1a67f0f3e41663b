//! `run=<file>` on dom0's command line: a file of the boot bundle whose lines are shell
//! commands, run in order once the autostart domains are up (for scenarios that need
//! domains one after another). Two more commands wait, dom0 serving meanwhile:
//! `wait-gone <name>` until no domain of `xl`'s has that name (a domain that reboots keeps
//! it), `wait-data <name> <key>` until that domain wrote `data/<key>`. In the other lines,
//! `${<name>/<key>}` stands for what domain `<name>` wrote at `data/<key>` (an address it
//! got, say), and `${host-port}` for dom0's `host-port=` argument (a port the test harness
//! serves on the host's loopback).

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
        ["wait-data", name, key] => match id(name) {
            Some(id) => crate::xs::read(&alloc::format!("/local/domain/{id}/data/{key}")).is_err(),
            None => false,
        },
        _ => false,
    }
}

/// A domain's id by name (`Domain-0` is dom0).
fn id(name: &str) -> Option<u16> {
    if name == "Domain-0" {
        return Some(0);
    }
    crate::xl::id_of(name)
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
            let line = substitute(&line);
            pv_runtime::println!("dom0# {}", line);
            crate::run(&line);
        }
    }
}

/// `${name/key}` replaced by domain `name`'s `data/key` (empty if it has none).
fn substitute(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find("${") {
        let Some(j) = rest[i..].find('}') else { break };
        out.push_str(&rest[..i]);
        let var = &rest[i + 2..i + j];
        if var == "host-port" {
            out.push_str(crate::cmdline_value("host-port").unwrap_or(""));
        } else if let Some((name, key)) = var.split_once('/') {
            if let Some(v) = id(name).and_then(|id| crate::xs::read(&alloc::format!("/local/domain/{id}/data/{key}")).ok()) {
                // A domain writes its `data/` itself: only a plain word (an address, a
                // number) is put into the line, so none can add words or quotes to it.
                let v = String::from_utf8_lossy(&v);
                let v = v.trim_end_matches('\0');
                if !v.is_empty() && !v.starts_with('-') && v.bytes().all(|c| c.is_ascii_alphanumeric() || b".:_-/".contains(&c)) {
                    out.push_str(v);
                } else {
                    pv_runtime::println!("dom0: script: {name}'s data/{key} is not a plain word: left out");
                }
            }
        }
        rest = &rest[i + j + 1..];
    }
    out.push_str(rest);
    out
}
