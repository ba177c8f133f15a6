//! Link flags for the berth-runtime binary: it starts once or more per
//! container start, so what its dynamic loader does before main counts.
//!
//! `-z pack-relative-relocs` (DT_RELR; glibc 2.36+, lld and GNU ld 2.38+)
//! stores the PIE's ~10,000 relative relocations in a few KiB instead of
//! ~250 KiB of RELA entries that ld.so reads (and the kernel maps) at every
//! start. Linkers that do not know the option (ld.bfd before 2.38, gold)
//! are not used to build berth; the flag is left out there by setting
//! BERTH_NO_RELR=1.

fn main() {
    println!("cargo:rerun-if-env-changed=BERTH_NO_RELR");
    if std::env::var_os("BERTH_NO_RELR").is_none() && std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bin=berth-runtime=-Wl,-z,pack-relative-relocs");
    }
}
