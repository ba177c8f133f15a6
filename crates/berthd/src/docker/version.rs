//! Version negotiation as dockerd does it: `/_ping` tells the newest API
//! version served (`API-Version`), clients then prefix their routes with
//! `/vX.Y`; a version outside [`MIN`]..=[`MAX`] gets dockerd's 400.

use serde_json::{Value, json};

use super::errors::ApiError;

/// An API version, `1.41` as `ApiVersion(1, 41)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u32, pub u32);

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// The oldest version served: what Debian's docker CLI 20.10 speaks.
pub const MIN: ApiVersion = ApiVersion(1, 41);
/// The newest: what docker CLI 28.2 asks for.
pub const MAX: ApiVersion = ApiVersion(1, 50);

/// The route and version of a request path: `/v1.41/containers/json` is
/// (`/containers/json`, 1.41); a path without a version is served at
/// [`MAX`], as dockerd does.
pub fn split(path: &str) -> Result<(&str, ApiVersion), ApiError> {
    let Some(rest) = path.strip_prefix("/v") else { return Ok((path, MAX)) };
    let (v, route) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Some(version) = parse(v) else { return Ok((path, MAX)) };
    if version < MIN {
        return Err(ApiError::bad(format!(
            "client version {v} is too old. Minimum supported API version is {MIN}, please upgrade your client \
             to a newer version"
        )));
    }
    if version > MAX {
        return Err(ApiError::bad(format!("client version {v} is too new. Maximum supported API version is {MAX}")));
    }
    Ok((route, version))
}

fn parse(v: &str) -> Option<ApiVersion> {
    let (major, minor) = v.split_once('.')?;
    Some(ApiVersion(major.parse().ok()?, minor.parse().ok()?))
}

/// What dockerd's `/_ping` sets besides its body (names lower-case,
/// as HTTP/1.1 allows and hyper wants).
pub fn ping_headers() -> [(&'static str, String); 6] {
    [
        ("api-version", MAX.to_string()),
        ("ostype", "linux".into()),
        // The classic builder: `/build` is not served yet.
        ("builder-version", "1".into()),
        ("docker-experimental", "false".into()),
        ("cache-control", "no-cache, no-store, must-revalidate".into()),
        ("pragma", "no-cache".into()),
    ]
}

/// `/version`.
pub fn version_json(kernel: &str) -> Value {
    let version = env!("CARGO_PKG_VERSION");
    let arch = docker_arch();
    let details = json!({
        "ApiVersion": MAX.to_string(),
        "MinAPIVersion": MIN.to_string(),
        "GitCommit": "berth",
        "GoVersion": "none (Rust)",
        "Os": "linux",
        "Arch": arch,
        "KernelVersion": kernel,
        "BuildTime": "",
        "Experimental": "false",
    });
    json!({
        "Platform": { "Name": "berth" },
        "Components": [{ "Name": "Engine", "Version": version, "Details": details }],
        "Version": version,
        "ApiVersion": MAX.to_string(),
        "MinAPIVersion": MIN.to_string(),
        "GitCommit": "berth",
        "GoVersion": "none (Rust)",
        "Os": "linux",
        "Arch": arch,
        "KernelVersion": kernel,
        "BuildTime": "",
    })
}

/// Go's name for this machine's architecture, as docker reports it.
pub fn docker_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_split_and_checked_as_dockerd_does() {
        assert_eq!(split("/v1.41/containers/json").unwrap(), ("/containers/json", ApiVersion(1, 41)));
        assert_eq!(split("/v1.50/_ping").unwrap(), ("/_ping", MAX));
        assert_eq!(split("/containers/json").unwrap(), ("/containers/json", MAX));
        assert_eq!(split("/version").unwrap(), ("/version", MAX));
        let old = split("/v1.12/info").unwrap_err();
        assert_eq!(old.status.as_u16(), 400);
        assert_eq!(
            old.message,
            "client version 1.12 is too old. Minimum supported API version is 1.41, please upgrade your client to a \
             newer version"
        );
        let new = split("/v1.99/info").unwrap_err();
        assert_eq!(new.message, "client version 1.99 is too new. Maximum supported API version is 1.50");
        assert!(ApiVersion(1, 9) < ApiVersion(1, 41));
    }
}
