//! dom0's boot bundle: the tar archive the builder mapped as its boot module (configs under
//! `etc/xen/`, guest images under `boot/`), read in place.

use alloc::string::String;
use alloc::vec::Vec;
use pv_runtime::println;

/// The bundle's files: (name, bytes). Empty if there is no bundle or it is not a tar.
pub fn files(module: Option<&'static [u8]>) -> Vec<(String, &'static [u8])> {
    let Some(data) = module else { return Vec::new() };
    let Ok(t) = tar_no_std::TarArchiveRef::new(data) else { return Vec::new() };
    t.entries()
        .filter_map(|e| {
            let name = e.filename();
            let name = name.as_str().ok()?;
            Some((String::from(name), e.data()))
        })
        .collect()
}

/// `ls [prefix]`: the files (and sizes) whose names start with `prefix`.
pub fn ls(files: &[(String, &'static [u8])], prefix: &str) {
    let prefix = prefix.trim_start_matches('/');
    let mut shown = 0;
    for (n, d) in files.iter().filter(|(n, _)| n.starts_with(prefix)) {
        println!("{:>9}  /{}", d.len(), n);
        shown += 1;
    }
    if shown == 0 {
        println!("ls: nothing under '/{}'", prefix);
    }
}

/// `cat <file>`: a text file.
pub fn cat(files: &[(String, &'static [u8])], path: &str) {
    let path = path.trim_start_matches('/');
    match files.iter().find(|(n, _)| n == path) {
        Some((_, d)) => match core::str::from_utf8(d) {
            Ok(t) => pv_runtime::print!("{}", t),
            Err(_) => println!("cat: /{}: not a text file ({} bytes)", path, d.len()),
        },
        None => println!("cat: /{}: no such file", path),
    }
}
