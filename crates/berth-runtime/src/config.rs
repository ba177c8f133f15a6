//! Loading and checking config.json.
//!
//! A malformed file is parsed again through `serde_path_to_error`, so it gets an
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
///
/// A good file is parsed by plain serde_json; only a bad one is parsed
/// again through serde_path_to_error for the field's name. Its wrapped
/// visitors are a second, larger copy of every deserializer of the spec,
/// which a start would otherwise page in (and run) each time.
pub fn parse_json<T: DeserializeOwned>(file: &Path, bytes: &[u8]) -> Result<T> {
    match serde_json::from_slice(bytes) {
        Ok(v) => Ok(v),
        Err(_) => parse_json_naming_the_field(file, bytes),
    }
}

#[cold]
#[inline(never)]
fn parse_json_naming_the_field<T: DeserializeOwned>(file: &Path, bytes: &[u8]) -> Result<T> {
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
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| Error::config(&file, "root: must be specified (root.path names the root filesystem)"))?;
        let rootfs = rootfs_of(&dir, root.path()).map_err(|msg| Error::config(&file, format!("root.path: {msg}")))?;
        normalize_mounts(&file, &mut spec)?;
        validate(&file, &spec)?;
        Ok(Bundle { dir, rootfs, spec })
    }
}

/// root.path, taken from the bundle directory when relative. It must name
/// a directory other than the bundle itself: runc takes an empty path as
/// the bundle directory, so the container would run on the bundle (its
/// config.json included) instead of failing.
fn rootfs_of(bundle: &Path, path: &Path) -> std::result::Result<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    if path.as_os_str().is_empty() {
        return Err("must not be empty (it names the root filesystem, e.g. \"rootfs\")".into());
    }
    let rootfs = bundle.join(path);
    let meta = match std::fs::metadata(&rootfs) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => return Err(format!("{} is not a directory", rootfs.display())),
        Err(e) => return Err(format!("rootfs ({}) does not exist: {e}", rootfs.display())),
    };
    let same = std::fs::metadata(bundle).is_ok_and(|b| (b.dev(), b.ino()) == (meta.dev(), meta.ino()));
    if same {
        return Err(format!("{path:?} is the bundle directory itself; it must name the root filesystem"));
    }
    Ok(rootfs)
}

/// runc accepts relative mount destinations (taking them from "/") with a
/// warning; so does berth, so bundles that work with runc work here. A
/// destination that is empty or names the root itself is refused: the
/// mount would cover the whole root filesystem (runc mounts it there).
fn normalize_mounts(file: &Path, spec: &mut Spec) -> Result<()> {
    let Some(mounts) = spec.mounts_mut().as_mut() else { return Ok(()) };
    for (i, m) in mounts.iter_mut().enumerate() {
        let dest = m.destination();
        if dest.as_os_str().is_empty() {
            return Err(Error::config(file, format!("mounts[{i}].destination: must not be empty")));
        }
        if names_root(dest) {
            return Err(Error::config(
                file,
                format!(
                    "mounts[{i}].destination: {dest:?} is the container's root; a mount there would cover the whole root filesystem (root.path sets that)"
                ),
            ));
        }
        if !dest.is_absolute() {
            tracing::warn!("mount destination {} is not absolute; using it from /", dest.display());
            let abs = Path::new("/").join(dest);
            m.set_destination(abs);
        }
    }
    Ok(())
}

/// True if `p`, read lexically from a root ("/", ".", "/tmp/..", "//"),
/// names that root itself.
fn names_root(p: &Path) -> bool {
    use std::path::Component;
    let depth = p.components().fold(0usize, |depth, c| match c {
        Component::Normal(_) => depth + 1,
        Component::ParentDir => depth.saturating_sub(1),
        _ => depth,
    });
    depth == 0
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
    if let Some(path) = linux.and_then(|l| l.cgroups_path().as_deref()) {
        // "." would be the runtime's own cgroup: the container would join
        // it and its limits would land on the caller.
        if names_root(path) {
            return Err(bad(format!(
                "linux.cgroupsPath: {path:?} names no cgroup of the container's own (it would be the runtime's own cgroup or a hierarchy's root)"
            )));
        }
    }
    validate_linux_attrs(linux, &ns).map_err(bad)?;
    let masked = linux.and_then(|l| l.masked_paths().as_deref()).unwrap_or_default();
    let readonly = linux.and_then(|l| l.readonly_paths().as_deref()).unwrap_or_default();
    for (field, list) in [("linux.maskedPaths", masked), ("linux.readonlyPaths", readonly)] {
        for (i, p) in list.iter().enumerate() {
            if p.is_empty() {
                return Err(bad(format!("{field}[{i}]: must not be empty")));
            }
            // Masking the root would hide the whole root filesystem.
            if field == "linux.maskedPaths" && names_root(Path::new(p)) {
                return Err(bad(format!(
                    "{field}[{i}]: {p:?} is the container's root; masking it would hide everything"
                )));
            }
        }
    }
    Ok(())
}

/// The largest uid or gid a process may have (runc's limit, for 32-bit
/// systems' sake): (uid_t)-1 = 4294967295 means "leave unchanged" to
/// setresuid and setresgid, so the process would keep the runtime's root.
pub const MAX_ID: u32 = i32::MAX as u32;

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
        match e.split_once('=') {
            None => return Err(bad(format!("process.env: {e:?} is not KEY=value"))),
            Some(("", _)) => return Err(bad(format!("process.env: {e:?} has an empty name"))),
            Some(_) => {}
        }
    }
    validate_process_attrs(p).map_err(bad)?;
    validate_user(p.user()).map_err(bad)
}

/// linux.personality, linux.memoryPolicy (against the host's NUMA nodes)
/// and linux.netDevices.
fn validate_linux_attrs(
    linux: Option<&oci_spec::runtime::Linux>,
    ns: &HashSet<LinuxNamespaceType>,
) -> std::result::Result<(), String> {
    use crate::init::attrs;
    let Some(linux) = linux else { return Ok(()) };
    if let Some(p) = linux.personality() {
        attrs::check_personality(p)?;
    }
    if let Some(m) = linux.memory_policy() {
        attrs::check_memory_policy(m)?;
    }
    if let Some(devices) = linux.net_devices() {
        crate::netdev::check(devices, ns.contains(&LinuxNamespaceType::Network))?;
    }
    Ok(())
}

/// process.scheduler, process.ioPriority, process.execCPUAffinity.
fn validate_process_attrs(p: &Process) -> std::result::Result<(), String> {
    use crate::init::attrs;
    if let Some(s) = p.scheduler() {
        attrs::check_scheduler(s)?;
    }
    if let Some(io) = p.io_priority() {
        attrs::check_io_priority(io)?;
    }
    if let Some(a) = p.exec_cpu_affinity() {
        if let Some(l) = a.initial() {
            attrs::check_cpu_list("process.execCPUAffinity.initial", l)?;
        }
        if let Some(l) = a.cpu_affinity_final() {
            attrs::check_cpu_list("process.execCPUAffinity.final", l)?;
        }
    }
    Ok(())
}

/// Ids within runc's range, and a umask that is a mode mask.
fn validate_user(u: &oci_spec::runtime::User) -> std::result::Result<(), String> {
    let check = |field: String, id: u32| {
        if id > MAX_ID {
            return Err(format!("{field}: {id} is out of range (uids and gids must be in range 0-{MAX_ID})"));
        }
        Ok(())
    };
    check("process.user.uid".into(), u.uid())?;
    check("process.user.gid".into(), u.gid())?;
    for (i, g) in u.additional_gids().iter().flatten().enumerate() {
        check(format!("process.user.additionalGids[{i}]"), *g)?;
    }
    match u.umask() {
        Some(m) if m > 0o777 => Err(format!("process.user.umask: {m} is not a file mode mask (0 to 0o777)")),
        _ => Ok(()),
    }
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

    const ROOT: &str = r#"{"uid":0,"gid":0}"#;

    /// Why a spec with this process.user, these other process fields and
    /// these other top-level fields is refused.
    fn refusal(user: &str, extra_process: &str, extra: &str) -> String {
        let json = format!(
            r#"{{"ociVersion":"1.2.0","process":{{"user":{user},"cwd":"/","args":["sh"]{extra_process}}},"root":{{"path":"rootfs"}}{extra}}}"#
        );
        let spec = parse(&json).unwrap();
        validate(Path::new("config.json"), &spec).unwrap_err().to_string()
    }

    #[test]
    fn ids_outside_runcs_range_are_refused_naming_the_field() {
        let msg = refusal(r#"{"uid":4294967295,"gid":0}"#, "", "");
        assert!(msg.contains("process.user.uid: 4294967295 is out of range"), "{msg}");
        assert!(msg.contains("0-2147483647"), "{msg}");
        let msg = refusal(r#"{"uid":0,"gid":2147483648}"#, "", "");
        assert!(msg.contains("process.user.gid: 2147483648"), "{msg}");
        let msg = refusal(r#"{"uid":0,"gid":0,"additionalGids":[1,4294967295]}"#, "", "");
        assert!(msg.contains("process.user.additionalGids[1]: 4294967295"), "{msg}");
        let msg = refusal(r#"{"uid":0,"gid":0,"umask":512}"#, "", "");
        assert!(msg.contains("process.user.umask: 512"), "{msg}");
        let msg = refusal(ROOT, r#","env":["=x"]"#, "");
        assert!(msg.contains("process.env: \"=x\" has an empty name"), "{msg}");
        let ok = r#"{"ociVersion":"1.2.0","process":{"user":{"uid":2147483647,"gid":2147483647,"umask":511},"cwd":"/","args":["sh"]}}"#;
        validate(Path::new("config.json"), &parse(ok).unwrap()).unwrap();
    }

    #[test]
    fn paths_naming_the_root_itself_are_refused() {
        for p in [".", "./", "/", "//", "/a/..", "a/../.."] {
            assert!(names_root(Path::new(p)), "{p}");
        }
        for p in ["a", "/a", "/../a", "a/b/.."] {
            assert!(!names_root(Path::new(p)), "{p}");
        }
        let msg = refusal(ROOT, "", r#","linux":{"cgroupsPath":"."}"#);
        assert!(msg.contains("linux.cgroupsPath: \".\" names no cgroup"), "{msg}");
        let msg = refusal(ROOT, "", r#","linux":{"maskedPaths":["/proc/kcore","/"]}"#);
        assert!(msg.contains("linux.maskedPaths[1]"), "{msg}");
        let msg = refusal(ROOT, "", r#","linux":{"readonlyPaths":[""]}"#);
        assert!(msg.contains("linux.readonlyPaths[0]: must not be empty"), "{msg}");
    }

    #[test]
    fn a_bundle_needs_a_root_of_its_own_and_mounts_off_its_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        let load = |root: &str, mounts: &str| {
            let json = format!(
                r#"{{"ociVersion":"1.2.0","process":{{"user":{{"uid":0,"gid":0}},"cwd":"/","args":["sh"]}}{root},"mounts":[{mounts}]}}"#
            );
            std::fs::write(dir.path().join("config.json"), json).unwrap();
            Bundle::load(dir.path()).map(|b| b.rootfs)
        };
        let err = |r: Result<PathBuf>| r.unwrap_err().to_string();
        assert!(err(load("", "")).contains("root: must be specified"));
        assert!(err(load(r#","root":{}"#, "")).contains("root.path: must not be empty"));
        assert!(err(load(r#","root":{"path":"."}"#, "")).contains("is the bundle directory itself"));
        assert!(err(load(r#","root":{"path":"rootfs/.."}"#, "")).contains("is the bundle directory itself"));
        let root = r#","root":{"path":"rootfs"}"#;
        assert_eq!(load(root, "").unwrap(), dir.path().join("rootfs"));
        let tmpfs = |dest: &str| format!(r#"{{"destination":"{dest}","type":"tmpfs","source":"tmpfs"}}"#);
        assert!(err(load(root, &tmpfs(""))).contains("mounts[0].destination: must not be empty"));
        assert!(err(load(root, &tmpfs("/"))).contains("mounts[0].destination: \"/\" is the container's root"));
        assert!(err(load(root, &tmpfs("."))).contains("mounts[0].destination"));
        load(root, &tmpfs("tmp")).unwrap();
    }
}
