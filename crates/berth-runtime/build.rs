//! Link flags for the berth-runtime binary: it starts once or more per
//! container start, so what its dynamic loader does before main counts.
//!
//! `-z pack-relative-relocs` (DT_RELR; glibc 2.36+, lld and GNU ld 2.38+)
//! stores the PIE's ~10,000 relative relocations in a few KiB instead of
//! ~250 KiB of RELA entries that ld.so reads (and the kernel maps) at every
//! start. Linkers that do not know the option (ld.bfd before 2.38, gold)
//! are not used to build berth; the flag is left out there by setting
//! BERTH_NO_RELR=1.
//!
//! `--symbol-ordering-file=hot-text.txt` (lld, Rust's default linker on
//! x86_64 Linux) places the functions the runtime runs on its common paths
//! next to each other: run executes ~1 MiB of a ~4.5 MiB text segment, and
//! the kernel maps file pages in windows around each fault, so spread out
//! that code cost ~3 MiB of RSS, packed ~1 MiB. scripts/hot-text.py
//! writes the list; names it holds that a build lacks are skipped. Passed
//! only where rustc links with its own lld (x86_64-unknown-linux-gnu, Rust
//! 1.90+) and no linker is chosen in RUSTFLAGS; left out with
//! BERTH_NO_SYMBOL_ORDER=1.

fn main() {
    println!("cargo:rerun-if-env-changed=BERTH_NO_RELR");
    if std::env::var_os("BERTH_NO_RELR").is_none() && std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bin=berth-runtime=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-env-changed=BERTH_NO_SYMBOL_ORDER");
    println!("cargo:rerun-if-changed=hot-text.txt");
    let list = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("hot-text.txt");
    if std::env::var_os("BERTH_NO_SYMBOL_ORDER").is_none() && list.exists() && links_with_rust_lld() {
        println!("cargo:rustc-link-arg-bin=berth-runtime=-Wl,--symbol-ordering-file={}", list.display());
        println!("cargo:rustc-link-arg-bin=berth-runtime=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether the final link is rustc's default for x86_64-unknown-linux-gnu
/// (cc driving the bundled rust-lld), the one linker here known to take
/// --symbol-ordering-file; GNU ld would refuse the option.
fn links_with_rust_lld() -> bool {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    var("TARGET") == "x86_64-unknown-linux-gnu"
        && !flags
            .split('\x1f')
            .any(|f| f.contains("linker") || f.contains("fuse-ld") || f.contains("link-self-contained"))
}
