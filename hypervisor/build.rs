fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    if std::env::var("TARGET").unwrap() == "x86_64-unknown-none" {
        println!("cargo:rustc-link-arg-bins=-T{dir}/hypervisor.ld");
        println!("cargo:rustc-link-arg-bins=-no-pie");
        println!("cargo:rustc-link-arg-bins=--no-relax");
    }
    println!("cargo:rerun-if-changed=hypervisor.ld");
    println!("cargo:rerun-if-env-changed=RXEN_CHANGESET");
}
