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
//! hot-text.txt (through a linker script, `.text.hot`, inserted before
//! `.text`) places the functions the runtime runs on its common paths next
//! to each other: `run` executes ~180 KiB of instructions in ~750 KiB of
//! functions spread over a ~4.5 MiB text segment, and the kernel maps file
//! pages in windows around each fault (fault-around, whole large folios),
//! so spread out that code cost ~3 MiB of RSS, packed ~1 MiB.
//! scripts/hot-text.py writes the list (mangled names). A name's hash
//! depends on the features its crate was built with, which differ between
//! `cargo build -p berth-runtime` and a whole-workspace build, so the
//! script matches each function's section by its name with the hashes
//! left out (`*`); a name no build has matches nothing. Passed only where
//! rustc links with its own lld (x86_64-unknown-linux-gnu, Rust 1.90+) and
//! no linker is chosen in RUSTFLAGS; left out with BERTH_NO_SYMBOL_ORDER=1.

fn main() {
    println!("cargo:rerun-if-env-changed=BERTH_NO_RELR");
    if std::env::var_os("BERTH_NO_RELR").is_none() && std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bin=berth-runtime=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-env-changed=BERTH_NO_SYMBOL_ORDER");
    println!("cargo:rerun-if-changed=hot-text.txt");
    let list = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("hot-text.txt");
    if std::env::var_os("BERTH_NO_SYMBOL_ORDER").is_none() && list.exists() && links_with_rust_lld() {
        let names = std::fs::read_to_string(&list).expect("read hot-text.txt");
        let script = std::path::Path::new(&std::env::var("OUT_DIR").expect("set by cargo")).join("hot-text.ld");
        std::fs::write(&script, linker_script(&names)).expect("write the hot-text linker script");
        println!("cargo:rustc-link-arg-bin=berth-runtime=-Wl,-T,{}", script.display());
    }
}

/// An output section `.text.hot` before `.text`, holding the sections of
/// the listed functions (rustc puts each function in a section of its
/// own, named for its symbol), in the list's order. INSERT keeps the linker's default layout for the rest.
fn linker_script(names: &str) -> String {
    let mut script = String::from("SECTIONS {\n  .text.hot : {\n");
    for name in names.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        // Names of crt1.o's code (`.text` itself) and anything a glob or
        // the script's lexer would read otherwise are left out.
        if name == "_start" || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.$".contains(&b)) {
            continue;
        }
        // LLVM puts a cold function (#[cold], e.g. std's slow paths) in
        // `.text.unlikely.<symbol>`, and numbers local functions whose
        // names collide (`<symbol>.1638`), differently from build to build.
        let name = without_hashes(name);
        let name = name
            .rsplit_once('.')
            .filter(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .map_or(&*name, |(base, _)| base);
        script.push_str(&format!("    *(.text.{name} .text.{name}.* .text.unlikely.{name} .text.unlikely.{name}.*)\n"));
    }
    script.push_str("  }\n}\nINSERT BEFORE .text;\n");
    script
}

/// `name` with its build-dependent hashes as `*`: the legacy mangling's
/// trailing `17h<16 hex digits>E`, and v0's crate disambiguators
/// (`Cs<base-62>_` before a crate name's length).
fn without_hashes(name: &str) -> String {
    let mut out = name.to_string();
    if let Some(at) = out.len().checked_sub(18).filter(|_| name.starts_with("_ZN") && name.ends_with('E'))
        && out[at..].starts_with('h')
        && out[at + 1..out.len() - 1].bytes().all(|b| b.is_ascii_hexdigit())
    {
        out.replace_range(at + 1..out.len() - 1, "*");
    }
    if name.starts_with("_R") {
        let b = name.as_bytes();
        let mut v0 = String::with_capacity(name.len());
        let mut i = 0;
        while i < b.len() {
            if b[i..].starts_with(b"Cs") {
                let digits = b[i + 2..].iter().take_while(|c| c.is_ascii_alphanumeric()).count();
                let end = i + 2 + digits;
                if digits > 0 && b.get(end) == Some(&b'_') && b.get(end + 1).is_some_and(u8::is_ascii_digit) {
                    v0.push_str("Cs*_");
                    i = end + 1;
                    continue;
                }
            }
            v0.push(b[i] as char);
            i += 1;
        }
        out = v0;
    }
    out
}

/// Whether the final link is rustc's default for x86_64-unknown-linux-gnu
/// (cc driving the bundled rust-lld), the one linker the hot-text script
/// (INSERT BEFORE, globs on section names) has been tried with.
fn links_with_rust_lld() -> bool {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    var("TARGET") == "x86_64-unknown-linux-gnu"
        && !flags
            .split('\x1f')
            .any(|f| f.contains("linker") || f.contains("fuse-ld") || f.contains("link-self-contained"))
}
