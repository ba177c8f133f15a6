//! `save` and `load`: image archives in both common shapes at once.
//!
//! `save` writes one tar that is an OCI image layout (`oci-layout`,
//! `index.json`, `blobs/sha256/…`) and a docker-archive (`manifest.json`
//! naming the config and layers inside `blobs/`), as docker 25+ does, with
//! the blobs as stored, so manifests keep their digests. `load` reads
//! either shape (tar or directory), older docker-archives included
//! (`<id>/layer.tar`), verifying every blob by digest.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use serde_json::{Value, json};

use crate::decompress::Compression;
use crate::digest::{Digest, HashingReader};
use crate::error::{Error, IoContext, Result, json_err};
use crate::media::{self, Document};
use crate::platform::Platform;
use crate::pull::unpack_blob;
use crate::reference::Reference;
use crate::snapshot::chain_ids;
use crate::store::Store;
use crate::store::meta::{ImageRecord, LayerRecord, SnapshotRecord};
use crate::unpack::UnpackOptions;

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

fn tar_file(b: &mut tar::Builder<impl Write>, name: &str, data: &mut dyn Read, size: u64) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_mtime(0);
    b.append_data(&mut h, name, data).ctx(|| format!("archive: write {name}"))
}

fn tar_dir(b: &mut tar::Builder<impl Write>, name: &str) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    h.set_mtime(0);
    b.append_data(&mut h, name, std::io::empty()).ctx(|| format!("archive: write {name}"))
}

/// Writes the images named by `names` (references or IDs) to `out`.
pub fn save(store: &Store, names: &[String], out: impl Write) -> Result<()> {
    let s = store.meta.read_all()?;
    let mut b = tar::Builder::new(out);
    tar_dir(&mut b, "blobs/")?;
    tar_dir(&mut b, "blobs/sha256/")?;
    let mut written = BTreeSet::new();
    let mut index = Vec::new();
    let mut docker = Vec::new();
    for name in names {
        let id = crate::images::find(&s, name)?;
        let img = s.image(&id).ok_or_else(|| Error::NotFound(format!("image {name}")))?;
        // A name that is a tag saves that tag; an ID saves all of the image's tags.
        let tags: Vec<Reference> = match Reference::parse(name) {
            Ok(r) if r.digest().is_none() && s.tags.iter().any(|(k, _)| *k == r.to_string()) => vec![r],
            _ => s.tags_of(&id).iter().filter_map(|t| Reference::parse(t).ok()).collect(),
        };
        let mut blobs = vec![img.manifest.clone(), img.id.clone()];
        blobs.extend(img.layers.iter().map(|l| l.digest.clone()));
        for d in &blobs {
            if written.insert(d.clone()) {
                let mut f = store.content.open_blob(d)?;
                let size = f.metadata().ctx(|| format!("stat blob {d}"))?.len();
                tar_file(&mut b, &format!("blobs/sha256/{}", d.hex()), &mut f, size)?;
            }
        }
        let msize = store.content.size(&img.manifest).unwrap_or(0);
        if tags.is_empty() {
            index.push(json!({"mediaType": img.manifest_media_type, "digest": img.manifest, "size": msize}));
        }
        for t in &tags {
            index.push(json!({
                "mediaType": img.manifest_media_type, "digest": img.manifest, "size": msize,
                "annotations": {CONTAINERD_NAME: t.to_string(), REF_NAME: t.tag().unwrap_or("latest")},
            }));
        }
        docker.push(json!({
            "Config": format!("blobs/sha256/{}", img.id.hex()),
            "RepoTags": tags.iter().map(|t| format!("{}:{}", t.familiar_name(), t.tag().unwrap_or("latest"))).collect::<Vec<_>>(),
            "Layers": img.layers.iter().map(|l| format!("blobs/sha256/{}", l.digest.hex())).collect::<Vec<_>>(),
        }));
    }
    let idx = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": index}))
        .map_err(json_err("index.json"))?;
    tar_file(&mut b, "index.json", &mut &idx[..], idx.len() as u64)?;
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    tar_file(&mut b, "oci-layout", &mut &layout[..], layout.len() as u64)?;
    let man = serde_json::to_vec(&docker).map_err(json_err("manifest.json"))?;
    tar_file(&mut b, "manifest.json", &mut &man[..], man.len() as u64)?;
    b.into_inner().ctx(|| "archive: finish".to_string())?.flush().ctx(|| "archive: flush".to_string())
}

/// Extracts an archive into `dir`. Only plain files and directories with
/// tame relative names are taken: the archive is untrusted.
fn extract(input: &Path, dir: &Path) -> Result<()> {
    let f = File::open(input).ctx(|| format!("open {}", input.display()))?;
    let r = crate::decompress::decompress(f).ctx(|| format!("read {}", input.display()))?;
    let mut a = tar::Archive::new(r);
    for e in a.entries().ctx(|| format!("read {}", input.display()))? {
        let mut e = e.ctx(|| format!("read {}", input.display()))?;
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let clean: Vec<&str> = name.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
        let tame = !clean.is_empty()
            && clean.iter().all(|c| *c != ".." && c.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b)));
        if !tame {
            return Err(Error::Archive(format!("refusing entry {name:?}")));
        }
        let dest = dir.join(clean.join("/"));
        match e.header().entry_type() {
            tar::EntryType::Directory => fs::create_dir_all(&dest).ctx(|| format!("create {}", dest.display()))?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(p) = dest.parent() {
                    fs::create_dir_all(p).ctx(|| format!("create {}", p.display()))?;
                }
                let mut out = File::create(&dest).ctx(|| format!("create {}", dest.display()))?;
                std::io::copy(&mut e, &mut out).ctx(|| format!("write {}", dest.display()))?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                // Old docker-archives link repeated layers; resolve within the archive.
                let target = e.link_name_bytes().map(|t| String::from_utf8_lossy(&t).into_owned()).unwrap_or_default();
                let base: Vec<&str> = clean[..clean.len() - 1].to_vec();
                let mut parts: Vec<&str> =
                    if e.header().entry_type() == tar::EntryType::Symlink { base } else { Vec::new() };
                for c in target.split('/') {
                    match c {
                        "" | "." => {}
                        ".." => {
                            parts.pop();
                        }
                        c => parts.push(c),
                    }
                }
                let src = dir.join(parts.join("/"));
                if !src.is_file() {
                    return Err(Error::Archive(format!("entry {name:?} links to a missing file")));
                }
                if let Some(p) = dest.parent() {
                    fs::create_dir_all(p).ctx(|| format!("create {}", p.display()))?;
                }
                fs::copy(&src, &dest).ctx(|| format!("copy {}", src.display()))?;
            }
            _ => return Err(Error::Archive(format!("refusing entry {name:?} of an unexpected type"))),
        }
    }
    Ok(())
}

/// Stores the file at `path`, which must have digest `expected` if given.
fn import_file(store: &Store, path: &Path, expected: Option<&Digest>) -> Result<Digest> {
    let digest = match expected {
        Some(d) => d.clone(),
        None => {
            let mut h = HashingReader::new(File::open(path).ctx(|| format!("open {}", path.display()))?);
            std::io::copy(&mut h, &mut std::io::sink()).ctx(|| format!("read {}", path.display()))?;
            h.finish().0
        }
    };
    if store.content.contains(&digest) {
        return Ok(digest);
    }
    let size = fs::metadata(path).ctx(|| format!("stat {}", path.display()))?.len();
    let mut w = store.content.ingest(&digest, Some(size))?;
    if w.is_done() {
        return Ok(digest);
    }
    w.restart()?;
    let mut f = File::open(path).ctx(|| format!("open {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).ctx(|| format!("read {}", path.display()))?;
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n])?;
    }
    w.commit()?;
    Ok(digest)
}

/// Loads an archive (tar, possibly compressed, or a layout directory).
/// Returns each image loaded with the names it got.
pub fn load(store: &Store, input: &Path, opts: &UnpackOptions) -> Result<Vec<(ImageRecord, Vec<String>)>> {
    let guard = store.adding()?;
    let tmp;
    let dir: PathBuf = if input.is_dir() {
        input.to_path_buf()
    } else {
        tmp = store.temp_dir("load-", &guard)?;
        extract(input, tmp.path())?;
        tmp.path().to_path_buf()
    };
    let mut out = Vec::new();
    if dir.join("index.json").is_file() {
        let idx: ImageIndex =
            serde_json::from_slice(&fs::read(dir.join("index.json")).ctx(|| "read index.json".into())?)
                .map_err(json_err("index.json"))?;
        for desc in idx.manifests() {
            let d = media::digest_of(desc)?;
            let names: Vec<String> = desc
                .annotations()
                .as_ref()
                .and_then(|a| a.get(CONTAINERD_NAME).or(a.get(REF_NAME)))
                .and_then(|n| Reference::parse(n).ok().filter(|_| n.contains('/') || n.contains(':')))
                .map(|r| vec![r.to_string()])
                .unwrap_or_default();
            out.push(load_manifest(store, &dir, &d, None, &names, opts)?);
        }
        return Ok(out);
    }
    if dir.join("manifest.json").is_file() {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let entries: Vec<Entry> =
            serde_json::from_slice(&fs::read(dir.join("manifest.json")).ctx(|| "read manifest.json".into())?)
                .map_err(json_err("manifest.json"))?;
        for e in entries {
            let safe = |p: &str| -> Result<PathBuf> {
                if p.split('/').any(|c| c == "..") || p.starts_with('/') {
                    return Err(Error::Archive(format!("manifest.json names {p:?}")));
                }
                Ok(dir.join(p))
            };
            let config_path = safe(&e.config)?;
            let config_bytes = fs::read(&config_path).ctx(|| format!("read {}", config_path.display()))?;
            let config_digest = store.content.write_bytes(None, &config_bytes)?;
            let mut layers = Vec::new();
            for l in &e.layers {
                let p = safe(l)?;
                let d = import_file(store, &p, None)?;
                let mut head = [0u8; 8];
                let n = File::open(&p).and_then(|mut f| f.read(&mut head)).ctx(|| format!("read {}", p.display()))?;
                let mt = match Compression::sniff(&head[..n]) {
                    Compression::Gzip => media::DOCKER_LAYER_GZIP,
                    Compression::Zstd => media::OCI_LAYER_ZSTD,
                    Compression::None => media::DOCKER_LAYER,
                };
                let size = store.content.size(&d).unwrap_or(0);
                layers.push(json!({"mediaType": mt, "size": size, "digest": d}));
            }
            let manifest = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": media::DOCKER_MANIFEST,
                "config": {"mediaType": media::DOCKER_CONFIG, "size": config_bytes.len(), "digest": config_digest},
                "layers": layers,
            }))
            .map_err(json_err("manifest"))?;
            let md = store.content.write_bytes(None, &manifest)?;
            let names: Vec<String> = e
                .repo_tags
                .unwrap_or_default()
                .iter()
                .filter_map(|t| Reference::parse(t).ok())
                .map(|r| r.to_string())
                .collect();
            out.push(load_manifest(store, &dir, &md, Some(media::DOCKER_MANIFEST), &names, opts)?);
        }
        return Ok(out);
    }
    Err(Error::Archive("neither index.json nor manifest.json: not an image archive".into()))
}

/// Imports (from `dir`'s blobs/ when not stored yet) and records the image
/// whose manifest (or index) is `digest`.
fn load_manifest(
    store: &Store,
    dir: &Path,
    digest: &Digest,
    media_type: Option<&str>,
    names: &[String],
    opts: &UnpackOptions,
) -> Result<(ImageRecord, Vec<String>)> {
    let blob = |d: &Digest| -> Result<Digest> {
        if store.content.contains(d) {
            return Ok(d.clone());
        }
        import_file(store, &dir.join("blobs/sha256").join(d.hex()), Some(d))
    };
    blob(digest)?;
    let bytes = store.content.read(digest)?;
    let (index, manifest_digest, manifest_bytes) = match Document::parse(&bytes, media_type)? {
        Document::Index(idx) => {
            let desc = Platform::host().select(&idx, &digest.to_string())?;
            let d = media::digest_of(desc)?;
            blob(&d)?;
            (Some(digest.clone()), d.clone(), store.content.read(&d)?)
        }
        Document::Manifest(_) => (None, digest.clone(), bytes),
    };
    let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes).map_err(json_err("manifest"))?;
    let config_digest = blob(&media::digest_of(manifest.config())?)?;
    let config: ImageConfiguration =
        serde_json::from_slice(&store.content.read(&config_digest)?).map_err(json_err("image config"))?;
    let diff_ids: Vec<Digest> = config.rootfs().diff_ids().iter().map(|d| d.parse()).collect::<Result<_>>()?;
    let descs: Vec<_> = manifest.layers().iter().filter(|l| media::is_layer(l.media_type().as_ref())).collect();
    if descs.len() != diff_ids.len() {
        return Err(Error::Archive(format!("image {config_digest}: layers and diff IDs differ in number")));
    }
    let chains = chain_ids(&diff_ids);
    let mut layers = Vec::new();
    let mut sizes = Vec::new();
    for (i, desc) in descs.iter().enumerate() {
        let d = blob(&media::digest_of(desc)?)?;
        let size = match unpack_blob(store, &d, &diff_ids[i], &chains[i], opts, true)? {
            Some(s) => s,
            None => store.snapshots.size(&chains[i]),
        };
        sizes.push(size);
        layers.push(LayerRecord {
            digest: d,
            size: desc.size(),
            media_type: media::media_type_of(desc),
            diff_id: diff_ids[i].clone(),
            chain_id: chains[i].clone(),
        });
    }
    let record = ImageRecord {
        id: config_digest,
        manifest: manifest_digest,
        manifest_media_type: manifest
            .media_type()
            .as_ref()
            .map(|m| m.to_string())
            .or(media_type.map(String::from))
            .unwrap_or_else(|| media::OCI_MANIFEST.into()),
        index,
        config_media_type: media::media_type_of(manifest.config()),
        layers,
        platform: format!("{}/{}", config.os(), config.architecture()),
        created: config.created().clone(),
        size: sizes.iter().sum(),
    };
    store.meta.write(|tx| {
        for (i, l) in record.layers.iter().enumerate() {
            tx.put_snapshot(&SnapshotRecord {
                chain_id: l.chain_id.clone(),
                diff_id: l.diff_id.clone(),
                parent: if i > 0 { Some(chains[i - 1].clone()) } else { None },
                size: sizes[i],
            })?;
        }
        tx.put_image(&record)?;
        for n in names {
            tx.set_tag(n, &record.id)?;
        }
        Ok(())
    })?;
    Ok((record, names.to_vec()))
}

/// A docker-shaped description of an image, as `image inspect` prints it.
pub fn inspect(store: &Store, name: &str) -> Result<Value> {
    let s = store.meta.read_all()?;
    let id = crate::images::find(&s, name)?;
    let img = s.image(&id).ok_or_else(|| Error::NotFound(format!("image {name}")))?;
    let config: Value = serde_json::from_slice(&store.content.read(&img.id)?).map_err(json_err("image config"))?;
    let familiar_tag = |t: &str| {
        Reference::parse(t)
            .map(|r| format!("{}:{}", r.familiar_name(), r.tag().unwrap_or("latest")))
            .unwrap_or(t.into())
    };
    let familiar_digest = |t: &str| {
        Reference::parse(t)
            .ok()
            .and_then(|r| r.digest().map(|d| format!("{}@{d}", r.familiar_name())))
            .unwrap_or(t.into())
    };
    Ok(json!({
        "Id": img.id,
        "RepoTags": s.tags_of(&id).iter().map(|t| familiar_tag(t)).collect::<Vec<_>>(),
        "RepoDigests": s.digests_of(&id).iter().map(|t| familiar_digest(t)).collect::<Vec<_>>(),
        "Parent": "",
        "Comment": config.get("comment").cloned().unwrap_or(json!("")),
        "Created": config.get("created").cloned().unwrap_or(Value::Null),
        "DockerVersion": config.get("docker_version").cloned().unwrap_or(json!("")),
        "Author": config.get("author").cloned().unwrap_or(json!("")),
        "Config": config.get("config").cloned().unwrap_or(Value::Null),
        "Architecture": config.get("architecture").cloned().unwrap_or(Value::Null),
        "Variant": config.get("variant").cloned(),
        "Os": config.get("os").cloned().unwrap_or(Value::Null),
        "Size": img.size,
        "GraphDriver": {
            "Name": "overlay2",
            "Data": {"LowerDir": img.layers.iter().rev().map(|l| store.snapshots.fs_path(&l.chain_id).display().to_string()).collect::<Vec<_>>().join(":")},
        },
        "RootFS": {"Type": "layers", "Layers": img.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>()},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
        "Descriptor": {"mediaType": img.manifest_media_type, "digest": img.manifest, "size": store.content.size(&img.manifest)},
    }))
}
