//! `POST /containers/create`'s body into the engine's RunFlags and
//! CreateOptions: docker's Config and HostConfig fields that the engine
//! supports are taken; the ones it does not are refused by name (never
//! silently dropped).

use std::path::PathBuf;

use berth_engine::engine::CreateOptions;
use berth_engine::logconfig::LogConfig;
use berth_engine::network::PortMapping;
use berth_engine::spec::{RunFlags, flags};
use serde_json::{Map, Value, json};

use super::errors::ApiError;

/// Where Debian's tini and docker.io put a static init (the `berth` CLI
/// looks in the same places).
const INIT_CANDIDATES: &[&str] =
    &["/usr/bin/tini-static", "/usr/libexec/docker/docker-init", "/usr/sbin/docker-init", "/usr/bin/docker-init"];

/// HostConfig fields berth does not apply yet: a request that sets one
/// (to anything but its zero value) is refused, naming it.
const UNSUPPORTED_HOST: &[&str] = &[
    "BlkioDeviceReadBps",
    "BlkioDeviceReadIOps",
    "BlkioDeviceWriteBps",
    "BlkioDeviceWriteIOps",
    "BlkioWeight",
    "BlkioWeightDevice",
    "CgroupParent",
    "CpuCount",
    "CpuPercent",
    "CpuPeriod",
    "CpuQuota",
    "CpuRealtimePeriod",
    "CpuRealtimeRuntime",
    "CpuShares",
    "CpusetCpus",
    "CpusetMems",
    "DeviceCgroupRules",
    "DeviceRequests",
    "Devices",
    "Dns",
    "DnsOptions",
    "DnsSearch",
    "ExtraHosts",
    "GroupAdd",
    "KernelMemory",
    "KernelMemoryTCP",
    "Links",
    "MemoryReservation",
    "MemorySwappiness",
    "OomKillDisable",
    "OomScoreAdj",
    "PidMode",
    "PublishAllPorts",
    "Sysctls",
    "Ulimits",
    "UsernsMode",
    "UTSMode",
    "VolumeDriver",
    "VolumesFrom",
];

/// Config fields refused the same way.
const UNSUPPORTED_CONFIG: &[&str] = &["Healthcheck", "OnBuild", "Shell"];

/// A field's zero value (what clients send for "not set").
fn unset(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// A string list as docker takes one: an array, a single string, or null.
fn strings(v: &Value, field: &str) -> Result<Option<Vec<String>>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(vec![s.clone()])),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str().map(str::to_owned).ok_or_else(|| ApiError::bad(format!("{field}: not a list of strings")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        _ => Err(ApiError::bad(format!("{field}: not a list of strings"))),
    }
}

fn string(v: &Value, field: &str) -> Result<Option<String>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(ApiError::bad(format!("{field}: not a string"))),
    }
}

fn int(v: &Value, field: &str) -> Result<i64, ApiError> {
    match v {
        Value::Null => Ok(0),
        v => v.as_i64().ok_or_else(|| ApiError::bad(format!("{field}: not an integer"))),
    }
}

fn object<'a>(v: &'a Value, field: &str) -> Result<Option<&'a Map<String, Value>>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::Object(o) => Ok(Some(o)),
        _ => Err(ApiError::bad(format!("{field}: not an object"))),
    }
}

/// What a create request asks for.
pub struct CreateRequest {
    pub image: String,
    pub flags: RunFlags,
    pub opts: CreateOptions,
    /// Networks beyond its own (NetworkingConfig's other endpoints), with
    /// their aliases: connected once it is made.
    pub connect: Vec<(String, Vec<String>)>,
}

/// Reads a create request's body; `name` is the `?name=` parameter.
pub fn parse(body: &Value, name: Option<&str>) -> Result<CreateRequest, ApiError> {
    let empty = Map::new();
    let config = object(body, "body")?.unwrap_or(&empty);
    let host = object(config.get("HostConfig").unwrap_or(&Value::Null), "HostConfig")?.unwrap_or(&empty);
    for key in UNSUPPORTED_CONFIG {
        if config.get(*key).is_some_and(|v| !unset(v)) {
            return Err(ApiError::bad(format!("{key} is not supported by berth yet")));
        }
    }
    for key in UNSUPPORTED_HOST {
        // The CLI's "not set" for swappiness is -1.
        let default = |v: &Value| *key == "MemorySwappiness" && v.as_i64() == Some(-1);
        if host.get(*key).is_some_and(|v| !unset(v) && !default(v)) {
            return Err(ApiError::bad(format!("HostConfig.{key} is not supported by berth yet")));
        }
    }
    let get = |k: &str| config.get(k).unwrap_or(&Value::Null);
    let hget = |k: &str| host.get(k).unwrap_or(&Value::Null);
    let image = string(get("Image"), "Image")?.ok_or_else(|| ApiError::bad("Config.Image: an image is required"))?;
    let mut f = RunFlags::default();
    let cmd = strings(get("Cmd"), "Cmd")?.unwrap_or_default();
    match strings(get("Entrypoint"), "Entrypoint")? {
        // docker's [""]: no entrypoint at all (the image's is cleared).
        Some(ep) if ep.first().is_some_and(String::is_empty) && ep.len() == 1 => {
            f.entrypoint = Some(String::new());
            f.args = cmd;
        }
        Some(ep) if !ep.is_empty() => {
            f.entrypoint = Some(ep[0].clone());
            f.args = ep[1..].iter().cloned().chain(cmd).collect();
        }
        _ => f.args = cmd,
    }
    // A bare KEY in the API means "no such variable": dropped.
    f.env = strings(get("Env"), "Env")?.unwrap_or_default().into_iter().filter(|e| e.contains('=')).collect();
    f.workdir = string(get("WorkingDir"), "WorkingDir")?;
    f.user = string(get("User"), "User")?;
    f.hostname = string(get("Hostname"), "Hostname")?;
    f.tty = get("Tty").as_bool().unwrap_or(false);
    if let Some(labels) = object(get("Labels"), "Labels")? {
        f.labels = labels.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect();
    }
    f.read_only = hget("ReadonlyRootfs").as_bool().unwrap_or(false);
    f.privileged = hget("Privileged").as_bool().unwrap_or(false);
    f.cap_add = strings(hget("CapAdd"), "HostConfig.CapAdd")?.unwrap_or_default();
    f.cap_drop = strings(hget("CapDrop"), "HostConfig.CapDrop")?.unwrap_or_default();
    f.security_opt = strings(hget("SecurityOpt"), "HostConfig.SecurityOpt")?.unwrap_or_default();
    f.memory = Some(int(hget("Memory"), "HostConfig.Memory")?).filter(|m| *m > 0);
    f.memory_swap = Some(int(hget("MemorySwap"), "HostConfig.MemorySwap")?).filter(|m| *m != 0);
    f.pids_limit = Some(int(hget("PidsLimit"), "HostConfig.PidsLimit")?).filter(|m| *m > 0);
    f.shm_size = Some(int(hget("ShmSize"), "HostConfig.ShmSize")?).filter(|m| *m > 0);
    let nano = int(hget("NanoCpus"), "HostConfig.NanoCpus")?;
    if nano > 0 {
        f.cpus = flags::parse_cpus(&format!("{}", nano as f64 / 1e9)).map_err(|e| ApiError::bad(e.to_string()))?;
    }
    check_modes(host)?;
    let restart = restart_policy(hget("RestartPolicy"))?;
    let auto_remove = hget("AutoRemove").as_bool().unwrap_or(false);
    if auto_remove && restart.is_some() {
        return Err(ApiError::bad("can't create 'AutoRemove' container with restart policy"));
    }
    let network = match string(hget("NetworkMode"), "HostConfig.NetworkMode")?.as_deref() {
        None | Some("default" | "bridge") => "bridge".to_owned(),
        Some(m) if m.starts_with("container:") => {
            return Err(ApiError::bad(format!(
                "HostConfig.NetworkMode {m:?}: joining another container's network is not supported by berth yet"
            )));
        }
        Some(m) => m.to_owned(),
    };
    let (aliases, connect) = endpoints(body.get("NetworkingConfig").unwrap_or(&Value::Null), &network)?;
    let ports = port_bindings(hget("PortBindings"))?;
    if !ports.is_empty() && matches!(network.as_str(), "none" | "host") {
        return Err(ApiError::bad(format!("conflicting options: port publishing and the {network} network mode")));
    }
    let opts = CreateOptions {
        name: name.map(|n| n.strip_prefix('/').unwrap_or(n).to_owned()),
        network,
        restart,
        ports,
        mounts: mounts(config, host)?,
        stdin: get("OpenStdin").as_bool().unwrap_or(false),
        auto_remove,
        init: if hget("Init").as_bool().unwrap_or(false) { Some(init_binary()?) } else { None },
        log: Some(log_config(hget("LogConfig"))?),
        extensions: [("docker".to_owned(), json!({ "Config": strip_host(config), "HostConfig": host }))].into(),
        aliases,
        ..Default::default()
    };
    Ok(CreateRequest { image, flags: f, opts, connect })
}

/// NetworkingConfig.EndpointsConfig: the aliases on the container's own
/// network (`network`), and the other networks with theirs.
type Endpoints = (Vec<String>, Vec<(String, Vec<String>)>);

fn endpoints(v: &Value, network: &str) -> Result<Endpoints, ApiError> {
    let Some(eps) = object(v, "NetworkingConfig")?.and_then(|n| n.get("EndpointsConfig")) else {
        return Ok(Default::default());
    };
    let (mut own, mut others) = (Vec::new(), Vec::new());
    for (net, ep) in object(eps, "NetworkingConfig.EndpointsConfig")?.into_iter().flatten() {
        if ["IPv4Address", "IPv6Address"]
            .iter()
            .any(|k| ep.pointer(&format!("/IPAMConfig/{k}")).is_some_and(|a| !unset(a)))
        {
            return Err(ApiError::bad(format!(
                "NetworkingConfig.EndpointsConfig.{net}.IPAMConfig: berth's networks assign addresses themselves"
            )));
        }
        let aliases = strings(ep.get("Aliases").unwrap_or(&Value::Null), "Aliases")?.unwrap_or_default();
        let same = net == network || (network == "bridge" && net == "default");
        if same {
            own = aliases;
        } else if !matches!(network, "none" | "host") {
            others.push((net.clone(), aliases));
        }
    }
    Ok((own, others))
}

fn strip_host(config: &Map<String, Value>) -> Value {
    let mut c = config.clone();
    c.remove("HostConfig");
    c.remove("NetworkingConfig");
    Value::Object(c)
}

/// The namespace modes berth has: the container's own ("private", or
/// "" for the default).
fn check_modes(host: &Map<String, Value>) -> Result<(), ApiError> {
    for (key, ok) in [("IpcMode", &["", "private", "shareable"][..]), ("CgroupnsMode", &["", "private", "host"][..])] {
        let v = host.get(key).and_then(Value::as_str).unwrap_or_default();
        if !ok.contains(&v) {
            return Err(ApiError::bad(format!("HostConfig.{key} {v:?} is not supported by berth yet")));
        }
    }
    Ok(())
}

/// HostConfig.Runtime: one of berthd.toml's `[runtimes.NAME]` handlers
/// (`docker run --runtime NAME`), whose binary the container is made and
/// then handled with; `None` for the engine's own. "" and the default
/// handler's name are the engine's, as are "runc" (docker's default, which
/// clients may name) and the engine runtime's file name unless a handler
/// has that name. Else docker's "unknown or invalid runtime name".
pub fn runtime(body: &Value, daemon: &crate::runtime::Daemon, own: &str) -> Result<Option<PathBuf>, ApiError> {
    let name = body.get("HostConfig").and_then(|h| h.get("Runtime")).and_then(Value::as_str).unwrap_or_default();
    let default = daemon.config.default_runtime.as_str();
    match daemon.handlers.iter().find(|h| h.name == name) {
        _ if name.is_empty() || name == default => Ok(None),
        Some(h) => Ok(Some(h.path.clone())),
        None if name == "runc" || name == own => Ok(None),
        None => Err(ApiError::bad(format!("unknown or invalid runtime name: {name}"))),
    }
}

pub(super) fn restart_policy(v: &Value) -> Result<Option<String>, ApiError> {
    let name = v.get("Name").and_then(Value::as_str).unwrap_or_default();
    let max = v.get("MaximumRetryCount").and_then(Value::as_i64).unwrap_or(0);
    match name {
        "" | "no" => Ok(None),
        "always" | "unless-stopped" => Ok(Some(name.to_owned())),
        "on-failure" if max > 0 => Ok(Some(format!("on-failure:{max}"))),
        "on-failure" => Ok(Some(name.to_owned())),
        other => Err(ApiError::bad(format!(
            "invalid restart policy: unknown policy '{other}'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'"
        ))),
    }
}

/// `{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}` as the engine's
/// port mappings (docker's `-p` syntax, parsed by the engine).
fn port_bindings(v: &Value) -> Result<Vec<PortMapping>, ApiError> {
    let Some(map) = object(v, "HostConfig.PortBindings")? else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for (port, bindings) in map {
        for b in bindings.as_array().into_iter().flatten() {
            let ip = b.get("HostIp").and_then(Value::as_str).unwrap_or_default();
            let hp = b.get("HostPort").and_then(Value::as_str).unwrap_or_default();
            let spec = if ip.is_empty() { format!("{hp}:{port}") } else { format!("{ip}:{hp}:{port}") };
            out.push(PortMapping::parse(&spec).map_err(|e| ApiError::bad(e.to_string()))?);
        }
    }
    Ok(out)
}

/// Binds, Mounts, Tmpfs and Config.Volumes, parsed as the `berth` CLI's
/// `-v`, `--mount` and `--tmpfs` are.
fn mounts(config: &Map<String, Value>, host: &Map<String, Value>) -> Result<Vec<flags::UserMount>, ApiError> {
    let bad = |e: berth_engine::spec::SpecError| ApiError::bad(e.to_string());
    let mut out = Vec::new();
    let null = Value::Null;
    for b in strings(host.get("Binds").unwrap_or(&null), "HostConfig.Binds")?.unwrap_or_default() {
        out.push(flags::parse_volume(&b).map_err(bad)?);
    }
    for m in host.get("Mounts").and_then(Value::as_array).into_iter().flatten() {
        let s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or_default();
        let mut spec = format!("type={},target={}", s("Type"), s("Target"));
        if !s("Source").is_empty() {
            spec.push_str(&format!(",source={}", s("Source")));
        }
        if m.get("ReadOnly").and_then(Value::as_bool).unwrap_or(false) {
            spec.push_str(",readonly");
        }
        if let Some(p) = m.pointer("/BindOptions/Propagation").and_then(Value::as_str).filter(|p| !p.is_empty()) {
            spec.push_str(&format!(",bind-propagation={p}"));
        }
        if let Some(n) = m.pointer("/TmpfsOptions/SizeBytes").and_then(Value::as_i64).filter(|n| *n > 0) {
            spec.push_str(&format!(",tmpfs-size={n}"));
        }
        if let Some(n) = m.pointer("/TmpfsOptions/Mode").and_then(Value::as_u64).filter(|n| *n > 0) {
            spec.push_str(&format!(",tmpfs-mode={n:o}"));
        }
        out.push(flags::parse_mount(&spec).map_err(bad)?);
    }
    if let Some(t) = object(host.get("Tmpfs").unwrap_or(&null), "HostConfig.Tmpfs")? {
        for (target, opts) in t {
            let opts = opts.as_str().unwrap_or_default();
            let spec = if opts.is_empty() { target.clone() } else { format!("{target}:{opts}") };
            out.push(flags::parse_tmpfs(&spec).map_err(bad)?);
        }
    }
    // Anonymous volumes the image or the client declares (`-v /data`),
    // unless something else is mounted there.
    if let Some(vols) = object(config.get("Volumes").unwrap_or(&null), "Volumes")? {
        for target in vols.keys() {
            if !out.iter().any(|m| m.target() == target) {
                out.push(flags::parse_volume(target).map_err(bad)?);
            }
        }
    }
    Ok(out)
}

fn log_config(v: &Value) -> Result<LogConfig, ApiError> {
    let driver = v.get("Type").and_then(Value::as_str).filter(|d| !d.is_empty());
    let opts: Vec<String> = v
        .get("Config")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    // The `berth` CLI's default: json-file, 20 MB x 5 files.
    let defaults = LogConfig::defaults("json-file", "20m", 5);
    LogConfig::resolve(driver, &opts, &defaults).map_err(|e| ApiError::bad(e.to_string()))
}

fn init_binary() -> Result<PathBuf, ApiError> {
    INIT_CANDIDATES.iter().map(PathBuf::from).find(|p| p.exists()).ok_or_else(|| {
        ApiError::bad(format!(
            "HostConfig.Init needs a static init (tini): install Debian's tini; looked for {}",
            INIT_CANDIDATES.join(", ")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_docker_cli_body_becomes_flags_and_options() {
        let body = json!({
            "Image": "busybox", "Cmd": ["-c", "echo hi"], "Entrypoint": ["sh"], "Env": ["A=1", "UNSET"],
            "Tty": true, "OpenStdin": true, "Labels": {"k": "v"}, "WorkingDir": "/tmp", "User": "1:2",
            "HostConfig": {
                "Binds": ["/tmp:/h:ro"], "Tmpfs": {"/run": "size=1m"}, "Memory": 67108864, "NanoCpus": 500000000,
                "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}, "NetworkMode": "default",
                "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3}, "CapAdd": ["NET_ADMIN"],
                "LogConfig": {"Type": "", "Config": {}}, "CpuShares": 0, "Dns": [], "ConsoleSize": [24, 80]
            }
        });
        let r = parse(&body, Some("web")).unwrap();
        assert_eq!(r.image, "busybox");
        assert_eq!(
            (r.flags.entrypoint.as_deref(), r.flags.args.as_slice()),
            (Some("sh"), &["-c".to_owned(), "echo hi".to_owned()][..])
        );
        assert_eq!(r.flags.env, ["A=1"]);
        assert_eq!(r.flags.memory, Some(64 << 20));
        assert_eq!(r.flags.cpus, Some((50000, 100000)));
        assert_eq!((r.opts.network.as_str(), r.opts.restart.as_deref()), ("bridge", Some("on-failure:3")));
        assert_eq!((r.opts.ports[0].host_port, r.opts.ports[0].container_port), (8080, 80));
        assert_eq!(r.opts.mounts.len(), 2);
        assert!(r.opts.stdin && r.flags.tty);
        assert_eq!(r.opts.name.as_deref(), Some("web"));
    }

    #[test]
    fn what_berth_cannot_do_is_refused_by_name() {
        let e = parse(&json!({"Image": "x", "HostConfig": {"CpuShares": 512}}), None).err().unwrap();
        assert_eq!(e.message, "HostConfig.CpuShares is not supported by berth yet");
        let e = parse(&json!({"Image": "x", "HostConfig": {"Dns": ["8.8.8.8"]}}), None).err().unwrap();
        assert_eq!(e.message, "HostConfig.Dns is not supported by berth yet");
        let e = parse(&json!({"HostConfig": {}}), None).err().unwrap();
        assert_eq!(e.status.as_u16(), 400);
        let e = parse(
            &json!({"Image": "x", "HostConfig": {"AutoRemove": true, "RestartPolicy": {"Name": "always"}}}),
            None,
        )
        .err()
        .unwrap();
        assert_eq!(e.message, "can't create 'AutoRemove' container with restart policy");
    }
}
