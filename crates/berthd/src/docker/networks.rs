//! The network routes (`docker network create/ls/inspect/rm/connect/
//! disconnect/prune`) on the engine's CNI bridge networks, the ones `berth
//! network` and `--network NAME` use. A network's ID is its name (berth's
//! networks have no other).

use std::collections::BTreeMap;

use berth_engine::engine::Engine;
use berth_engine::network::{DEFAULT_NETWORK, Network, NetworkError};
use hyper::StatusCode;
use serde_json::{Value, json};

use super::errors::ApiError;
use super::{ApiResult, Call, blocking, empty};

/// A network as dockerd shows it, with its containers' endpoints.
fn shape(engine: &Engine, n: &Network) -> Value {
    let store = engine.containers().ok();
    let containers: serde_json::Map<String, Value> = engine
        .networks()
        .endpoints(&n.name)
        .unwrap_or_default()
        .into_iter()
        .map(|id| {
            let rec = store.as_ref().and_then(|s| s.get(&id).ok());
            let name = rec.as_ref().map_or_else(|| id.clone(), |r| r.name.clone());
            let prefix = n.subnet.split_once('/').map_or("24", |(_, l)| l);
            let addr = rec
                .as_ref()
                .and_then(|r| engine.entry_on(r, &n.name))
                .map(|e| format!("{}/{prefix}", e.address))
                .unwrap_or_default();
            let v = json!({ "Name": name, "EndpointID": id, "MacAddress": "", "IPv4Address": addr, "IPv6Address": "" });
            (id, v)
        })
        .collect();
    json!({
        "Name": n.name,
        "Id": n.name,
        "Driver": "bridge",
        "Scope": "local",
        "EnableIPv6": false,
        "Internal": false,
        "Attachable": false,
        "IPAM": { "Driver": "default", "Config": [{ "Subnet": n.subnet, "Gateway": n.gateway.to_string() }] },
        "Containers": containers,
        "Options": { "com.docker.network.bridge.name": n.bridge },
        "Labels": n.labels,
        "Created": "0001-01-01T00:00:00Z",
        "ConfigOnly": false,
        "Ingress": false,
    })
}

/// dockerd's codes for the engine's network errors.
fn network_error(e: NetworkError) -> ApiError {
    match e {
        NetworkError::NotFound(_) => ApiError::not_found(e.to_string()),
        NetworkError::Exists(_) => ApiError::conflict(e.to_string()),
        NetworkError::InUse(_) | NetworkError::Default => ApiError::new(StatusCode::FORBIDDEN, e.to_string()),
        NetworkError::BadName(_) | NetworkError::BadSubnet(_) | NetworkError::Overlap { .. } => {
            ApiError::bad(e.to_string())
        }
        e => ApiError::internal(e.to_string()),
    }
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
        .unwrap_or_default()
}

/// `POST /networks/create`: `Name`, the bridge driver, at most one IPAM
/// subnet.
pub async fn create(c: Call) -> ApiResult {
    let (body, c) = c.json().await?;
    let name = body["Name"].as_str().filter(|n| !n.is_empty()).ok_or_else(|| ApiError::bad("Name is required"))?;
    let driver = body["Driver"].as_str().unwrap_or_default();
    if !driver.is_empty() && driver != "bridge" {
        return Err(ApiError::bad(format!("network driver {driver:?} is not supported by berth (only \"bridge\")")));
    }
    let configs = body["IPAM"]["Config"].as_array().cloned().unwrap_or_default();
    if configs.len() > 1 {
        return Err(ApiError::bad("berth's networks take one IPAM subnet"));
    }
    let subnet = configs.first().and_then(|c| c["Subnet"].as_str()).map(str::to_owned);
    let engine = c.api.engine.clone();
    let (name, labels) = (name.to_owned(), labels(&body["Labels"]));
    let net = blocking(move || engine.create_network(&name, subnet.as_deref(), labels).map_err(network_error)).await?;
    Ok(super::json(StatusCode::CREATED, &json!({ "Id": net.name, "Warning": "" })))
}

/// `GET /networks`, the default network first, with the `name`, `id`,
/// `label`, `driver` and `type` filters.
pub async fn list(c: Call) -> ApiResult {
    let filters = Filters::parse(c.query.get("filters"))?;
    let engine = c.api.engine.clone();
    let rows = blocking(move || {
        let nets = engine.networks();
        let mut all = nets.list().map_err(network_error)?;
        if !all.iter().any(|n| n.name == DEFAULT_NETWORK) {
            all.insert(0, nets.ensure_default().map_err(network_error)?);
        }
        Ok(all.iter().filter(|n| filters.matches(n)).map(|n| shape(&engine, n)).collect::<Vec<_>>())
    })
    .await?;
    Ok(super::json(StatusCode::OK, &Value::Array(rows)))
}

/// `GET /networks/NAME`.
pub async fn inspect(c: Call, name: &str) -> ApiResult {
    let engine = c.api.engine.clone();
    let name = name.to_owned();
    let v = blocking(move || {
        let nets = engine.networks();
        let net = match nets.get(&name) {
            Err(NetworkError::NotFound(_)) if name == DEFAULT_NETWORK => nets.ensure_default(),
            other => other,
        };
        Ok(shape(&engine, &net.map_err(network_error)?))
    })
    .await?;
    Ok(super::json(StatusCode::OK, &v))
}

/// `DELETE /networks/NAME`: refused (403, as dockerd) while containers
/// are attached.
pub async fn remove(c: Call, name: &str) -> ApiResult {
    let engine = c.api.engine.clone();
    let name = name.to_owned();
    blocking(move || {
        if !engine.networks().endpoints(&name).map_err(network_error)?.is_empty() {
            return Err(network_error(NetworkError::InUse(name.clone())));
        }
        engine.remove_network(&name).map_err(network_error)
    })
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /networks/NAME/connect`: `Container`, `EndpointConfig.Aliases`.
/// A fixed address (`IPAMConfig`) is refused: host-local picks them.
pub async fn connect(c: Call, name: &str) -> ApiResult {
    let (body, c) = c.json().await?;
    let container =
        body["Container"].as_str().filter(|s| !s.is_empty()).ok_or_else(|| ApiError::bad("Container is required"))?;
    let ep = &body["EndpointConfig"];
    if ["IPv4Address", "IPv6Address"].iter().any(|k| ep["IPAMConfig"][k].as_str().is_some_and(|a| !a.is_empty())) {
        return Err(ApiError::bad(
            "EndpointConfig.IPAMConfig: berth's networks assign addresses themselves (host-local)",
        ));
    }
    let aliases: Vec<String> =
        ep["Aliases"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_owned)).collect();
    let (engine, name, container) = (c.api.engine.clone(), name.to_owned(), container.to_owned());
    blocking(move || Ok(engine.connect(&name, &container, &aliases)?)).await?;
    Ok(empty(StatusCode::OK))
}

/// `POST /networks/NAME/disconnect`: `Container`, `Force`.
pub async fn disconnect(c: Call, name: &str) -> ApiResult {
    let (body, c) = c.json().await?;
    let container =
        body["Container"].as_str().filter(|s| !s.is_empty()).ok_or_else(|| ApiError::bad("Container is required"))?;
    let force = body["Force"].as_bool().unwrap_or(false);
    let (engine, name, container) = (c.api.engine.clone(), name.to_owned(), container.to_owned());
    blocking(move || Ok(engine.disconnect(&name, &container, force)?)).await?;
    Ok(empty(StatusCode::OK))
}

/// `POST /networks/prune`: every network but the default one that no
/// container uses (and that the `label` filters select).
pub async fn prune(c: Call) -> ApiResult {
    let filters = Filters::parse(c.query.get("filters"))?;
    let engine = c.api.engine.clone();
    let deleted = blocking(move || {
        let mut deleted = Vec::new();
        for n in engine.networks().list().map_err(network_error)? {
            if n.name == DEFAULT_NETWORK || !filters.matches(&n) {
                continue;
            }
            if engine.networks().endpoints(&n.name).map_err(network_error)?.is_empty()
                && engine.remove_network(&n.name).is_ok()
            {
                deleted.push(n.name);
            }
        }
        Ok(deleted)
    })
    .await?;
    Ok(super::json(StatusCode::OK, &json!({ "NetworksDeleted": deleted })))
}

/// The `filters` of network list and prune.
#[derive(Default)]
struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    fn parse(text: Option<&str>) -> Result<Filters, ApiError> {
        let Some(text) = text else { return Ok(Filters::default()) };
        let v: Value = serde_json::from_str(text).map_err(|e| ApiError::bad(format!("invalid filters: {e}")))?;
        let mut out = BTreeMap::new();
        for (k, vals) in v.as_object().into_iter().flatten() {
            let vals: Vec<String> = match vals {
                Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect(),
                Value::Object(o) => {
                    o.iter().filter(|(_, on)| on.as_bool() == Some(true)).map(|(x, _)| x.clone()).collect()
                }
                _ => return Err(ApiError::bad(format!("invalid filters: {k}"))),
            };
            if !["name", "id", "label", "driver", "type", "scope", "dangling", "until"].contains(&k.as_str()) {
                return Err(ApiError::bad(format!("invalid filter '{k}'")));
            }
            out.insert(k.clone(), vals);
        }
        Ok(Filters(out))
    }

    fn matches(&self, n: &Network) -> bool {
        self.0.iter().all(|(k, vals)| {
            vals.iter().any(|v| match k.as_str() {
                "name" => n.name.contains(v.as_str()),
                "id" => n.name.starts_with(v.as_str()),
                "label" => match v.split_once('=') {
                    Some((lk, lv)) => n.labels.get(lk).is_some_and(|x| x == lv),
                    None => n.labels.contains_key(v),
                },
                "driver" => v == "bridge",
                "type" => v == if n.name == DEFAULT_NETWORK { "builtin" } else { "custom" },
                "scope" => v == "local",
                _ => true,
            })
        })
    }
}
