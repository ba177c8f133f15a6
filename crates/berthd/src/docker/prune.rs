//! The prunes (`POST /{containers,images,networks,volumes,build}/prune`)
//! and `GET /system/df`, on the engine's prunes and the sizes it keeps.
//!
//! Filters as dockerd takes them: `until` (a time, or a duration back
//! from now), `label` (`KEY` or `KEY=VALUE`) and `label!`; images also
//! `dangling`, volumes `all` (docker ≥ 1.42 prunes anonymous volumes
//! only, unless `all=true`). What a filter keeps is chosen before the
//! prune and handed to the engine, which still decides what is unused.

use std::collections::{BTreeMap, BTreeSet};

use berth_engine::prune::dir_size;
use berth_engine::store::Status;
use chrono::{DateTime, Utc};
use hyper::StatusCode;
use serde_json::{Value, json};

use super::containers::filters;
use super::errors::ApiError;
use super::{ApiResult, Call, blocking};

/// A prune's filters, parsed.
#[derive(Debug, Default)]
struct Filters {
    until: Option<DateTime<Utc>>,
    /// (key, value) pairs that must all match.
    label: Vec<(String, Option<String>)>,
    /// ... and must all not.
    not_label: Vec<(String, Option<String>)>,
    /// Other keys the route takes (`dangling`, `all`), by value.
    rest: BTreeMap<String, String>,
}

impl Filters {
    /// The request's filters; a key neither common nor in `extra` is
    /// dockerd's 400.
    fn of(c: &Call, extra: &[&str]) -> Result<Filters, ApiError> {
        let mut f = Filters::default();
        for (k, v) in filters(&c.query)? {
            let label = || match v.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (v.clone(), None),
            };
            match k.as_str() {
                "until" => {
                    let t = berth_engine::logread::parse_time(&v, Utc::now())
                        .map_err(|e| ApiError::bad(format!("invalid filter 'until={v}': {e}")))?;
                    f.until = Some(t);
                }
                "label" => f.label.push(label()),
                "label!" => f.not_label.push(label()),
                k if extra.contains(&k) => {
                    f.rest.insert(k.to_owned(), v.clone());
                }
                k => return Err(ApiError::bad(format!("invalid filter '{k}'"))),
            }
        }
        Ok(f)
    }

    /// Whether something made at `created` (RFC 3339) with `labels`
    /// passes.
    fn pass(&self, created: Option<&str>, labels: &BTreeMap<String, String>) -> bool {
        let has = |(k, v): &(String, Option<String>)| match v {
            Some(v) => labels.get(k) == Some(v),
            None => labels.contains_key(k),
        };
        let early = match (self.until, created.and_then(|t| DateTime::parse_from_rfc3339(t).ok())) {
            (Some(until), Some(t)) => t < until,
            (Some(_), None) => false,
            (None, _) => true,
        };
        early && self.label.iter().all(has) && !self.not_label.iter().any(has)
    }

    /// A boolean filter value (`dangling=false`, `all=1`).
    fn flag(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.rest.get(key).map(|v| v.to_ascii_lowercase()) {
            None => Ok(None),
            Some(v) if v == "true" || v == "1" => Ok(Some(true)),
            Some(v) if v == "false" || v == "0" => Ok(Some(false)),
            Some(v) => Err(ApiError::bad(format!("invalid filter '{key}={v}'"))),
        }
    }
}

/// `POST /containers/prune`.
pub async fn containers(c: Call) -> ApiResult {
    let f = Filters::of(&c, &[])?;
    let engine = c.api.engine.clone();
    let pruned = blocking(move || {
        let picked: BTreeSet<String> = engine
            .current_containers()?
            .into_iter()
            .filter(|r| f.pass(Some(r.created.as_str()), &r.labels))
            .map(|r| r.id)
            .collect();
        Ok(engine.prune_containers_where(&|r| picked.contains(&r.id))?)
    })
    .await?;
    Ok(super::json(StatusCode::OK, &json!({ "ContainersDeleted": pruned.removed, "SpaceReclaimed": pruned.bytes })))
}

/// `POST /images/prune`: dangling images, or with `dangling=false` every
/// image no container uses.
pub async fn images(c: Call) -> ApiResult {
    let f = Filters::of(&c, &["dangling"])?;
    let all = f.flag("dangling")? == Some(false);
    let api = c.api.clone();
    let v = blocking(move || {
        let details = api.images().details()?;
        let picked: BTreeMap<_, _> = details
            .iter()
            .filter(|d| {
                let labels = d.config.config().as_ref().and_then(|c| c.labels().clone()).unwrap_or_default();
                f.pass(d.record.created.as_deref(), &labels.into_iter().collect())
            })
            .map(|d| (d.record.id.clone(), d.tags.clone()))
            .collect();
        let removed = api.engine.prune_images_where(all, &|r| picked.contains_key(&r.id))?;
        let gc = api.engine.collect_garbage()?;
        let mut deleted = Vec::new();
        for id in &removed {
            for t in picked.get(id).into_iter().flatten() {
                deleted.push(json!({ "Untagged": berth_engine::images::familiar(t) }));
            }
            deleted.push(json!({ "Deleted": id.to_string() }));
        }
        Ok(json!({ "ImagesDeleted": deleted, "SpaceReclaimed": gc.bytes }))
    })
    .await?;
    Ok(super::json(StatusCode::OK, &v))
}

/// `POST /volumes/prune`: volumes no container mounts; from API 1.42
/// anonymous ones only unless the `all` filter says otherwise.
pub async fn volumes(c: Call) -> ApiResult {
    let f = Filters::of(&c, &["all"])?;
    let all = f.flag("all")?.unwrap_or(c.version < super::version::ApiVersion(1, 42));
    let engine = c.api.engine.clone();
    let pruned = blocking(move || {
        Ok(engine.prune_volumes_where(&|v| (all || v.anonymous) && f.pass(Some(v.created_at.as_str()), &v.labels))?)
    })
    .await?;
    Ok(super::json(StatusCode::OK, &json!({ "VolumesDeleted": pruned.removed, "SpaceReclaimed": pruned.bytes })))
}

/// `GET /system/df`: images, containers and volumes with their sizes and
/// users, as the docker CLI sums them.
pub async fn df(c: Call) -> ApiResult {
    let api = c.api.clone();
    let v = blocking(move || {
        let engine = &api.engine;
        let containers = engine.current_containers()?;
        let containers: Vec<_> = containers.into_iter().filter(|r| r.namespace.is_empty()).collect();
        let mut users: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &containers {
            *users.entry(r.image_id.as_str()).or_default() += 1;
        }
        let details = api.images().details()?;
        let layers_size: u64 = details.iter().map(|d| d.record.size).sum();
        let images: Vec<Value> = details
            .iter()
            .map(|d| {
                let id = d.record.id.to_string();
                let created = d.record.created.as_deref().and_then(|t| DateTime::parse_from_rfc3339(t).ok());
                json!({
                    "Id": id, "ParentId": "", "Created": created.map_or(0, |t| t.timestamp()),
                    "RepoTags": d.tags.iter().map(|t| berth_engine::images::familiar(t)).collect::<Vec<_>>(),
                    "RepoDigests": d.digests, "Size": d.record.size, "SharedSize": 0,
                    "VirtualSize": d.record.size, "Labels": {},
                    "Containers": users.get(id.as_str()).copied().unwrap_or(0),
                })
            })
            .collect();
        let ctrs: Vec<Value> = containers
            .iter()
            .map(|r| {
                let state = serde_json::to_value(r.status).unwrap_or(Value::Null);
                json!({
                    "Id": r.id, "Names": [format!("/{}", r.name)], "Image": r.image, "ImageID": r.image_id,
                    "Command": r.config.args.join(" "), "Created": DateTime::parse_from_rfc3339(&r.created).map_or(0, |t| t.timestamp()),
                    "State": state, "Status": r.status_text(), "SizeRw": engine.container_size(&r.id),
                    "SizeRootFs": 0, "Labels": r.labels, "Mounts": [],
                    "Running": matches!(r.status, Status::Running | Status::Paused | Status::Restarting),
                })
            })
            .collect();
        let mut vols = Vec::new();
        for v in engine.volumes().list().map_err(berth_engine::Error::from)? {
            let refs = engine.volume_users(&v.name)?.len();
            vols.push(json!({
                "Name": v.name, "Driver": v.driver, "Mountpoint": v.mountpoint, "CreatedAt": v.created_at,
                "Labels": v.labels, "Scope": v.scope, "Options": {},
                "UsageData": { "Size": dir_size(&v.mountpoint), "RefCount": refs },
            }));
        }
        Ok(json!({
            "LayersSize": layers_size, "Images": images, "Containers": ctrs, "Volumes": vols, "BuildCache": [],
        }))
    })
    .await?;
    Ok(super::json(StatusCode::OK, &v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_and_labels_pick_as_dockerd_does() {
        let f = Filters {
            until: DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z").ok().map(|t| t.with_timezone(&Utc)),
            label: vec![("team".into(), Some("a".into()))],
            not_label: vec![("keep".into(), None)],
            rest: BTreeMap::new(),
        };
        let labels = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert!(f.pass(Some("2023-06-01T00:00:00Z"), &labels(&[("team", "a")])));
        assert!(!f.pass(Some("2024-06-01T00:00:00Z"), &labels(&[("team", "a")])), "too new");
        assert!(!f.pass(Some("2023-06-01T00:00:00Z"), &labels(&[("team", "b")])), "other label");
        assert!(!f.pass(Some("2023-06-01T00:00:00Z"), &labels(&[("team", "a"), ("keep", "")])), "label!");
        assert!(!f.pass(None, &labels(&[("team", "a")])), "no time: not before until");
    }
}
