//! Loading and checking config.json.
//!
//! Parsing goes through `serde_path_to_error` so a malformed file gets an
//! error naming the field (`process.user.uid: invalid type: string "x",
//! expected u32`). Checks that serde cannot express (a hostname without a
//! UTS namespace, sysctls outside any namespace of the container, ...)
//! follow runc's validator, with messages naming the field.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Mount, Process, Spec};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Reads and parses a JSON file, naming the offending field on error.
pub fn load_json<T: DeserializeOwned>(file: &Path) -> Result<T> {
    let bytes = std::fs::read(file).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::config(file, "no such file (is this an OCI bundle?)"),
        _ => Error::config(file, format!("read: {e}")),
    })?;
    parse_json(file, &bytes)
}

/// Parses JSON text, naming the offending field on error.
pub fn parse_json<T: DeserializeOwned>(file: &Path, bytes: &[u8]) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = if path.is_empty() || path == "." { inner.to_string() } else { format!("{path}: {inner}") };
        Error::config(file, msg)
    })
}

/// A loaded and checked bundle configuration.
pub struct Bundle {
    /// Absolute path of the bundle directory.
    pub dir: PathBuf,
    /// Absolute path of the root filesystem.
    pub rootfs: PathBuf,
    pub spec: Spec,
}

impl Bundle {
    /// Loads `<dir>/config.json` and checks it.
    pub fn load(dir: &Path) -> Result<Bundle> {
        let dir = std::path::absolute(dir).map_err(|e| Error::os(format!("bundle {}", dir.display()), e))?;
        let file = dir.join("config.json");
        let mut spec: Spec = load_json(&file)?;
        let root = spec.root().as_ref().ok_or_else(|| Error::config(&file, "root: missing (root.path is required)"))?;
        let rootfs = dir.join(root.path());
        match std::fs::metadata(&rootfs) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(Error::config(&file, format!("root.path: {} is not a directory", rootfs.display()))),
            Err(e) => {
                return Err(Error::config(
                    &file,
                    format!("root.path: rootfs ({}) does not exist: {e}", rootfs.display()),
                ));
            }
        }
        normalize_mounts(&mut spec);
        validate(&file, &spec)?;
        Ok(Bundle { dir, rootfs, spec })
    }
}

/// runc accepts relative mount destinations (taking them from "/") with a
/// warning; so does berth, so bundles that work with runc work here.
fn normalize_mounts(spec: &mut Spec) {
    let Some(mounts) = spec.mounts_mut().as_mut() else { return };
    for m in mounts.iter_mut() {
        if !m.destination().is_absolute() {
            tracing::warn!("mount destination {} is not absolute; using it from /", m.destination().display());
            let abs = Path::new("/").join(m.destination());
            m.set_destination(abs);
        }
    }
}

/// The namespaces the container gets: new ones and joined ones.
pub fn namespace_types(spec: &Spec) -> HashSet<LinuxNamespaceType> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .map(|ns| ns.iter().map(|n| n.typ()).collect())
        .unwrap_or_default()
}

/// Checks the parts of a spec that serde cannot.
pub fn validate(file: &Path, spec: &Spec) -> Result<()> {
    let bad = |msg: String| Error::config(file, msg);
    let version = spec.version();
    if !version.starts_with("1.") {
        return Err(bad(format!("ociVersion: {version:?} is not a 1.x runtime-spec version")));
    }
    let process =
        spec.process().as_ref().ok_or_else(|| bad("process: missing (required to run a container)".into()))?;
    validate_process(file, process)?;

    let ns = namespace_types(spec);
    let linux = spec.linux().as_ref();
    if let Some(list) = linux.and_then(|l| l.namespaces().as_ref()) {
        let mut seen = HashSet::new();
        for n in list {
            if !seen.insert(n.typ()) {
                return Err(bad(format!("linux.namespaces: {} is listed twice", ns_name(n.typ()))));
            }
        }
    }
    if spec.hostname().as_deref().is_some_and(|h| !h.is_empty()) && !ns.contains(&LinuxNamespaceType::Uts) {
        return Err(bad("hostname: unable to set hostname without a private UTS namespace".into()));
    }
    if spec.domainname().as_deref().is_some_and(|h| !h.is_empty()) && !ns.contains(&LinuxNamespaceType::Uts) {
        return Err(bad("domainname: unable to set domainname without a private UTS namespace".into()));
    }
    let has_mappings = linux.is_some_and(|l| {
        l.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
            || l.gid_mappings().as_ref().is_some_and(|m| !m.is_empty())
    });
    let new_userns = linux
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|list| list.iter().any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none()));
    if new_userns && !has_mappings {
        return Err(bad("linux.uidMappings: a new user namespace needs uid and gid mappings".into()));
    }
    if has_mappings && !ns.contains(&LinuxNamespaceType::User) {
        return Err(bad("linux.uidMappings: mappings are set but there is no user namespace".into()));
    }
    if linux.and_then(|l| l.time_offsets().as_ref()).is_some_and(|t| !t.is_empty())
        && !ns.contains(&LinuxNamespaceType::Time)
    {
        return Err(bad("linux.timeOffsets: time offsets need a time namespace".into()));
    }
    if let Some(sysctl) = linux.and_then(|l| l.sysctl().as_ref()) {
        for key in sysctl.keys() {
            check_sysctl(key, &ns).map_err(|why| bad(format!("linux.sysctl: {key:?}: {why}")))?;
        }
    }
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        validate_mount(m).map_err(|why| bad(format!("mounts[{i}] ({}): {why}", m.destination().display())))?;
    }
    Ok(())
}

/// Checks a process (also used for `exec --process`).
pub fn validate_process(file: &Path, p: &Process) -> Result<()> {
    let bad = |msg: String| Error::config(file, msg);
    if p.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(bad("process.args: at least one argument (the program) is required".into()));
    }
    if !p.cwd().is_absolute() {
        return Err(bad(format!("process.cwd: {:?} is not an absolute path", p.cwd())));
    }
    let mut seen = HashSet::new();
    for r in p.rlimits().iter().flatten() {
        if !seen.insert(format!("{:?}", r.typ())) {
            return Err(bad(format!("process.rlimits: {:?} is listed twice", r.typ())));
        }
        if r.soft() > r.hard() {
            return Err(bad(format!("process.rlimits: {:?} has soft limit above its hard limit", r.typ())));
        }
    }
    for e in p.env().iter().flatten() {
        if !e.contains('=') {
            return Err(bad(format!("process.env: {e:?} is not KEY=value")));
        }
    }
    Ok(())
}

fn validate_mount(m: &Mount) -> std::result::Result<(), String> {
    let is_bind =
        m.typ().as_deref() == Some("bind") || m.options().iter().flatten().any(|o| o == "bind" || o == "rbind");
    if is_bind && m.source().is_none() {
        return Err("a bind mount needs a source".into());
    }
    Ok(())
}

/// Which sysctls a container may set: only those that belong to one of its
/// own namespaces (as runc's validator allows).
fn check_sysctl(key: &str, ns: &HashSet<LinuxNamespaceType>) -> std::result::Result<(), &'static str> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        return if ns.contains(&LinuxNamespaceType::Ipc) { Ok(()) } else { Err("needs an IPC namespace") };
    }
    if key.starts_with("net.") {
        return if ns.contains(&LinuxNamespaceType::Network) {
            Ok(())
        } else {
            Err("not allowed in the host network namespace")
        };
    }
    if key == "kernel.hostname" || key == "kernel.domainname" {
        return if ns.contains(&LinuxNamespaceType::Uts) { Ok(()) } else { Err("needs a UTS namespace") };
    }
    Err("is not in a separate kernel namespace of the container")
}

/// The runtime-spec name of a namespace type.
pub fn ns_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mount",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "network",
        LinuxNamespaceType::Time => "time",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Spec> {
        parse_json(Path::new("config.json"), json.as_bytes())
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let err = parse(r#"{"ociVersion":"1.0.0","process":{"user":{"uid":"x","gid":0},"cwd":"/"}}"#).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("config.json: process.user.uid: invalid type: string \"x\""), "{msg}");
    }

    #[test]
    fn an_unknown_capability_names_the_field() {
        let err = parse(
            r#"{"ociVersion":"1.0.0","process":{"user":{"uid":0,"gid":0},"cwd":"/","capabilities":{"bounding":["CAP_NOPE"]}}}"#,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("process.capabilities.bounding"), "{msg}");
        assert!(msg.contains("CAP_NOPE"), "{msg}");
    }

    #[test]
    fn broken_json_says_where() {
        let msg = parse("{\"ociVersion\": ").unwrap_err().to_string();
        assert!(msg.contains("line 1"), "{msg}");
    }

    fn valid(extra: &str) -> String {
        format!(
            r#"{{"ociVersion":"1.2.0","process":{{"user":{{"uid":0,"gid":0}},"cwd":"/","args":["sh"]}},"root":{{"path":"rootfs"}}{extra}}}"#
        )
    }

    #[test]
    fn hostname_without_uts_namespace_is_refused() {
        let spec = parse(&valid(r#","hostname":"h","linux":{"namespaces":[{"type":"pid"}]}"#)).unwrap();
        let msg = validate(Path::new("config.json"), &spec).unwrap_err().to_string();
        assert!(msg.contains("hostname: unable to set hostname without a private UTS namespace"), "{msg}");
        let ok = parse(&valid(r#","hostname":"h","linux":{"namespaces":[{"type":"uts"}]}"#)).unwrap();
        validate(Path::new("config.json"), &ok).unwrap();
    }

    #[test]
    fn sysctls_must_belong_to_a_container_namespace() {
        let spec =
            parse(&valid(r#","linux":{"namespaces":[{"type":"ipc"}],"sysctl":{"net.ipv4.ip_forward":"1"}}"#)).unwrap();
        let msg = validate(Path::new("config.json"), &spec).unwrap_err().to_string();
        assert!(
            msg.contains("linux.sysctl: \"net.ipv4.ip_forward\": not allowed in the host network namespace"),
            "{msg}"
        );
        let spec = parse(&valid(r#","linux":{"namespaces":[{"type":"ipc"}],"sysctl":{"kernel.shmmax":"1"}}"#)).unwrap();
        validate(Path::new("config.json"), &spec).unwrap();
        let spec = parse(&valid(r#","linux":{"namespaces":[{"type":"ipc"}],"sysctl":{"vm.swappiness":"1"}}"#)).unwrap();
        assert!(validate(Path::new("config.json"), &spec).is_err());
    }

    #[test]
    fn process_needs_args_and_absolute_cwd() {
        let spec = parse(r#"{"ociVersion":"1.0.0","process":{"user":{"uid":0,"gid":0},"cwd":"/","args":[]}}"#).unwrap();
        let msg = validate(Path::new("config.json"), &spec).unwrap_err().to_string();
        assert!(msg.contains("process.args"), "{msg}");
        let spec =
            parse(r#"{"ociVersion":"1.0.0","process":{"user":{"uid":0,"gid":0},"cwd":"rel","args":["sh"]}}"#).unwrap();
        let msg = validate(Path::new("config.json"), &spec).unwrap_err().to_string();
        assert!(msg.contains("process.cwd"), "{msg}");
    }

    #[test]
    fn user_namespace_needs_mappings() {
        let spec = parse(&valid(r#","linux":{"namespaces":[{"type":"user"}]}"#)).unwrap();
        let msg = validate(Path::new("config.json"), &spec).unwrap_err().to_string();
        assert!(msg.contains("linux.uidMappings"), "{msg}");
    }

    #[test]
    fn duplicate_namespaces_are_refused() {
        let spec = parse(&valid(r#","linux":{"namespaces":[{"type":"pid"},{"type":"pid"}]}"#)).unwrap();
        let msg = validate(Path::new("config.json"), &spec).unwrap_err().to_string();
        assert!(msg.contains("linux.namespaces: pid is listed twice"), "{msg}");
    }
}
