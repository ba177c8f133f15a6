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
//! writes the list; names it holds that a build lacks are skipped. Left
//! out with BERTH_NO_SYMBOL_ORDER=1 (for a linker other than lld).

fn main() {
    println!("cargo:rerun-if-env-changed=BERTH_NO_RELR");
    if std::env::var_os("BERTH_NO_RELR").is_none() && std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bin=berth-runtime=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-env-changed=BERTH_NO_SYMBOL_ORDER");
    println!("cargo:rerun-if-changed=hot-text.txt");
    let list = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("hot-text.txt");
    if std::env::var_os("BERTH_NO_SYMBOL_ORDER").is_none() && list.exists() {
        println!("cargo:rustc-link-arg-bin=berth-runtime=-Wl,--symbol-ordering-file={}", list.display());
        println!("cargo:rustc-link-arg-bin=berth-runtime=-Wl,--no-warn-symbol-ordering");
    }
}
