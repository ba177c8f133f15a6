//! The config.json of a container: docker's defaults (capabilities,
//! mounts, masked and read-only paths, devices, the default seccomp
//! profile), the image's config (entrypoint, cmd, env, workdir, user),
//! then the `run` flags on top, with docker's precedence rules.

pub mod flags;
pub mod user;

use std::path::PathBuf;

use oci_spec::runtime::Spec;
use serde_json::{Value, json};

pub use flags::UserMount;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("invalid value {value:?} for {flag}: {why}")]
    Flag { flag: String, value: String, why: String },
    #[error("no command specified: the image has no Entrypoint or Cmd; give one after the image name")]
    NoCommand,
    #[error("unable to find user {user}: {why}")]
    User { user: String, why: String },
    #[error("read {path} in the container's root filesystem: {why}")]
    Rootfs { path: String, why: String },
    #[error("unknown capability {0:?} (names like NET_ADMIN or CAP_NET_ADMIN, or ALL)")]
    Capability(String),
    #[error("--security-opt {0:?}: {1}")]
    SecurityOpt(String, String),
    #[error("default seccomp profile: {0}")]
    Seccomp(String),
    #[error("the generated spec does not parse (a bug): {0}")]
    Invalid(String),
    /// docker's words.
    #[error("Minimum memory limit allowed is 6MB")]
    MemoryTooLow,
    /// docker's words; the host's CPU count.
    #[error("range of CPUs is from 0.01 to {0}.00, as there are only {0} CPUs available")]
    CpuRange(usize),
    #[error("invalid user {user:?}: {what} {id} is out of range (0 to {max})", max = user::MAX_ID)]
    IdRange { user: String, what: &'static str, id: String },
}

/// The smallest memory limit docker accepts (6 MiB): below it a container
/// cannot even start, and the runtime's error would say nothing useful.
pub const MIN_MEMORY: i64 = 6 << 20;

/// What the image says about running it (its config's `config` object).
#[derive(Debug, Clone, Default)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

impl ImageDefaults {
    /// What an image's config JSON (untrusted: it comes with the image)
    /// says about running it, from its `config` object. A missing field or
    /// one of the wrong type counts as not set, and so does a non-string
    /// item of a list.
    pub fn from_image_config(config: &Value) -> ImageDefaults {
        let c = &config["config"];
        let strings = |v: &Value| -> Vec<String> {
            v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned)).collect()
        };
        ImageDefaults {
            entrypoint: strings(&c["Entrypoint"]),
            cmd: strings(&c["Cmd"]),
            env: strings(&c["Env"]),
            working_dir: c["WorkingDir"].as_str().unwrap_or_default().to_owned(),
            user: c["User"].as_str().unwrap_or_default().to_owned(),
        }
    }
}

/// docker `run` flags that shape the spec. `None`/empty means "not given".
#[derive(Debug, Clone, Default)]
pub struct RunFlags {
    /// `--entrypoint`: `Some("")` clears the image's.
    pub entrypoint: Option<String>,
    /// The arguments after the image name.
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub tty: bool,
    pub read_only: bool,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub security_opt: Vec<String>,
    pub memory: Option<i64>,
    pub memory_swap: Option<i64>,
    pub cpus: Option<(i64, u64)>,
    pub pids_limit: Option<i64>,
    pub shm_size: Option<i64>,
    pub labels: Vec<(String, String)>,
}

impl RunFlags {
    /// What docker's daemon refuses before it makes anything: a memory
    /// limit under [`MIN_MEMORY`], `--cpus` outside 0.01 to the host's
    /// CPUs, and numeric user or group ids outside 0 to 2147483647 (as
    /// runc: -1, 4294967295, would mean "unchanged", that is root).
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.memory.is_some_and(|m| m > 0 && m < MIN_MEMORY) {
            return Err(SpecError::MemoryTooLow);
        }
        if let Some((quota, period)) = self.cpus {
            flags::check_cpus(quota, period, flags::host_cpus())?;
        }
        if let Some(u) = &self.user {
            user::check_ids(u)?;
        }
        Ok(())
    }
}

/// Where the engine put things for this container.
#[derive(Debug, Clone, Default)]
pub struct Paths {
    pub rootfs: PathBuf,
    pub hosts: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    pub hostname_file: Option<PathBuf>,
    /// The pinned network namespace; `None` with `--network host`.
    pub netns: Option<PathBuf>,
    /// linux.cgroupsPath.
    pub cgroups_path: String,
    /// Resolved mounts (volumes already turned into host directories).
    pub mounts: Vec<ResolvedMount>,
    /// `--init`: a static init (tini) on the host, bound read-only at
    /// [`INIT_PATH`] and run as the container's pid 1 in front of the
    /// command, as docker runs docker-init.
    pub init: Option<PathBuf>,
}

/// Where `--init`'s binary appears in the container (docker's path).
pub const INIT_PATH: &str = "/sbin/docker-init";

/// A user mount as it goes into config.json.
#[derive(Debug, Clone, PartialEq)]
pub enum ResolvedMount {
    Bind { source: PathBuf, target: String, readonly: bool, propagation: Option<String> },
    Tmpfs { target: String, options: Vec<String> },
}

/// docker's default capabilities.
pub use berth_profiles::DOCKER_DEFAULT_CAPS as DEFAULT_CAPS;

const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The container's argv by docker's rule: `--entrypoint` replaces the
/// image's entrypoint and drops its Cmd; arguments replace Cmd.
pub fn command(image: &ImageDefaults, flags: &RunFlags) -> Result<Vec<String>, SpecError> {
    let (entrypoint, cmd) = match &flags.entrypoint {
        Some(e) if e.is_empty() => (Vec::new(), flags.args.clone()),
        Some(e) => (vec![e.clone()], flags.args.clone()),
        None if !flags.args.is_empty() => (image.entrypoint.clone(), flags.args.clone()),
        None => (image.entrypoint.clone(), image.cmd.clone()),
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() { Err(SpecError::NoCommand) } else { Ok(argv) }
}

/// Environment: the image's, then the flags' (same name: the flag wins),
/// with PATH and HOSTNAME as docker adds them.
fn environment(image: &ImageDefaults, flags: &RunFlags, hostname: &str, home: Option<&str>) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let mut set = |kv: &str| {
        let key = kv.split_once('=').map_or(kv, |(k, _)| k);
        env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        env.push(kv.to_owned());
    };
    set(DEFAULT_PATH);
    set(&format!("HOSTNAME={hostname}"));
    for kv in &image.env {
        set(kv);
    }
    if flags.tty {
        set("TERM=xterm");
    }
    for kv in &flags.env {
        set(kv);
    }
    if let Some(home) = home
        && !env.iter().any(|e| e.starts_with("HOME="))
    {
        env.push(format!("HOME={home}"));
    }
    env
}

/// `NET_ADMIN` / `cap_net_admin` → `CAP_NET_ADMIN`, checked against the
/// kernel's list.
fn cap_name(name: &str) -> Result<String, SpecError> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
    full.parse::<caps::Capability>().map_err(|_| SpecError::Capability(name.into()))?;
    Ok(full)
}

fn capabilities(flags: &RunFlags) -> Result<Vec<String>, SpecError> {
    let all: Vec<String> = caps::all().into_iter().map(|c| c.to_string()).collect();
    if flags.privileged {
        return Ok(sorted(all));
    }
    let mut set: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    // docker: drop first, then add; "ALL" in either means every capability.
    for d in &flags.cap_drop {
        if d.eq_ignore_ascii_case("ALL") {
            set.clear();
        } else {
            let c = cap_name(d)?;
            set.retain(|s| *s != c);
        }
    }
    for a in &flags.cap_add {
        if a.eq_ignore_ascii_case("ALL") {
            set = all.clone();
        } else {
            let c = cap_name(a)?;
            if !set.contains(&c) {
                set.push(c);
            }
        }
    }
    Ok(sorted(set))
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

struct Security {
    seccomp: Option<Value>,
    no_new_privileges: bool,
}

fn security(flags: &RunFlags, caps: &[String]) -> Result<Security, SpecError> {
    let mut seccomp_profile: Option<Value> = None;
    let mut unconfined = flags.privileged;
    let mut no_new_privileges = false;
    for opt in &flags.security_opt {
        let (k, v) = opt.split_once(['=', ':']).unwrap_or((opt.as_str(), ""));
        match k {
            "seccomp" if v == "unconfined" => unconfined = true,
            "seccomp" => {
                let text = std::fs::read(v).map_err(|e| SpecError::SecurityOpt(opt.clone(), e.to_string()))?;
                seccomp_profile = Some(
                    serde_json::from_slice(&text).map_err(|e| SpecError::SecurityOpt(opt.clone(), e.to_string()))?,
                );
            }
            "no-new-privileges" => no_new_privileges = !matches!(v, "false"),
            "apparmor" | "label" if v == "unconfined" || v == "disable" => {}
            _ => {
                return Err(SpecError::SecurityOpt(
                    opt.clone(),
                    "not supported here (seccomp=PATH|unconfined, no-new-privileges)".into(),
                ));
            }
        }
    }
    let seccomp = if let Some(p) = seccomp_profile {
        Some(p)
    } else if unconfined {
        None
    } else {
        let profile = berth_profiles::seccomp::default_profile(caps).map_err(|e| SpecError::Seccomp(e.to_string()))?;
        Some(serde_json::to_value(profile).map_err(|e| SpecError::Seccomp(e.to_string()))?)
    };
    Ok(Security { seccomp, no_new_privileges })
}

fn default_mounts(shm_size: i64) -> Vec<Value> {
    vec![
        json!({ "destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"] }),
        json!({ "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] }),
        json!({ "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] }),
        json!({ "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] }),
        json!({ "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro", "nosuid", "noexec", "nodev"] }),
        json!({ "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] }),
        json!({ "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", format!("size={shm_size}")] }),
    ]
}

fn bind(source: &std::path::Path, target: &str, readonly: bool, propagation: Option<&str>) -> Value {
    let mut options = vec!["rbind".to_owned(), if readonly { "ro" } else { "rw" }.to_owned()];
    options.push(propagation.unwrap_or("rprivate").to_owned());
    json!({ "destination": target, "type": "bind", "source": source, "options": options })
}

/// docker's device cgroup rules: deny all, mknod anything, use the
/// standard character devices and ptys.
fn device_rules(privileged: bool) -> Value {
    if privileged {
        return json!([{ "allow": true, "access": "rwm" }]);
    }
    let c = |major: i64, minor: Option<i64>, access: &str| json!({ "allow": true, "type": "c", "major": major, "minor": minor, "access": access });
    json!([
        { "allow": false, "access": "rwm" },
        { "allow": true, "type": "c", "access": "m" },
        { "allow": true, "type": "b", "access": "m" },
        c(1, Some(3), "rwm"), c(1, Some(5), "rwm"), c(1, Some(7), "rwm"), c(1, Some(8), "rwm"),
        c(1, Some(9), "rwm"), c(5, Some(0), "rwm"), c(5, Some(2), "rwm"),
        c(136, None, "rwm"), c(10, Some(200), "rwm")
    ])
}

/// The whole config.json for a container.
pub fn build(id: &str, image: &ImageDefaults, flags: &RunFlags, paths: &Paths) -> Result<Spec, SpecError> {
    flags.validate()?;
    let hostname = flags.hostname.clone().unwrap_or_else(|| id.chars().take(12).collect());
    let user_spec = flags.user.clone().unwrap_or_else(|| image.user.clone());
    let ident = user::resolve(&paths.rootfs, &user_spec)?;
    let caps = capabilities(flags)?;
    let sec = security(flags, &caps)?;
    let cwd = flags.workdir.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| image.working_dir.clone());
    let cwd = if cwd.is_empty() { "/".to_owned() } else { cwd };
    if !cwd.starts_with('/') {
        return Err(SpecError::Flag { flag: "--workdir".into(), value: cwd, why: "must be an absolute path".into() });
    }

    let mut mounts = default_mounts(flags.shm_size.unwrap_or(64 << 20));
    for (file, target) in [
        (&paths.hosts, "/etc/hosts"),
        (&paths.resolv_conf, "/etc/resolv.conf"),
        (&paths.hostname_file, "/etc/hostname"),
    ] {
        if let Some(f) = file {
            mounts.push(bind(f, target, false, None));
        }
    }
    if let Some(init) = &paths.init {
        mounts.push(bind(init, INIT_PATH, true, None));
    }
    for m in &paths.mounts {
        mounts.push(match m {
            ResolvedMount::Bind { source, target, readonly, propagation } => {
                bind(source, target, *readonly, propagation.as_deref())
            }
            ResolvedMount::Tmpfs { target, options } => {
                let mut o = vec!["nosuid".to_owned(), "nodev".to_owned(), "noexec".to_owned()];
                o.extend(options.iter().cloned());
                json!({ "destination": target, "type": "tmpfs", "source": "tmpfs", "options": o })
            }
        });
    }
    // A later mount on the same target replaces an earlier one (a user's
    // -v /dev/shm wins over the default), as docker merges them.
    let mut seen = std::collections::HashSet::new();
    let mut mounts: Vec<Value> =
        mounts.into_iter().rev().filter(|m| seen.insert(m["destination"].to_string())).collect();
    mounts.reverse();

    let mut namespaces =
        vec![json!({ "type": "pid" }), json!({ "type": "ipc" }), json!({ "type": "uts" }), json!({ "type": "mount" })];
    if let Some(ns) = &paths.netns {
        namespaces.push(json!({ "type": "network", "path": ns }));
    }
    if berth_cgroups::Layout::detect().is_ok_and(|l| l.kind == berth_cgroups::LayoutKind::V2) {
        // docker's default on cgroup v2: a private cgroup namespace.
        namespaces.push(json!({ "type": "cgroup" }));
    }

    let mut resources = json!({ "devices": device_rules(flags.privileged) });
    if flags.memory.is_some() || flags.memory_swap.is_some() {
        resources["memory"] = json!({ "limit": flags.memory, "swap": flags.memory_swap });
    }
    if let Some((quota, period)) = flags.cpus {
        resources["cpu"] = json!({ "quota": quota, "period": period });
    }
    if let Some(p) = flags.pids_limit {
        resources["pids"] = json!({ "limit": p });
    }

    let mut linux = json!({
        "namespaces": namespaces,
        "resources": resources,
        "cgroupsPath": paths.cgroups_path,
    });
    if !flags.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
    }
    if let Some(s) = sec.seccomp {
        linux["seccomp"] = s;
    }
    let annotations: serde_json::Map<String, Value> =
        flags.labels.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();

    let spec = json!({
        // 1.0.2, as docker writes it: every field used here is in it, and
        // older runtimes (crun 1.8) refuse versions they do not know.
        "ociVersion": "1.0.2",
        "process": {
            "terminal": flags.tty,
            "user": { "uid": ident.uid, "gid": ident.gid, "additionalGids": ident.additional_gids },
            "args": match &paths.init {
                Some(_) => [INIT_PATH.to_owned(), "--".to_owned()].into_iter().chain(command(image, flags)?).collect(),
                None => command(image, flags)?,
            },
            "env": environment(image, flags, &hostname, ident.home.as_deref()),
            "cwd": cwd,
            "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
            "noNewPrivileges": sec.no_new_privileges,
        },
        "root": { "path": paths.rootfs, "readonly": flags.read_only },
        "hostname": hostname,
        "mounts": mounts,
        "annotations": annotations,
        "linux": linux,
    });
    serde_json::from_value(spec).map_err(|e| SpecError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests;
