//! The network routes (`docker network create/ls/inspect/rm`) on the
//! engine's CNI bridge networks, the ones `berth network` and `--network
//! NAME` use. A network's ID is its name (berth's networks have no other).

use berth_engine::network::{DEFAULT_NETWORK, Network, NetworkError, Networks};
use hyper::StatusCode;
use serde_json::{Value, json};

use super::errors::ApiError;
use super::{ApiResult, Call, blocking, empty};

/// A network as dockerd shows it.
fn shape(nets: &Networks, n: &Network) -> Value {
    let containers: serde_json::Map<String, Value> =
        nets.endpoints(&n.name).unwrap_or_default().into_iter().map(|id| (id.clone(), json!({ "Name": id }))).collect();
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
        "Labels": {},
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
    let nets = c.api.engine.networks();
    let name = name.to_owned();
    let net = blocking(move || nets.create(&name, subnet.as_deref()).map_err(network_error)).await?;
    Ok(super::json(StatusCode::CREATED, &json!({ "Id": net.name, "Warning": "" })))
}

/// `GET /networks`, the default network first.
pub async fn list(c: Call) -> ApiResult {
    let nets = c.api.engine.networks();
    let rows = blocking(move || {
        let mut all = nets.list().map_err(network_error)?;
        if !all.iter().any(|n| n.name == DEFAULT_NETWORK) {
            all.insert(0, nets.ensure_default().map_err(network_error)?);
        }
        Ok(all.iter().map(|n| shape(&nets, n)).collect::<Vec<_>>())
    })
    .await?;
    Ok(super::json(StatusCode::OK, &Value::Array(rows)))
}

/// `GET /networks/NAME`.
pub async fn inspect(c: Call, name: &str) -> ApiResult {
    let nets = c.api.engine.networks();
    let name = name.to_owned();
    let v = blocking(move || Ok(shape(&nets, &nets.get(&name).map_err(network_error)?))).await?;
    Ok(super::json(StatusCode::OK, &v))
}

/// `DELETE /networks/NAME`: refused (403, as dockerd) while containers
/// are attached.
pub async fn remove(c: Call, name: &str) -> ApiResult {
    let nets = c.api.engine.networks();
    let name = name.to_owned();
    blocking(move || {
        if !nets.endpoints(&name).map_err(network_error)?.is_empty() {
            return Err(network_error(NetworkError::InUse(name.clone())));
        }
        nets.remove(&name).map_err(network_error)
    })
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}
