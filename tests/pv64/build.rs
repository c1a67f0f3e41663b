fn main() {
    if std::env::var("TARGET").unwrap() == "x86_64-unknown-none" {
        let rt = concat!(env!("CARGO_MANIFEST_DIR"), "/../../guest/runtime");
        println!("cargo:rustc-link-arg-bins=-L{rt}");
        println!("cargo:rustc-link-arg-bins=-T{rt}/guest-low.ld");
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=../../guest/runtime/guest-low.ld");
    println!("cargo:rerun-if-changed=../../guest/runtime/guest-sections.ld");
}
