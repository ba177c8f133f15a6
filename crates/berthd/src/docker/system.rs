//! `/_ping`, `/version` and `/info`.

use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::json;

use super::version::{docker_arch, ping_headers, version_json};
use super::{ApiResult, Call, Resp, blocking, full};

/// GET (body "OK") or HEAD (no body) `/_ping`, with the version headers.
pub fn ping(head: bool) -> Resp {
    let mut r = Response::new(full(if head { "" } else { "OK" }));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    for (k, v) in ping_headers() {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(HeaderName::from_static(k), v);
        }
    }
    r
}

fn kernel() -> String {
    rustix::system::uname().release().to_string_lossy().into_owned()
}

pub async fn version(_c: Call) -> ApiResult {
    Ok(super::json(StatusCode::OK, &version_json(&kernel())))
}

pub async fn info(c: Call) -> ApiResult {
    let engine = c.api.engine.clone();
    let cgroup_parent = c.api.daemon.cgroup_parent.clone();
    let i = blocking(move || Ok(engine.info()?)).await?;
    let runtime = i.runtime_name.clone();
    // The engine's own, and berthd.toml's other handlers by name (what
    // `docker run --runtime NAME` takes).
    let mut runtimes = serde_json::Map::new();
    runtimes.insert(runtime.clone(), json!({ "path": i.runtime_path }));
    let daemon = &c.api.daemon;
    for h in daemon.handlers.iter().filter(|h| h.name != daemon.config.default_runtime) {
        runtimes.insert(h.name.clone(), json!({ "path": h.path }));
    }
    let v = json!({
        "ID": "berth",
        "Containers": i.containers,
        "ContainersRunning": i.running,
        "ContainersPaused": i.paused,
        "ContainersStopped": i.stopped,
        "Images": i.images,
        "Driver": "overlay2",
        "DriverStatus": [["Backing Filesystem", "berth snapshots"]],
        "Plugins": {
            "Volume": ["local"],
            "Network": ["bridge", "host", "none"],
            "Authorization": null,
            "Log": ["json-file", "local", "none"],
        },
        "MemoryLimit": true,
        "SwapLimit": true,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "CPUShares": false,
        "CPUSet": false,
        "PidsLimit": true,
        "IPv4Forwarding": true,
        "Debug": false,
        "NFd": 0,
        "OomKillDisable": false,
        "NGoroutines": 0,
        "SystemTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": i.cgroup_version,
    });
    let more = json!({
        "NEventsListener": 0,
        "KernelVersion": i.kernel_version,
        "OperatingSystem": i.operating_system,
        "OSVersion": "",
        "OSType": "linux",
        "Architecture": i.architecture,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": { "IndexConfigs": {}, "InsecureRegistryCIDRs": [], "Mirrors": [] },
        "NCPU": i.cpus,
        "MemTotal": i.mem_total,
        "GenericResources": null,
        "DockerRootDir": i.root,
        "HttpProxy": "",
        "HttpsProxy": "",
        "NoProxy": "",
        "Name": i.name,
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "Runtimes": runtimes,
        "DefaultRuntime": runtime,
        "Swarm": { "NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": "", "RemoteManagers": null },
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "InitBinary": "",
        "ContainerdCommit": { "ID": "" },
        "RuncCommit": { "ID": "" },
        "InitCommit": { "ID": "" },
        "SecurityOptions": ["name=seccomp,profile=builtin"],
        "CgroupParent": cgroup_parent,
        "Warnings": [],
        "Arch": docker_arch(),
    });
    let mut v = v;
    if let (Some(v), Some(more)) = (v.as_object_mut(), more.as_object()) {
        v.extend(more.clone());
    }
    Ok(super::json(StatusCode::OK, &v))
}
