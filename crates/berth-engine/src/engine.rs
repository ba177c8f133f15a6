//! The engine: a local image (the CLI pulls what is missing), a container's
//! overlay rootfs, network namespace, config.json and record made, and
//! the container started under berth-shim through the OCI runtime's
//! command line. No daemon: every `berth` call opens the stores, does its
//! work, and leaves the container to its shim.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_image::snapshot::overlay::{Upper, mount_overlay};
use berth_image::store::Store;
use berth_image::store::meta::{ImageRecord, Resource};
use berth_shim::config::{Config as ShimConfig, Restart};

use crate::network::hosts::HostEntry;
use crate::network::{self, Attachment, NetNs, Networks, PortMapping};
use crate::spec::flags::UserMount;
use crate::spec::{self, ImageDefaults, Paths, ResolvedMount, RunFlags};
use crate::store::{ContainerRecord, ContainerStore, Status, name_for, new_id};
use crate::volume::{Volume, VolumeError, Volumes};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Image(#[from] berth_image::Error),
    /// The CLI pulls and tries again, as `docker run` does.
    #[error("Unable to find image '{0}' locally")]
    NoSuchImage(String),
    #[error("image {id}: config is not JSON: {source}")]
    ImageConfig { id: String, source: serde_json::Error },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error(transparent)]
    Network(#[from] network::NetworkError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Shim(#[from] berth_shim::ShimError),
    #[error("{what} {}: {source}", path.display())]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("You cannot remove a running container {0}. Stop the container before attempting removal or force remove")]
    Running(String),
    /// docker's words: "container X is not running".
    #[error("{0}")]
    NotRunning(String),
    /// The OCI runtime's own message.
    #[error("OCI runtime: {0}")]
    Runtime(String),
    #[error("unknown network mode {0:?} (none, host, bridge or a network name)")]
    NetworkMode(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> EngineError + 'a {
    move |source| EngineError::Io { what, path: path.to_owned(), source }
}

/// A local image: its record and its config (the JSON docker shows as
/// `.Config`, `.Created`, ...).
#[derive(Debug, Clone)]
pub struct Image {
    pub record: ImageRecord,
    pub config: serde_json::Value,
}

/// Where things are and which programs run containers.
#[derive(Debug, Clone)]
pub struct Engine {
    pub root: PathBuf,
    pub runroot: PathBuf,
    pub runtime: PathBuf,
    pub shim: PathBuf,
    /// The `berth` binary: a `--rm` container's shim runs its `rm` when
    /// the container ends (the shim itself knows nothing of the stores).
    pub cli: Option<PathBuf>,
    /// The cgroup every container goes under (`PARENT/ID`), as dockerd's
    /// `--cgroup-parent`; berth's own, `/berth` by default.
    pub cgroup_parent: String,
}

/// What `berth run` / `create` asks for beyond the spec flags.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub name: Option<String>,
    /// "none", "host", "bridge" (default) or a network's name.
    pub network: String,
    pub restart: Option<String>,
    /// Published ports (docker's `-p`); only on a bridge network.
    pub ports: Vec<PortMapping>,
    /// `-v`, `--mount`, `--tmpfs`.
    pub mounts: Vec<UserMount>,
    /// `-i`: the shim keeps the container's stdin for attach clients.
    pub stdin: bool,
    /// `--rm`: removed when it ends, by whoever is there (the shim's exit
    /// command, or the CLI that waits for it).
    pub auto_remove: bool,
    /// `--init`: the static init binary to run as pid 1 (tini).
    pub init: Option<PathBuf>,
}

impl Engine {
    /// The image store (content, metadata, snapshots) under the root.
    pub fn store(&self) -> Result<Store, EngineError> {
        Ok(Store::open(&self.root)?)
    }

    /// The container records. Opened once per process and root: the
    /// database is shared between processes (redb's multi-writer mode), so
    /// holding it open keeps no other `berth` out, and each open costs
    /// several fdatasyncs (most of a short command's time).
    pub fn containers(&self) -> Result<std::sync::Arc<ContainerStore>, EngineError> {
        use std::collections::HashMap;
        use std::sync::{Arc, Mutex};
        static OPEN: Mutex<Option<HashMap<PathBuf, Arc<ContainerStore>>>> = Mutex::new(None);
        let path = self.root.join("containers.redb");
        let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        let map = open.get_or_insert_with(HashMap::new);
        if let Some(s) = map.get(&path) {
            return Ok(s.clone());
        }
        let s = Arc::new(ContainerStore::open(&path)?);
        map.insert(path, s.clone());
        Ok(s)
    }

    pub fn networks(&self) -> Networks {
        Networks::new(self.root.join("networks"), self.runroot.join("cni"), Networks::default_plugin_dirs())
    }

    /// A local image by reference, ID or ID prefix, with its config.
    /// [`EngineError::NoSuchImage`] if there is none: the caller pulls.
    pub fn image(&self, key: &str) -> Result<Image, EngineError> {
        let store = self.store()?;
        let all = store.meta.read_all()?;
        let id = match berth_image::images::find(&all, key) {
            Ok(id) => id,
            Err(berth_image::Error::NotFound(_)) => return Err(EngineError::NoSuchImage(key.to_owned())),
            Err(e) => return Err(e.into()),
        };
        let record = all.image(&id).cloned().ok_or_else(|| EngineError::NoSuchImage(key.to_owned()))?;
        let config = store.content.read(&id)?;
        let config = serde_json::from_slice(&config)
            .map_err(|source| EngineError::ImageConfig { id: id.to_string(), source })?;
        Ok(Image { record, config })
    }

    fn container_dirs(&self, id: &str) -> (PathBuf, PathBuf) {
        (self.root.join("containers").join(id), self.runroot.join("containers").join(id))
    }

    /// Makes a container: rootfs, network, config.json and record. Undone
    /// whole if a step fails.
    pub fn create(
        &self,
        image_key: &str,
        flags: &RunFlags,
        opts: &CreateOptions,
    ) -> Result<ContainerRecord, EngineError> {
        prime_cgroup_moves();
        let image = self.image(image_key)?;
        let id = new_id();
        let store = self.containers()?;
        let name = opts.name.clone().unwrap_or_else(|| name_for(&id));
        let (data, run) = self.container_dirs(&id);
        let bundle = run.clone();
        let mut rec = ContainerRecord::new(&id, &name, image_key, &image.record.id.to_string(), bundle.clone());
        rec.config = serde_json::json!({
            "network": opts.network, "restart": opts.restart, "tty": flags.tty, "args": flags.args,
            "ports": opts.ports,
            "volumes": volume_names(&id, &opts.mounts),
            "stdin": opts.stdin,
            "init": opts.init.is_some(),
            "autoRemove": opts.auto_remove,
        });
        rec.labels = flags.labels.iter().cloned().collect();
        store.insert(&rec)?;
        match self.prepare(&rec, &image, flags, opts, &data, &run) {
            Ok(None) => Ok(rec),
            Ok(Some(a)) => Ok(store.update(&id, |r| r.config["address"] = a.address.to_string().into())?),
            Err(e) => {
                let _ = self.cleanup(&rec);
                let _ = store.remove(&id);
                Err(e)
            }
        }
    }

    /// The container's rootfs, network and config.json; what its network
    /// gave it.
    fn prepare(
        &self,
        rec: &ContainerRecord,
        image: &Image,
        flags: &RunFlags,
        opts: &CreateOptions,
        data: &Path,
        run: &Path,
    ) -> Result<Option<Attachment>, EngineError> {
        let id = rec.id.as_str();
        for d in [data.join("upper"), data.join("work"), run.join("rootfs")] {
            std::fs::create_dir_all(&d).map_err(io("create", &d))?;
        }
        // The container holds its image: rmi and GC leave it (and its
        // snapshots) alone until the container is removed.
        let store = self.store()?;
        store.meta.write(|tx| tx.set_refs(&holder(id), &[Resource::Image(image.record.id.clone())]))?;
        // Topmost layer first, as overlayfs's lowerdir wants them.
        let lowers: Vec<PathBuf> =
            image.record.layers.iter().rev().map(|l| store.snapshots.fs_path(&l.chain_id)).collect();
        let rootfs = run.join("rootfs");
        let (upper, work) = (data.join("upper"), data.join("work"));
        mount_overlay(&lowers, Some(Upper { upper: &upper, work: &work }), &rootfs)?;

        let hostname = flags.hostname.clone().unwrap_or_else(|| id[..12].to_owned());
        let mut attachment = None;
        let netns = match opts.network.as_str() {
            "host" => None,
            mode => {
                // NetNs::create brings up lo (docker's `none` has it too).
                let ns = NetNs::create(&run.join("netns"))?;
                let nets = self.networks();
                if mode != "none" {
                    attachment = Some(nets.attach(network_name(mode), id, &ns.path, "eth0", &opts.ports)?);
                }
                Some(ns.path)
            }
        };
        let hosts = run.join("hosts");
        let own = attachment.as_ref().map(|a| HostEntry { address: a.address, names: vec![hostname.clone()] });
        let peers = match &attachment {
            Some(a) if a.network != network::DEFAULT_NETWORK => self.peers(&a.network, id)?,
            _ => Vec::new(),
        };
        std::fs::write(&hosts, network::hosts::hosts_file(own.as_ref(), &peers, &[])).map_err(io("write", &hosts))?;
        if let Some(a) = attachment.as_ref().filter(|a| a.network != network::DEFAULT_NETWORK) {
            let entry = HostEntry { address: a.address, names: vec![rec.name.clone(), id[..12].to_owned()] };
            self.announce(&peers, &entry);
        }
        let resolv = run.join("resolv.conf");
        let text = network::hosts::resolv_conf(&network::hosts::host_resolv_conf(), &[], &[]);
        std::fs::write(&resolv, text).map_err(io("write", &resolv))?;
        let hostname_file = run.join("hostname");
        std::fs::write(&hostname_file, format!("{hostname}\n")).map_err(io("write", &hostname_file))?;

        let defaults = ImageDefaults::from_image_config(&image.config);
        let paths = Paths {
            rootfs: rootfs.clone(),
            hosts: Some(hosts),
            resolv_conf: Some(resolv),
            hostname_file: Some(hostname_file),
            netns,
            cgroups_path: format!("{}/{id}", self.cgroup_parent.trim_end_matches('/')),
            mounts: self.resolve_mounts(rec, &opts.mounts, &rootfs)?,
            init: opts.init.clone(),
        };
        let spec = spec::build(id, &defaults, flags, &paths)?;
        let config = run.join("config.json");
        spec.save(&config).map_err(|e| io("write", &config)(std::io::Error::other(e.to_string())))?;
        Ok(attachment)
    }

    /// Named volumes under the root, `docker volume`'s.
    pub fn volumes(&self) -> Volumes {
        Volumes::new(self.root.join("volumes"))
    }

    /// User mounts as host paths: named volumes made on first use and,
    /// when new, filled with what the image has at their target (as
    /// docker does); anonymous ones named after the container.
    fn resolve_mounts(
        &self,
        rec: &ContainerRecord,
        mounts: &[UserMount],
        rootfs: &Path,
    ) -> Result<Vec<ResolvedMount>, EngineError> {
        let vols = self.volumes();
        let mut out = Vec::new();
        for (i, m) in mounts.iter().enumerate() {
            let (vol, target, readonly) = match m {
                UserMount::Bind { source, target, readonly, propagation } => {
                    out.push(ResolvedMount::Bind {
                        source: source.clone(),
                        target: target.clone(),
                        readonly: *readonly,
                        propagation: propagation.clone(),
                    });
                    continue;
                }
                UserMount::Tmpfs { target, options } => {
                    out.push(ResolvedMount::Tmpfs { target: target.clone(), options: options.clone() });
                    continue;
                }
                UserMount::Volume { name, target, readonly } => {
                    (vols.create(name, Default::default(), false)?, target, *readonly)
                }
                UserMount::Anonymous { target } => {
                    (vols.create(&anonymous_volume(&rec.id, i), Default::default(), true)?, target, false)
                }
            };
            populate(&vols, &vol, rootfs, target)?;
            out.push(ResolvedMount::Bind {
                source: vol.mountpoint.clone(),
                target: target.clone(),
                readonly,
                propagation: None,
            });
        }
        Ok(out)
    }

    /// Containers whose records say they mount volume `name`.
    pub fn volume_users(&self, name: &str) -> Result<Vec<String>, EngineError> {
        Ok(self
            .containers()?
            .list()?
            .into_iter()
            .filter(|r| r.config["volumes"].as_array().is_some_and(|v| v.iter().any(|n| n == name)))
            .map(|r| r.name)
            .collect())
    }

    /// The other containers on a user network, by name and short id, as
    /// their records say (docker resolves them with its embedded DNS; the
    /// hosts files do it here, see network::hosts).
    fn peers(&self, network: &str, id: &str) -> Result<Vec<HostEntry>, EngineError> {
        let store = self.containers()?;
        let mut out = Vec::new();
        for peer in self.networks().endpoints(network)? {
            let Ok(r) = store.get(&peer) else { continue };
            let Some(address) = r.config["address"].as_str().and_then(|a| a.parse().ok()) else { continue };
            if r.id != id {
                out.push(HostEntry { address, names: vec![r.name.clone(), r.id[..12].to_owned()] });
            }
        }
        Ok(out)
    }

    /// Adds `entry` to the hosts file of each peer. In place: the file is
    /// bind-mounted into the running container, and a rename would leave
    /// the container with the old inode.
    fn announce(&self, peers: &[HostEntry], entry: &HostEntry) {
        use std::io::Write as _;
        let line = format!("{}\t{}\n", entry.address, entry.names.join(" "));
        for p in peers {
            let Some(id) = p.names.get(1) else { continue };
            let Ok(rec) = self.containers().and_then(|s| Ok(s.get(id)?)) else { continue };
            let path = self.container_dirs(&rec.id).1.join("hosts");
            if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&path) {
                let _ = f.write_all(line.as_bytes());
            }
        }
    }

    /// Takes the container's lines out of its peers' hosts files.
    fn withdraw(&self, network: &str, rec: &ContainerRecord) {
        let Ok(peers) = self.peers(network, &rec.id) else { return };
        let Some(address) = rec.config["address"].as_str() else { return };
        let own = format!("{address}\t{} ", rec.name);
        for p in &peers {
            let Some(id) = p.names.get(1) else { continue };
            let Ok(peer) = self.containers().and_then(|s| Ok(s.get(id)?)) else { continue };
            let path = self.container_dirs(&peer.id).1.join("hosts");
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            let kept: String = text.lines().filter(|l| !l.starts_with(&own)).map(|l| format!("{l}\n")).collect();
            // Truncate and rewrite the same inode (see announce).
            let _ = std::fs::write(&path, kept);
        }
    }

    fn shim_config(&self, rec: &ContainerRecord) -> ShimConfig {
        let (data, run) = self.container_dirs(&rec.id);
        ShimConfig {
            id: rec.id.clone(),
            bundle: run.clone(),
            runtime: self.runtime.clone(),
            runtime_root: Some(self.runroot.join("runtime")),
            // Short: unix socket paths (attach, console) must fit in 108
            // bytes, whatever the runroot.
            state_dir: self.runroot.join("s").join(&rec.id[..12]),
            log_path: Some(data.join(format!("{}-json.log", rec.id))),
            log_max_size: None,
            log_max_files: 1,
            terminal: rec.config["tty"].as_bool().unwrap_or(false),
            stdin: rec.config["stdin"].as_bool().unwrap_or(false),
            restart: rec.config["restart"].as_str().and_then(|r| Restart::parse(r).ok()).unwrap_or(Restart::No),
            sync_fd: None,
            no_delete: false,
            exit_command: self.exit_command(rec),
        }
    }

    /// `berth rm -f ID` with this engine's paths, for a `--rm` container.
    fn exit_command(&self, rec: &ContainerRecord) -> Vec<String> {
        let Some(cli) = self.cli.as_ref().filter(|_| rec.config["autoRemove"] == true) else { return Vec::new() };
        let s = |p: &Path| p.to_string_lossy().into_owned();
        vec![
            s(cli),
            "--root".into(),
            s(&self.root),
            "--runroot".into(),
            s(&self.runroot),
            "--runtime".into(),
            s(&self.runtime),
            "rm".into(),
            "-f".into(),
            rec.id.clone(),
        ]
    }

    /// Starts a created (or exited) container under a new shim.
    pub fn start(&self, id: &str) -> Result<ContainerRecord, EngineError> {
        let store = self.containers()?;
        let rec = store.get(id)?;
        prime_cgroup_moves();
        let cfg = self.shim_config(&rec);
        let _ = std::fs::remove_file(cfg.state_dir.join("stopped"));
        let _ = std::fs::remove_file(cfg.state_dir.join("exit.json"));
        let started = berth_shim::client::spawn(&self.shim, &cfg)?;
        Ok(store.update(&rec.id, |r| {
            r.status = Status::Running;
            r.pid = Some(started.pid);
            r.shim_pid = Some(started.shim_pid);
            r.started_at = Some(crate::volume::now_rfc3339());
        })?)
    }

    /// The container's state now: its shim's exit.json says if it ended.
    pub fn refresh(&self, rec: &ContainerRecord) -> ContainerRecord {
        let mut r = rec.clone();
        if r.status == Status::Created {
            // A start whose CLI died (SIGKILL) between starting the shim and
            // recording it: the shim's files say what runs.
            let state = self.shim_config(rec).state_dir;
            let pid = std::fs::read_to_string(state.join("container.pid")).ok().and_then(|p| p.trim().parse().ok());
            if let Some(pid) = pid.filter(|p| alive(*p)) {
                r.status = Status::Running;
                r.pid = Some(pid);
                r.shim_pid = parent_of(pid);
            } else if pid.is_some() && berth_shim::client::exit_status(&state).is_some() {
                r.status = Status::Running;
            }
        }
        if matches!(r.status, Status::Running | Status::Paused)
            && let Some(e) = berth_shim::client::exit_status(&self.shim_config(rec).state_dir)
            && !r.shim_pid.is_some_and(alive)
        {
            r.status = Status::Exited;
            r.exit_code = Some(e.code);
            r.finished_at = Some(e.exited_at);
            r.restart_count = e.restart_count;
        }
        r
    }

    /// The OCI runtime's command line, with the engine's state root.
    pub(crate) fn runtime_cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new(&self.runtime);
        c.arg("--root").arg(self.runroot.join("runtime"));
        c
    }

    /// The container's run directory (bundle, rootfs mount, hosts files).
    pub(crate) fn run_dir(&self, id: &str) -> PathBuf {
        self.container_dirs(id).1
    }

    /// A connection to the container's shim for stdin and terminal size.
    pub fn attach(&self, rec: &ContainerRecord) -> Result<berth_shim::client::Attach, EngineError> {
        Ok(berth_shim::client::Attach::connect(&self.shim_config(rec).state_dir)?)
    }

    pub fn log_path(&self, rec: &ContainerRecord) -> PathBuf {
        self.shim_config(rec).log_path.unwrap_or_default()
    }

    /// Waits for the container to end; its exit code.
    pub fn wait(&self, id: &str, mut on_tick: impl FnMut()) -> Result<i32, EngineError> {
        let rec = self.containers()?.get(id)?;
        loop {
            on_tick();
            let now = self.refresh(&rec);
            if now.status == Status::Exited {
                let code = now.exit_code.unwrap_or(-1);
                self.containers()?.update(&rec.id, |r| *r = now.clone())?;
                on_tick();
                return Ok(code);
            }
            // The shim may have written its exit and ended since `now` was
            // read: only an exit.json still missing after its end means it
            // died without recording one.
            if rec.shim_pid.is_some_and(|p| !alive(p)) && self.refresh(&rec).status != Status::Exited {
                return Ok(-1);
            }
            // Short: `run --rm` of a short command is mostly this wait.
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Stops a running container: no restart, SIGTERM, SIGKILL after
    /// `timeout`.
    pub fn stop(&self, id: &str, timeout: Duration) -> Result<(), EngineError> {
        let rec = self.refresh(&self.containers()?.get(id)?);
        if !matches!(rec.status, Status::Running | Status::Paused) {
            return Ok(());
        }
        let cfg = self.shim_config(&rec);
        let _ = berth_shim::client::mark_stopped(&cfg.state_dir);
        if rec.status == Status::Paused {
            // A frozen process takes no signal: thaw it first, as docker does.
            self.resume(&rec.id)?;
        }
        let kill = |sig: &str| {
            let mut c = self.runtime_cmd();
            c.args(["kill", &rec.id, sig]);
            let _ = c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status();
        };
        kill("SIGTERM");
        let deadline = Instant::now() + timeout;
        while rec.shim_pid.is_some_and(alive) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if rec.shim_pid.is_some_and(alive) {
            kill("SIGKILL");
            // The runtime may not know the container (another runtime
            // created it, or its state is gone): then the process itself.
            let deadline = Instant::now() + Duration::from_secs(5);
            while rec.shim_pid.is_some_and(alive) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            // Only while it is still the shim's child: a recorded pid may be
            // stale after a restart, and pids are reused.
            let ppid = |pid: i32| {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| {
                    s.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<i32>().ok())
                })
            };
            if let Some(pid) = rec.pid.filter(|p| rec.shim_pid.is_some_and(alive) && ppid(*p) == rec.shim_pid) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while rec.shim_pid.is_some_and(alive) {
                if Instant::now() > deadline {
                    return Err(EngineError::Runtime(format!(
                        "container {} did not stop: its shim (pid {}) still runs after SIGKILL",
                        rec.id,
                        rec.shim_pid.unwrap_or(0)
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let now = self.refresh(&rec);
        self.containers()?.update(&rec.id, |r| *r = now.clone())?;
        Ok(())
    }

    /// Removes a container (stopping it first with `force`): its network,
    /// mounts, directories and record.
    pub fn remove(&self, id: &str, force: bool) -> Result<(), EngineError> {
        self.remove_with(id, force, false)
    }

    /// `rm [-f] [-v]`: with `volumes`, the container's anonymous volumes go
    /// too (named ones always stay, as docker keeps them).
    pub fn remove_with(&self, id: &str, force: bool, volumes: bool) -> Result<(), EngineError> {
        let store = self.containers()?;
        let id = store.get(id)?.id;
        // One remover at a time (a `run --rm` CLI and its shim's exit
        // command may both try): the second finds no record.
        let locks = self.runroot.join("locks");
        let _lock = crate::store::ContainerLock::acquire(&locks, &id)?;
        let rec = self.refresh(&store.get(&id)?);
        if matches!(rec.status, Status::Running | Status::Paused) {
            if !force {
                return Err(EngineError::Running(rec.name.clone()));
            }
            self.stop(&rec.id, Duration::ZERO)?;
        }
        self.cleanup(&rec)?;
        store.remove(&rec.id)?;
        // Gone with the record: a remover waiting on it finds no record.
        let _ = std::fs::remove_file(locks.join(format!("{}.lock", rec.id)));
        if volumes {
            let vols = self.volumes();
            for name in rec.config["volumes"].as_array().into_iter().flatten().filter_map(|v| v.as_str()) {
                if vols.get(name).is_ok_and(|v| v.anonymous) {
                    vols.remove(name, &self.volume_users(name)?)?;
                }
            }
        }
        Ok(())
    }

    fn cleanup(&self, rec: &ContainerRecord) -> Result<(), EngineError> {
        let (data, run) = self.container_dirs(&rec.id);
        let netns = run.join("netns");
        let _ = NetNs::remove(&netns);
        let mode = rec.config["network"].as_str().unwrap_or("");
        if mode != "none" && mode != "host" {
            let net = network_name(mode);
            if net != network::DEFAULT_NETWORK {
                self.withdraw(net, rec);
            }
            let _ = self.networks().detach(net, &rec.id, None, "eth0");
        }
        let rootfs = run.join("rootfs");
        let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
        // The shim deletes the runtime's container when it ends; only one
        // it left (killed, or a container never started) needs the runtime.
        // runc, crun and berth-runtime all keep their state in ROOT/ID.
        if self.runroot.join("runtime").join(&rec.id).exists() {
            let _ = self
                .runtime_cmd()
                .args(["delete", "--force", &rec.id])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
        let shim_state = self.shim_config(rec).state_dir;
        for d in [&run, &data, &shim_state] {
            if d.exists() {
                std::fs::remove_dir_all(d).map_err(io("remove", d))?;
            }
        }
        self.store()?.meta.write(|tx| tx.remove_refs(&holder(&rec.id)))?;
        Ok(())
    }
}

/// The volumes a container's mounts name (anonymous ones by the name
/// [`anonymous_volume`] gives them).
fn volume_names(id: &str, mounts: &[UserMount]) -> Vec<String> {
    mounts
        .iter()
        .enumerate()
        .filter_map(|(i, m)| match m {
            UserMount::Volume { name, .. } => Some(name.clone()),
            UserMount::Anonymous { .. } => Some(anonymous_volume(id, i)),
            _ => None,
        })
        .collect()
}

/// An anonymous volume's name: the container's id and the mount's index
/// (docker uses a random id; this one can be found from the record).
fn anonymous_volume(id: &str, index: usize) -> String {
    format!("{id}-{index}")
}

/// Copies the image's files at `target` into a new volume. `target` is
/// resolved inside the rootfs (pathrs): a hostile image's symlink there
/// cannot make the engine copy a host directory.
fn populate(vols: &Volumes, vol: &Volume, rootfs: &Path, target: &str) -> Result<(), EngineError> {
    use std::os::fd::{AsFd, AsRawFd};
    let Ok(root) = pathrs::Root::open(rootfs) else { return Ok(()) };
    let Ok(handle) = root.resolve(target) else { return Ok(()) };
    // The resolved directory through our own fd: cp (run by populate)
    // opens it by /proc/PID/fd, which does not re-resolve the path.
    let source = PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), handle.as_fd().as_raw_fd()));
    vols.populate(vol, &source)?;
    Ok(())
}

/// `--network` to a network's name: "bridge" (or nothing) is docker's
/// default network.
fn network_name(mode: &str) -> &str {
    if mode.is_empty() || mode == "bridge" { network::DEFAULT_NETWORK } else { mode }
}

/// The name a container holds its image under in the image metadata.
fn holder(id: &str) -> String {
    format!("container/{id}")
}

/// The parent of `pid` (for a container's init, its shim: the subreaper).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

pub(crate) fn alive(pid: i32) -> bool {
    // A zombie is not alive for us: /proc/PID/stat's state is Z.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()).is_some_and(|st| st != "Z"),
        Err(_) => false,
    }
}

/// Starts, in the background, the RCU grace period that the container's
/// first cgroup move will need on cgroup v1 (and hybrid), so that it runs
/// while the rootfs, network and shim are set up instead of after.
///
/// Why: moving a task between cgroups takes the kernel's global
/// cgroup_threadgroup_rwsem for writing, and a writer after a quiet spell
/// first waits for an RCU grace period (rcu_sync; ~20 ms here) — the
/// largest single cost of `runtime create` on this host. A writer within
/// a grace period of the last one does not wait. So a throwaway process
/// "moves" itself into the pids cgroup it is already in (writing 0 to its
/// cgroup.procs: no cgroup is made or changed) and exits; the runtime's
/// move of the container ~20 ms later finds the lock warm. Pure cgroup v2
/// hosts are left alone (no pids v1 mount).
pub fn prime_cgroup_moves() {
    use std::os::fd::AsRawFd;
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if DONE.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let Some(path) = own.lines().find_map(|l| l.split_once(":pids:").map(|(_, p)| p.to_owned())) else { return };
    let procs = Path::new("/sys/fs/cgroup/pids").join(path.trim_start_matches('/')).join("cgroup.procs");
    let Ok(procs) = std::fs::OpenOptions::new().write(true).open(procs) else { return };
    let fd = procs.as_raw_fd();
    // SAFETY: fork in a process that may have threads: the children only
    // make async-signal-safe calls (fork, write, _exit). The middle child
    // exits at once, so the grandchild (the one that waits) is reparented
    // and reaped by init, and we only wait for the middle one.
    unsafe {
        match libc::fork() {
            0 => {
                if libc::fork() == 0 {
                    // "0": the writing process itself.
                    libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::_exit(0);
                }
                libc::_exit(0);
            }
            pid if pid > 0 => {
                let mut status = 0;
                libc::waitpid(pid, &mut status, 0);
            }
            _ => {}
        }
    }
}
