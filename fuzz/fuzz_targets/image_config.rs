//! Image configs: what a pull reads from one (typed, with oci-spec: diff
//! IDs, platform), and what the engine takes from one to write a
//! container's config.json (`ImageDefaults::from_image_config`, then
//! `spec::build` with the image's own /etc/passwd and /etc/group).
//!
//! Input: the config JSON, then optionally NUL, the image's /etc/passwd,
//! NUL, its /etc/group.
//!
//! Invariants: the argv is the image's Entrypoint and Cmd by docker's
//! rule; the environment has one entry per name and a PATH; the working
//! directory is absolute; a numeric user is taken as is; the config.json
//! the engine generates is one berth-runtime accepts (but for an image Env
//! entry that is not KEY=value, which it passes on, as docker does), and it survives the
//! runtime's write and re-read (create saves it, start/exec load it).

#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use berth_engine::spec::{self, ImageDefaults, Paths, RunFlags};
use berth_image::Digest;
use libfuzzer_sys::fuzz_target;
use oci_spec::image::ImageConfiguration;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:100:101::/home/app:/bin/sh\nnobody:x:65534:65534::/:\n";
const GROUP: &str = "root:x:0:\napp:x:101:\nstaff:x:50:app\nnogroup:x:65534:\n";

/// One rootfs for the whole run: only its /etc/passwd and /etc/group
/// change between inputs.
static ROOTFS: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
    let d = tempfile::Builder::new().prefix("berth-fuzz-image-config-").tempdir().expect("temp dir");
    std::fs::create_dir(d.path().join("etc")).expect("mkdir etc");
    d
});

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == 0);
    let json = parts.next().unwrap_or_default();
    let passwd = parts.next().map_or(PASSWD.into(), String::from_utf8_lossy);
    let group = parts.next().map_or(GROUP.into(), String::from_utf8_lossy);
    if let Ok(config) = serde_json::from_slice::<ImageConfiguration>(json) {
        typed(&config);
        engine(&config, &passwd, &group);
    }
});

/// What a pull reads: the platform and the diff IDs, chained.
fn typed(config: &ImageConfiguration) {
    let diff_ids: Result<Vec<Digest>, _> = config.rootfs().diff_ids().iter().map(|d| d.parse::<Digest>()).collect();
    if let Ok(ids) = diff_ids {
        let chains = berth_image::snapshot::chain_ids(&ids);
        assert_eq!(chains.len(), ids.len());
        assert_eq!(chains.first(), ids.first(), "the first chain ID is the first diff ID");
    }
}

fn engine(config: &ImageConfiguration, passwd: &str, group: &str) {
    let image = ImageDefaults::from_image_config(config);
    let rootfs = ROOTFS.path();
    std::fs::write(rootfs.join("etc/passwd"), passwd).expect("write passwd");
    std::fs::write(rootfs.join("etc/group"), group).expect("write group");
    let mut flags = RunFlags::default();
    if image.entrypoint.is_empty() && image.cmd.is_empty() {
        // Past "no command" to the rest of the spec.
        flags.args = vec!["/bin/sh".into()];
    }
    let paths = Paths { rootfs: rootfs.to_path_buf(), cgroups_path: "/berth-fuzz/c".into(), ..Default::default() };
    let Ok(spec) = spec::build("0123456789abcdef0123456789abcdef", &image, &flags, &paths) else { return };

    let process = spec.process().as_ref().expect("a process");
    let argv = spec::command(&image, &flags).expect("build succeeded, so there is a command");
    assert_eq!(process.args().as_deref(), Some(argv.as_slice()));
    let env = process.env().clone().unwrap_or_default();
    let mut names: Vec<&str> = env.iter().map(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k)).collect();
    names.sort_unstable();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n, "one entry per name in {env:?}");
    assert!(env.iter().any(|e| e.starts_with("PATH=")), "a PATH in {env:?}");
    assert!(process.cwd().is_absolute(), "cwd {:?}", process.cwd());
    let user_spec = image.user.split_once(':').map_or(image.user.as_str(), |(u, _)| u);
    if let Ok(uid) = user_spec.parse::<u32>()
        && !passwd.lines().any(|l| l.split(':').next() == Some(user_spec))
    {
        assert_eq!(process.user().uid(), uid, "numeric user {:?}", image.user);
    }

    let file = Path::new("config.json");
    if let Err(e) = berth_runtime::config::validate(file, &spec) {
        // An image Env entry without '=' or with an empty name goes
        // through as it is, as docker passes it; the runtime refuses it
        // then, naming it (runc does too: Go's setenv refuses "").
        let bad_env = image.env.iter().any(|e| !e.contains('=') || e.starts_with('='));
        assert!(bad_env, "the engine wrote a config.json berth-runtime refuses: {e}\nimage config: {config:?}");
    }
    let bytes = serde_json::to_vec(&spec).expect("a spec serializes");
    let again: oci_spec::runtime::Spec = berth_runtime::config::parse_json(file, &bytes)
        .unwrap_or_else(|e| panic!("the engine's config.json does not parse back: {e}"));
    assert_eq!(again, spec, "the engine's config.json changes on a write and re-read");
}
