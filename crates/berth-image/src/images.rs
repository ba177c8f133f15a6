//! Local image operations: find by name or ID, tag, remove, prune.

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::reference::Reference;
use crate::store::Store;
use crate::store::meta::{Resource, Snapshot};

/// Finds an image by reference (`busybox`, `name@sha256:…`), full ID
/// (`sha256:…`) or unique ID prefix (at least 4 hex digits).
pub fn find(s: &Snapshot, name: &str) -> Result<Digest> {
    if let Ok(d) = name.parse::<Digest>()
        && s.image(&d).is_some()
    {
        return Ok(d);
    }
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let hits: Vec<&Digest> = s.images.iter().map(|i| &i.id).filter(|d| d.hex().starts_with(hex)).collect();
        match hits.len() {
            1 => return Ok(hits[0].clone()),
            n if n > 1 => return Err(Error::Conflict(format!("{name}: ambiguous image ID prefix"))),
            _ => {}
        }
    }
    if let Ok(r) = Reference::parse(name) {
        let key = r.to_string();
        if let Some(d) = r.digest() {
            let bare = format!("{}@{d}", r.name());
            if let Some((_, id)) = s.digests.iter().find(|(k, _)| *k == bare) {
                return Ok(id.clone());
            }
        } else if let Some((_, id)) = s.tags.iter().find(|(k, _)| *k == key) {
            return Ok(id.clone());
        }
    }
    Err(Error::NotFound(format!("image {name}")))
}

/// Tags the image `source` as `target`.
pub fn tag(store: &Store, source: &str, target: &Reference) -> Result<()> {
    let s = store.meta.read_all()?;
    let id = find(&s, source)?;
    let t = target.with_tag(target.tag().unwrap_or("latest"));
    store.meta.write(|tx| tx.set_tag(&t.to_string(), &id))
}

/// What `rmi` did, in docker's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    Untagged(String),
    Deleted(Digest),
}

fn in_use(s: &Snapshot, id: &Digest) -> Option<String> {
    s.refs.iter().find(|(_, rs)| rs.contains(&Resource::Image(id.clone()))).map(|(h, _)| h.clone())
}

/// Removes `name`: a tag is untagged, and the image deleted when nothing
/// names it any more; an ID deletes the image (with `force` even when
/// several tags name it). Images a holder references are refused.
pub fn remove(store: &Store, name: &str, force: bool) -> Result<Vec<Removed>> {
    let s = store.meta.read_all()?;
    let id = find(&s, name)?;
    let by_tag = Reference::parse(name).ok().filter(|r| s.tags.iter().any(|(k, _)| *k == r.to_string()));
    let tags: Vec<String> = s.tags_of(&id).into_iter().map(String::from).collect();
    let digests: Vec<String> = s.digests_of(&id).into_iter().map(String::from).collect();
    let mut out = Vec::new();
    let delete_image = match &by_tag {
        Some(_) => tags.len() <= 1,
        None => {
            if tags.len() > 1 && !force {
                return Err(Error::Conflict(format!(
                    "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                    id.short()
                )));
            }
            true
        }
    };
    if delete_image
        && let Some(holder) = in_use(&s, &id)
        && !force
    {
        return Err(Error::Conflict(format!("conflict: unable to remove image {} - used by {holder}", id.short())));
    }
    store.meta.write(|tx| {
        if let (Some(r), false) = (&by_tag, delete_image) {
            tx.remove_tag(&r.to_string())?;
            out.push(Removed::Untagged(r.to_string()));
            return Ok(());
        }
        for t in &tags {
            tx.remove_tag(t)?;
            out.push(Removed::Untagged(t.clone()));
        }
        for d in &digests {
            tx.remove_digest(d)?;
            out.push(Removed::Untagged(d.clone()));
        }
        tx.remove_image(&id)?;
        out.push(Removed::Deleted(id.clone()));
        Ok(())
    })?;
    Ok(out)
}

/// Removes dangling images (no tag) that nothing references. Returns their IDs.
pub fn prune(store: &Store, all: bool) -> Result<Vec<Digest>> {
    let s = store.meta.read_all()?;
    let doomed: Vec<Digest> = s
        .images
        .iter()
        .filter(|i| (all || s.tags_of(&i.id).is_empty()) && in_use(&s, &i.id).is_none())
        .map(|i| i.id.clone())
        .collect();
    store.meta.write(|tx| {
        for id in &doomed {
            for t in s.tags_of(id) {
                tx.remove_tag(t)?;
            }
            for d in s.digests_of(id) {
                tx.remove_digest(d)?;
            }
            tx.remove_image(id)?;
        }
        Ok(())
    })?;
    Ok(doomed)
}
