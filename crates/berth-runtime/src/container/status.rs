//! The runtime-spec state of a container, in the exact shape runc prints.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The runtime-spec statuses, plus runc's `paused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// The state object of the runtime spec; field names and order as runc's
/// `state` prints them (containerd and podman parse this).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciState {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<HashMap<String, String>>,
}

impl OciState {
    /// As `runc state` prints it: two-space indentation, no trailing newline.
    pub fn to_pretty_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("state always serializes")
    }

    /// Compact, as hooks receive it on stdin.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("state always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_json_has_runc_shape() {
        let s = OciState {
            oci_version: "1.2.0".into(),
            id: "t1".into(),
            pid: 2704,
            status: Status::Created,
            bundle: "/tmp/rs".into(),
            rootfs: "/tmp/rs/rootfs".into(),
            created: "2026-11-23T19:40:55.751764629Z".into(),
            owner: String::new(),
            annotations: None,
        };
        let want = "{\n  \"ociVersion\": \"1.2.0\",\n  \"id\": \"t1\",\n  \"pid\": 2704,\n  \"status\": \"created\",\n  \
                    \"bundle\": \"/tmp/rs\",\n  \"rootfs\": \"/tmp/rs/rootfs\",\n  \
                    \"created\": \"2026-11-23T19:40:55.751764629Z\",\n  \"owner\": \"\"\n}";
        assert_eq!(s.to_pretty_json(), want);
        let with = OciState { annotations: Some([("k".into(), "v".into())].into()), ..s };
        assert!(with.to_json().ends_with(",\"owner\":\"\",\"annotations\":{\"k\":\"v\"}}"));
    }
}
