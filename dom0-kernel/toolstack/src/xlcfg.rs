//! A subset of `xl.cfg` (xl.cfg(5)): `KEY = VALUE` settings, one per line or separated by
//! `;`, `#` comments; a value is a quoted string ("..." or '...'), a number, or a list
//! `[ v, v, ... ]` that may span lines.
//!
//! Understood: `name`, `kernel`, `cmdline` / `extra`, `memory`, `maxmem`, `vcpus`,
//! `maxvcpus`, `cpus`, `cpu_weight`, `cap`, `on_poweroff` / `on_reboot` / `on_crash`, and
//! `disk` / `vif` (kept as given, for the device backends). Other keys are kept, unused, as
//! xl does. Errors are one line in xl's manner (`<file>:<line>: ...`) and nothing of a
//! config that has one is used.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// A setting's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Num(u64),
    List(Vec<Value>),
}

/// What to do when a domain powers off, reboots or crashes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Destroy,
    Restart,
    /// Keep it, dead, for inspection.
    Preserve,
}

/// A domain's configuration, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub name: String,
    pub kernel: String,
    pub cmdline: String,
    /// MiB.
    pub memory: u64,
    pub maxmem: u64,
    pub vcpus: u32,
    pub maxvcpus: u32,
    /// Hard affinity: a CPU bitmap (all when `None`).
    pub cpus: Option<u64>,
    pub weight: u32,
    /// Percent of one CPU, 0 = no cap.
    pub cap: u32,
    pub on_poweroff: Action,
    pub on_reboot: Action,
    pub on_crash: Action,
    pub disks: Vec<String>,
    pub vifs: Vec<String>,
    /// Every setting as written.
    pub raw: BTreeMap<String, Value>,
}

/// A one-line error: `line` 0 when it is about the whole config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub msg: String,
}

impl ParseError {
    fn at(line: usize, msg: impl Into<String>) -> ParseError {
        ParseError { line, msg: msg.into() }
    }

    /// As xl prints it for config file `file`.
    pub fn show(&self, file: &str) -> String {
        if self.line == 0 {
            format!("{}: {}", file, self.msg)
        } else {
            format!("{}:{}: config parsing error: {}", file, self.line, self.msg)
        }
    }
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
    line: usize,
}

impl Lexer<'_> {
    /// Skips blanks and comments; with `newlines`, line ends too.
    fn skip(&mut self, newlines: bool) {
        while let Some(&c) = self.s.get(self.i) {
            match c {
                b' ' | b'\t' | b'\r' => self.i += 1,
                b'\n' if newlines => {
                    self.line += 1;
                    self.i += 1;
                }
                b'#' => {
                    while self.s.get(self.i).is_some_and(|&c| c != b'\n') {
                        self.i += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ident(&mut self) -> Option<String> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_') {
            self.i += 1;
        }
        (self.i > start && !self.s[start].is_ascii_digit()).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
        self.skip(depth > 0);
        match self.peek() {
            Some(q @ (b'"' | b'\'')) => {
                self.i += 1;
                let start = self.i;
                while self.peek().is_some_and(|c| c != q && c != b'\n') {
                    self.i += 1;
                }
                if self.peek() != Some(q) {
                    return Err(ParseError::at(self.line, "unterminated string"));
                }
                let v = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                self.i += 1;
                Ok(Value::Str(v))
            }
            Some(c) if c.is_ascii_digit() => {
                let start = self.i;
                while self.peek().is_some_and(|c| c.is_ascii_alphanumeric()) {
                    self.i += 1;
                }
                let t = core::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
                let n = if let Some(h) = t.strip_prefix("0x") { u64::from_str_radix(h, 16).ok() } else { t.parse().ok() };
                n.map(Value::Num).ok_or_else(|| ParseError::at(self.line, format!("bad number '{}'", t)))
            }
            Some(b'[') if depth < 4 => {
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    self.skip(true);
                    if self.peek() == Some(b']') {
                        self.i += 1;
                        return Ok(Value::List(items));
                    }
                    items.push(self.value(depth + 1)?);
                    self.skip(true);
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {}
                        _ => return Err(ParseError::at(self.line, "expected ',' or ']' in list")),
                    }
                }
            }
            _ => Err(ParseError::at(self.line, "expected a value (a \"string\", a number or a [list])")),
        }
    }
}

/// The settings of a config text, in order of appearance (a later one replaces an earlier).
pub fn settings(text: &str) -> Result<BTreeMap<String, (usize, Value)>, ParseError> {
    let mut lx = Lexer { s: text.as_bytes(), i: 0, line: 1 };
    let mut out = BTreeMap::new();
    loop {
        lx.skip(true);
        let Some(c) = lx.peek() else { break };
        if c == b';' {
            lx.i += 1;
            continue;
        }
        let line = lx.line;
        let key = lx.ident().ok_or_else(|| ParseError::at(line, format!("unexpected '{}'", c as char)))?;
        lx.skip(false);
        if lx.peek() != Some(b'=') {
            return Err(ParseError::at(line, format!("expected '=' after '{}'", key)));
        }
        lx.i += 1;
        let v = lx.value(0)?;
        lx.skip(false);
        match lx.peek() {
            None | Some(b'\n') | Some(b';') => {}
            Some(c) => return Err(ParseError::at(lx.line, format!("unexpected '{}' after the value of '{}'", c as char, key))),
        }
        out.insert(key, (line, v));
    }
    Ok(out)
}

fn cpu_list(s: &str) -> Option<u64> {
    crate::xl::cpu_map(s)
}

/// Parses and checks a config.
/// `xl create <config> [Variable=Value ...]`: the config's text with each assignment after
/// it (a later one wins). A value that is not already in config syntax (a quoted string, a
/// number, a list) is taken as a string, as after the shell removed its quotes.
pub fn with_overrides(text: &str, overrides: &[String]) -> String {
    let mut t = String::from(text);
    for o in overrides {
        let Some((k, v)) = o.split_once('=') else { continue };
        let v = v.trim();
        let literal = v.starts_with('"') || v.starts_with('\'') || v.starts_with('[') || (!v.is_empty() && v.bytes().all(|c| c.is_ascii_digit()));
        t.push('\n');
        if literal {
            t.push_str(&alloc::format!("{} = {}\n", k.trim(), v));
        } else {
            t.push_str(&alloc::format!("{} = \"{}\"\n", k.trim(), v.replace('\\', "\\\\").replace('"', "\\\"")));
        }
    }
    t
}

/// The most `memory` / `maxmem` a config may give (MiB).
pub const MAX_MIB: u64 = 16 << 20;

pub fn parse(text: &str) -> Result<Config, ParseError> {
    let set = settings(text)?;
    let line = |k: &str| set.get(k).map_or(0, |(l, _)| *l);
    let string = |k: &str| -> Result<Option<String>, ParseError> {
        match set.get(k) {
            None => Ok(None),
            Some((_, Value::Str(s))) => Ok(Some(s.clone())),
            Some((l, _)) => Err(ParseError::at(*l, format!("'{}' must be a string", k))),
        }
    };
    let number = |k: &str| -> Result<Option<u64>, ParseError> {
        match set.get(k) {
            None => Ok(None),
            Some((_, Value::Num(n))) => Ok(Some(*n)),
            Some((l, _)) => Err(ParseError::at(*l, format!("'{}' must be a number", k))),
        }
    };
    let strings = |k: &str| -> Result<Vec<String>, ParseError> {
        match set.get(k) {
            None => Ok(Vec::new()),
            Some((l, Value::List(items))) => items
                .iter()
                .map(|v| match v {
                    Value::Str(s) => Ok(s.clone()),
                    _ => Err(ParseError::at(*l, format!("'{}' must be a list of strings", k))),
                })
                .collect(),
            Some((l, _)) => Err(ParseError::at(*l, format!("'{}' must be a list", k))),
        }
    };
    let action = |k: &str, default: Action| -> Result<Action, ParseError> {
        Ok(match string(k)?.as_deref() {
            None => default,
            Some("destroy") | Some("coredump-destroy") => Action::Destroy,
            Some("restart") | Some("rename-restart") | Some("coredump-restart") => Action::Restart,
            Some("preserve") => Action::Preserve,
            Some(o) => return Err(ParseError::at(line(k), format!("unknown {} action '{}'", k, o))),
        })
    };
    let name = string("name")?.ok_or_else(|| ParseError::at(0, "domain name must be specified"))?;
    if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')) || name.bytes().all(|c| c.is_ascii_digit()) {
        return Err(ParseError::at(line("name"), format!("invalid domain name '{}'", name)));
    }
    let kernel = string("kernel")?.ok_or_else(|| ParseError::at(0, "no kernel specified"))?;
    let cmdline = match (string("cmdline")?, string("extra")?) {
        (Some(c), _) => c,
        (None, Some(e)) => e,
        (None, None) => String::new(),
    };
    let memory = number("memory")?.unwrap_or(128);
    let maxmem = number("maxmem")?.unwrap_or(memory);
    if memory == 0 || maxmem < memory {
        return Err(ParseError::at(line("maxmem").max(line("memory")), format!("maxmem ({} MiB) must be at least memory ({} MiB), and memory more than 0", maxmem, memory)));
    }
    // 16 TiB: far past any machine here, and no page count overflows.
    if maxmem > MAX_MIB {
        return Err(ParseError::at(line("maxmem").max(line("memory")), format!("maxmem ({} MiB) is more than {} MiB", maxmem, MAX_MIB)));
    }
    let vcpus = number("vcpus")?.unwrap_or(1);
    let maxvcpus = number("maxvcpus")?.unwrap_or(vcpus);
    if vcpus == 0 || maxvcpus < vcpus || maxvcpus > 32 {
        return Err(ParseError::at(line("maxvcpus").max(line("vcpus")), format!("vcpus ({}) must be 1..=maxvcpus ({}), at most 32", vcpus, maxvcpus)));
    }
    let cpus = match set.get("cpus") {
        None => None,
        Some((l, Value::Str(s))) => Some(cpu_list(s).ok_or_else(|| ParseError::at(*l, format!("invalid cpus '{}'", s)))?),
        Some((_, Value::Num(n))) if *n < 64 => Some(1 << n),
        Some((l, Value::List(items))) => {
            let mut m = 0;
            for v in items {
                m |= match v {
                    Value::Str(s) => cpu_list(s),
                    Value::Num(n) if *n < 64 => Some(1 << n),
                    _ => None,
                }
                .ok_or_else(|| ParseError::at(*l, "invalid cpus list"))?;
            }
            Some(m)
        }
        Some((l, _)) => return Err(ParseError::at(*l, "invalid cpus")),
    };
    let weight = number("cpu_weight")?.unwrap_or(256);
    if !(1..=65535).contains(&weight) {
        return Err(ParseError::at(line("cpu_weight"), format!("cpu_weight {} out of range (1..65535)", weight)));
    }
    let cap = number("cap")?.unwrap_or(0);
    if cap > 100 * maxvcpus {
        return Err(ParseError::at(line("cap"), format!("cap {} out of range (0..{})", cap, 100 * maxvcpus)));
    }
    Ok(Config {
        name,
        kernel,
        cmdline,
        memory,
        maxmem,
        vcpus: vcpus as u32,
        maxvcpus: maxvcpus as u32,
        cpus,
        weight: weight as u32,
        cap: cap as u32,
        on_poweroff: action("on_poweroff", Action::Destroy)?,
        on_reboot: action("on_reboot", Action::Restart)?,
        on_crash: action("on_crash", Action::Destroy)?,
        disks: strings("disk")?,
        vifs: strings("vif")?,
        raw: set.into_iter().map(|(k, (_, v))| (k, v)).collect(),
    })
}

impl Config {
    /// The config's text again (`xl create` keeps it for the domain; parsing it gives the
    /// same config).
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        for (k, v) in &self.raw {
            t.push_str(k);
            t.push_str(" = ");
            write_value(&mut t, v);
            t.push('\n');
        }
        t
    }
}

fn write_value(t: &mut String, v: &Value) {
    match v {
        Value::Str(s) => {
            let q = if s.contains('"') { '\'' } else { '"' };
            t.push(q);
            t.push_str(s);
            t.push(q);
        }
        Value::Num(n) => t.push_str(&n.to_string()),
        Value::List(items) => {
            t.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    t.push_str(", ");
                }
                write_value(t, v);
            }
            t.push(']');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = r#"
# A small guest.
name = "guest1"
kernel = "/boot/tiny"   # its image in the bundle
extra = "console=hvc0"
memory = 16; maxmem = 32
vcpus = 2
maxvcpus = 4
cpus = "0-1,3"
cpu_weight = 512
cap = 50
on_crash = 'restart'
disk = [ 'phy:/dev/vg/guest1,xvda,w',
         'file:/img/data.img,xvdb,r' ]
vif = [ "mac=00:16:3e:00:00:01,bridge=xenbr0" ]
unknown_key = 7
"#;

    #[test]
    fn overrides() {
        let t = with_overrides("name = 'a'\nkernel = 'k'\nextra = 'x'\n", &["extra=source 10.0.2.16 5001".into(), "memory=32".into(), "name=\"b\"".into()]);
        let c = parse(&t).unwrap();
        assert_eq!(c.cmdline, "source 10.0.2.16 5001");
        assert_eq!((c.name.as_str(), c.memory), ("b", 32));
    }

    #[test]
    fn a_full_config() {
        let c = parse(SAMPLE).unwrap();
        assert_eq!(c.name, "guest1");
        assert_eq!(c.kernel, "/boot/tiny");
        assert_eq!(c.cmdline, "console=hvc0");
        assert_eq!((c.memory, c.maxmem, c.vcpus, c.maxvcpus), (16, 32, 2, 4));
        assert_eq!(c.cpus, Some(0b1011));
        assert_eq!((c.weight, c.cap), (512, 50));
        assert_eq!((c.on_poweroff, c.on_reboot, c.on_crash), (Action::Destroy, Action::Restart, Action::Restart));
        assert_eq!(c.disks, ["phy:/dev/vg/guest1,xvda,w", "file:/img/data.img,xvdb,r"]);
        assert_eq!(c.vifs.len(), 1);
        assert_eq!(c.raw.get("unknown_key"), Some(&Value::Num(7)));
        assert_eq!(parse(&c.to_text()).unwrap(), c, "its text parses back to it");
    }

    #[test]
    fn defaults_and_errors() {
        let c = parse("name='a'\nkernel='k'\n").unwrap();
        assert_eq!((c.memory, c.maxmem, c.vcpus, c.weight, c.cap, c.cpus), (128, 128, 1, 256, 0, None));
        let e = |t: &str| parse(t).unwrap_err().show("x.cfg");
        assert_eq!(e("kernel='k'"), "x.cfg: domain name must be specified");
        assert_eq!(e("name='a'"), "x.cfg: no kernel specified");
        assert_eq!(e("name='a'\nkernel='k'\nmemory = \"lots\""), "x.cfg:3: config parsing error: 'memory' must be a number");
        assert!(e("name='a'\nkernel='k'\nmaxmem=99999999999999").contains("is more than"));
        assert_eq!(e("name='a'\nkernel='k'\nmemory=64\nmaxmem=32"), "x.cfg:4: config parsing error: maxmem (32 MiB) must be at least memory (64 MiB), and memory more than 0");
        assert_eq!(e("name='a\nkernel='k'"), "x.cfg:1: config parsing error: unterminated string");
        assert_eq!(e("name='a'\nkernel='k'\nvcpus=3\nmaxvcpus=2"), "x.cfg:4: config parsing error: vcpus (3) must be 1..=maxvcpus (2), at most 32");
        assert_eq!(e("name='a'\nkernel='k'\non_crash='explode'"), "x.cfg:3: config parsing error: unknown on_crash action 'explode'");
        assert_eq!(e("name='a'\nkernel='k'\ncpus='0-99'"), "x.cfg:3: config parsing error: invalid cpus '0-99'");
        assert_eq!(e("name='1234'\nkernel='k'"), "x.cfg:1: config parsing error: invalid domain name '1234'");
        assert_eq!(e("name='a' kernel='k'"), "x.cfg:1: config parsing error: unexpected 'k' after the value of 'name'");
        assert_eq!(e("= 3"), "x.cfg:1: config parsing error: unexpected '='");
        assert_eq!(e("name='a'\nkernel='k'\ndisk=['a',"), "x.cfg:3: config parsing error: expected a value (a \"string\", a number or a [list])");
        assert_eq!(e("name='a'\nkernel='k'\ncap=500"), "x.cfg:3: config parsing error: cap 500 out of range (0..100)");
    }

    proptest! {
        /// Any text: a config or a one-line error, never a panic.
        #[test]
        fn never_panics(t in "[ -~\n\t]{0,200}") {
            let _ = parse(&t).map_err(|e| assert!(!e.show("f").contains('\n')));
        }

        /// Settings written out and read back are the same settings.
        #[test]
        fn text_round_trips(mem in 1u64..100_000, vcpus in 1u64..32, w in 1u64..65535, name in "[a-z][a-z0-9_-]{0,20}", extra in "[ -&(-~]{0,40}") {
            let t = format!("name = \"{name}\"\nkernel = \"/k\"\nmemory = {mem}\nvcpus = {vcpus}\ncpu_weight = {w}\nextra = '{extra}'\n");
            let c = parse(&t).unwrap();
            prop_assert_eq!(parse(&c.to_text()).unwrap(), c);
        }
    }
}
