//! Layer unpack (`berth_image::unpack::unpack_layer`): a tar, plain or
//! gzip/zstd-compressed, unpacked as root into a fresh empty directory per
//! input, on a worker thread whose mount namespace has everything but the
//! sandbox read-only (see berth_fuzz::confine).
//!
//! Invariants: nothing outside the layer's directory changes (a canary
//! tree next to it, `../outside`, keeps every name, type, size, mode,
//! link count and time), no write is even attempted outside it (EROFS),
//! and the diff ID is the sha256 of the decompressed stream, computed
//! here independently.

#![no_main]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use berth_fuzz::confine::Confined;
use berth_fuzz::tree;
use berth_image::Digest;
use berth_image::unpack::{UnpackOptions, unpack_layer};
use libfuzzer_sys::fuzz_target;

/// Small: every input is unpacked in full.
const MAX_SIZE: u64 = 8 << 20;

struct Sandbox {
    dir: tempfile::TempDir,
    worker: Confined,
    /// The canary tree's state before any input ran.
    outside: std::collections::BTreeMap<PathBuf, tree::Entry>,
}

static SANDBOX: LazyLock<Sandbox> = LazyLock::new(|| {
    let dir = tempfile::Builder::new().prefix("berth-fuzz-unpack-").tempdir().expect("temp dir");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(outside.join("dir")).expect("mkdir outside/dir");
    std::fs::write(outside.join("canary"), "canary\n").expect("write canary");
    std::fs::write(outside.join("dir/file"), "file\n").expect("write canary file");
    std::os::unix::fs::symlink("/etc", outside.join("etc")).expect("symlink");
    let worker = Confined::new(dir.path());
    let outside = tree::snapshot(dir.path(), Some(&dir.path().join("layer")));
    Sandbox { dir, worker, outside }
});

fuzz_target!(|data: &[u8]| {
    let sb = &*SANDBOX;
    let base = sb.dir.path().to_path_buf();
    let data = data.to_vec();
    sb.worker.run(move || unpack(&base, &data));
    let now = tree::snapshot(sb.dir.path(), Some(&sb.dir.path().join("layer")));
    assert_eq!(now, sb.outside, "the unpack changed something outside its directory");
});

fn unpack(base: &Path, data: &[u8]) {
    let layer = base.join("layer");
    std::fs::create_dir(&layer).expect("mkdir layer");
    let opts = UnpackOptions { max_size: MAX_SIZE };
    let result = unpack_layer(data, &layer, "fuzz", &opts);
    match &result {
        Ok(u) => {
            if let Some(stream) = decompressed(data) {
                assert_eq!(u.diff_id, Digest::of(&stream), "the diff ID is the decompressed stream's sha256");
                assert!(u.size <= stream.len() as u64, "size {} of a {}-byte stream", u.size, stream.len());
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains("os error 30"), "the unpack tried to write outside its directory: {msg}");
        }
    }
    std::fs::remove_dir_all(&layer).expect("remove the layer");
}

/// The stream unpack_layer hashes, decompressed here with the same
/// magic-byte rule; None when it is larger than the limit.
fn decompressed(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let reader: Box<dyn Read> = if data.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(data))
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::new(data).ok()?)
    } else {
        Box::new(data)
    };
    reader.take(MAX_SIZE + 1).read_to_end(&mut out).ok()?;
    (out.len() as u64 <= MAX_SIZE).then_some(out)
}
