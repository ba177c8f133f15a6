//! Pull: reference → manifest (platform chosen from an index) → config →
//! layers downloaded (verified, resumable) and unpacked (each once, into its
//! snapshot), in parallel → recorded in the metadata database.

use std::sync::Arc;

use oci_spec::image::{ImageConfiguration, ImageManifest};
use tokio::sync::Semaphore;
use tracing::{Instrument, debug, info, info_span};

use crate::digest::Digest;
use crate::error::{Error, Result, json_err};
use crate::media::{self, Document};
use crate::platform::Platform;
use crate::progress::Progress;
use crate::reference::Reference;
use crate::registry::{Registry, RegistryConfig};
use crate::snapshot::chain_ids;
use crate::store::Store;
use crate::store::meta::{ImageRecord, LayerRecord, SnapshotRecord};
use crate::unpack::{UnpackOptions, unpack_layer};

/// Configs bigger than this are refused (they are read whole).
const MAX_CONFIG_SIZE: usize = 8 << 20;

#[derive(Clone)]
pub struct PullOptions {
    pub platform: Platform,
    pub unpack: UnpackOptions,
    /// Layers downloaded and unpacked at once.
    pub concurrency: usize,
    /// syncfs each snapshot before it becomes visible.
    pub durable: bool,
    pub progress: Arc<dyn Progress>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: Platform::host(),
            unpack: UnpackOptions::default(),
            concurrency: 4,
            durable: true,
            progress: Arc::new(crate::progress::NoProgress),
        }
    }
}

/// Pulls `reference` into `store` and returns the image's record.
pub async fn pull(
    store: &Store,
    cfg: &RegistryConfig,
    reference: &Reference,
    opts: &PullOptions,
) -> Result<ImageRecord> {
    let span = info_span!("pull", reference = %reference);
    async move {
        let _guard = store.adding()?;
        let (reg, image) = resolve(store, cfg, reference, &opts.platform).await?;
        let done = fetch_layers(store, Arc::new(reg), reference.repository(), &image, opts).await?;
        let record = image.record(&done);
        let repo_digest = reference.with_digest(image.index.clone().unwrap_or(image.manifest_digest.clone()));
        store.meta.write(|tx| {
            for (j, size) in image.jobs.iter().zip(&done) {
                tx.put_snapshot(&SnapshotRecord {
                    chain_id: j.chain_id.clone(),
                    diff_id: j.diff_id.clone(),
                    parent: j.parent.clone(),
                    size: *size,
                })?;
            }
            tx.put_image(&record)?;
            if let Some(tag) = reference.tag() {
                tx.set_tag(&reference.with_tag(tag).to_string(), &record.id)?;
            }
            tx.set_digest(&repo_digest.to_string(), &record.id)
        })?;
        info!(id = %record.id, "pulled");
        Ok(record)
    }
    .instrument(span)
    .await
}

/// What a reference resolved to: manifest, config and the layers to fetch.
struct Resolved {
    index: Option<Digest>,
    manifest_digest: Digest,
    manifest_media_type: String,
    config_digest: Digest,
    config_media_type: String,
    config: ImageConfiguration,
    jobs: Vec<LayerJob>,
}

impl Resolved {
    fn record(&self, sizes: &[u64]) -> ImageRecord {
        let c = &self.config;
        let mut platform = format!("{}/{}", c.os(), c.architecture());
        if let Some(v) = c.variant() {
            platform = format!("{platform}/{v}");
        }
        ImageRecord {
            id: self.config_digest.clone(),
            manifest: self.manifest_digest.clone(),
            manifest_media_type: self.manifest_media_type.clone(),
            index: self.index.clone(),
            config_media_type: self.config_media_type.clone(),
            layers: self
                .jobs
                .iter()
                .map(|j| LayerRecord {
                    digest: j.digest.clone(),
                    size: j.size,
                    media_type: j.media_type.clone(),
                    diff_id: j.diff_id.clone(),
                    chain_id: j.chain_id.clone(),
                })
                .collect(),
            platform,
            created: c.created().clone(),
            size: sizes.iter().sum(),
        }
    }
}

/// Fetches (and stores, verified) the index, the platform's manifest and
/// the config.
async fn resolve(
    store: &Store,
    cfg: &RegistryConfig,
    reference: &Reference,
    platform: &Platform,
) -> Result<(Registry, Resolved)> {
    let (reg, bytes, ct) = fetch_top(cfg, reference).await?;
    let top_digest = Digest::of(&bytes);
    if let Some(want) = reference.digest()
        && want != &top_digest
    {
        return Err(Error::DigestMismatch { expected: want.clone(), actual: top_digest });
    }
    let repo = reference.repository();
    let (index, manifest_bytes, manifest_ct) = match Document::parse(&bytes, ct.as_deref())? {
        Document::Index(idx) => {
            store.content.write_bytes(Some(&top_digest), &bytes)?;
            let desc = platform.select(&idx, &reference.to_string())?;
            let d = media::digest_of(desc)?;
            let (b, ct) = reg.get_manifest(repo, &d.to_string()).await?;
            let actual = Digest::of(&b);
            if actual != d {
                return Err(Error::DigestMismatch { expected: d, actual });
            }
            (Some(top_digest.clone()), b, ct.or(Some(media::media_type_of(desc))))
        }
        Document::Manifest(_) => (None, bytes, ct),
    };
    let manifest_digest = Digest::of(&manifest_bytes);
    let manifest: ImageManifest = match Document::parse(&manifest_bytes, manifest_ct.as_deref())? {
        Document::Manifest(m) => *m,
        Document::Index(_) => return Err(Error::Unsupported(format!("{reference}: nested index"))),
    };
    let manifest_media_type = manifest
        .media_type()
        .as_ref()
        .map(|m| m.to_string())
        .or(manifest_ct.map(|c| c.split(';').next().unwrap_or("").trim().to_string()))
        .unwrap_or_else(|| media::OCI_MANIFEST.to_string());
    store.content.write_bytes(Some(&manifest_digest), &manifest_bytes)?;

    let config_digest = media::digest_of(manifest.config())?;
    let config_bytes = if store.content.contains(&config_digest) {
        store.content.read(&config_digest)?
    } else {
        let b = reg.get_blob_bytes(repo, &config_digest, MAX_CONFIG_SIZE).await?;
        store.content.write_bytes(Some(&config_digest), &b)?;
        b
    };
    let config: ImageConfiguration =
        serde_json::from_slice(&config_bytes).map_err(json_err(format!("image config {config_digest}")))?;
    let diff_ids: Vec<Digest> = config.rootfs().diff_ids().iter().map(|d| d.parse()).collect::<Result<_>>()?;
    let layers: Vec<_> = manifest.layers().iter().filter(|l| media::is_layer(l.media_type().as_ref())).collect();
    if diff_ids.len() != layers.len() {
        return Err(Error::Unsupported(format!(
            "{reference}: {} layers but {} diff IDs in the config",
            layers.len(),
            diff_ids.len()
        )));
    }
    let chains = chain_ids(&diff_ids);
    let jobs = layers
        .iter()
        .enumerate()
        .map(|(i, desc)| {
            Ok(LayerJob {
                digest: media::digest_of(desc)?,
                size: desc.size(),
                media_type: media::media_type_of(desc),
                diff_id: diff_ids[i].clone(),
                chain_id: chains[i].clone(),
                parent: if i > 0 { Some(chains[i - 1].clone()) } else { None },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    info!(manifest = %manifest_digest, config = %config_digest, layers = jobs.len(), "resolved");
    let resolved = Resolved {
        index,
        manifest_digest,
        manifest_media_type,
        config_digest,
        config_media_type: media::media_type_of(manifest.config()),
        config,
        jobs,
    };
    Ok((reg, resolved))
}

/// Downloads and unpacks every layer, `opts.concurrency` at a time.
/// Returns the unpacked sizes, in layer order. On the first failure the
/// others stop; what they stored stays for the next pull to resume.
async fn fetch_layers(
    store: &Store,
    reg: Arc<Registry>,
    repo: &str,
    image: &Resolved,
    opts: &PullOptions,
) -> Result<Vec<u64>> {
    let sem = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, job) in image.jobs.iter().enumerate() {
        let (job, store, reg, sem, opts, repo) =
            (job.clone(), store.clone(), reg.clone(), sem.clone(), opts.clone(), repo.to_string());
        tasks.spawn(
            async move {
                let _permit = sem.acquire_owned().await.map_err(|_| Error::Unsupported("pull cancelled".into()))?;
                let size = job.run(&store, &reg, &repo, &opts).await?;
                Ok::<_, Error>((i, size))
            }
            .in_current_span(),
        );
    }
    let mut sizes = vec![0; image.jobs.len()];
    let mut first_err = None;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok((i, size))) => sizes[i] = size,
            Ok(Err(e)) => {
                if first_err.is_none() {
                    first_err = Some(e);
                    tasks.abort_all();
                }
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => first_err = first_err.or(Some(Error::Unsupported(format!("layer task failed: {e}")))),
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(sizes),
    }
}

/// The manifest (or index) from the first mirror that has it, else the
/// upstream (the registry itself, or a hosts.toml's `server`).
async fn fetch_top(cfg: &RegistryConfig, reference: &Reference) -> Result<(Registry, Vec<u8>, Option<String>)> {
    let endpoints = cfg.endpoints(reference)?;
    let last = endpoints.len().saturating_sub(1);
    for (i, endpoint) in endpoints.iter().enumerate() {
        let attempt = async {
            let reg = Registry::connect_endpoint(endpoint, cfg).await?;
            let (b, ct) = reg.get_manifest(reference.repository(), &reference.manifest_reference()).await?;
            Ok::<_, Error>((reg, b, ct))
        };
        match attempt.await {
            Ok(r) => return Ok(r),
            Err(e) if i < last => debug!(mirror = %endpoint, error = %e, "mirror failed"),
            Err(e) => return Err(e),
        }
    }
    Err(Error::NotFound(reference.to_string()))
}

#[derive(Clone)]
struct LayerJob {
    digest: Digest,
    size: u64,
    media_type: String,
    diff_id: Digest,
    chain_id: Digest,
    parent: Option<Digest>,
}

impl LayerJob {
    /// Downloads (unless stored) and unpacks (unless a snapshot exists).
    /// Returns the unpacked size.
    async fn run(&self, store: &Store, reg: &Registry, repo: &str, opts: &PullOptions) -> Result<u64> {
        let id = self.digest.short().to_string();
        let p = opts.progress.clone();
        let have_blob = store.content.size(&self.digest) == Some(self.size);
        if have_blob && store.snapshots.exists(&self.chain_id) {
            p.finish(&id, "Already exists");
            return Ok(self.known_size(store));
        }
        if !have_blob {
            p.start(&id, self.size);
            p.status(&id, "Downloading");
            let (content, digest, size) = (store.content.clone(), self.digest.clone(), self.size);
            let mut ingest = tokio::task::spawn_blocking(move || content.ingest(&digest, Some(size)))
                .await
                .map_err(|e| Error::Unsupported(format!("ingest task: {e}")))??;
            if !ingest.is_done() {
                let pid = id.clone();
                let p2 = p.clone();
                reg.fetch_blob(repo, &self.digest, &mut ingest, &move |n| p2.advance(&pid, n)).await?;
                tokio::task::spawn_blocking(move || ingest.commit())
                    .await
                    .map_err(|e| Error::Unsupported(format!("commit task: {e}")))??;
            }
        }
        p.status(&id, "Extracting");
        let (store2, job, uopts, durable) = (store.clone(), self.clone(), opts.unpack.clone(), opts.durable);
        let size = tokio::task::spawn_blocking(move || job.unpack(&store2, &uopts, durable))
            .await
            .map_err(|e| Error::Unsupported(format!("unpack task: {e}")))??;
        p.finish(&id, "Pull complete");
        Ok(size)
    }

    /// The size of a snapshot this pull did not unpack: from the snapshot
    /// itself, since its record may not exist (yet: a concurrent pull made
    /// it; or ever: a pull killed after unpacking it).
    fn known_size(&self, store: &Store) -> u64 {
        store.snapshots.size(&self.chain_id)
    }

    fn unpack(&self, store: &Store, opts: &UnpackOptions, durable: bool) -> Result<u64> {
        match unpack_blob(store, &self.digest, &self.diff_id, &self.chain_id, opts, durable)? {
            Some(size) => Ok(size),
            None => Ok(self.known_size(store)),
        }
    }
}

/// Unpacks the stored blob `digest` into the snapshot `chain_id`, checking
/// that its uncompressed digest is `diff_id`. Returns the unpacked size, or
/// None if the snapshot already existed.
pub fn unpack_blob(
    store: &Store,
    digest: &Digest,
    diff_id: &Digest,
    chain_id: &Digest,
    opts: &UnpackOptions,
    durable: bool,
) -> Result<Option<u64>> {
    let Some(prep) = store.snapshots.prepare(chain_id)? else {
        return Ok(None);
    };
    let blob = store.content.open_blob(digest)?;
    let u = unpack_layer(std::io::BufReader::with_capacity(1 << 20, blob), &prep.fs_path(), &digest.to_string(), opts)?;
    if &u.diff_id != diff_id {
        return Err(Error::DigestMismatch { expected: diff_id.clone(), actual: u.diff_id });
    }
    prep.commit(u.size, durable)?;
    Ok(Some(u.size))
}
