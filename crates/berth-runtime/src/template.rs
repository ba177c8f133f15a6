//! The default config.json that `spec` writes.
//!
//! Tools parse `runc spec` output and people diff against it, so this keeps
//! runc's fields, order and formatting (tab indentation, no trailing
//! newline): a busybox `sh` on a pty, the usual mounts, masked and read-only
//! paths, three capabilities and no inheritable ones (CVE-2022-29162),
//! no_new_privileges, and a devices cgroup that denies everything by default.

use serde_json::{Value, json};

/// The runtime-spec version berth writes and implements.
pub const OCI_VERSION: &str = "1.2.0";

/// The default spec. `rootless` adapts it as `runc spec --rootless` does: a
/// user namespace mapping the caller to root, no network namespace, /sys
/// bound from the host, no uid=/gid= mount options and no cgroup resources.
pub fn default_spec(rootless: bool, cgroup2: bool, uid: u32, gid: u32) -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let mut spec = json!({
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": true,
            "user": { "uid": 0, "gid": 0 },
            "args": ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm"
            ],
            "cwd": "/",
            "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "berth",
        "mounts": mounts(rootless),
    });
    let mut namespaces = vec!["pid", "network", "ipc", "uts", "mount"];
    if cgroup2 {
        namespaces.push("cgroup");
    }
    if rootless {
        namespaces.retain(|n| *n != "network");
        namespaces.push("user");
    }
    let namespaces: Vec<Value> = namespaces.iter().map(|t| json!({ "type": t })).collect();
    let mut linux = serde_json::Map::new();
    if rootless {
        linux.insert("uidMappings".into(), json!([{ "containerID": 0, "hostID": uid, "size": 1 }]));
        linux.insert("gidMappings".into(), json!([{ "containerID": 0, "hostID": gid, "size": 1 }]));
    } else {
        linux.insert("resources".into(), json!({ "devices": [{ "allow": false, "access": "rwm" }] }));
    }
    linux.insert("namespaces".into(), Value::Array(namespaces));
    linux.insert(
        "maskedPaths".into(),
        json!([
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi",
            "/sys/devices/virtual/tpm"
        ]),
    );
    linux.insert(
        "readonlyPaths".into(),
        json!(["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]),
    );
    spec["linux"] = Value::Object(linux);
    spec
}

fn mounts(rootless: bool) -> Value {
    let sys = if rootless {
        json!({ "destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"] })
    } else {
        json!({ "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] })
    };
    let mut devpts = vec!["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"];
    if !rootless {
        devpts.push("gid=5");
    }
    json!([
        { "destination": "/proc", "type": "proc", "source": "proc" },
        { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
        { "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": devpts },
        { "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
        { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] },
        sys,
        { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
    ])
}

/// Formats a spec as runc does: tab-indented, no trailing newline.
pub fn to_runc_json(spec: &Value) -> String {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    serde::Serialize::serialize(spec, &mut ser).expect("serializing a serde_json::Value to a Vec cannot fail");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Spec;

    #[test]
    fn default_spec_parses_and_validates() {
        let text = to_runc_json(&default_spec(false, false, 0, 0));
        let spec: Spec = serde_json::from_str(&text).unwrap();
        crate::config::validate(std::path::Path::new("config.json"), &spec).unwrap();
        assert_eq!(spec.hostname().as_deref(), Some("berth"));
        let caps = spec.process().as_ref().unwrap().capabilities().as_ref().unwrap();
        assert!(caps.inheritable().is_none(), "no inheritable capabilities (CVE-2022-29162)");
    }

    #[test]
    fn layout_matches_runc_byte_for_byte_in_shape() {
        let text = to_runc_json(&default_spec(false, false, 0, 0));
        assert!(text.starts_with("{\n\t\"ociVersion\": \"1.2.0\",\n\t\"process\": {\n\t\t\"terminal\": true,"));
        assert!(text.ends_with("\n}"), "no trailing newline, like runc");
        let order: Vec<&str> = ["\"ociVersion\"", "\"process\"", "\"root\"", "\"hostname\"", "\"mounts\"", "\"linux\""]
            .into_iter()
            .collect();
        let pos: Vec<usize> = order.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "top-level keys in runc's order");
    }

    #[test]
    fn rootless_spec_maps_the_caller_and_drops_the_network_namespace() {
        let v = default_spec(true, false, 1000, 1001);
        let spec: Spec = serde_json::from_value(v.clone()).unwrap();
        crate::config::validate(std::path::Path::new("config.json"), &spec).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(linux.uid_mappings().as_ref().unwrap()[0].host_id(), 1000);
        assert_eq!(linux.gid_mappings().as_ref().unwrap()[0].host_id(), 1001);
        let types: Vec<String> =
            linux.namespaces().as_ref().unwrap().iter().map(|n| format!("{:?}", n.typ())).collect();
        assert!(!types.iter().any(|t| t == "Network"));
        assert!(types.iter().any(|t| t == "User"));
        assert!(linux.resources().is_none());
        assert!(!to_runc_json(&v).contains("gid=5"));
    }
}
