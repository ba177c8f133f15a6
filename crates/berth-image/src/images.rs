//! Local image operations: find by name or ID, tag, remove, prune.

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::reference::Reference;
use crate::store::Store;
use crate::store::meta::{ImageRecord, Resource, Snapshot, Tx};

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
    let t = target.with_tag(target.tag().unwrap_or("latest"));
    // One transaction: a concurrent rmi cannot leave the tag naming nothing.
    store.meta.write(|tx| {
        let id = find(&tx.read_images()?, source)?;
        tx.set_tag(&t.to_string(), &id)
    })
}

/// What `rmi` did, in docker's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    Untagged(String),
    Deleted(Digest),
}

/// What a holder (the engine's container) is doing with an image, as
/// docker tells them apart: a running one's image cannot be deleted even
/// with force, a stopped one's only with force. The string names the
/// holder in messages (docker: the container's short ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Use {
    Running(String),
    Stopped(String),
}

/// Tells what a holder of the `refs` table does with its image; None for
/// a holder that is gone (its references are stale and count for nothing).
pub type Users<'a> = &'a dyn Fn(&str) -> Option<Use>;

/// The holders of image `id` that are still there, running ones first.
fn users_of(s: &Snapshot, id: &Digest, users: Users<'_>) -> Vec<Use> {
    let mut out: Vec<Use> = s
        .refs
        .iter()
        .filter(|(_, rs)| rs.contains(&Resource::Image(id.clone())))
        .filter_map(|(h, _)| users(h))
        .collect();
    out.sort_by_key(|u| matches!(u, Use::Stopped(_)));
    out
}

/// What a holder of an image references: the image (so rmi and prune see
/// it), and what its rootfs and config need whether or not the image
/// record stays (`rmi -f` of a stopped container's image deletes the
/// record; the container must still start).
pub fn holds(img: &ImageRecord) -> Vec<Resource> {
    let mut out = vec![Resource::Image(img.id.clone()), Resource::Blob(img.id.clone())];
    // A snapshot keeps its parents (see gc): the top one is the whole chain.
    out.extend(img.layers.last().map(|l| Resource::Snapshot(l.chain_id.clone())));
    out
}

/// Finds the image `key` and records that `holder` uses it, in one
/// transaction: an `rmi` either ran before (the image is not found) or
/// after (it sees the holder), never in between.
pub fn hold(store: &Store, key: &str, holder: &str) -> Result<ImageRecord> {
    store.meta.write(|tx| {
        let s = tx.read_images()?;
        let id = find(&s, key)?;
        let img = s.image(&id).cloned().ok_or_else(|| Error::NotFound(format!("image {key}")))?;
        tx.set_refs(holder, &holds(&img))?;
        Ok(img)
    })
}

/// docker's isSingleReference: at most one tag, and every digest
/// reference in that tag's repository.
fn single_reference(tags: &[&str], digests: &[&str]) -> bool {
    let repo_of = |r: &str| Reference::parse(r).map(|r| r.name().to_string()).unwrap_or_default();
    match (tags, digests) {
        ([], []) => false,
        ([], [d, rest @ ..]) => rest.iter().all(|x| repo_of(x) == repo_of(d)),
        ([t], ds) => ds.iter().all(|d| repo_of(d) == repo_of(t)),
        _ => false,
    }
}

fn conflict(id: &Digest, hard: bool, why: &str) -> Error {
    let force = if hard { "cannot be forced" } else { "must be forced" };
    Error::Conflict(format!("conflict: unable to delete {} ({force}) - {why}", id.short()))
}

/// Removes `name` as docker's `rmi` does. By tag: the tag goes (without
/// force, not while a container uses an image no other tag names); the
/// image is deleted with its last tag unless a container uses it (then it
/// stays, dangling). By ID: the image and all its names are deleted,
/// refused while a running container uses it (even with force) and,
/// without force, while a stopped one does or several repositories name
/// it. The decision and the change are one transaction, so a container
/// that takes its hold at the same time is either seen or finds no image.
pub fn remove(store: &Store, name: &str, force: bool, users: Users<'_>) -> Result<Vec<Removed>> {
    store.meta.write(|tx| {
        let s = tx.read_all()?;
        let id = find(&s, name)?;
        let tags = s.tags_of(&id);
        let digests = s.digests_of(&id);
        let using = users_of(&s, &id, users);
        let by_tag = Reference::parse(name).ok().filter(|r| tags.contains(&r.to_string().as_str()));
        let mut out = Vec::new();
        if let Some(r) = &by_tag {
            if !force
                && single_reference(&tags, &digests)
                && let Some(Use::Running(c) | Use::Stopped(c)) = using.first()
            {
                return Err(Error::Conflict(format!(
                    "conflict: unable to remove repository reference {name:?} (must force) - container {c} is using its referenced image {}",
                    id.short()
                )));
            }
            tx.remove_tag(&r.to_string())?;
            out.push(Removed::Untagged(r.to_string()));
            if tags.len() > 1 {
                return Ok(out);
            }
            // The last tag gone: its repository's digests go with it.
            for d in digests.iter().filter(|d| Reference::parse(d).is_ok_and(|x| x.name() == r.name())) {
                tx.remove_digest(d)?;
                out.push(Removed::Untagged(d.to_string()));
            }
            // Left dangling while a container uses it (docker's "quiet" delete).
            if !using.is_empty() {
                return Ok(out);
            }
        }
        let named = !(tags.is_empty() && digests.is_empty());
        match using.first() {
            Some(Use::Running(c)) => {
                return Err(conflict(&id, true, &format!("image is being used by running container {c}")));
            }
            _ if !force && by_tag.is_none() && named && !single_reference(&tags, &digests) => {
                return Err(conflict(&id, false, "image is referenced in multiple repositories"));
            }
            Some(Use::Stopped(c)) if !force => {
                return Err(conflict(&id, false, &format!("image is being used by stopped container {c}")));
            }
            _ => {}
        }
        let s = tx.read_all()?;
        for t in s.tags_of(&id) {
            tx.remove_tag(t)?;
            out.push(Removed::Untagged(t.to_string()));
        }
        for d in s.digests_of(&id) {
            tx.remove_digest(d)?;
            out.push(Removed::Untagged(d.to_string()));
        }
        delete_image(tx, &s, &id)?;
        out.push(Removed::Deleted(id.clone()));
        Ok(out)
    })
}

/// Deletes an image record. Its holders (stopped containers, with force)
/// get explicit references to what they need first, so the garbage
/// collector keeps their layers (older holders referenced the image only).
fn delete_image(tx: &Tx<'_>, s: &Snapshot, id: &Digest) -> Result<()> {
    if let Some(img) = s.image(id) {
        for (holder, rs) in s.refs.iter().filter(|(_, rs)| rs.contains(&Resource::Image(id.clone()))) {
            let mut all: Vec<Resource> = rs.iter().cloned().chain(holds(img)).collect();
            all.sort();
            all.dedup();
            tx.set_refs(holder, &all)?;
        }
    }
    tx.remove_image(id)
}

/// Removes dangling images (no tag; with `all`, every image) that no
/// container uses. Returns their IDs. One transaction, as [`remove`].
pub fn prune(store: &Store, all: bool, users: Users<'_>) -> Result<Vec<Digest>> {
    prune_where(store, all, users, &|_| true)
}

/// [`prune`], of the images `pick` chooses only (the API's `until` and
/// `label` filters).
pub fn prune_where(
    store: &Store,
    all: bool,
    users: Users<'_>,
    pick: &dyn Fn(&crate::store::meta::ImageRecord) -> bool,
) -> Result<Vec<Digest>> {
    store.meta.write(|tx| {
        let s = tx.read_all()?;
        let doomed: Vec<Digest> = s
            .images
            .iter()
            .filter(|i| (all || s.tags_of(&i.id).is_empty()) && users_of(&s, &i.id, users).is_empty() && pick(i))
            .map(|i| i.id.clone())
            .collect();
        for id in &doomed {
            for t in s.tags_of(id) {
                tx.remove_tag(t)?;
            }
            for d in s.digests_of(id) {
                tx.remove_digest(d)?;
            }
            delete_image(tx, &s, id)?;
        }
        Ok(doomed)
    })
}

/// Forgets the references of holders that are gone (`users` says None):
/// a container whose creator was killed before it recorded the container.
/// Returns how many.
pub fn release_stale(store: &Store, users: Users<'_>) -> Result<usize> {
    store.meta.write(|tx| {
        let s = tx.read_all()?;
        let mut n = 0;
        for (holder, _) in s.refs.iter().filter(|(h, _)| users(h).is_none()) {
            tx.remove_refs(holder)?;
            n += 1;
        }
        Ok(n)
    })
}
