//! The config.json of a container: docker's defaults (capabilities,
//! mounts, masked and read-only paths, devices, the default seccomp
//! profile), the image's config (entrypoint, cmd, env, workdir, user),
//! then the `run` flags on top, with docker's precedence rules.

pub mod cri;
pub mod flags;
pub mod user;

use std::path::PathBuf;

use oci_spec::image::ImageConfiguration;
use std::collections::HashMap;

use oci_spec::runtime::{
    Capabilities, Capability, Linux, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder, LinuxSeccomp, Mount, MountBuilder,
    Process, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

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
    /// What an image's config (untrusted: it comes with the image, and
    /// was checked only as far as oci-spec's types) says about running
    /// it, from its `config` object; what it lacks counts as not set.
    pub fn from_image_config(config: &ImageConfiguration) -> ImageDefaults {
        let Some(c) = config.config() else { return ImageDefaults::default() };
        ImageDefaults {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().unwrap_or_default(),
            user: c.user().clone().unwrap_or_default(),
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
    /// Where the image's files are read (its users and groups), when not
    /// at `rootfs` (berth-runtime mounts the rootfs itself; the engine
    /// reads a detached view).
    pub files: Option<PathBuf>,
    pub hosts: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    pub hostname_file: Option<PathBuf>,
    /// The network namespace: a pinned one joined by path (a network's,
    /// a pod's), the host's (`--network host`), or a new one the runtime
    /// makes and brings lo up in (`--network none`: nothing to pin, no
    /// mount on the host per container).
    pub netns: NsMode,
    /// linux.cgroupsPath.
    pub cgroups_path: String,
    /// Resolved mounts (volumes already turned into host directories).
    pub mounts: Vec<ResolvedMount>,
    /// `--init`: a static init (tini) on the host, bound read-only at
    /// [`INIT_PATH`] and run as the container's pid 1 in front of the
    /// command, as docker runs docker-init.
    pub init: Option<PathBuf>,
    /// The pid, ipc and uts namespaces: the container's own unless a pod
    /// shares them (see [`Namespaces`]).
    pub namespaces: Namespaces,
}

/// How a container gets one kind of namespace.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum NsMode {
    /// A new one of its own (docker's default).
    #[default]
    Private,
    /// The host's: none is made.
    Host,
    /// Another's, by path (`/proc/PID/ns/ipc`): a pod's members join its
    /// infra container's, as containerd's do.
    Join(PathBuf),
}

/// The namespaces a pod may share; the network's is [`Paths::netns`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Namespaces {
    pub pid: NsMode,
    pub ipc: NsMode,
    pub uts: NsMode,
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
    seccomp: Option<LinuxSeccomp>,
    no_new_privileges: bool,
}

fn security(flags: &RunFlags, caps: &[String]) -> Result<Security, SpecError> {
    let mut seccomp_profile: Option<LinuxSeccomp> = None;
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
        Some(berth_profiles::seccomp::default_profile(caps).map_err(|e| SpecError::Seccomp(e.to_string()))?)
    };
    Ok(Security { seccomp, no_new_privileges })
}

/// A builder's failure: only a bug of ours can cause one (every field it
/// needs is given).
fn invalid(e: oci_spec::OciSpecError) -> SpecError {
    SpecError::Invalid(e.to_string())
}

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(invalid)
}

fn default_mounts(shm_size: i64) -> Result<Vec<Mount>, SpecError> {
    let shm = format!("size={shm_size}");
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"])?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        )?,
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"])?,
        mount("/sys/fs/cgroup", "cgroup", "cgroup", &["ro", "nosuid", "noexec", "nodev"])?,
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", &shm])?,
    ])
}

fn bind(source: &std::path::Path, target: &str, readonly: bool, propagation: Option<&str>) -> Result<Mount, SpecError> {
    let options = vec![
        "rbind".to_owned(),
        if readonly { "ro" } else { "rw" }.to_owned(),
        propagation.unwrap_or("rprivate").to_owned(),
    ];
    MountBuilder::default().destination(target).typ("bind").source(source).options(options).build().map_err(invalid)
}

/// docker's device cgroup rules: deny all, mknod anything, use the
/// standard character devices and ptys.
fn device_rules(privileged: bool) -> Result<Vec<LinuxDeviceCgroup>, SpecError> {
    let rule = |allow: bool, typ: Option<LinuxDeviceType>, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default().allow(allow).access(access);
        if let Some(t) = typ {
            b = b.typ(t);
        }
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().map_err(invalid)
    };
    if privileged {
        return Ok(vec![rule(true, None, None, None, "rwm")?]);
    }
    let c = |major: i64, minor: Option<i64>| rule(true, Some(LinuxDeviceType::C), Some(major), minor, "rwm");
    Ok(vec![
        rule(false, None, None, None, "rwm")?,
        rule(true, Some(LinuxDeviceType::C), None, None, "m")?,
        rule(true, Some(LinuxDeviceType::B), None, None, "m")?,
        c(1, Some(3))?,
        c(1, Some(5))?,
        c(1, Some(7))?,
        c(1, Some(8))?,
        c(1, Some(9))?,
        c(5, Some(0))?,
        c(5, Some(2))?,
        c(136, None)?,
        c(10, Some(200))?,
    ])
}

/// The mounts: docker's defaults, the hosts/resolv.conf/hostname files,
/// `--init`'s binary, then the user's; a later mount on the same target
/// replaces an earlier one (a user's -v /dev/shm wins over the default),
/// as docker merges them.
fn mounts(flags: &RunFlags, paths: &Paths) -> Result<Vec<Mount>, SpecError> {
    let mut mounts = default_mounts(flags.shm_size.unwrap_or(64 << 20))?;
    for (file, target) in [
        (&paths.hosts, "/etc/hosts"),
        (&paths.resolv_conf, "/etc/resolv.conf"),
        (&paths.hostname_file, "/etc/hostname"),
    ] {
        if let Some(f) = file {
            mounts.push(bind(f, target, false, None)?);
        }
    }
    if let Some(init) = &paths.init {
        mounts.push(bind(init, INIT_PATH, true, None)?);
    }
    for m in &paths.mounts {
        mounts.push(match m {
            ResolvedMount::Bind { source, target, readonly, propagation } => {
                bind(source, target, *readonly, propagation.as_deref())?
            }
            ResolvedMount::Tmpfs { target, options } => {
                let mut o = vec!["nosuid", "nodev", "noexec"];
                o.extend(options.iter().map(String::as_str));
                mount(target, "tmpfs", "tmpfs", &o)?
            }
        });
    }
    let mut seen = std::collections::HashSet::new();
    let mut mounts: Vec<Mount> = mounts.into_iter().rev().filter(|m| seen.insert(m.destination().clone())).collect();
    mounts.reverse();
    Ok(mounts)
}

fn namespace(typ: LinuxNamespaceType, path: Option<&std::path::Path>) -> Result<LinuxNamespace, SpecError> {
    let b = LinuxNamespaceBuilder::default().typ(typ);
    match path {
        Some(p) => b.path(p),
        None => b,
    }
    .build()
    .map_err(invalid)
}

fn resources(flags: &RunFlags) -> Result<LinuxResources, SpecError> {
    let mut r = LinuxResourcesBuilder::default().devices(device_rules(flags.privileged)?);
    if flags.memory.is_some() || flags.memory_swap.is_some() {
        let mut m = LinuxMemoryBuilder::default();
        if let Some(limit) = flags.memory {
            m = m.limit(limit);
        }
        if let Some(swap) = flags.memory_swap {
            m = m.swap(swap);
        }
        r = r.memory(m.build().map_err(invalid)?);
    }
    if let Some((quota, period)) = flags.cpus {
        r = r.cpu(LinuxCpuBuilder::default().quota(quota).period(period).build().map_err(invalid)?);
    }
    if let Some(p) = flags.pids_limit {
        r = r.pids(LinuxPidsBuilder::default().limit(p).build().map_err(invalid)?);
    }
    r.build().map_err(invalid)
}

fn linux(flags: &RunFlags, paths: &Paths, seccomp: Option<LinuxSeccomp>) -> Result<Linux, SpecError> {
    let mut namespaces = Vec::new();
    let ns = &paths.namespaces;
    for (typ, mode) in
        [(LinuxNamespaceType::Pid, &ns.pid), (LinuxNamespaceType::Ipc, &ns.ipc), (LinuxNamespaceType::Uts, &ns.uts)]
    {
        match mode {
            NsMode::Private => namespaces.push(namespace(typ, None)?),
            NsMode::Join(p) => namespaces.push(namespace(typ, Some(p))?),
            NsMode::Host => {}
        }
    }
    namespaces.push(namespace(LinuxNamespaceType::Mount, None)?);
    match &paths.netns {
        NsMode::Private => namespaces.push(namespace(LinuxNamespaceType::Network, None)?),
        NsMode::Join(p) => namespaces.push(namespace(LinuxNamespaceType::Network, Some(p))?),
        NsMode::Host => {}
    }
    if berth_cgroups::Layout::detect().is_ok_and(|l| l.kind == berth_cgroups::LayoutKind::V2) {
        // docker's default on cgroup v2: a private cgroup namespace.
        namespaces.push(namespace(LinuxNamespaceType::Cgroup, None)?);
    }
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources(flags)?)
        .cgroups_path(PathBuf::from(&paths.cgroups_path))
        .build()
        .map_err(invalid)?;
    // What oci-spec's Default adds and docker does not write: left out.
    linux.set_uid_mappings(None).set_gid_mappings(None).set_sysctl(None).set_devices(None);
    linux.set_rootfs_propagation(None).set_mount_label(None);
    let (masked, readonly) = if flags.privileged {
        (None, None)
    } else {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        (Some(strings(&MASKED_PATHS)), Some(strings(&READONLY_PATHS)))
    };
    linux.set_masked_paths(masked).set_readonly_paths(readonly).set_seccomp(seccomp);
    Ok(linux)
}

fn process(
    image: &ImageDefaults,
    flags: &RunFlags,
    paths: &Paths,
    hostname: &str,
    cwd: String,
    sec: &Security,
    caps: &[String],
) -> Result<Process, SpecError> {
    let user_spec = flags.user.clone().unwrap_or_else(|| image.user.clone());
    let ident = user::resolve(paths.files.as_deref().unwrap_or(&paths.rootfs), &user_spec)?;
    let user = UserBuilder::default().uid(ident.uid).gid(ident.gid).additional_gids(ident.additional_gids.clone());
    let caps: Capabilities = caps
        .iter()
        // oci-spec's names lack the CAP_ that config.json's have.
        .map(|c| c.trim_start_matches("CAP_").parse::<Capability>().map_err(|_| SpecError::Capability(c.clone())))
        .collect::<Result<_, _>>()?;
    let mut capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()
        .map_err(invalid)?;
    // oci-spec's Default gives these three capabilities; docker none.
    capabilities.set_inheritable(None).set_ambient(None);
    let args = match &paths.init {
        Some(_) => [INIT_PATH.to_owned(), "--".to_owned()].into_iter().chain(command(image, flags)?).collect(),
        None => command(image, flags)?,
    };
    let mut process = ProcessBuilder::default()
        .terminal(flags.tty)
        .user(user.build().map_err(invalid)?)
        .args(args)
        .env(environment(image, flags, hostname, ident.home.as_deref()))
        .cwd(cwd)
        .capabilities(capabilities)
        .no_new_privileges(sec.no_new_privileges)
        .build()
        .map_err(invalid)?;
    // oci-spec's Default sets RLIMIT_NOFILE 1024; docker sets no rlimit
    // (the container inherits the runtime's).
    process.set_rlimits(None);
    Ok(process)
}

/// The whole config.json for a container, built with oci-spec's types.
pub fn build(id: &str, image: &ImageDefaults, flags: &RunFlags, paths: &Paths) -> Result<Spec, SpecError> {
    flags.validate()?;
    let hostname = flags.hostname.clone().unwrap_or_else(|| id.chars().take(12).collect());
    let caps = capabilities(flags)?;
    let sec = security(flags, &caps)?;
    let cwd = flags.workdir.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| image.working_dir.clone());
    let cwd = if cwd.is_empty() { "/".to_owned() } else { cwd };
    if !cwd.starts_with('/') {
        return Err(SpecError::Flag { flag: "--workdir".into(), value: cwd, why: "must be an absolute path".into() });
    }
    let process = process(image, flags, paths, &hostname, cwd, &sec, &caps)?;
    let root = RootBuilder::default().path(&paths.rootfs).readonly(flags.read_only).build().map_err(invalid)?;
    let annotations: HashMap<String, String> = flags.labels.iter().cloned().collect();
    SpecBuilder::default()
        // 1.0.2, as docker writes it: every field used here is in it, and
        // older runtimes (crun 1.8) refuse versions they do not know.
        .version("1.0.2")
        .process(process)
        .root(root)
        .hostname(hostname)
        .mounts(mounts(flags, paths)?)
        .annotations(annotations)
        .linux(linux(flags, paths, sec.seccomp)?)
        .build()
        .map_err(invalid)
        .map(|mut spec| {
            // The host's UTS namespace keeps the host's name.
            if paths.namespaces.uts == NsMode::Host {
                spec.set_hostname(None);
            }
            spec
        })
}

#[cfg(test)]
mod tests;
