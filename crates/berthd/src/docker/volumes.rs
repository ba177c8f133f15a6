//! The volume routes (`docker volume create/ls/inspect/rm`) on the
//! engine's volumes, the ones `berth volume` and `-v NAME:/path` use.

use std::collections::BTreeMap;

use berth_engine::volume::{Volume, VolumeError};
use hyper::StatusCode;
use serde_json::{Value, json};

use super::errors::ApiError;
use super::{ApiResult, Call, blocking, empty};

/// A volume as dockerd shows it.
fn shape(v: &Volume) -> Value {
    json!({
        "Name": v.name,
        "Driver": v.driver,
        "Mountpoint": v.mountpoint,
        "CreatedAt": v.created_at,
        "Labels": v.labels,
        "Scope": v.scope,
        "Options": {},
    })
}

/// dockerd's codes and words for the engine's volume errors.
fn volume_error(name: &str, e: VolumeError) -> ApiError {
    match e {
        VolumeError::NotFound(_) => ApiError::not_found(format!("get {name}: no such volume")),
        VolumeError::InUse(_, by) => ApiError::conflict(format!("remove {name}: volume is in use - [{by}]")),
        VolumeError::BadName(_) => ApiError::bad(e.to_string()),
        e => ApiError::internal(e.to_string()),
    }
}

/// `POST /volumes/create`: `Name` (none: an anonymous one, as dockerd
/// names them), `Labels`; the local driver only, without options.
pub async fn create(c: Call) -> ApiResult {
    let (body, c) = c.json().await?;
    let driver = body["Driver"].as_str().unwrap_or_default();
    if !driver.is_empty() && driver != "local" {
        return Err(ApiError::bad(format!("volume driver {driver:?} is not supported by berth (only \"local\")")));
    }
    if body["DriverOpts"].as_object().is_some_and(|o| !o.is_empty()) {
        return Err(ApiError::bad("DriverOpts are not supported by berth's local volumes"));
    }
    let labels: BTreeMap<String, String> = body["Labels"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
        .unwrap_or_default();
    let given = body["Name"].as_str().filter(|n| !n.is_empty()).map(str::to_owned);
    let anonymous = given.is_none();
    let name = given.unwrap_or_else(berth_engine::store::new_id);
    let engine = c.api.engine.clone();
    let v =
        blocking(move || engine.create_volume(&name, labels, anonymous).map_err(|e| volume_error(&name, e))).await?;
    Ok(super::json(StatusCode::CREATED, &shape(&v)))
}

/// `GET /volumes`, with the `name`, `label` and `dangling` filters.
pub async fn list(c: Call) -> ApiResult {
    let filters: BTreeMap<String, Value> = match c.query.get("filters") {
        Some(f) => serde_json::from_str(f).map_err(|e| ApiError::bad(format!("invalid filters: {e}")))?,
        None => BTreeMap::new(),
    };
    let values = |key: &str| -> Vec<String> {
        match filters.get(key) {
            Some(Value::Object(m)) => m.keys().cloned().collect(),
            Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
            _ => Vec::new(),
        }
    };
    let (names, labels, dangling) = (values("name"), values("label"), values("dangling"));
    let engine = c.api.engine.clone();
    let rows = blocking(move || {
        let all = engine.volumes().list().map_err(|e| volume_error("", e))?;
        let mut out = Vec::new();
        for v in all {
            if !names.is_empty() && !names.iter().any(|n| v.name.contains(n.as_str())) {
                continue;
            }
            let has = |l: &String| match l.split_once('=') {
                Some((k, val)) => v.labels.get(k).is_some_and(|x| x == val),
                None => v.labels.contains_key(l),
            };
            if !labels.iter().all(has) {
                continue;
            }
            if let Some(d) = dangling.first() {
                let unused = engine.volume_users(&v.name)?.is_empty();
                if unused != matches!(d.as_str(), "true" | "1") {
                    continue;
                }
            }
            out.push(shape(&v));
        }
        Ok(out)
    })
    .await?;
    Ok(super::json(StatusCode::OK, &json!({ "Volumes": rows, "Warnings": Value::Null })))
}

/// `GET /volumes/NAME`.
pub async fn inspect(c: Call, name: &str) -> ApiResult {
    let engine = c.api.engine.clone();
    let name = name.to_owned();
    let v = blocking(move || engine.volumes().get(&name).map_err(|e| volume_error(&name, e))).await?;
    Ok(super::json(StatusCode::OK, &shape(&v)))
}

/// `DELETE /volumes/NAME`: refused (409) while a container mounts it,
/// as dockerd does, `force` or not.
pub async fn remove(c: Call, name: &str) -> ApiResult {
    let engine = c.api.engine.clone();
    let name = name.to_owned();
    blocking(move || {
        let users = engine.volume_users(&name)?;
        engine.remove_volume(&name, &users).map_err(|e| volume_error(&name, e))
    })
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}
