//! Building the bare-metal images and GRUB ISOs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Paths of the built images.
#[derive(Clone, Debug)]
pub struct Images {
    pub hypervisor: PathBuf,
    pub dom0: PathBuf,
    pub guest_dir: PathBuf,
}

impl Images {
    /// A test guest binary.
    pub fn guest(&self, name: &str) -> PathBuf {
        self.guest_dir.join(name)
    }
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

pub fn target() -> PathBuf {
    root().join("target")
}

fn changeset() -> String {
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unavailable".into())
}

/// Builds the hypervisor, dom0 and the test guests (release, bare metal).
pub fn build_all() -> Result<Images, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .current_dir(root())
        .env("RXEN_CHANGESET", changeset())
        .args([
            "build", "--release", "--target", "x86_64-unknown-none",
            "-p", "hypervisor", "-p", "dom0-kernel", "-p", "test-guests", "-p", "test-pv64",
        ])
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !st.success() {
        return Err("building the bare-metal images failed".into());
    }
    let dir = target().join("x86_64-unknown-none/release");
    embed_symbols(&dir.join("hypervisor"))?;
    build_pv64_guests(&dir)?;
    Ok(Images { hypervisor: dir.join("hypervisor"), dom0: dir.join("dom0"), guest_dir: dir })
}

/// Writes the hypervisor's function symbols (demangled, without hashes) into its
/// `RXEN_SYMBOLS` array in the ELF file (`hv_core::symbols`' format), so that a fatal fault
/// prints a symbolised backtrace from the image alone. The array's place and size come from
/// its own symbol; nothing else in the file moves.
pub fn embed_symbols(path: &Path) -> Result<(), String> {
    use elf::{abi, endian::AnyEndian, ElfBytes};
    let mut data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (table, at, size) = {
        let file = ElfBytes::<AnyEndian>::minimal_parse(&data).map_err(|e| format!("{}: {e}", path.display()))?;
        let (symtab, strtab) = file.symbol_table().map_err(|e| e.to_string())?.ok_or("the hypervisor has no symbol table")?;
        let mut funcs = Vec::new();
        let mut slot = None;
        for s in symtab.iter() {
            let name = strtab.get(s.st_name as usize).map_err(|e| e.to_string())?;
            if name == "RXEN_SYMBOLS" {
                slot = Some((s.st_value, s.st_size));
            } else if s.st_symtype() == abi::STT_FUNC && s.st_value != 0 {
                let n: String = format!("{:#}", rustc_demangle::demangle(name)).chars().take(160).collect();
                funcs.push((s.st_value, u32::try_from(s.st_size).unwrap_or(0), n));
            }
        }
        let (va, size) = slot.ok_or("no RXEN_SYMBOLS in the hypervisor")?;
        let segs = file.segments().ok_or("no program headers")?;
        let at = segs
            .iter()
            .find(|p| p.p_type == abi::PT_LOAD && (p.p_vaddr..p.p_vaddr + p.p_filesz).contains(&va) && va + size <= p.p_vaddr + p.p_filesz)
            .map(|p| (va - p.p_vaddr + p.p_offset) as usize)
            .ok_or("RXEN_SYMBOLS is not in a loaded segment")?;
        let refs: Vec<(u64, u32, &str)> = funcs.iter().map(|(a, z, n)| (*a, *z, n.as_str())).collect();
        (hv_core::symbols::encode(&refs), at, size as usize)
    };
    if table.len() > size {
        return Err(format!("the symbol table ({} bytes) does not fit RXEN_SYMBOLS ({size} bytes): raise hv_arch::symbols::SYMBOLS_SIZE", table.len()));
    }
    let region = &mut data[at..at + size];
    region.fill(0);
    region[..table.len()].copy_from_slice(&table);
    std::fs::write(path, &data).map_err(|e| format!("{}: {e}", path.display()))
}

/// The test guests built again for the hypervisor's Xen pv64 mode (pv-runtime's `pv64`
/// feature: no rxen ABI note), in a target directory of their own, and copied beside the
/// others as `<name>-pv64`.
fn build_pv64_guests(dir: &Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let tdir = target().join("pv64");
    let st = Command::new(cargo)
        .current_dir(root())
        .env("RXEN_CHANGESET", changeset())
        .args(["build", "--release", "--target", "x86_64-unknown-none", "-p", "test-guests", "--features", "test-guests/pv64", "--target-dir"])
        .arg(&tdir)
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !st.success() {
        return Err("building the pv64 test guests failed".into());
    }
    let out = tdir.join("x86_64-unknown-none/release");
    let bins = std::fs::read_dir(root().join("tests/guests/src/bin")).map_err(|e| e.to_string())?;
    for b in bins.filter_map(|e| e.ok()) {
        let p = b.path();
        let Some(name) = p.file_stem().and_then(|n| n.to_str()) else { continue };
        let from = out.join(name);
        if from.exists() {
            std::fs::copy(&from, dir.join(format!("{name}-pv64"))).map_err(|e| format!("{}: {e}", from.display()))?;
        }
    }
    Ok(())
}

/// What every grub.cfg starts with: no menu delay; GRUB's own menu on COM1 and the screen;
/// the video mode handed over ([`GRUB_VIDEO`]): a UEFI framebuffer (GOP), VGA text under a
/// BIOS (the hypervisor draws its console on either).
const GRUB_HEAD: &str = "set timeout=0\nset default=0\nserial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n\
    insmod all_video\n";
/// The last line of the menu entry before `boot`: the video mode handed over (after the
/// `multiboot2` line, which sets `gfxpayload` from the image's framebuffer request).
const GRUB_VIDEO: &str = "    if [ \"$grub_platform\" != efi ]; then set gfxpayload=text; fi\n";

/// grub.cfg for the hypervisor with `hv_opts`, the dom0 module with `dom0_args` and dom0's
/// boot bundle.
pub fn grub_cfg(hv_opts: &str, dom0_args: &str) -> String {
    grub_cfg_modules(hv_opts, &[("dom0", dom0_args), ("bundle", "bundle")])
}

/// An ELF64 image cut to what a PV builder reads: the ELF header, the program headers and
/// the segments' bytes (the debug sections after them go, with the section headers), so
/// the bundle carries a few KiB per guest rather than most of a MiB.
fn loadable_only(elf: &[u8]) -> Option<Vec<u8>> {
    let u16at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u64at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?));
    if elf.get(..5)? != b"\x7fELF\x02" {
        return None;
    }
    let (phoff, phentsize, phnum) = (u64at(0x20)? as usize, u16at(0x36)? as usize, u16at(0x38)? as usize);
    let mut end = phoff.checked_add(phentsize.checked_mul(phnum)?)?;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        end = end.max(u64at(ph + 8)?.checked_add(u64at(ph + 32)?)? as usize);
    }
    let mut out = elf.get(..end)?.to_vec();
    // No section headers: e_shoff, e_shnum and e_shstrndx cleared.
    out[0x28..0x30].fill(0);
    out[0x3C..0x40].fill(0);
    Some(out)
}

/// dom0's boot bundle, `target/bundle.tar`: `dom0-kernel/bundle/` (configs under `etc/xen/`)
/// and, as `boot/<name>`, the test guests the configs name as their kernel, unless
/// `dom0-kernel/bundle/boot/<name>` is there (a kernel of the user's own, taken as it is).
pub fn bundle(i: &Images) -> Result<PathBuf, String> {
    let src = root().join("dom0-kernel/bundle");
    let out = target().join("bundle.tar");
    let f = std::fs::File::create(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut t = tar::Builder::new(f);
    t.mode(tar::HeaderMode::Deterministic);
    let mut kernels = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let name = p.strip_prefix(&src).map_err(|e| e.to_string())?;
            if p.extension().is_some_and(|x| x == "cfg") {
                let text = std::fs::read_to_string(&p).map_err(|e| e.to_string())?;
                kernels.extend(text.lines().filter_map(|l| l.trim().strip_prefix("kernel")).filter_map(|l| l.split('"').nth(1)).filter_map(|k| k.strip_prefix("/boot/")).map(String::from));
            }
            t.append_path_with_name(&p, name).map_err(|e| format!("{}: {e}", p.display()))?;
        }
    }
    kernels.sort();
    kernels.dedup();
    for k in kernels.into_iter().filter(|k| !src.join("boot").join(k).exists()) {
        let image = std::fs::read(i.guest(&k)).map_err(|e| format!("bundle: guest {k}: {e}"))?;
        let image = loadable_only(&image).ok_or_else(|| format!("bundle: guest {k}: not an ELF64 image"))?;
        let mut h = tar::Header::new_gnu();
        h.set_size(image.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        t.append_data(&mut h, format!("boot/{k}"), image.as_slice()).map_err(|e| format!("bundle: guest {k}: {e}"))?;
    }
    t.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// grub.cfg with several modules: `(file in /boot, module string)`, dom0 first.
pub fn grub_cfg_modules(hv_opts: &str, modules: &[(&str, &str)]) -> String {
    let mut s = format!(
        "{GRUB_HEAD}menuentry \"rxen\" {{\n    multiboot2 /boot/hypervisor {hv_opts}\n"
    );
    for (file, args) in modules {
        s.push_str(&format!("    module2 /boot/{file} {args}\n"));
    }
    s.push_str(GRUB_VIDEO);
    s.push_str("    boot\n}\n");
    s
}

/// Builds `target/<name>.iso` with the hypervisor and extra files `(source, name in /boot)`.
pub fn iso_files(hypervisor: &Path, files: &[(&Path, &str)], cfg: &str, name: &str) -> Result<PathBuf, String> {
    let dir = target().join("iso").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let boot = dir.join("boot");
    std::fs::create_dir_all(boot.join("grub")).map_err(|e| e.to_string())?;
    std::fs::copy(hypervisor, boot.join("hypervisor")).map_err(|e| format!("{}: {e}", hypervisor.display()))?;
    for (src, dst) in files {
        std::fs::copy(src, boot.join(dst)).map_err(|e| format!("{}: {e}", src.display()))?;
    }
    std::fs::write(boot.join("grub/grub.cfg"), cfg).map_err(|e| e.to_string())?;
    let out = target().join(format!("{name}.iso"));
    // Every ISO boots both ways: without GRUB's EFI modules grub-mkrescue would quietly
    // leave the EFI image out.
    if !Path::new("/usr/lib/grub/x86_64-efi").is_dir() {
        return Err("GRUB's x86_64-efi modules are missing (grub-efi-amd64-bin): run scripts/setup.sh".into());
    }
    let o = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&out)
        .arg(&dir)
        .output()
        .map_err(|e| format!("grub-mkrescue: {e} (run scripts/setup.sh)"))?;
    if !o.status.success() {
        return Err(format!("grub-mkrescue failed: {}", String::from_utf8_lossy(&o.stderr)));
    }
    Ok(out)
}

/// The grub.cfg of the ISO a user writes to a USB stick: an interactive dom0.
pub fn default_grub_cfg() -> String {
    grub_cfg("loglvl=info", "interactive")
}

/// `target/<name>.iso` with the hypervisor, dom0 and dom0's boot bundle (`/boot/bundle`),
/// booted by `cfg`.
pub fn iso(i: &Images, cfg: &str, name: &str) -> Result<PathBuf, String> {
    let b = bundle(i)?;
    iso_files(&i.hypervisor, &[(&i.dom0, "dom0"), (&b, "bundle")], cfg, name)
}
