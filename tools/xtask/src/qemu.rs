//! Running QEMU: the scenario runner (hard timeout, serial capture, isa-debug-exit decoding)
//! and interactive runs.

use guest_abi::harness::{ExitCode, DEBUG_EXIT_PORT};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Accel {
    Tcg,
    Kvm,
}

#[derive(Clone, Debug)]
pub enum Boot {
    /// `-kernel` via the Xen PVH note; the module goes in as `-initrd`.
    Pvh { kernel: PathBuf, module: PathBuf, cmdline: String },
    /// A GRUB ISO (multiboot2).
    Iso(PathBuf),
}

#[derive(Clone, Debug)]
pub struct Config {
    pub accel: Accel,
    /// TCG's `-cpu` model (`max` when `None`).
    pub cpu: Option<String>,
    pub boot: Boot,
    pub memory_mb: u32,
    pub timeout: Duration,
    pub icount: bool,
    /// Serial input (`.1`) typed once `.0` first appears on the output, a line every 200 ms;
    /// a line starting with `\x1e` (ASCII RS, never typed) is text to wait for instead (see
    /// [`type_input`]).
    pub input: Option<(&'static str, &'static str)>,
    /// Number of CPUs (`-smp`).
    pub smp: u32,
    /// Serial multiplexed with the QEMU monitor on the terminal (Ctrl-A x quits).
    pub interactive: bool,
    /// Inject an NMI into every CPU through the monitor this often (scenario runs only).
    pub nmi_every: Option<Duration>,
    /// `-machine` (QEMU's default, i440FX `pc`, when `None`).
    pub machine: Option<&'static str>,
    /// UEFI firmware (OVMF) instead of SeaBIOS.
    pub uefi: bool,
    /// A raw disk image attached as a virtio-blk PCI device ...
    pub disk: Option<PathBuf>,
    /// ... behind QEMU's `blkdebug` driver with this rules file (injected I/O errors).
    pub disk_errors: Option<PathBuf>,
    /// A virtio-net PCI device on QEMU's user network (10.0.2.0/24, gateway 10.0.2.2).
    pub net: bool,
    /// ... with this host port (on 127.0.0.1) forwarded to port 80 of the network's first
    /// DHCP client (10.0.2.15) ...
    pub forward: Option<u16>,
    /// ... and fetched once (`GET /`) when this text first appears on the serial line; the
    /// answer is added to the output as `[host] ` lines.
    pub get_after: Option<&'static str>,
    /// A display adapter (`-vga <this>`: `std`, `virtio`, ...) rather than none: the screen
    /// console.
    pub vga: Option<&'static str>,
    /// QEMU's `-display` (`none` when `None`), e.g. `vnc=127.0.0.1:0` to see the screen.
    pub display: Option<String>,
    /// `input` is typed on the PS/2 keyboard (the monitor's `sendkey`) rather than COM1.
    pub keyboard: bool,
    /// Where screen captures go: a line of `input` starting with `\x1c` (ASCII FS) takes
    /// one, `<base>-<n>.ppm` (the monitor's `screendump`) and `<base>-<n>.mon` (its answer
    /// to `xp` of the VGA text memory), n from 0.
    pub capture: Option<PathBuf>,
    /// QEMU's gdb stub on this local port, the machine stopped before its first instruction
    /// (`cargo xtask gdb`); the serial line then goes to a pseudo-terminal.
    pub gdb_port: Option<u16>,
}

impl Config {
    pub fn new(accel: Accel) -> Config {
        Config {
            accel,
            boot: Boot::Iso(PathBuf::new()),
            memory_mb: 256,
            timeout: Duration::from_secs(60),
            icount: false,
            input: None,
            smp: 1,
            interactive: false,
            nmi_every: None,
            machine: None,
            disk: None,
            disk_errors: None,
            net: false,
            forward: None,
            get_after: None,
            cpu: None,
            uefi: false,
            vga: None,
            display: None,
            keyboard: false,
            capture: None,
            gdb_port: None,
        }
    }

    /// Does a run need the monitor socket (NMIs, keys, screen captures)?
    fn wants_monitor(&self) -> bool {
        self.nmi_every.is_some() || self.keyboard || self.capture.is_some()
    }

    fn command(&self) -> Command {
        let mut c = Command::new("qemu-system-x86_64");
        match self.accel {
            Accel::Tcg => c.args(["-accel", "tcg", "-cpu", self.cpu.as_deref().unwrap_or("max")]),
            Accel::Kvm => c.args(["-accel", "kvm", "-cpu", "host"]),
        };
        let serial = match (self.gdb_port, self.interactive) {
            (Some(_), _) => "pty",
            (None, true) => "mon:stdio",
            (None, false) => "stdio",
        };
        c.args(["-m", &format!("{}M", self.memory_mb), "-smp", &self.smp.to_string(), "-display", self.display.as_deref().unwrap_or("none"), "-no-reboot", "-serial", serial]);
        c.args(["-device", &format!("isa-debug-exit,iobase={:#x},iosize=0x04", DEBUG_EXIT_PORT)]);
        c.args(["-nodefaults", "-vga", self.vga.unwrap_or("none")]);
        if let Some(m) = self.machine {
            c.args(["-machine", m]);
        }
        if self.uefi {
            c.arg("-bios").arg(ovmf());
        }
        if let Some(d) = &self.disk {
            let file = match &self.disk_errors {
                Some(rules) => format!("blkdebug:{}:{}", rules.display(), d.display()),
                None => d.display().to_string(),
            };
            c.arg("-drive").arg(format!("file={file},if=none,id=disk0,format=raw,cache=writeback"));
            c.args(["-device", "virtio-blk-pci,drive=disk0"]);
        }
        if self.net {
            let fwd = self.forward.map(|p| format!(",hostfwd=tcp:127.0.0.1:{p}-:80")).unwrap_or_default();
            c.args(["-netdev", &format!("user,id=net0{fwd}"), "-device", "virtio-net-pci,netdev=net0"]);
        }
        if !self.interactive && !self.wants_monitor() {
            c.args(["-monitor", "none"]);
        }
        if let Some(p) = self.gdb_port {
            c.args(["-gdb", &format!("tcp:127.0.0.1:{p}"), "-S"]);
        }
        if self.icount {
            c.args(["-icount", "shift=0"]);
        }
        match &self.boot {
            Boot::Pvh { kernel, module, cmdline } => {
                c.arg("-kernel").arg(kernel).arg("-initrd").arg(module).arg("-append").arg(cmdline);
            }
            Boot::Iso(p) => {
                c.arg("-cdrom").arg(p).args(["-boot", "d"]);
            }
        }
        c
    }
}

/// Debian's OVMF image (the `ovmf` package: firmware code and variables in one, for
/// `-bios`), or where it would be.
pub fn ovmf() -> &'static str {
    ["/usr/share/ovmf/OVMF.fd", "/usr/share/qemu/OVMF.fd"].into_iter().find(|p| std::path::Path::new(p).exists()).unwrap_or("/usr/share/ovmf/OVMF.fd")
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    pub output: String,
    /// Decoded isa-debug-exit code; `None` for other exits.
    pub code: Option<ExitCode>,
    pub status: Option<i32>,
    pub timed_out: bool,
    pub wall: Duration,
    /// Wall time from QEMU start until `marker` first appeared on the serial line.
    pub marker_at: Option<Duration>,
}

/// Runs to completion (or the timeout), capturing the serial output.
pub fn run(cfg: &Config, marker: Option<&str>) -> Result<Outcome, String> {
    let start = Instant::now();
    let mut cmd = cfg.command();
    let monitor = cfg.wants_monitor().then(|| {
        let p = std::env::temp_dir().join(format!("rxen-monitor-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&p);
        cmd.arg("-monitor").arg(format!("unix:{},server=on,wait=off", p.display()));
        p
    });
    let mut child = cmd
        .stdin(if cfg.input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("qemu-system-x86_64: {e} (run scripts/setup.sh)"))?;
    let mut out = child.stdout.take().ok_or("no stdout")?;
    let marker = marker.map(str::to_owned);
    let stdin = child.stdin.take();
    // NMIs start once the hypervisor runs its first guest (before its IDT exists an NMI would
    // triple-fault the machine, as on hardware).
    let booted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let booted_w = booted.clone();
    let host_lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let get = cfg.get_after.zip(cfg.forward).map(|g| (g, host_lines.clone()));
    // Everything read so far, shared with the typist (which must never hold up the reading:
    // QEMU drops serial output it cannot write).
    let shared = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let ended = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let typist = match (cfg.input, stdin) {
        (Some((after, text)), Some(w)) => {
            let (shared, ended) = (shared.clone(), ended.clone());
            let mut t = Typist { serial: w, monitor: None, keyboard: cfg.keyboard, capture: cfg.capture.clone(), captures: 0 };
            let path = monitor.clone();
            Some(std::thread::spawn(move || {
                if let Some(p) = path.filter(|_| t.keyboard || t.capture.is_some()) {
                    t.monitor = Monitor::connect(&p, true, &|| false);
                }
                type_input(&mut t, after, text, &shared, &ended)
            }))
        }
        _ => None,
    };
    let shared_w = shared.clone();
    let reader = std::thread::spawn(move || {
        let mut get = get;
        let mut chunk = [0u8; 4096];
        let mut seen = None;
        while let Ok(n) = out.read(&mut chunk) {
            if n == 0 {
                break;
            }
            let Ok(mut buf) = shared_w.lock() else { break };
            let from = buf.len();
            buf.extend_from_slice(&chunk[..n]);
            if !booted_w.load(std::sync::atomic::Ordering::Relaxed) && appeared(&buf, from, "d0: entering ring ") {
                booted_w.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            if let Some(((after, port), lines)) = get.as_ref() {
                if appeared(&buf, from, after) {
                    let (port, lines) = (*port, lines.clone());
                    std::thread::spawn(move || {
                        let r = http_get(port);
                        if let Ok(mut l) = lines.lock() {
                            l.extend(r.lines().map(|x| format!("[host] {x}")));
                        }
                    });
                    get = None;
                }
            }
            if seen.is_none() {
                if let Some(m) = &marker {
                    if appeared(&buf, from, m) {
                        seen = Some(start.elapsed());
                    }
                }
            }
        }
        seen
    });
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let injector = match (monitor.clone(), cfg.nmi_every) {
        (Some(path), Some(every)) => {
            let done = done.clone();
            let booted = booted.clone();
            Some(std::thread::spawn(move || {
                while !booted.load(std::sync::atomic::Ordering::SeqCst) && !done.load(std::sync::atomic::Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                inject_nmis(&path, every, &done)
            }))
        }
        _ => None,
    };
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if start.elapsed() > cfg.timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait().map_err(|e| e.to_string())?;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let wall = start.elapsed();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let nmis = injector.map(|t| t.join().unwrap_or(0));
    if let Some(p) = &monitor {
        let _ = std::fs::remove_file(p);
    }
    let marker_at = reader.join().map_err(|_| "serial reader panicked")?;
    ended.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(t) = typist {
        let _ = t.join();
    }
    let buf = std::mem::take(&mut *shared.lock().map_err(|_| "serial buffer poisoned")?);
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let mut output = String::from_utf8_lossy(&buf).replace('\r', "");
    if !err.trim().is_empty() {
        output.push_str("\n[qemu stderr] ");
        output.push_str(err.trim());
    }
    if let Some(n) = nmis {
        output.push_str(&format!("\n[runner] {n} NMIs injected through the monitor"));
    }
    if let Ok(l) = host_lines.lock() {
        for x in l.iter() {
            output.push('\n');
            output.push_str(x);
        }
    }
    let code = status.code().and_then(ExitCode::from_qemu_status);
    Ok(Outcome { output, code, status: status.code(), timed_out, wall, marker_at })
}

/// Has `needle` appeared in `buf` with bytes from `from` on (the bytes just read)?
fn appeared(buf: &[u8], from: usize, needle: &str) -> bool {
    let n = needle.as_bytes();
    let tail = &buf[from.saturating_sub(n.len().saturating_sub(1))..];
    !n.is_empty() && tail.windows(n.len()).any(|w| w == n)
}

/// Types `text` on QEMU's serial input once `after` appears in the output: a line (ended by
/// `\r`) every 200 ms, except that a line starting with `\x1e` (ASCII RS, never typed: `\x01`
/// is Ctrl-A, which scenarios type) is not typed but waited for:
/// the rest of it must appear in the output written after the previous line was typed
/// (until QEMU ends). Stops when QEMU ends.
fn type_input(w: &mut Typist, after: &str, text: &str, out: &std::sync::Mutex<Vec<u8>>, ended: &std::sync::atomic::AtomicBool) {
    let wait_for = |needle: &str, from: usize| -> bool {
        loop {
            if out.lock().map(|b| b.len() >= from && appeared(&b, from, needle)).unwrap_or(true) {
                return true;
            }
            if ended.load(std::sync::atomic::Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    if !wait_for(after, 0) {
        return;
    }
    let mut mark = 0;
    for line in text.split_inclusive('\r') {
        if let Some(needle) = line.strip_prefix('\x1e') {
            if !wait_for(needle.trim_end_matches('\r'), mark) {
                return;
            }
            continue;
        }
        if line.starts_with('\x1c') {
            w.capture();
            continue;
        }
        mark = out.lock().map(|b| b.len()).unwrap_or(0);
        if w.type_line(line).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The QEMU monitor over its socket; a reader thread drains its answers (so QEMU never
/// blocks writing them) and, if asked, keeps them.
struct Monitor {
    sock: std::os::unix::net::UnixStream,
    answers: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Monitor {
    /// Connects (retrying for up to 5 s, unless `give_up` says to stop first).
    fn connect(path: &std::path::Path, keep: bool, give_up: &dyn Fn() -> bool) -> Option<Monitor> {
        let sock = (0..500).find_map(|_| {
            if give_up() {
                return Some(None);
            }
            std::os::unix::net::UnixStream::connect(path).ok().map(Some).or_else(|| {
                std::thread::sleep(Duration::from_millis(10));
                None
            })
        })??;
        let answers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (mut r, a) = (sock.try_clone().ok()?, answers.clone());
        std::thread::spawn(move || {
            let mut b = [0u8; 4096];
            while let Ok(n) = r.read(&mut b) {
                if n == 0 {
                    break;
                }
                if let (true, Ok(mut v)) = (keep, a.lock()) {
                    v.extend_from_slice(&b[..n]);
                }
            }
        });
        Some(Monitor { sock, answers })
    }

    fn command(&mut self, c: &str) -> std::io::Result<()> {
        use std::io::Write;
        self.sock.write_all(c.as_bytes())?;
        self.sock.write_all(b"\n")
    }
}

/// Where scenario input goes: COM1, or the keyboard through the monitor.
struct Typist {
    serial: std::process::ChildStdin,
    monitor: Option<Monitor>,
    keyboard: bool,
    capture: Option<PathBuf>,
    captures: usize,
}

impl Typist {
    fn type_line(&mut self, line: &str) -> std::io::Result<()> {
        use std::io::Write;
        match (&mut self.monitor, self.keyboard) {
            (Some(m), true) => {
                for c in line.chars() {
                    let Some(k) = qcode(c) else { continue };
                    m.command(&format!("sendkey {k} 20"))?;
                    std::thread::sleep(Duration::from_millis(40));
                }
                Ok(())
            }
            _ => self.serial.write_all(line.as_bytes()).and_then(|_| self.serial.flush()),
        }
    }

    /// A screen capture: the framebuffer as a PPM, the VGA text memory as `xp` prints it.
    fn capture(&mut self) {
        let (Some(m), Some(base)) = (&mut self.monitor, &self.capture) else { return };
        let n = self.captures;
        self.captures += 1;
        let ppm = format!("{}-{n}.ppm", base.display());
        let _ = std::fs::remove_file(&ppm);
        if let Ok(mut a) = m.answers.lock() {
            a.clear();
        }
        let _ = m.command(&format!("screendump {ppm}"));
        let _ = m.command("xp /2000hx 0xb8000");
        std::thread::sleep(Duration::from_millis(1500));
        let text = m.answers.lock().map(|a| a.clone()).unwrap_or_default();
        let _ = std::fs::write(format!("{}-{n}.mon", base.display()), text);
    }
}

/// The monitor's `sendkey` name of `c` (US layout), if it has one.
fn qcode(c: char) -> Option<String> {
    const SHIFTED: &[(char, &str)] = &[('!', "1"), ('@', "2"), ('#', "3"), ('$', "4"), ('%', "5"), ('^', "6"), ('&', "7"), ('*', "8"), ('(', "9"), (')', "0"), ('_', "minus"), ('+', "equal"), ('{', "bracket_left"), ('}', "bracket_right"), ('|', "backslash"), (':', "semicolon"), ('"', "apostrophe"), ('<', "comma"), ('>', "dot"), ('?', "slash"), ('~', "grave_accent")];
    const PLAIN: &[(char, &str)] = &[(' ', "spc"), ('\r', "ret"), ('\n', "ret"), ('\t', "tab"), ('\x7f', "backspace"), ('-', "minus"), ('=', "equal"), ('[', "bracket_left"), (']', "bracket_right"), ('\\', "backslash"), (';', "semicolon"), ('\'', "apostrophe"), (',', "comma"), ('.', "dot"), ('/', "slash"), ('`', "grave_accent")];
    match c {
        'a'..='z' | '0'..='9' => Some(c.to_string()),
        'A'..='Z' => Some(format!("shift-{}", c.to_ascii_lowercase())),
        '\x01'..='\x1a' if !matches!(c, '\r' | '\n' | '\t') => Some(format!("ctrl-{}", (b'a' + c as u8 - 1) as char)),
        _ => SHIFTED.iter().find(|x| x.0 == c).map(|x| format!("shift-{}", x.1)).or_else(|| PLAIN.iter().find(|x| x.0 == c).map(|x| x.1.to_string())),
    }
}

/// `GET /` from 127.0.0.1:`port` (a port QEMU forwards into the guest network): the
/// answer, or what went wrong.
fn http_get(port: u16) -> String {
    use std::io::Write;
    let t0 = Instant::now();
    let go = || -> std::io::Result<String> {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port))?;
        c.set_read_timeout(Some(Duration::from_secs(60)))?;
        c.write_all(b"GET / HTTP/1.0\r\nHost: domu\r\n\r\n")?;
        let mut r = String::new();
        c.read_to_string(&mut r)?;
        Ok(r)
    };
    match go() {
        Ok(r) => format!("GET / through the port forward in {} ms:\n{}", t0.elapsed().as_millis(), r.replace('\r', "")),
        Err(e) => format!("GET / through the port forward failed: {e}"),
    }
}

/// A TCP server on the host's loopback for the guests (QEMU's user network reaches it as
/// 10.0.2.2): `GET /pattern/<n>` is answered with `n` bytes (at most 256 MiB) of
/// `pattern`; `PUT /sink` with a `Content-Length` takes that many bytes, checks them
/// against `pattern` and answers `received <n> bytes, <k> wrong`. Its port; it serves until
/// the process ends.
pub fn pattern_server(pattern: fn(u64) -> u8) -> Result<u16, String> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(|e| e.to_string())?;
    let port = l.local_addr().map_err(|e| e.to_string())?.port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            std::thread::spawn(move || serve_one(c, pattern));
        }
    });
    Ok(port)
}

fn serve_one(mut c: std::net::TcpStream, pattern: fn(u64) -> u8) {
    use std::io::Write;
    let _ = c.set_read_timeout(Some(Duration::from_secs(120)));
    let mut req = Vec::new();
    let mut b = [0u8; 4096];
    let end = loop {
        if let Some(e) = req.windows(4).position(|w| w == b"\r\n\r\n") {
            break e + 4;
        }
        if req.len() > 8192 {
            return;
        }
        match c.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&b[..n]),
        }
    };
    let head = String::from_utf8_lossy(&req[..end]).into_owned();
    let first = head.lines().next().unwrap_or("");
    if let Some(n) = first.strip_prefix("GET /pattern/").and_then(|r| r.split(' ').next()).and_then(|n| n.parse::<u64>().ok()).filter(|&n| n <= 256 << 20) {
        let _ = c.write_all(format!("HTTP/1.0 200 OK\r\nContent-Length: {n}\r\n\r\n").as_bytes());
        let mut at = 0u64;
        while at < n {
            let k = (n - at).min(b.len() as u64) as usize;
            for (i, x) in b[..k].iter_mut().enumerate() {
                *x = pattern(at + i as u64);
            }
            if c.write_all(&b[..k]).is_err() {
                return;
            }
            at += k as u64;
        }
    } else if first.starts_with("PUT /sink ") {
        let want = head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0);
        let (mut got, mut wrong) = (0u64, 0u64);
        let mut check = |data: &[u8], got: &mut u64| {
            for &x in data {
                if x != pattern(*got) {
                    wrong += 1;
                }
                *got += 1;
            }
        };
        check(&req[end..], &mut got);
        while got < want {
            match c.read(&mut b) {
                Ok(0) | Err(_) => break,
                Ok(n) => check(&b[..n], &mut got),
            }
        }
        let body = format!("received {got} bytes, {wrong} wrong\n");
        let _ = c.write_all(format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
    } else {
        let _ = c.write_all(b"HTTP/1.0 404 Not Found\r\n\r\n");
    }
}

/// A free port on the host's loopback (for a forward).
pub fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// Starts QEMU with its gdb stub (`cfg.gdb_port`) and runs gdb against it with the
/// hypervisor's and dom0's symbols: interactively, or with `batch` commands (`-batch`),
/// returning gdb's output then. QEMU is killed when gdb ends.
pub fn with_gdb(cfg: &Config, hypervisor: &std::path::Path, dom0: &std::path::Path, batch: Option<&[&str]>) -> Result<String, String> {
    let port = cfg.gdb_port.ok_or("no gdb port")?;
    let mut q = cfg.command();
    q.stdin(Stdio::null());
    if batch.is_some() {
        q.stdout(Stdio::null()).stderr(Stdio::null());
    }
    let mut qemu = q.spawn().map_err(|e| format!("qemu-system-x86_64: {e} (run scripts/setup.sh)"))?;
    let mut g = Command::new("gdb");
    g.args(["-q", "-nx", "-ex", "set pagination off", "-ex", "set confirm off"]);
    g.arg("-ex").arg(format!("file {}", hypervisor.display()));
    g.arg("-ex").arg(format!("add-symbol-file {}", dom0.display()));
    // The stub listens once QEMU is up: retry the connection for a moment.
    g.args(["-ex", "set tcp connect-timeout 10"]);
    g.arg("-ex").arg(format!("target remote 127.0.0.1:{port}"));
    let out = match batch {
        Some(cmds) => {
            g.arg("-batch");
            for c in cmds {
                g.arg("-ex").arg(c);
            }
            let o = g.output().map_err(|e| format!("gdb: {e} (run scripts/setup.sh)"));
            o.map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
        }
        None => g.status().map(|_| String::new()).map_err(|e| format!("gdb: {e} (run scripts/setup.sh)")),
    };
    let _ = qemu.kill();
    let _ = qemu.wait();
    out
}

/// Runs with the serial console on this terminal.
pub fn interactive(cfg: &Config) -> Result<(), String> {
    let st = cfg.command().status().map_err(|e| format!("qemu-system-x86_64: {e}"))?;
    println!("\nQEMU exited with {:?}", st.code().and_then(ExitCode::from_qemu_status).map(|c| format!("{c:?}")).unwrap_or_else(|| format!("status {:?}", st.code())));
    Ok(())
}

/// Connects to QEMU's monitor socket and sends `nmi` (every CPU) every `every` until `done`;
/// returns how many were sent.
fn inject_nmis(path: &std::path::Path, every: Duration, done: &std::sync::atomic::AtomicBool) -> u64 {
    let Some(mut m) = Monitor::connect(path, false, &|| done.load(std::sync::atomic::Ordering::SeqCst)) else { return 0 };
    let mut n = 0;
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        if m.command("nmi").is_err() {
            break;
        }
        n += 1;
        std::thread::sleep(every);
    }
    n
}
