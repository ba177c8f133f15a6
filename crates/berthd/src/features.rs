//! What each runtime handler can do, as `StatusResponse` reports it and
//! CreateContainer and RunPodSandbox check it, from the OCI runtime's
//! `features` output (runtime-spec 1.2's features document, as containerd
//! introspects it): recursive read-only mounts need `rro` in its mount
//! options and a kernel with mount_setattr(2) (5.12); pods with their own
//! user namespace need idmapped mounts (linux.mountExtensions.idmap). A
//! runtime without a `features` command (crun 1.8, old runc) is taken at
//! its word: neither. The answer is cached per
//! runtime binary, so the command runs once per daemon.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a runtime's `features` may take before it counts as "no".
const FEATURES_TIMEOUT: Duration = Duration::from_secs(5);

/// What berthd learnt of one runtime binary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandlerFeatures {
    pub recursive_read_only_mounts: bool,
    pub user_namespaces: bool,
}

fn cache() -> &'static Mutex<HashMap<PathBuf, HandlerFeatures>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, HandlerFeatures>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The features of the runtime at `path` (asked once, then cached).
pub fn of_runtime(path: &Path) -> HandlerFeatures {
    if let Some(f) = cache().lock().ok().and_then(|c| c.get(path).copied()) {
        return f;
    }
    let f = match runtime_features_json(path) {
        Ok(doc) => from_features_doc(&doc, kernel_has_mount_setattr()),
        Err(why) => {
            tracing::info!(runtime = %path.display(), "no features document ({why}): recursive read-only mounts and user namespaces off");
            HandlerFeatures::default()
        }
    };
    if let Ok(mut c) = cache().lock() {
        c.insert(path.to_owned(), f);
    }
    f
}

/// The features of runtime handler `name` ("" is the default one); an
/// unknown handler has none.
pub fn of_handler(d: &crate::runtime::Daemon, name: &str) -> HandlerFeatures {
    let name = if name.is_empty() { d.config.default_runtime.as_str() } else { name };
    d.handlers.iter().find(|h| h.name == name).map(|h| of_runtime(&h.path)).unwrap_or_default()
}

/// The features a runtime's `features` document and this kernel allow.
pub fn from_features_doc(doc: &serde_json::Value, kernel_rro: bool) -> HandlerFeatures {
    let lists_rro = doc
        .get("mountOptions")
        .and_then(|o| o.as_array())
        .is_some_and(|opts| opts.iter().any(|o| o.as_str() == Some("rro")));
    let idmap = doc.pointer("/linux/mountExtensions/idmap/enabled") == Some(&serde_json::Value::Bool(true));
    HandlerFeatures { recursive_read_only_mounts: lists_rro && kernel_rro, user_namespaces: idmap }
}

/// Runs `RUNTIME features` (with a deadline: a hung runtime must not hang
/// Status) and parses its JSON.
fn runtime_features_json(path: &Path) -> Result<serde_json::Value, String> {
    let mut child = Command::new(path)
        .arg("features")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    // The document is a few KB: read it on a thread so the deadline holds.
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).map(|_| out)
    });
    let deadline = Instant::now() + FEATURES_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`features` did not answer in {FEATURES_TIMEOUT:?}"));
            }
            Err(e) => return Err(format!("wait: {e}")),
        }
    };
    let out = reader.join().map_err(|_| "reader panicked")?.map_err(|e| format!("read: {e}"))?;
    if !status.success() {
        return Err(format!("`features` failed ({status})"));
    }
    serde_json::from_slice(&out).map_err(|e| format!("`features` output is not JSON: {e}"))
}

/// mount_setattr(2) came in Linux 5.12 (containerd checks the same).
fn kernel_has_mount_setattr() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").is_ok_and(|r| kernel_at_least(r.trim(), (5, 12)))
}

fn kernel_at_least(release: &str, want: (u32, u32)) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => (major, minor) >= want,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rro_needs_the_runtime_to_list_it_and_the_kernel() {
        let with = serde_json::json!({"mountOptions": ["ro", "rro", "rbind"]});
        let without = serde_json::json!({"mountOptions": ["ro", "rbind"]});
        assert!(from_features_doc(&with, true).recursive_read_only_mounts);
        assert!(!from_features_doc(&with, false).recursive_read_only_mounts);
        assert!(!from_features_doc(&without, true).recursive_read_only_mounts);
        assert!(!from_features_doc(&serde_json::json!({}), true).recursive_read_only_mounts);
    }

    #[test]
    fn user_namespaces_need_the_runtime_to_make_idmapped_mounts() {
        let idmap = |enabled| serde_json::json!({"linux": {"mountExtensions": {"idmap": {"enabled": enabled}}}});
        assert!(from_features_doc(&idmap(true), false).user_namespaces);
        assert!(!from_features_doc(&idmap(false), true).user_namespaces);
        assert!(!from_features_doc(&serde_json::json!({"linux": {}}), true).user_namespaces);
    }

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        assert!(kernel_at_least("6.1.0-13-amd64", (5, 12)));
        assert!(kernel_at_least("5.12.0", (5, 12)));
        assert!(!kernel_at_least("5.11.22-foo", (5, 12)));
        assert!(!kernel_at_least("garbage", (5, 12)));
    }

    #[test]
    fn a_runtime_without_features_is_not_guessed_capable() {
        // `false features` exits 1 with no output: no features.
        let f = of_runtime(Path::new("/bin/false"));
        assert!(!f.recursive_read_only_mounts);
    }
}
