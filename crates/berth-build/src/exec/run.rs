//! RUN: the command in a container on the step's overlay, in the
//! foreground through the OCI runtime's `run` (no shim: a build step never
//! outlives the build), with the image's env, user and workdir.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use berth_engine::engine::Engine;
use berth_engine::network::DEFAULT_NETWORK;
use berth_engine::network::netns::NetNs;
use berth_engine::spec::{self, ImageDefaults, NsMode, Paths, ResolvedMount, RunFlags};

use crate::error::{Error, IoContext, Result};

/// What a RUN step runs, and how.
pub struct Process<'a> {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub user: String,
    pub workdir: String,
    /// "none", "host" or "default" (the engine's bridge network).
    pub network: &'a str,
    pub mounts: Vec<ResolvedMount>,
    /// Where the step's output goes (None: nowhere, `-q`).
    pub output: Option<Stdio>,
    pub output_err: Option<Stdio>,
}

/// The targets the runtime mounts over, which it creates in the rootfs
/// when missing (then [`super::step::remove_stubs`] removes them).
pub fn mount_targets(mounts: &[ResolvedMount]) -> Vec<String> {
    let mut out: Vec<String> = ["/proc", "/dev", "/sys", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for m in mounts {
        match m {
            ResolvedMount::Bind { target, .. } | ResolvedMount::Tmpfs { target, .. } => out.push(target.clone()),
        }
    }
    out
}

/// The targets (and their parents) that are not in `rootfs` now.
pub fn missing_in(rootfs: &Path, targets: &[String]) -> Vec<String> {
    let Ok(root) = rustix::fs::open(
        rootfs,
        rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in targets {
        let parts: Vec<&str> = t.split('/').filter(|c| !c.is_empty()).collect();
        for i in 1..=parts.len() {
            let p = parts[..i].join("/");
            let (dir, name) = match p.rsplit_once('/') {
                Some((d, n)) => (d.to_string(), n.to_string()),
                None => (String::new(), p.clone()),
            };
            let present = berth_fs::open_dir_in(
                std::os::fd::AsFd::as_fd(&root),
                Path::new(if dir.is_empty() { "." } else { &dir }),
            )
            .ok()
            .is_some_and(|d| rustix::fs::statat(&d, name.as_str(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_ok());
            if !present && !out.contains(&format!("/{p}")) {
                out.push(format!("/{p}"));
            }
        }
    }
    out
}

/// Runs `p` on `rootfs` with `runtime` (state under `state_root`);
/// `bundle` is a new directory for its config.json and log.
pub fn run(engine: &Engine, state_root: &Path, bundle: &Path, rootfs: &Path, p: Process<'_>) -> Result<()> {
    std::fs::create_dir_all(bundle).ctx("create", bundle)?;
    // No "-": the network records are NETWORK-ID-IFNAME.
    let id = format!("build{}", &berth_image::Digest::of(bundle.as_os_str().as_encoded_bytes()).hex()[..12]);
    let net = match p.network {
        "default" => Some(Joined::join(engine, state_root, bundle, &id)?),
        _ => None,
    };
    let res = run_in(engine, state_root, bundle, rootfs, &id, net.as_ref().map(|n| n.netns.as_path()), p);
    if let Some(n) = net {
        n.leave(engine)?;
    }
    res
}

/// A step's place on the engine's default bridge network (docker's
/// default for RUN: a network namespace of its own with outside access).
struct Joined {
    id: String,
    netns: PathBuf,
    /// Names the attachment for the cleanup of a killed build.
    record: PathBuf,
}

impl Joined {
    fn join(engine: &Engine, state_root: &Path, bundle: &Path, id: &str) -> Result<Joined> {
        let netns = bundle.join("netns");
        let nets = state_root.with_file_name("networks");
        std::fs::create_dir_all(&nets).ctx("create", &nets)?;
        let record = nets.join(id);
        std::fs::write(&record, id).ctx("write", &record)?;
        let j = Joined { id: id.to_string(), netns, record };
        let joined = NetNs::create(&j.netns).map_err(berth_engine::Error::from).and_then(|_| {
            engine.networks().attach(DEFAULT_NETWORK, id, &j.netns, "eth0", &[]).map_err(berth_engine::Error::from)
        });
        match joined {
            Ok(_) => Ok(j),
            Err(e) => {
                let _ = j.leave(engine);
                Err(e.into())
            }
        }
    }

    fn leave(self, engine: &Engine) -> Result<()> {
        leave(engine, &self.id, Some(&self.netns));
        let _ = NetNs::remove(&self.netns);
        let _ = std::fs::remove_file(&self.record);
        Ok(())
    }
}

/// Gives a step's address back (and removes its veth when `netns` is
/// still there).
pub fn leave(engine: &Engine, id: &str, netns: Option<&Path>) {
    if let Err(e) = engine.networks().detach(DEFAULT_NETWORK, id, netns, "eth0") {
        tracing::warn!(id, "detach a build step from {DEFAULT_NETWORK}: {e}");
    }
}

fn run_in(
    engine: &Engine,
    state_root: &Path,
    bundle: &Path,
    rootfs: &Path,
    id: &str,
    netns: Option<&Path>,
    p: Process<'_>,
) -> Result<()> {
    let runtime = &engine.runtime;
    let cgroup_parent = &engine.cgroup_parent;
    let files = host_files(bundle, id, netns.is_some())?;
    let defaults = ImageDefaults {
        env: p.env.clone(),
        working_dir: p.workdir.clone(),
        user: p.user.clone(),
        ..Default::default()
    };
    let flags = RunFlags {
        entrypoint: Some(String::new()),
        args: p.argv.clone(),
        hostname: Some("buildkitsandbox".into()),
        ..Default::default()
    };
    let paths = Paths {
        rootfs: rootfs.to_path_buf(),
        hosts: Some(files.0),
        resolv_conf: Some(files.1),
        hostname_file: None,
        netns: match (netns, p.network) {
            (Some(path), _) => NsMode::Join(path.to_path_buf()),
            // A network namespace of its own (only lo, up), as docker's none.
            (None, "none") => NsMode::Private,
            (None, _) => NsMode::Host,
        },
        cgroups_path: format!("{}/{id}", cgroup_parent.trim_end_matches('/')),
        mounts: p.mounts.clone(),
        ..Default::default()
    };
    let spec = spec::build(id, &defaults, &flags, &paths)?;
    let config = bundle.join("config.json");
    spec.save(&config).map_err(|e| Error::Invalid(format!("write {}: {e}", config.display())))?;
    let log = bundle.join("runtime.log");
    let status = std::process::Command::new(runtime)
        .arg("--root")
        .arg(state_root)
        .arg("--log")
        .arg(&log)
        .args(["--log-format", "json", "run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(p.output.unwrap_or_else(Stdio::null))
        .stderr(p.output_err.unwrap_or_else(Stdio::null))
        .status()
        .ctx("run", runtime);
    // Whatever happened, the container is gone after this (state, cgroup).
    let _ = std::process::Command::new(runtime)
        .arg("--root")
        .arg(state_root)
        .args(["delete", "--force"])
        .arg(id)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let status = status?;
    if status.success() {
        return Ok(());
    }
    if let Some(msg) = runtime_error(&log) {
        return Err(Error::Runtime(msg));
    }
    let code = match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 1,
    };
    Err(Error::Process { command: p.argv.join(" "), code })
}

/// The last error the runtime logged (its own failure, not the process's).
fn runtime_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["level"] == "error").then(|| v["msg"].as_str().unwrap_or(l).to_string())
    })
}

/// /etc/hosts and /etc/resolv.conf for a step: the host's resolvers (the
/// step shares the host's network), and localhost.
fn host_files(bundle: &Path, id: &str, own_netns: bool) -> Result<(PathBuf, PathBuf)> {
    let hosts = bundle.join("hosts");
    let mut f = std::fs::File::create(&hosts).ctx("create", &hosts)?;
    writeln!(f, "127.0.0.1\tlocalhost buildkitsandbox {id}\n::1\tlocalhost ip6-localhost ip6-loopback")
        .ctx("write", &hosts)?;
    let resolv = bundle.join("resolv.conf");
    // In a namespace of its own a resolver on the host's loopback is out of
    // reach: the engine's containers' resolv.conf (those left out); with
    // the host's network, the host's own.
    let text = if own_netns {
        berth_engine::pod::Dns::default().resolv_conf()
    } else {
        std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
    };
    std::fs::write(&resolv, text).ctx("write", &resolv)?;
    Ok((hosts, resolv))
}
