//! The engine: a local image (pulled first when missing, by
//! [`crate::images::Images::create_container`]), a container's overlay
//! rootfs, network namespace, config.json and record made, and the
//! container started under berth-shim, which runs the OCI runtime's
//! command line. No daemon: every `berth` call opens the stores, does its
//! work, and leaves the container to its shim.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_fs::overlay::{ANNOTATION, Overlay};
use berth_image::images::{Removed, Use};
use berth_image::store::Store;
use berth_image::store::meta::ImageRecord;
use berth_shim::config::{Config as ShimConfig, Restart};
use nix::sys::signal::Signal;

use crate::Error;
use crate::logconfig::{LogConfig, Rotation};
use crate::network::hosts::HostEntry;
use crate::network::{self, Attachment, NetNs, Networks, PortMapping};
use crate::spec::flags::UserMount;
use crate::spec::{self, ImageDefaults, NsMode, Paths, ResolvedMount, RunFlags};
use crate::store::{ContainerConfig, ContainerRecord, ContainerStore, Status, new_id};
use crate::volume::Volumes;

// What front ends get from a container's shim, through the engine.
pub use berth_shim::client::{Attach, ExitWatch, Watched};

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io { what, path: path.to_owned(), source }
}

/// A local image: its record and its config (what docker shows as
/// `.Config`, `.Created`, ...).
#[derive(Debug, Clone)]
pub struct Image {
    pub record: ImageRecord,
    pub config: oci_spec::image::ImageConfiguration,
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
    /// `--log-driver` and `--log-opt`, resolved against the config's
    /// defaults (None: json-file, never rotated).
    pub log: Option<crate::logconfig::LogConfig>,
    /// The engine namespace ("" the default one; see
    /// [`ContainerRecord::namespace`]).
    pub namespace: String,
    /// Kept on the record for the front end (see
    /// [`ContainerRecord::extensions`]).
    pub extensions: std::collections::BTreeMap<String, serde_json::Value>,
    /// An OCI runtime other than the engine's (a CRI runtime handler's).
    pub runtime: Option<PathBuf>,
    /// A pod's infra container or member (see [`crate::pod`]).
    pub pod: Option<crate::pod::PodSettings>,
    /// Network aliases on its network (docker's `--network-alias`).
    pub aliases: Vec<String>,
}

impl Engine {
    /// The image store (content, metadata, snapshots) under the root.
    pub fn store(&self) -> Result<Store, Error> {
        Ok(Store::open(&self.root)?)
    }

    /// The container records. Opened once per process and root: the
    /// database is shared between processes (redb's multi-writer mode), so
    /// holding it open keeps no other `berth` out, and each open costs
    /// several fdatasyncs (most of a short command's time).
    pub fn containers(&self) -> Result<std::sync::Arc<ContainerStore>, Error> {
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
    /// [`Error::NoSuchImage`] if there is none (see
    /// [`crate::images::Images::create_container`], which pulls then).
    pub fn image(&self, key: &str) -> Result<Image, Error> {
        let store = self.store()?;
        let all = store.meta.read_images()?;
        let id = match berth_image::images::find(&all, key) {
            Ok(id) => id,
            Err(berth_image::Error::NotFound(_)) => return Err(Error::NoSuchImage(key.to_owned())),
            Err(e) => return Err(e.into()),
        };
        let record = all.image(&id).cloned().ok_or_else(|| Error::NoSuchImage(key.to_owned()))?;
        let config = store.content.read(&id)?;
        let config =
            serde_json::from_slice(&config).map_err(|source| Error::ImageConfig { id: id.to_string(), source })?;
        Ok(Image { record, config })
    }

    pub(crate) fn container_dirs(&self, id: &str) -> (PathBuf, PathBuf) {
        (self.root.join("containers").join(id), self.runroot.join("containers").join(id))
    }

    /// Makes a container: record, image hold, rootfs, network and
    /// config.json. Undone whole if a step fails.
    ///
    /// The record is written first, as `Dead`, and becomes `Created` only
    /// when everything is in place: a creator killed in between leaves a
    /// container that shows as dead, cannot start, and that `rm` removes
    /// with all it had (docker's Dead: only removal is left). Until this
    /// process ends the container is marked as being created (see
    /// [`Engine::being_created`]), so `container prune`/`system prune`
    /// leave it to the `run` that is still making and starting it.
    pub fn create(&self, image_key: &str, flags: &RunFlags, opts: &CreateOptions) -> Result<ContainerRecord, Error> {
        let made = self.create_claimed(image_key, flags, opts);
        if let Ok(rec) = &made
            && DAEMON_CREATES.load(std::sync::atomic::Ordering::Relaxed)
        {
            self.release_creating_lock(&rec.id);
        }
        made
    }

    fn create_claimed(
        &self,
        image_key: &str,
        flags: &RunFlags,
        opts: &CreateOptions,
    ) -> Result<ContainerRecord, Error> {
        // Bad flags are refused before anything is made.
        flags.validate()?;
        network::check_aliases(&opts.aliases)?;
        let id = new_id();
        let store = self.containers()?;
        let name = opts.name.clone().unwrap_or_default();
        let (data, run) = self.container_dirs(&id);
        claim(&self.creating_lock(&id))?;
        let mut rec = ContainerRecord::new(&id, &name, image_key, "", run.clone());
        rec.status = Status::Dead;
        rec.config = ContainerConfig {
            network: opts.network.clone(),
            restart: opts.restart.clone(),
            tty: flags.tty,
            stdin: opts.stdin,
            args: flags.args.clone(),
            ports: opts.ports.clone(),
            volumes: volume_names(&id, &opts.mounts),
            init: opts.init.is_some(),
            auto_remove: opts.auto_remove,
            address: None,
            log: opts.log.clone(),
            runtime: opts.runtime.clone(),
            aliases: opts.aliases.clone(),
            networks: Vec::new(),
        };
        rec.labels = flags.labels.iter().cloned().collect();
        rec.namespace = opts.namespace.clone();
        rec.extensions = opts.extensions.clone();
        let inserted = match opts.name {
            Some(_) => store.insert(&rec),
            None => crate::names::insert_with_generated_name(&store, &mut rec),
        };
        if let Err(e) = inserted {
            self.release_creating_lock(&id);
            return Err(e.into());
        }
        kill_point("create:recorded");
        // After the record: every holder of an image has a record, so a
        // holder without one is stale (see image_user).
        let image = match self.hold_image(image_key, &id) {
            Ok(image) => image,
            Err(e) => {
                let _ = self.store().and_then(|s| Ok(s.meta.write(|tx| tx.remove_refs(&holder(&id)))?));
                let _ = store.remove(&id);
                self.release_creating_lock(&id);
                return Err(e);
            }
        };
        kill_point("create:held");
        rec.image_id = image.record.id.to_string();
        match self.prepare(&rec, &image, flags, opts, &data, &run) {
            Ok(attachment) => {
                kill_point("create:prepared");
                let rec = store.update(&id, |r| {
                    r.status = Status::Created;
                    r.image_id = image.record.id.to_string();
                    if let Some(a) = &attachment {
                        r.config.address = Some(a.address.to_string());
                    }
                })?;
                kill_point("create:done");
                self.container_event(&rec, "create", &[]);
                if let Some(a) = &attachment {
                    self.named_event("network", "connect", &a.network, &[("container", rec.id.clone())]);
                }
                Ok(rec)
            }
            Err(e) => {
                // A half-made container that cannot be undone whole (a
                // network DEL failed) stays, dead, for `rm` to finish.
                if self.cleanup(&rec).is_ok() {
                    let _ = store.remove(&id);
                    self.release_creating_lock(&id);
                }
                Err(e)
            }
        }
    }

    /// Whether the container's creator (a `create` or `run` of any berth
    /// process) is still at work on it: it holds the container's creating
    /// lock until it ends.
    pub fn being_created(&self, id: &str) -> bool {
        // No lock file: made before there were any, or its creator is done
        // and it was swept.
        let Ok(f) = std::fs::File::open(self.creating_lock(id)) else { return false };
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err()
    }

    /// The lock a container's creator holds (see [`Engine::being_created`]).
    /// Outside the container's directories: it is taken before the record
    /// exists, so a creator killed before writing the record leaves only
    /// this file, which `container prune` sweeps.
    pub(crate) fn creating_lock(&self, id: &str) -> PathBuf {
        self.runroot.join("creating").join(id)
    }

    /// [`Engine::image`], and the container `id` recorded as its holder in
    /// the same transaction as the lookup: an `rmi` either came first (no
    /// such image) or sees the holder.
    fn hold_image(&self, key: &str, id: &str) -> Result<Image, Error> {
        let store = self.store()?;
        let record = match berth_image::images::hold(&store, key, &holder(id)) {
            Ok(r) => r,
            Err(berth_image::Error::NotFound(_)) => return Err(Error::NoSuchImage(key.to_owned())),
            Err(e) => return Err(e.into()),
        };
        let config = store.content.read(&record.id)?;
        let config = serde_json::from_slice(&config)
            .map_err(|source| Error::ImageConfig { id: record.id.to_string(), source })?;
        Ok(Image { record, config })
    }

    /// `rmi NAME`, as docker decides it: containers that run (or are being
    /// made) keep their image; stopped ones keep it without `force`, and
    /// keep their layers either way.
    pub fn remove_image(&self, name: &str, force: bool) -> Result<Vec<Removed>, Error> {
        let store = self.store()?;
        let removed = berth_image::images::remove(&store, name, force, &|h| self.image_user(h))?;
        for r in &removed {
            match r {
                Removed::Untagged(n) => {
                    let n = crate::images::familiar(n);
                    self.image_event("untag", &n, &n)
                }
                Removed::Deleted(d) => self.image_event("delete", &d.to_string(), &crate::images::familiar(name)),
            }
        }
        Ok(removed)
    }

    /// What the holder `holder` of an image does with it (see
    /// [`berth_image::images::Use`]); None when it is gone.
    pub(crate) fn image_user(&self, holder: &str) -> Option<Use> {
        let Some(id) = holder.strip_prefix("container/") else { return Some(Use::Running(holder.to_owned())) };
        let short = id.get(..12).unwrap_or(id).to_owned();
        let rec = match self.containers().map(|s| s.get(id)) {
            Ok(Ok(rec)) if rec.id == id => rec,
            Ok(Err(crate::store::StoreError::NotFound(_))) | Ok(Ok(_)) => return None,
            // Unknown: keep the image, as for a running one.
            _ => return Some(Use::Running(short)),
        };
        match self.refresh(&rec).status {
            Status::Running | Status::Paused | Status::Restarting => Some(Use::Running(short)),
            Status::Dead if self.being_created(id) => Some(Use::Running(short)),
            _ => Some(Use::Stopped(short)),
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
    ) -> Result<Option<Attachment>, Error> {
        let id = rec.id.as_str();
        for d in [data.join("upper"), data.join("work"), run.join("rootfs")] {
            std::fs::create_dir_all(&d).map_err(io("create", &d))?;
        }
        // The container holds its image (taken in create): rmi and GC leave
        // it (and its snapshots) alone until the container is removed.
        let store = self.store()?;
        // Topmost layer first, as overlayfs's lowerdir wants them.
        let lowers: Vec<PathBuf> =
            image.record.layers.iter().rev().map(|l| store.snapshots.fs_path(&l.chain_id)).collect();
        let rootfs = run.join("rootfs");
        let (upper_dir, work_dir) = (data.join("upper"), data.join("work"));
        let pod = opts.pod.clone().unwrap_or_default();
        // A pod's user namespace (an infra container's pins it, and a
        // network namespace it owns) comes before the rootfs it idmaps.
        let userns = match &pod.userns {
            Some(u) => Some((crate::userns::prepare(run, &self.runroot, u)?, u)),
            None => None,
        };
        let overlay = Overlay {
            lower: lowers,
            upper: Some(upper_dir.clone()),
            work: Some(work_dir.clone()),
            volatile: opts.auto_remove,
        };
        // berth-runtime mounts the overlay in the container's own mount
        // namespace (see crate::rootview): none on the host. The engine
        // reads the image's files (users, what fills a new volume) from a
        // detached read-only view of the layers meanwhile.
        let runtime_mounts = userns.is_none()
            && crate::rootview::is_berth_runtime(rec.config.runtime.as_deref().map_or(&self.runtime, Path::new));
        let image_view = match &userns {
            Some((ns, u)) => {
                crate::userns::mount_rootfs(
                    &overlay.lower,
                    &upper_dir,
                    &work_dir,
                    &rootfs,
                    ns.fd.as_fd(),
                    &u.mappings,
                )?;
                None
            }
            None if runtime_mounts => {
                let layers = Overlay { lower: overlay.lower.clone(), upper: None, work: None, volatile: false };
                // A kernel that cannot make it (before 6.8, layers whose
                // paths pass fsconfig's 256 bytes) gets the rootfs mounted
                // on the host, as for other runtimes.
                crate::rootview::View::detached(&layers, &rootfs)
                    .inspect_err(|e| tracing::debug!("no detached view of the image ({e}): the rootfs is mounted here"))
                    .ok()
            }
            None => None,
        };
        let runtime_mounts = runtime_mounts && image_view.is_some();
        if userns.is_none() && !runtime_mounts {
            overlay.mount(&rootfs).map_err(|e| crate::rootview::overlay_error("mount the overlay at", &rootfs, e))?;
        }
        let files = image_view.as_ref().map_or_else(|| rootfs.clone(), |v| v.path());
        kill_point("create:mounted");

        let hostname = flags.hostname.clone().unwrap_or_else(|| id[..12].to_owned());
        let mut attachment = None;
        let netns = match opts.network.as_str() {
            _ if let Some(p) = &pod.join_netns => NsMode::Join(p.clone()),
            // Pinned with the pod's user namespace, which owns it.
            "none" if userns.as_ref().is_some_and(|(_, u)| u.join.is_none()) => NsMode::Join(run.join("netns")),
            "host" => NsMode::Host,
            // The runtime makes it and brings lo up, as for docker's
            // `none`: no pin, so no mount on the host per container (each
            // one makes every later mount namespace copy slower). Not a
            // pod's infra container: its pin is the pod's network
            // namespace, which CNI attaches and the members join.
            "none" if userns.is_none() && rec.namespace != crate::pod::K8S_NAMESPACE => NsMode::Private,
            mode => {
                // NetNs::create brings up lo (docker's `none` has it too).
                let ns = NetNs::create(&run.join("netns"))?;
                let nets = self.networks();
                if mode != "none" {
                    attachment = Some(nets.attach(network_name(mode), id, &ns.path, "eth0", &opts.ports)?);
                }
                NsMode::Join(ns.path)
            }
        };
        let (hosts, resolv, hostname_file) = match &pod.files_of {
            Some(owner) => {
                let d = self.run_dir(owner);
                (d.join("hosts"), d.join("resolv.conf"), d.join("hostname"))
            }
            None => self.write_files(rec, attachment.as_ref(), &hostname, &pod.dns, run)?,
        };

        let defaults = ImageDefaults::from_image_config(&image.config);
        let cgroup_parent = pod.cgroup_parent.as_deref().unwrap_or(&self.cgroup_parent);
        let paths = Paths {
            rootfs: rootfs.clone(),
            hosts: Some(hosts),
            resolv_conf: Some(resolv),
            hostname_file: Some(hostname_file),
            netns,
            cgroups_path: format!("{}/{id}", cgroup_parent.trim_end_matches('/')),
            files: Some(files.clone()),
            mounts: self.resolve_mounts(rec, &opts.mounts, &files)?,
            init: opts.init.clone(),
            namespaces: pod.namespaces.clone(),
        };
        let mut spec = spec::build(id, &defaults, flags, &paths)?;
        pod.overrides.apply(&mut spec);
        if let Some((ns, u)) = &userns {
            crate::userns::apply(&mut spec, &ns.path, u);
        }
        if runtime_mounts {
            let json = serde_json::to_string(&overlay).expect("paths serialize");
            spec.annotations_mut().get_or_insert_default().insert(ANNOTATION.to_owned(), json);
        }
        let config = run.join("config.json");
        spec.save(&config).map_err(|e| io("write", &config)(std::io::Error::other(e.to_string())))?;
        Ok(attachment)
    }

    /// The container's hosts, resolv.conf (the host's, or a pod's DNS
    /// settings) and hostname files, in its run directory.
    fn write_files(
        &self,
        rec: &ContainerRecord,
        attachment: Option<&Attachment>,
        hostname: &str,
        dns: &crate::pod::Dns,
        run: &Path,
    ) -> Result<(PathBuf, PathBuf, PathBuf), Error> {
        let id = rec.id.as_str();
        let hostname = hostname.to_owned();
        let hosts = run.join("hosts");
        let own = attachment.as_ref().map(|a| HostEntry { address: a.address, names: vec![hostname.clone()] });
        let peers = match &attachment {
            Some(a) if a.network != network::DEFAULT_NETWORK => self.peers(&a.network, id)?,
            _ => Vec::new(),
        };
        std::fs::write(&hosts, network::hosts::hosts_file(own.as_ref(), &peers, &[])).map_err(io("write", &hosts))?;
        if let Some(a) = attachment.as_ref().filter(|a| a.network != network::DEFAULT_NETWORK) {
            let mut names = vec![rec.name.clone(), id[..12].to_owned()];
            names.extend(rec.config.aliases.iter().filter(|n| **n != rec.name).cloned());
            let entry = HostEntry { address: a.address, names };
            self.announce(&peers, &entry);
        }
        let resolv = run.join("resolv.conf");
        std::fs::write(&resolv, dns.resolv_conf()).map_err(io("write", &resolv))?;
        let hostname_file = run.join("hostname");
        std::fs::write(&hostname_file, format!("{hostname}\n")).map_err(io("write", &hostname_file))?;
        Ok((hosts, resolv, hostname_file))
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
    ) -> Result<Vec<ResolvedMount>, Error> {
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
                    (self.create_volume(name, Default::default(), false)?, target, *readonly)
                }
                UserMount::Anonymous { target } => {
                    (self.create_volume(&anonymous_volume(&rec.id, i), Default::default(), true)?, target, false)
                }
            };
            vols.populate_from(&vol, rootfs, target)?;
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
    pub fn volume_users(&self, name: &str) -> Result<Vec<String>, Error> {
        Ok(self
            .containers()?
            .list()?
            .into_iter()
            .filter(|r| r.config.volumes.iter().any(|n| n == name))
            .map(|r| r.name)
            .collect())
    }

    fn shim_config(&self, rec: &ContainerRecord) -> ShimConfig {
        let (data, run) = self.container_dirs(&rec.id);
        let log = LogConfig::of_record(&rec.config);
        // Checked when the container was made; a record edited since falls
        // back to one file, never rotated.
        let rotation = log.rotation().unwrap_or(Rotation { max_size: None, max_file: 1 });
        let (log_path, rotation) = if let Some(path) = log.cri_path() {
            (path, rotation)
        } else if log.readable() {
            (data.join(format!("{}-json.log", rec.id)), rotation)
        } else {
            // Driver none: nothing kept, but an attached CLI reads the
            // output from a small rotating buffer in the run directory.
            (run.join(NONE_DRIVER_BUFFER), Rotation { max_size: Some(512 * 1024), max_file: 2 })
        };
        ShimConfig {
            id: rec.id.clone(),
            bundle: run.clone(),
            runtime: rec.config.runtime.clone().unwrap_or_else(|| self.runtime.clone()),
            runtime_root: Some(self.runroot.join("runtime")),
            state_dir: self.state_dir(&rec.id),
            log_path: Some(log_path),
            log_max_size: rotation.max_size,
            log_max_files: rotation.max_file,
            log_format: log.shim_format(),
            terminal: rec.config.tty,
            stdin: rec.config.stdin,
            restart: rec.config.restart.as_deref().and_then(|r| Restart::parse(r).ok()).unwrap_or(Restart::No),
            sync_fd: None,
            // A `--rm` container's remover deletes it from the runtime,
            // beside its other cleanup (see cleanup), instead of the shim
            // before it reports the exit that the remover waits for.
            no_delete: rec.config.auto_remove,
            exit_command: self.exit_command(rec),
            events_dir: Some(self.events_dir()),
            event_attrs: Engine::container_attributes(rec).into_iter().collect(),
        }
    }

    /// `berth rm -f ID` with this engine's paths, for a `--rm` container.
    pub(crate) fn exit_command(&self, rec: &ContainerRecord) -> Vec<String> {
        let Some(cli) = self.cli.as_ref().filter(|_| rec.config.auto_remove) else { return Vec::new() };
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
    pub fn start(&self, id: &str) -> Result<ContainerRecord, Error> {
        self.start_watched(id).map(|(rec, _)| rec)
    }

    /// [`Engine::start`], and the shim's [`ExitWatch`]: it reports the
    /// container's last exit, and until it is dropped the shim holds back
    /// its exit command (`rm` for `--rm`), so an attached client reads all
    /// the output first. A client that dies drops it with its fds.
    pub fn start_watched(&self, id: &str) -> Result<(ContainerRecord, ExitWatch), Error> {
        let store = self.containers()?;
        let id = store.get(id)?.id;
        // Two starts at once would each clear the other's shim files.
        let (_lock, rec) = self.lock_record(&id)?;
        let rec = self.refresh(&rec);
        if matches!(rec.status, Status::Dead | Status::Removing) {
            return Err(Error::Defunct(rec.id));
        }
        if matches!(rec.status, Status::Running | Status::Paused) {
            return Err(Error::AlreadyRunning(rec.name));
        }
        let cfg = self.shim_config(&rec);
        prime_moves_for(&cfg.runtime);
        // The last run's files go before the new shim starts: a reader in
        // between sees the record, never a stale shim's state as if it
        // were this run's.
        berth_shim::client::clear_last_run(&cfg.state_dir);
        self.delete_runtime_leftover(&rec.id);
        let (started, watch) = berth_shim::client::spawn_watched(&self.shim, &cfg)?;
        let rec = store.update(&rec.id, |r| {
            r.status = Status::Running;
            r.pid = Some(started.pid);
            r.shim_pid = Some(started.shim_pid);
            // The shim's time, the one its state.json keeps for `refresh`.
            r.started_at = Some(started.started_at.clone());
            r.exit_code = None;
            r.oom_killed = false;
        })?;
        // The shim wrote the start event (see berth_shim::events); the
        // volumes' mount events are docker's too.
        for v in &rec.config.volumes {
            self.named_event("volume", "mount", v, &[("container", rec.id.clone())]);
        }
        Ok((rec, watch))
    }

    /// The container's state now, from its shim's files: state.json (who
    /// runs: the init and the shim, each by pid and start time) and
    /// exit.json (how it ended). A shim that died (SIGKILL) is noticed
    /// here: its container is running while its init lives, and exited
    /// (with [`crate::liveness::LOST_EXIT_CODE`]) once it does not.
    pub fn refresh(&self, rec: &ContainerRecord) -> ContainerRecord {
        let mut r = rec.clone();
        if matches!(r.status, Status::Removing | Status::Dead) {
            return r;
        }
        let dir = self.state_dir(&rec.id);
        let Some(st) = berth_shim::client::shim_state(&dir) else {
            return self.refresh_without_state(r, &dir);
        };
        r.pid = Some(st.init.pid);
        r.shim_pid = Some(st.shim.pid);
        r.started_at = Some(st.started_at.clone());
        let shim_alive = st.shim.is_alive();
        // An exit counts for the init it names only (a restart's new init
        // is written before the last one's exit goes).
        let exit = berth_shim::client::exit_status(&dir).filter(|e| e.pid.is_none_or(|p| p == st.init.pid));
        match exit {
            Some(e) if e.last || !shim_alive => set_exited(&mut r, e),
            // Between two runs of a restart policy.
            Some(_) => r.status = Status::Running,
            None if shim_alive || st.init.is_alive() => {
                if r.status != Status::Paused {
                    r.status = Status::Running;
                }
            }
            None => set_exited(&mut r, self.lost_exit(rec, &dir, &st)),
        }
        r
    }

    /// A container whose shim wrote no state.json: never started, or
    /// started by a shim that predates it (its exit.json alone tells), or
    /// its shim's state directory is gone altogether (a reboot emptied the
    /// runroot): then it runs only while the init it names does.
    fn refresh_without_state(&self, mut r: ContainerRecord, dir: &Path) -> ContainerRecord {
        if !matches!(r.status, Status::Running | Status::Paused) {
            return r;
        }
        match berth_shim::client::exit_status(dir) {
            Some(e) if !r.shim_pid.is_some_and(alive) => set_exited(&mut r, e),
            Some(_) => {}
            // Every shim makes its directory first, before the container.
            None if !dir.exists() && !self.recorded_init_runs(&r) => self.lost_without_trace(&mut r),
            None => {}
        }
        r
    }

    /// The container's run directory (bundle, rootfs mount, hosts files).
    pub(crate) fn run_dir(&self, id: &str) -> PathBuf {
        self.container_dirs(id).1
    }

    /// A connection to the container's shim for stdin and terminal size.
    pub fn attach(&self, rec: &ContainerRecord) -> Result<berth_shim::client::Attach, Error> {
        Ok(berth_shim::client::Attach::connect(&self.shim_config(rec).state_dir)?)
    }

    /// The live file of the container's log (older ones are `PATH.1`,
    /// `PATH.2`, ... as docker's json-file names them). With driver none,
    /// the buffer an attached CLI reads; [`LogConfig::readable`] says
    /// whether `logs` may.
    pub fn log_path(&self, rec: &ContainerRecord) -> PathBuf {
        self.shim_config(rec).log_path.unwrap_or_default()
    }

    /// Waits for the container to end; its exit code.
    pub fn wait(&self, id: &str, mut on_tick: impl FnMut()) -> Result<i32, Error> {
        let code = self.wait_while(id, || {
            on_tick();
            true
        })?;
        Ok(code.unwrap_or(-1))
    }

    /// [`Engine::wait`] that gives up (None) once `keep_waiting` says no
    /// (asked every few milliseconds): a daemon's waiter whose client hung
    /// up stops.
    pub fn wait_while(&self, id: &str, mut keep_waiting: impl FnMut() -> bool) -> Result<Option<i32>, Error> {
        let store = self.containers()?;
        let rec = store.get(id)?;
        // The shim tells its clients each exit before it runs its exit
        // command: a waiter learns the code of a `--rm` container even when
        // the record is gone by the time it looks again.
        let mut waiter = self.attach(&rec).ok();
        if waiter.as_mut().is_some_and(|w| w.only_exits().is_err()) {
            waiter = None;
        }
        let mut heard = None;
        // Short at first: `start -a` of a short command is mostly this wait.
        let mut pause = Duration::from_millis(2);
        loop {
            if !keep_waiting() {
                return Ok(None);
            }
            let rec = match store.get(&rec.id) {
                Ok(r) => r,
                Err(crate::store::StoreError::NotFound(_)) if let Some(code) = heard => return Ok(Some(code)),
                Err(e) => return Err(e.into()),
            };
            let now = self.refresh(&rec);
            if now.status == Status::Exited {
                self.save_state(&now);
                keep_waiting();
                return Ok(Some(now.exit_code.unwrap_or(-1)));
            }
            match waiter.as_mut().map(|w| w.exit_within(pause)) {
                Some(Ok(Some(code))) => heard = Some(code),
                Some(Ok(None)) => {}
                // The shim has ended (or was killed): the files tell.
                Some(Err(_)) => waiter = None,
                None => std::thread::sleep(pause),
            }
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Stops a running container: no restart, SIGTERM, SIGKILL after
    /// `timeout`. Through the runtime and, should the runtime not know the
    /// container, to its init directly (by pid and start time): the
    /// container stops whatever became of its shim.
    pub fn stop(&self, id: &str, timeout: Duration) -> Result<(), Error> {
        let rec = self.refresh(&self.containers()?.get(id)?);
        if !matches!(rec.status, Status::Running | Status::Paused) {
            return Ok(());
        }
        let dir = self.state_dir(&rec.id);
        let _ = berth_shim::client::mark_stopped(&dir);
        if rec.status == Status::Paused {
            // A frozen process takes no signal: thaw it first, as docker does.
            self.resume(&rec.id)?;
        }
        let init = self.init_of(&rec);
        // docker's order: kill (each signal), die (the shim's), stop.
        self.container_event(&rec, "kill", &[("signal", "15".into())]);
        self.signal(&rec.id, init, Signal::SIGTERM);
        if !self.wait_stopped(&rec, init, timeout) {
            self.container_event(&rec, "kill", &[("signal", "9".into())]);
            self.signal(&rec.id, init, Signal::SIGKILL);
            if !self.wait_stopped(&rec, init, Duration::from_secs(10)) {
                return Err(Error::DidNotStop { id: rec.id.clone(), pid: init.map_or(0, |p| p.pid) });
            }
        }
        // The init is gone; its shim (if alive) records the exit once the
        // output is drained.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut now = self.refresh(&rec);
        while now.status != Status::Exited && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            now = self.refresh(&rec);
        }
        self.save_state(&now);
        self.container_event(&rec, "stop", &[]);
        Ok(())
    }

    /// Takes container `id`'s lock (see [`crate::store::ContainerLock`])
    /// and reads its record under it (see [`RecordLock`]).
    pub(crate) fn lock_record(&self, id: &str) -> Result<(RecordLock, ContainerRecord), Error> {
        let lock = crate::store::ContainerLock::acquire(&self.runroot.join("locks"), id)?;
        let held = RecordLock { _lock: lock, engine: self.clone(), id: id.to_owned() };
        match self.containers()?.get(id) {
            Ok(rec) if rec.id == id => Ok((held, rec)),
            Ok(_) | Err(crate::store::StoreError::NotFound(_)) => {
                Err(crate::store::StoreError::NotFound(id.to_owned()).into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// [`Engine::lock_record`] without waiting: None while another berth
    /// (or this process, through another call) holds the lock, or when the
    /// record is gone.
    pub(crate) fn try_lock_record(&self, id: &str) -> Option<(RecordLock, ContainerRecord)> {
        let lock = crate::store::ContainerLock::try_acquire(&self.runroot.join("locks"), id).ok()??;
        let held = RecordLock { _lock: lock, engine: self.clone(), id: id.to_owned() };
        let rec = self.containers().ok()?.get(id).ok().filter(|r| r.id == id)?;
        Some((held, rec))
    }

    /// Removes a container (stopping it first with `force`): its network,
    /// mounts, directories and record.
    pub fn remove(&self, id: &str, force: bool) -> Result<(), Error> {
        self.remove_with(id, force, false)
    }

    /// `rm [-f] [-v]`: with `volumes`, the container's anonymous volumes go
    /// too (named ones always stay, as docker keeps them).
    pub fn remove_with(&self, id: &str, force: bool, volumes: bool) -> Result<(), Error> {
        let store = self.containers()?;
        let id = store.get(id)?.id;
        // One remover at a time (a `run --rm` CLI and its shim's exit
        // command may both try): the second finds no record.
        let locks = self.runroot.join("locks");
        let (_lock, rec) = self.lock_record(&id)?;
        let rec = self.refresh(&rec);
        if matches!(rec.status, Status::Running | Status::Paused) {
            if !force {
                return Err(Error::Running(rec.name.clone()));
            }
            self.stop(&rec.id, Duration::ZERO)?;
        }
        // Marked first: a remover killed midway leaves a container that
        // cannot start and that the next `rm` finishes (every step of
        // cleanup is idempotent).
        // Started first, to run beside the mark's commit as well: deleting
        // an exited container from the runtime is what its shim would have
        // done anyway, so a remover killed now leaves nothing amiss.
        let deleting = self.start_runtime_delete(&rec.id);
        let rec = store.update(&rec.id, |r| r.status = Status::Removing)?;
        kill_point("rm:marked");
        self.cleanup_with(&rec, deleting)?;
        kill_point("rm:cleaned");
        // The lock files go before the record, not after: a remover killed
        // in between leaves a record (removing) that the next `rm`
        // finishes, never a lock file that no record leads to. Unlinked, the
        // lock still holds for whoever waits on it (they then find no
        // record); a remover that comes now makes a new one and finds
        // nothing left to clean but the record.
        let _ = std::fs::remove_file(locks.join(format!("{}.lock", rec.id)));
        let _ = std::fs::remove_file(self.creating_lock(&rec.id));
        kill_point("rm:unlocked");
        store.remove(&rec.id)?;
        kill_point("rm:removed");
        self.container_event(&rec, "destroy", &[]);
        if volumes {
            let vols = self.volumes();
            for name in &rec.config.volumes {
                if vols.get(name).is_ok_and(|v| v.anonymous) {
                    self.remove_volume(name, &self.volume_users(name)?)?;
                }
            }
        }
        Ok(())
    }

    fn cleanup(&self, rec: &ContainerRecord) -> Result<(), Error> {
        self.cleanup_with(rec, self.start_runtime_delete(&rec.id))
    }

    /// Deletes the container from the runtime, in the background: a `--rm`
    /// container's shim leaves that to the remover (see shim_config), as
    /// does a killed shim or a container never started. It needs nothing
    /// the rest of the cleanup removes (runc, crun and berth-runtime keep
    /// their state, config.json included, in ROOT/ID), so it runs beside
    /// it, and the cleanup waits for it at the end.
    fn start_runtime_delete(&self, id: &str) -> Option<berth_oci_cli::Pending> {
        if !self.runroot.join("runtime").join(id).exists() {
            return None;
        }
        self.oci_runtime_for(id).spawn_delete(id, true).ok()
    }

    fn cleanup_with(&self, rec: &ContainerRecord, runtime_delete: Option<berth_oci_cli::Pending>) -> Result<(), Error> {
        let (data, run) = self.container_dirs(&rec.id);
        self.detach_pod_network(&rec.id)?;
        let netns = run.join("netns");
        let _ = NetNs::remove(&netns);
        let mode = rec.config.network.as_str();
        if mode != "none" && mode != "host" {
            let net = network_name(mode);
            if net != network::DEFAULT_NETWORK {
                self.withdraw(net, rec);
            }
            // Before anything else goes: a failed DEL keeps the record
            // whole (and the attachment's), for the next `rm` to retry.
            self.networks().detach(net, &rec.id, None, "eth0").map_err(|source| Error::Detach {
                id: rec.id.clone(),
                network: net.to_owned(),
                source: Box::new(source),
            })?;
            if rec.config.address.is_some() {
                self.named_event("network", "disconnect", net, &[("container", rec.id.clone())]);
            }
        }
        self.disconnect_all(rec)?;
        let rootfs = run.join("rootfs");
        let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
        // A pod's pinned user namespace (see crate::userns): its pin file
        // is a mount point, which remove_dir_all below cannot remove.
        crate::userns::unpin(&run)?;
        kill_point("rm:unmounted");
        let shim_state = self.shim_config(rec).state_dir;
        for d in [&run, &data, &shim_state] {
            remove_tree(d).map_err(io("remove", d))?;
        }
        self.store()?.meta.write(|tx| tx.remove_refs(&holder(&rec.id)))?;
        if let Some(deleting) = runtime_delete {
            let _ = deleting.wait();
        }
        Ok(())
    }
}

/// Removes directory `d` and everything in it; gone already is fine. A
/// shim still finishing (its exit record goes in with a temp file and a
/// rename, under a loaded machine after `stop` stopped waiting) may add a
/// file while the tree goes: ENOTEMPTY is tried again, for two seconds.
fn remove_tree(d: &Path) -> std::io::Result<()> {
    let mut tries = 0;
    loop {
        match std::fs::remove_dir_all(d) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// A container's lock, held while its record is read and worked on.
/// Released, it takes its lock file along when the record is gone: the
/// remover that removed the record unlinked the file first, so a file
/// there now was made again by a later holder (who queued on the old one
/// or came after the unlink), and only that holder can remove it. The id
/// is never used again, so nobody needs the file.
pub(crate) struct RecordLock {
    _lock: crate::store::ContainerLock,
    engine: Engine,
    id: String,
}

impl Drop for RecordLock {
    fn drop(&mut self) {
        let gone = match self.engine.containers().map(|s| s.get(&self.id)) {
            Ok(Ok(rec)) => rec.id != self.id,
            Ok(Err(crate::store::StoreError::NotFound(_))) => true,
            _ => false,
        };
        if gone {
            let _ = std::fs::remove_file(self.engine.runroot.join("locks").join(format!("{}.lock", self.id)));
        }
    }
}

/// Driver none's output buffer, in the container's run directory.
const NONE_DRIVER_BUFFER: &str = "output-json.log";

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

/// `--network` to a network's name: "bridge" (or nothing) is docker's
/// default network.
fn network_name(mode: &str) -> &str {
    if mode.is_empty() || mode == "bridge" { network::DEFAULT_NETWORK } else { mode }
}

/// A test hook of debug builds (release builds have none):
/// `BERTH_KILL_AT=STEP` makes the process SIGKILL itself at STEP (the
/// `kill_point` calls name them: create:recorded, create:held,
/// create:mounted, create:prepared, create:done, rm:marked, rm:unmounted,
/// rm:cleaned, rm:unlocked, rm:removed), so the crash tests can stop
/// `run` and `rm` at each step that leaves a different state, not only
/// where a random delay lands.
fn kill_point(step: &str) {
    if cfg!(debug_assertions) && std::env::var_os("BERTH_KILL_AT").is_some_and(|s| s == step) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// Takes a new container's creating lock `p` (see
/// [`Engine::being_created`]) for as long as this process lives: a `run`
/// keeps it through `start`, and a killed one drops it with its life. The
/// id is new, so nobody else waits for this lock; prune only tries it.
fn claim(p: &Path) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    }
    // A prune's sweep unlinks a lock file it could lock and whose record
    // does not exist (yet): taken between our create and our flock, the
    // lock would then be on an unlinked file, invisible to being_created.
    // The sweep unlinks only while it holds the lock, so a lock we get on a
    // file that is still the one at `p` is one no sweep can take away.
    loop {
        let f = std::fs::File::create(p).map_err(io("create", p))?;
        let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io("lock", p)(std::io::Error::from(e)))?;
        let held = lock.metadata().map_err(io("stat", p))?;
        let linked = std::fs::metadata(p).ok();
        if linked.is_some_and(|m| m.dev() == held.dev() && m.ino() == held.ino()) {
            CLAIMED.lock().unwrap_or_else(|e| e.into_inner()).push((p.to_owned(), lock));
            return Ok(());
        }
    }
}

/// Warms the kernel's cgroup-migration lock for runtimes that move the
/// container into its cgroup themselves (runc, crun: see
/// berth_cgroups::prime_moves). berth-runtime's processes join their
/// cgroup without that lock, so for it this would be a fork for nothing.
fn prime_moves_for(runtime: &Path) {
    if !crate::rootview::is_berth_runtime(runtime) {
        berth_cgroups::prime_moves();
    }
}

/// Set by a daemon (see [`creates_end_with_their_call`]).
static DAEMON_CREATES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// For a daemon: each create lets go of its container's creating lock
/// when it returns, since its start is a request of its own (as dockerd's
/// and the kubelet's are), not the rest of this process's life; else
/// `container prune` would take every container the daemon made for one
/// still being made, and each create would keep a descriptor open.
pub fn creates_end_with_their_call() {
    DAEMON_CREATES.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The creating locks this process holds, by path.
static CLAIMED: std::sync::Mutex<Vec<(PathBuf, nix::fcntl::Flock<std::fs::File>)>> = std::sync::Mutex::new(Vec::new());

impl Engine {
    /// Lets go of container `id`'s creating lock before this process ends:
    /// for a daemon, whose creates end with their request (a client's
    /// start is a request of its own, as with dockerd), not with the
    /// process; else `container prune` would take its containers for
    /// ones still being made, and every create would keep a descriptor.
    pub fn release_creating_lock(&self, id: &str) {
        let p = self.creating_lock(id);
        // The file first: a lock file nobody holds means the same, and
        // one that is gone cannot be mistaken for a newer creator's.
        let _ = std::fs::remove_file(&p);
        CLAIMED.lock().unwrap_or_else(|e| e.into_inner()).retain(|(held, _)| *held != p);
    }
}

/// The name a container holds its image under in the image metadata.
fn holder(id: &str) -> String {
    format!("container/{id}")
}

/// The parent of `pid` (for a container's init, its shim: the subreaper).
pub(crate) fn parent_of(pid: i32) -> Option<i32> {
    berth_proc::stat(pid).map(|s| s.ppid)
}

/// Whether some process has this pid (a zombie has ended: not alive).
/// Only for pids whose start time is not known: see
/// [`berth_proc::ProcessId`].
pub(crate) fn alive(pid: i32) -> bool {
    berth_proc::stat(pid).is_some_and(|s| s.running())
}

/// Takes what the shim recorded into the record.
fn set_exited(r: &mut ContainerRecord, e: berth_shim::client::Exit) {
    r.status = Status::Exited;
    r.exit_code = Some(e.code);
    r.finished_at = Some(e.exited_at);
    r.restart_count = e.restart_count;
    r.oom_killed = e.oom_killed;
}

/// An engine over `dir` for unit tests (its runtime and shim never run).
#[cfg(test)]
pub(crate) fn test_engine(dir: &Path) -> Engine {
    Engine {
        root: dir.join("root"),
        runroot: dir.join("run"),
        runtime: PathBuf::from("/bin/false"),
        shim: PathBuf::from("/bin/false"),
        cli: None,
        cgroup_parent: "/berth-test".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(dir: &Path) -> Engine {
        test_engine(dir)
    }

    /// A remover (or starter) that read the record, then queued on the
    /// lock while another removed the container, takes the lock of a
    /// record that is gone: it must not leave the lock file it made again
    /// (the races found such files; the window is too short to hit on
    /// purpose from outside).
    #[test]
    fn the_lock_of_a_removed_container_leaves_no_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        let id = "a".repeat(64);
        let lock_file = e.runroot.join("locks").join(format!("{id}.lock"));
        e.containers().unwrap().insert(&ContainerRecord::new(&id, "x", "img", "", e.run_dir(&id))).unwrap();
        let (held, rec) = e.lock_record(&id).unwrap();
        assert_eq!(rec.id, id);
        assert!(lock_file.exists(), "held while the record is there");
        e.containers().unwrap().remove(&id).unwrap();
        drop(held);
        assert!(!lock_file.exists(), "released after its record went, the lock takes its file along");

        let err = e.lock_record(&id).err().expect("the record is gone");
        assert!(matches!(err, Error::Store(crate::store::StoreError::NotFound(_))), "{err}");
        assert!(!lock_file.exists(), "the lock file of a removed container is left");
    }
}
