//! Images, for every front end: pull (with typed progress events), push,
//! list rows, remove, tag, save, load, import, prune, login/logout and
//! inspect. The CLI and berthd parse their flags or requests and present
//! what these return; the work, the store and the registry are here.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_image::progress::Progress;
use berth_image::pull::PullOptions;
use berth_image::registry::{AuthStore, Registry};
use berth_image::store::Store;
use berth_image::store::meta::ImageRecord;
use berth_image::unpack::UnpackOptions;
use oci_spec::image::{Config, HistoryBuilder, ImageConfiguration, ImageConfigurationBuilder, RootFsBuilder};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use berth_image::images::Removed;
pub use berth_image::registry::{Credentials, RegistryConfig};
pub use berth_image::{Digest, Platform, Reference};

use crate::Error;
use crate::engine::{CreateOptions, Engine};
use crate::spec::RunFlags;
use crate::store::ContainerRecord;

/// `[images]` of the configuration: how images are pulled and unpacked.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageSettings {
    /// Bound on one layer's decompressed size.
    pub max_layer_size: u64,
    /// Layers downloaded and unpacked at once.
    pub concurrency: usize,
    /// syncfs each unpacked layer before it becomes visible.
    pub durable_unpack: bool,
}

impl Default for ImageSettings {
    fn default() -> Self {
        ImageSettings {
            max_layer_size: berth_image::unpack::DEFAULT_MAX_LAYER_SIZE,
            concurrency: 4,
            durable_unpack: true,
        }
    }
}

/// What happens during a pull or a push, in order, for a front end to
/// show (docker's lines, bars, or API progress messages).
#[derive(Debug, Clone, PartialEq)]
pub enum ImageEvent {
    /// `run` found no local image and pulls it ("Unable to find image
    /// 'X' locally").
    Missing { image: String },
    /// A pull starts: `what` is the tag or digest, `repository` the
    /// familiar name ("latest: Pulling from library/busybox").
    Pulling { what: String, repository: String },
    /// A push starts (docker: "The push refers to repository \[NAME\]").
    Pushing { repository: String },
    /// One layer's progress; `id` is its short digest.
    Layer { id: String, progress: LayerProgress },
    /// A pull ended.
    Pulled(Pulled),
}

/// One step of a layer's download, unpack or upload.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerProgress {
    /// `total` bytes are expected (0 if unknown).
    Start { total: u64 },
    /// `bytes` more are done.
    Advance { bytes: u64 },
    /// A status change ("Downloading", "Extracting", "Already exists" ...).
    Status(String),
    /// Finished, with a last status ("Pull complete", "Pushed" ...).
    Finish(String),
}

/// Where a front end gets the events of a pull or push.
pub type OnEvent = Arc<dyn Fn(ImageEvent) + Send + Sync>;

/// An event sink that drops everything (quiet pulls, the daemon).
pub fn no_events() -> OnEvent {
    Arc::new(|_| {})
}

/// berth-image's progress callbacks as [`ImageEvent::Layer`] events.
struct Events(OnEvent);

impl Events {
    fn layer(&self, id: &str, progress: LayerProgress) {
        (self.0)(ImageEvent::Layer { id: id.to_owned(), progress });
    }
}

impl Progress for Events {
    fn start(&self, id: &str, total: u64) {
        self.layer(id, LayerProgress::Start { total });
    }
    fn advance(&self, id: &str, n: u64) {
        self.layer(id, LayerProgress::Advance { bytes: n });
    }
    fn status(&self, id: &str, status: &str) {
        self.layer(id, LayerProgress::Status(status.to_owned()));
    }
    fn finish(&self, id: &str, status: &str) {
        self.layer(id, LayerProgress::Finish(status.to_owned()));
    }
}

/// The result of a pull.
#[derive(Debug, Clone, PartialEq)]
pub struct Pulled {
    pub reference: Reference,
    /// The index's digest if there was one, else the manifest's.
    pub digest: Digest,
    /// The image ID (its config's digest).
    pub id: Digest,
    /// The same image was already here under this name.
    pub up_to_date: bool,
}

/// What `pull` asks for beyond the reference.
#[derive(Debug, Clone, Default)]
pub struct PullRequest {
    /// `os/arch[/variant]`; None for this machine's.
    pub platform: Option<String>,
    /// Overrides [`ImageSettings::max_layer_size`].
    pub max_layer_size: Option<u64>,
}

/// `run --pull`: when to pull the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    Always,
    #[default]
    Missing,
    Never,
}

impl std::str::FromStr for PullPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "always" => Ok(PullPolicy::Always),
            "missing" => Ok(PullPolicy::Missing),
            "never" => Ok(PullPolicy::Never),
            other => Err(Error::PullPolicy(other.to_owned())),
        }
    }
}

/// One row of `images`: an image under one repository and tag.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRow {
    /// Familiar name ("busybox", "localhost:5000/x"), or `<none>`.
    pub repository: String,
    /// The tag, or `<none>`.
    pub tag: String,
    /// The repository's manifest digest, or `<none>`.
    pub digest: String,
    pub id: Digest,
    /// RFC 3339, from the image config.
    pub created: Option<String>,
    pub size: u64,
}

/// An image `load` or `import` added, with the names it got.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub id: Digest,
    pub names: Vec<String>,
}

/// What `import` makes of a root filesystem tarball.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Dockerfile instructions docker allows on import (`--change`).
    pub changes: Vec<String>,
    /// The history comment; default "Imported from SOURCE".
    pub message: Option<String>,
    /// Where the tarball came from ("-" for stdin), for the comment.
    pub source: String,
    /// The new image's name.
    pub reference: Option<String>,
}

/// The engine's image operations under one configuration.
pub struct Images {
    engine: Engine,
    registry: RegistryConfig,
    settings: ImageSettings,
}

impl Engine {
    /// The image operations, with the registry configuration and image
    /// settings of the front end's configuration.
    pub fn images(&self, registry: RegistryConfig, settings: ImageSettings) -> Images {
        Images { engine: self.clone(), registry, settings }
    }
}

impl Images {
    /// `run`/`create` with docker's `--pull`: the container made from
    /// `image`, pulled first when the policy says so (always, or when it
    /// is missing: [`ImageEvent::Missing`] then the pull's events).
    /// With [`PullPolicy::Never`] a missing image is
    /// [`Error::NoSuchImage`].
    pub fn create_container(
        &self,
        image: &str,
        policy: PullPolicy,
        pull: &PullRequest,
        flags: &RunFlags,
        opts: &CreateOptions,
        on_event: OnEvent,
    ) -> Result<ContainerRecord, Error> {
        if policy == PullPolicy::Always {
            self.pull(image, pull, on_event.clone())?;
        }
        match self.engine.create(image, flags, opts) {
            Err(Error::NoSuchImage(_)) if policy == PullPolicy::Missing => {
                on_event(ImageEvent::Missing { image: image.to_owned() });
                self.pull(image, pull, on_event)?;
                self.engine.create(image, flags, opts)
            }
            other => other,
        }
    }
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> Result<T, Error> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|source| Error::Io {
        what: "start the async runtime",
        path: PathBuf::new(),
        source,
    })?;
    Ok(rt.block_on(f))
}

/// docker's familiar form of a stored name: `busybox:latest`,
/// `localhost:5000/x@sha256:...`; the name itself if it does not parse.
pub fn familiar(name: &str) -> String {
    match Reference::parse(name) {
        Ok(r) => familiar_ref(&r),
        Err(_) => name.to_owned(),
    }
}

fn familiar_ref(r: &Reference) -> String {
    match (r.tag(), r.digest()) {
        (Some(t), _) => format!("{}:{t}", r.familiar_name()),
        (None, Some(d)) => format!("{}@{d}", r.familiar_name()),
        _ => r.familiar_name(),
    }
}

/// The registry a `login`/`logout` server argument names, as docker
/// normalises it (default docker.io).
pub fn registry_name(server: Option<&str>) -> String {
    let s = server.unwrap_or("docker.io");
    let s = s.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/');
    match s {
        "index.docker.io" | "index.docker.io/v1" | "registry-1.docker.io" => "docker.io".into(),
        s => s.to_string(),
    }
}

impl Images {
    fn store(&self) -> Result<Store, Error> {
        self.engine.store()
    }

    fn unpack_options(&self, max_layer_size: Option<u64>) -> UnpackOptions {
        UnpackOptions { max_size: max_layer_size.unwrap_or(self.settings.max_layer_size) }
    }

    /// Pulls `reference`; events go to `on_event`, the last one
    /// [`ImageEvent::Pulled`] with what is also returned.
    pub fn pull(&self, reference: &str, req: &PullRequest, on_event: OnEvent) -> Result<Pulled, Error> {
        let store = self.store()?;
        let r = Reference::parse(reference)?;
        let opts = PullOptions {
            platform: match &req.platform {
                Some(p) => p.parse::<Platform>()?,
                None => Platform::host(),
            },
            unpack: self.unpack_options(req.max_layer_size),
            concurrency: self.settings.concurrency,
            durable: self.settings.durable_unpack,
            progress: Arc::new(Events(on_event.clone())),
        };
        let what = r.tag().map(String::from).unwrap_or_else(|| r.manifest_reference());
        on_event(ImageEvent::Pulling { what, repository: r.familiar_name() });
        let before = berth_image::images::find(&store.meta.read_images()?, &r.to_string()).ok();
        let rec = block_on(berth_image::pull::pull(&store, &self.registry, &r, &opts))??;
        let pulled = Pulled {
            digest: rec.index.clone().unwrap_or_else(|| rec.manifest.clone()),
            up_to_date: before.as_ref() == Some(&rec.id),
            id: rec.id,
            reference: r,
        };
        on_event(ImageEvent::Pulled(pulled.clone()));
        // docker's familiar names: busybox:latest, not docker.io/library/...
        let name = familiar_ref(&pulled.reference);
        self.engine.image_event("pull", &name, &name);
        Ok(pulled)
    }

    /// Pushes the local image `name` to `dest` (default: `name`); the
    /// manifest's digest and size.
    pub fn push(&self, name: &str, dest: Option<&str>, on_event: OnEvent) -> Result<(Digest, u64), Error> {
        let store = self.store()?;
        let dest = Reference::parse(dest.unwrap_or(name))?;
        on_event(ImageEvent::Pushing { repository: dest.name() });
        let progress = Arc::new(Events(on_event));
        let d = block_on(berth_image::push::push(&store, &self.registry, name, &dest, progress))??;
        let size = store.content.size(&d).unwrap_or(0);
        let pushed = familiar_ref(&dest);
        self.engine.image_event("push", &pushed, &pushed);
        Ok((d, size))
    }

    /// The images as `images` lists them, newest first; `repository`
    /// (`NAME` or `NAME:TAG`) keeps only its rows.
    pub fn list(&self, repository: Option<&str>) -> Result<Vec<ImageRow>, Error> {
        let s = self.store()?.meta.read_all()?;
        let filter = repository.map(Reference::parse).transpose()?;
        let explicit_tag = repository.is_some_and(|r| r.rsplit('/').next().is_some_and(|l| l.contains(':')));
        let mut rows = Vec::new();
        for img in &s.images {
            for (row, full) in rows_of(img, &s.tags_of(&img.id), &s.digests_of(&img.id)) {
                if let Some(f) = &filter
                    && (full != f.name() || (explicit_tag && Some(row.tag.as_str()) != f.tag()))
                {
                    continue;
                }
                rows.push(row);
            }
        }
        rows.sort_by(|x, y| y.created.cmp(&x.created).then(x.repository.cmp(&y.repository)).then(x.tag.cmp(&y.tag)));
        Ok(rows)
    }

    /// docker's `image inspect` document of one image.
    pub fn inspect(&self, name: &str) -> Result<serde_json::Value, Error> {
        match berth_image::archive::inspect(&self.store()?, name) {
            Err(berth_image::Error::NotFound(_)) => Err(Error::NoSuchImage(name.to_owned())),
            other => Ok(other?),
        }
    }

    /// `tag SOURCE TARGET`.
    pub fn tag(&self, source: &str, target: &str) -> Result<(), Error> {
        let target = Reference::parse(target)?;
        berth_image::images::tag(&self.store()?, source, &target)?;
        let id = self.engine.image(source).map(|i| i.record.id.to_string()).unwrap_or_else(|_| source.to_owned());
        self.engine.image_event("tag", &id, &familiar_ref(&target));
        Ok(())
    }

    /// `save`: a docker-archive (and OCI layout) of `names` to `out`.
    pub fn save(&self, names: &[String], out: impl Write) -> Result<(), Error> {
        berth_image::archive::save(&self.store()?, names, out)?;
        for n in names {
            self.engine.image_event("save", n, n);
        }
        Ok(())
    }

    /// `save -o FILE`: written beside `path` and renamed over it when
    /// complete, so a killed save leaves no truncated archive there.
    pub fn save_to(&self, names: &[String], path: &Path) -> Result<(), Error> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let tmp = tempfile::Builder::new().prefix(".berth-save-").tempfile_in(dir).map_err(|source| Error::Io {
            what: "create a temporary file in",
            path: dir.to_owned(),
            source,
        })?;
        let mut w = std::io::BufWriter::new(tmp);
        self.save(names, &mut w)?;
        let tmp =
            w.into_inner().map_err(|e| Error::Io { what: "write", path: path.to_owned(), source: e.into_error() })?;
        let io = |what| move |source| Error::Io { what, path: path.to_owned(), source };
        tmp.as_file().sync_all().map_err(io("fsync the archive for"))?;
        tmp.persist(path).map_err(|e| e.error).map_err(io("rename the archive to"))?;
        Ok(())
    }

    /// `load -i PATH`: a tar archive (any compression) or an OCI layout
    /// directory.
    pub fn load(&self, input: &Path) -> Result<Vec<Loaded>, Error> {
        let loaded = berth_image::archive::load(&self.store()?, input, &self.unpack_options(None))?;
        let loaded: Vec<Loaded> = loaded.into_iter().map(|(rec, names)| Loaded { id: rec.id, names }).collect();
        for l in &loaded {
            let name = l.names.first().map(|n| n.to_string()).unwrap_or_else(|| l.id.to_string());
            self.engine.image_event("load", &name, &name);
        }
        Ok(loaded)
    }

    /// `load` from a stream (stdin): spooled to a temporary file under the
    /// store, which garbage collection removes if this is killed.
    pub fn load_stream(&self, mut input: impl Read) -> Result<Vec<Loaded>, Error> {
        let store = self.store()?;
        let guard = store.adding()?;
        let dir = store.temp_dir("load-", &guard)?;
        let path = dir.path().join("input.tar");
        let io = |what, source| Error::Io { what, path: path.clone(), source };
        let mut f = std::fs::File::create(&path).map_err(|e| io("create", e))?;
        std::io::copy(&mut input, &mut f).map_err(|e| io("write the archive to", e))?;
        drop(f);
        self.load(&path)
    }

    /// `import`: a root filesystem tarball (plain, gzip — also
    /// multi-member — or zstd) as a one-layer image, as `docker import`
    /// makes one. Written as a docker-archive in a temporary directory and
    /// loaded through berth-image's `load`, so it goes through the same
    /// digest checks and safe unpack as any other image.
    pub fn import(&self, input: impl Read, opts: &ImportOptions) -> Result<Digest, Error> {
        let mut config = Config::default();
        for c in &opts.changes {
            apply_change(&mut config, c)?;
        }
        let tags = match &opts.reference {
            Some(r) => vec![Reference::parse(r)?.to_string()],
            None => Vec::new(),
        };
        let store = self.store()?;
        // Held until the image is loaded: GC leaves the directory alone
        // while this runs, and removes it if this is killed.
        let guard = store.adding()?;
        let dir = store.temp_dir("import-", &guard)?;
        let diff_id = write_layer(input, &dir.path().join("layer.tar"))?;
        let comment = opts.message.clone().unwrap_or_else(|| format!("Imported from {}", opts.source));
        let image = import_config(config, diff_id, comment)?;
        let manifest = [ArchiveEntry { config: "config.json", repo_tags: tags, layers: vec!["layer.tar"] }];
        write_json(&dir.path().join("config.json"), &image)?;
        write_json(&dir.path().join("manifest.json"), &manifest)?;
        let loaded = berth_image::archive::load(&store, dir.path(), &self.unpack_options(None))?;
        let id = loaded.into_iter().next().map(|(rec, _)| rec.id).ok_or(Error::EmptyImport)?;
        self.engine.image_event("import", &id.to_string(), opts.reference.as_deref().unwrap_or_default());
        Ok(id)
    }

    /// `login`: checks the credentials against the registry, then stores
    /// them; the registry's name.
    pub fn login(&self, server: Option<&str>, creds: Credentials) -> Result<String, Error> {
        let server = self.check_login(server, &creds)?;
        self.registry.auth_store().set(&server, &creds)?;
        Ok(server)
    }

    /// Checks credentials against the registry without storing them (the
    /// Docker API's `/auth`: the client keeps them); the registry's name.
    pub fn check_login(&self, server: Option<&str>, creds: &Credentials) -> Result<String, Error> {
        let server = registry_name(server);
        // Checked before they are stored, as docker does: a throwaway auth
        // store that holds only them.
        let dir = tempfile::tempdir().map_err(|source| Error::Io {
            what: "create a temporary dir in",
            path: std::env::temp_dir(),
            source,
        })?;
        let check = AuthStore { own: dir.path().join("auth.json"), fallbacks: vec![] };
        check.set(&server, creds)?;
        let cfg = RegistryConfig { auth: Some(check), ..self.registry.clone() };
        block_on(async {
            let reg = Registry::connect(&server, &cfg).await?;
            reg.check_login().await
        })?
        .map_err(|source| Error::Login { server: server.clone(), source })?;
        Ok(server)
    }

    /// `logout`: the registry's name, and whether it had credentials.
    pub fn logout(&self, server: Option<&str>) -> Result<(String, bool), Error> {
        let server = registry_name(server);
        let had = self.registry.auth_store().remove(&server)?;
        Ok((server, had))
    }
}

/// One image with everything a front end shows of it (the CRI's `Image`):
/// its record, its config, and every name it has.
#[derive(Debug, Clone)]
pub struct ImageDetail {
    pub record: ImageRecord,
    pub config: ImageConfiguration,
    /// Full references (`docker.io/library/busybox:latest`).
    pub tags: Vec<String>,
    /// `NAME@sha256:...`: the manifest digests it was pulled by.
    pub digests: Vec<String>,
}

impl ImageDetail {
    /// The config's `User` ("" when unset).
    pub fn user(&self) -> &str {
        self.config.config().as_ref().and_then(|c| c.user().as_deref()).unwrap_or("")
    }

    /// The top layer's chain ID (none for an image without layers).
    pub fn chain_id(&self) -> Option<&Digest> {
        self.record.layers.last().map(|l| &l.chain_id)
    }
}

/// Disk use of a directory tree, as `du` counts it: allocated bytes, and
/// inodes (a hard-linked file once).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsUsage {
    pub path: PathBuf,
    pub used_bytes: u64,
    pub inodes: u64,
}

/// Where images and container layers are, and what they use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUsage {
    /// The store root: content and unpacked layers (snapshots).
    pub images: FsUsage,
    /// The containers' writable layers (`ROOT/containers`).
    pub containers: FsUsage,
}

impl Images {
    /// [`Images::pull`] with credentials given for this pull only (the
    /// CRI's AuthConfig), used for `servers` (the reference's registry
    /// when empty) before any stored ones. They stay in memory (see
    /// [`RegistryConfig::given`]): nothing of them reaches the disk.
    pub fn pull_with_credentials(
        &self,
        reference: &str,
        req: &PullRequest,
        creds: &Credentials,
        servers: &[String],
        on_event: OnEvent,
    ) -> Result<Pulled, Error> {
        let r = Reference::parse(reference)?;
        self.with_credentials(creds, servers, r.registry()).pull(reference, req, on_event)
    }

    /// These operations with `creds` given for `servers` (none: for
    /// `default`), beside (and before) the stored ones: the Docker API's
    /// X-Registry-Auth.
    pub fn with_credentials(&self, creds: &Credentials, servers: &[String], default: &str) -> Images {
        let default = [default.to_owned()];
        let servers = if servers.is_empty() { &default[..] } else { servers };
        let mut registry = self.registry.clone();
        for s in servers {
            registry.given.insert(registry_name(Some(s)), creds.clone());
        }
        Images { engine: self.engine.clone(), registry, settings: self.settings.clone() }
    }

    /// Every image with its names, newest first.
    pub fn details(&self) -> Result<Vec<ImageDetail>, Error> {
        let store = self.store()?;
        let s = store.meta.read_all()?;
        let mut out = s.images.iter().map(|img| detail_of(&store, &s, img)).collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| b.record.created.cmp(&a.record.created).then(a.record.id.cmp(&b.record.id)));
        Ok(out)
    }

    /// The image `key` (reference, `NAME@DIGEST`, ID or ID prefix) with
    /// its names; None when there is no such image.
    pub fn detail(&self, key: &str) -> Result<Option<ImageDetail>, Error> {
        let store = self.store()?;
        let s = store.meta.read_all()?;
        let Some(id) = find_image(&s, key)? else { return Ok(None) };
        s.image(&id).map(|img| detail_of(&store, &s, img)).transpose()
    }

    /// Removes the image `key` names with all its names, as the CRI's
    /// RemoveImage (and containerd) does; None when there is no such image
    /// (not an error for the CRI). An image a container uses, running or
    /// stopped, is refused with rmi's conflict error.
    pub fn remove_with_all_names(&self, key: &str) -> Result<Option<Vec<Removed>>, Error> {
        let store = self.store()?;
        let s = store.meta.read_all()?;
        let Some(id) = find_image(&s, key)? else { return Ok(None) };
        // Unused: forced, so that several repositories naming it are no
        // reason to keep it. Used: not forced, so rmi refuses (and names
        // the container). A container that takes its hold between this
        // check and the removal keeps its layers (as after `rmi -f`).
        let used = s
            .refs
            .iter()
            .filter(|(_, rs)| rs.contains(&berth_image::store::meta::Resource::Image(id.clone())))
            .any(|(h, _)| self.engine.image_user(h).is_some());
        match self.engine.remove_image(&id.to_string(), !used) {
            Ok(removed) => Ok(Some(removed)),
            Err(Error::Image(berth_image::Error::NotFound(_))) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// What the store and the containers' layers use on disk, as the
    /// CRI's ImageFsInfo reports it.
    pub fn store_usage(&self) -> Result<StoreUsage, Error> {
        let root = &self.engine.root;
        let mut seen = std::collections::HashSet::new();
        let mut images = FsUsage { path: root.clone(), ..FsUsage::default() };
        for sub in ["content", "snapshots"] {
            du(&root.join(sub), &mut images, &mut seen);
        }
        let mut containers = FsUsage { path: root.join("containers"), ..FsUsage::default() };
        du(&root.join("containers"), &mut containers, &mut seen);
        Ok(StoreUsage { images, containers })
    }
}

/// The image `key` names in `s`; None when there is none.
fn find_image(s: &berth_image::store::meta::Snapshot, key: &str) -> Result<Option<berth_image::Digest>, Error> {
    match berth_image::images::find(s, key) {
        Ok(id) => Ok(Some(id)),
        Err(berth_image::Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn detail_of(store: &Store, s: &berth_image::store::meta::Snapshot, img: &ImageRecord) -> Result<ImageDetail, Error> {
    let config = store.content.read(&img.id)?;
    let config =
        serde_json::from_slice(&config).map_err(|source| Error::ImageConfig { id: img.id.to_string(), source })?;
    Ok(ImageDetail {
        record: img.clone(),
        config,
        tags: s.tags_of(&img.id).into_iter().map(String::from).collect(),
        digests: s.digests_of(&img.id).into_iter().map(String::from).collect(),
    })
}

/// Adds what the tree at `dir` uses to `u` (symlinks not followed; what
/// cannot be read counts nothing; an inode in `seen` counts once).
fn du(dir: &Path, u: &mut FsUsage, seen: &mut std::collections::HashSet<(u64, u64)>) {
    let Ok(meta) = std::fs::symlink_metadata(dir) else { return };
    count(&meta, u, seen);
    if !meta.is_dir() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path(), u, seen),
            Ok(m) => count(&m, u, seen),
            Err(_) => {}
        }
    }
}

fn count(m: &std::fs::Metadata, u: &mut FsUsage, seen: &mut std::collections::HashSet<(u64, u64)>) {
    use std::os::unix::fs::MetadataExt;
    if seen.insert((m.dev(), m.ino())) {
        u.used_bytes += m.blocks() * 512;
        u.inodes += 1;
    }
}

/// The `images` rows of one image, each with its repository's full name
/// (for the repository filter).
fn rows_of(img: &ImageRecord, tags: &[&str], digests: &[&str]) -> Vec<(ImageRow, String)> {
    let tags: Vec<Reference> = tags.iter().filter_map(|t| Reference::parse(t).ok()).collect();
    let digests: Vec<Reference> = digests.iter().filter_map(|t| Reference::parse(t).ok()).collect();
    let digest_for = |name: &str| {
        digests
            .iter()
            .find(|d| d.name() == name)
            .and_then(|d| d.digest())
            .map(|d| d.to_string())
            .unwrap_or("<none>".into())
    };
    let row = |repository: String, tag: String, digest: String| ImageRow {
        repository,
        tag,
        digest,
        id: img.id.clone(),
        created: img.created.clone(),
        size: img.size,
    };
    let mut mine: Vec<(ImageRow, String)> = tags
        .iter()
        .map(|t| (row(t.familiar_name(), t.tag().unwrap_or("latest").into(), digest_for(&t.name())), t.name()))
        .collect();
    // Repositories known only by digest show with tag <none> (as docker
    // does with --digests).
    for d in &digests {
        if !tags.iter().any(|t| t.name() == d.name()) {
            mine.push((row(d.familiar_name(), "<none>".into(), digest_for(&d.name())), d.name()));
        }
    }
    if mine.is_empty() {
        mine.push((row("<none>".into(), "<none>".into(), "<none>".into()), String::new()));
    }
    mine
}

/// One image of a docker-archive's manifest.json.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveEntry {
    config: &'static str,
    repo_tags: Vec<String>,
    layers: Vec<&'static str>,
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), Error> {
    let bytes = serde_json::to_vec(value).map_err(|e| Error::Io {
        what: "serialize",
        path: path.to_owned(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(path, bytes).map_err(|source| Error::Io { what: "write", path: path.to_owned(), source })
}

/// The image config of an imported layer.
fn import_config(config: Config, diff_id: String, comment: String) -> Result<ImageConfiguration, Error> {
    let now = berth_proc::time::now();
    let build = |e: oci_spec::OciSpecError| Error::ImportConfig(e.to_string());
    let history = HistoryBuilder::default().created(now.clone()).comment(comment).build().map_err(build)?;
    let rootfs = RootFsBuilder::default().typ("layers").diff_ids(vec![diff_id]).build().map_err(build)?;
    let host = Platform::host();
    ImageConfigurationBuilder::default()
        .architecture(host.architecture.as_str())
        .os("linux")
        .created(now)
        .config(config)
        .rootfs(rootfs)
        .history(vec![history])
        .build()
        .map_err(build)
}

/// Copies the tarball, decompressed as its bytes say (gzip, zstd or
/// plain), to `dest`; the digest of the plain tar: the layer's diff ID.
fn write_layer(input: impl Read, dest: &Path) -> Result<String, Error> {
    let read = |source| Error::Io { what: "read the tarball for", path: dest.to_owned(), source };
    let mut reader = berth_image::decompress::decompress(input).map_err(read)?;
    let mut out =
        std::fs::File::create(dest).map_err(|source| Error::Io { what: "create", path: dest.to_owned(), source })?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read(e)),
        };
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|source| Error::Io { what: "write", path: dest.to_owned(), source })?;
        total += n as u64;
    }
    if total == 0 {
        return Err(Error::EmptyImport);
    }
    Ok(format!("sha256:{}", hex::encode(hash.finalize())))
}

/// One `--change` instruction into the image config.
fn apply_change(config: &mut Config, change: &str) -> Result<(), Error> {
    let bad = |reason: &str| Error::Change { change: change.to_owned(), reason: reason.to_owned() };
    let (op, rest) = change.trim().split_once(char::is_whitespace).unwrap_or((change.trim(), ""));
    let rest = rest.trim();
    // JSON form (`CMD ["sh"]`) or shell form (`CMD echo hi` runs `/bin/sh -c`).
    let argv = || -> Result<Vec<String>, Error> {
        if rest.starts_with('[') {
            serde_json::from_str(rest).map_err(|e| bad(&format!("bad JSON: {e}")))
        } else {
            Ok(vec!["/bin/sh".into(), "-c".into(), rest.into()])
        }
    };
    match op.to_ascii_uppercase().as_str() {
        "CMD" => {
            config.set_cmd(Some(argv()?));
        }
        "ENTRYPOINT" => {
            config.set_entrypoint(Some(argv()?));
        }
        "WORKDIR" => {
            config.set_working_dir(Some(rest.into()));
        }
        "USER" => {
            config.set_user(Some(rest.into()));
        }
        "ENV" => {
            let kv = match rest.split_once('=') {
                Some((k, v)) => format!("{}={}", k.trim(), v.trim().trim_matches('"')),
                None => match rest.split_once(char::is_whitespace) {
                    Some((k, v)) => format!("{k}={}", v.trim()),
                    None => return Err(bad("ENV needs KEY=VALUE")),
                },
            };
            let key = format!("{}=", kv.split('=').next().unwrap_or_default());
            let mut env: Vec<String> =
                config.env().clone().unwrap_or_default().into_iter().filter(|e| !e.starts_with(&key)).collect();
            env.push(kv);
            config.set_env(Some(env));
        }
        "LABEL" => {
            let (k, v) = rest.split_once('=').ok_or_else(|| bad("LABEL needs KEY=VALUE"))?;
            let mut labels = config.labels().clone().unwrap_or_default();
            labels.insert(k.trim().into(), v.trim().trim_matches('"').into());
            config.set_labels(Some(labels));
        }
        "EXPOSE" => {
            let mut ports = config.exposed_ports().clone().unwrap_or_default();
            for p in rest.split_whitespace() {
                let p = if p.contains('/') { p.to_owned() } else { format!("{p}/tcp") };
                if !ports.contains(&p) {
                    ports.push(p);
                }
            }
            config.set_exposed_ports(Some(ports));
        }
        other => {
            return Err(bad(&format!(
                "{other:?} cannot be applied on import (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_become_image_config() {
        let mut c = Config::default();
        apply_change(&mut c, r#"CMD ["sh", "-c", "echo hi"]"#).unwrap();
        apply_change(&mut c, "ENTRYPOINT /init").unwrap();
        apply_change(&mut c, "ENV PATH=/bin").unwrap();
        apply_change(&mut c, "ENV PATH=/usr/bin:/bin").unwrap();
        apply_change(&mut c, "WORKDIR /srv").unwrap();
        apply_change(&mut c, "EXPOSE 80 53/udp").unwrap();
        apply_change(&mut c, "LABEL a=\"b\"").unwrap();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["Cmd"], serde_json::json!(["sh", "-c", "echo hi"]));
        assert_eq!(v["Entrypoint"], serde_json::json!(["/bin/sh", "-c", "/init"]));
        assert_eq!(v["Env"], serde_json::json!(["PATH=/usr/bin:/bin"]), "a later ENV replaces the key");
        assert_eq!(v["WorkingDir"], "/srv");
        assert_eq!(v["Labels"]["a"], "b");
        assert!(v["ExposedPorts"]["80/tcp"].is_object() && v["ExposedPorts"]["53/udp"].is_object());
        let err = apply_change(&mut c, "RUN make").unwrap_err().to_string();
        assert!(err.contains("RUN"), "{err}");
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn the_diff_id_is_the_plain_tars_digest_whatever_the_compression() {
        let dir = tempfile::tempdir().unwrap();
        let tar = b"not really a tar but bytes".repeat(1000);
        let plain = write_layer(&tar[..], &dir.path().join("a")).unwrap();
        assert_eq!(plain, format!("sha256:{}", hex::encode(Sha256::digest(&tar))));
        assert_eq!(write_layer(&gzip(&tar)[..], &dir.path().join("b")).unwrap(), plain);
        // pigz and some tools write several gzip members: all are the layer.
        let (one, two) = tar.split_at(tar.len() / 3);
        let mut multi = gzip(one);
        multi.extend(gzip(two));
        assert_eq!(write_layer(&multi[..], &dir.path().join("c")).unwrap(), plain, "multi-member gzip");
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        assert_eq!(write_layer(&zst[..], &dir.path().join("d")).unwrap(), plain, "zstd");
        assert_eq!(std::fs::read(dir.path().join("d")).unwrap(), tar);
        assert!(matches!(write_layer(&b""[..], &dir.path().join("e")), Err(Error::EmptyImport)));
    }

    #[test]
    fn login_servers_are_normalised_as_docker_does() {
        assert_eq!(registry_name(None), "docker.io");
        assert_eq!(registry_name(Some("https://index.docker.io/v1/")), "docker.io");
        assert_eq!(registry_name(Some("http://localhost:5000/")), "localhost:5000");
    }

    #[test]
    fn familiar_names_drop_the_default_registry() {
        assert_eq!(familiar("docker.io/library/busybox:latest"), "busybox:latest");
        assert_eq!(familiar("not a reference"), "not a reference");
    }
}
