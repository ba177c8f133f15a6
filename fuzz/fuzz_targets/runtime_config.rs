//! config.json as berth-runtime loads it (`Bundle::load`: parse, root,
//! mount normalization, validation), an exec's process.json
//! (`validate_process`), and the seccomp filter a config describes
//! (compiled with libseccomp, not loaded).
//!
//! Invariants: an accepted config has a process with a program and an
//! absolute cwd, KEY=value environment entries, absolute mount
//! destinations and a rootfs that is a directory; every error names the
//! file; and the accepted spec survives the runtime's own write and
//! re-read (create saves it in the state dir, start/exec load it back).

#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use berth_runtime::config::{Bundle, parse_json, validate_process};
use libfuzzer_sys::fuzz_target;
use oci_spec::runtime::{Process, Spec};

/// One bundle for the whole run (with a `rootfs` directory): only its
/// config.json changes between inputs.
static BUNDLE: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
    let d = tempfile::Builder::new().prefix("berth-fuzz-bundle-").tempdir().expect("temp dir");
    std::fs::create_dir(d.path().join("rootfs")).expect("mkdir rootfs");
    d
});

fuzz_target!(|data: &[u8]| {
    bundle(data);
    exec_process(data);
});

fn bundle(data: &[u8]) {
    let dir = BUNDLE.path();
    let file = dir.join("config.json");
    std::fs::write(&file, data).expect("write config.json");
    let b = match Bundle::load(dir) {
        Ok(b) => b,
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("config.json"), "the error names the file: {msg}");
            return;
        }
    };
    let spec = &b.spec;
    let p = spec.process().as_ref().expect("an accepted config has a process");
    assert!(p.args().as_ref().is_some_and(|a| !a.is_empty()), "a program to run");
    assert!(p.cwd().is_absolute(), "cwd {:?}", p.cwd());
    assert!(p.env().iter().flatten().all(|e| e.contains('=')), "env {:?}", p.env());
    for m in spec.mounts().iter().flatten() {
        assert!(m.destination().is_absolute(), "mount destination {:?}", m.destination());
    }
    assert!(b.rootfs.is_dir(), "rootfs {:?}", b.rootfs);

    let bytes = serde_json::to_vec(spec).expect("a parsed spec serializes");
    let again: Spec = parse_json(&file, &bytes)
        .unwrap_or_else(|e| panic!("a loaded spec, written as create writes it, does not load back: {e}"));
    assert_eq!(&again, spec, "a loaded spec changes on a write and re-read");

    if let Some(s) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        // libseccomp (C) takes the untrusted syscall names, actions and
        // arguments; refusing is fine, crashing is not.
        let _ = berth_runtime::seccomp::build(s);
    }
}

/// `exec --process p.json`.
fn exec_process(data: &[u8]) {
    let file = Path::new("process.json");
    let Ok(p) = parse_json::<Process>(file, data) else { return };
    if validate_process(file, &p).is_ok() {
        assert!(p.args().as_ref().is_some_and(|a| !a.is_empty()));
        assert!(p.cwd().is_absolute());
    }
}
