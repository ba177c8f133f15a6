//! Calling CNI plugins as the CNI spec (1.0) says: the plugin binary found
//! in CNI_PATH, the command and the container in environment variables,
//! the network configuration on stdin, a result or an error as JSON on
//! stdout. A conflist runs its plugins in order for ADD, each given the
//! previous one's result, and in reverse for DEL, given the cached result.
//!
//! Written here rather than taken from a crate: the protocol is a few
//! environment variables and two JSON documents, and the Rust CNI crates
//! are plugin-side libraries, not runtimes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::NetworkError;

/// Where to find plugins, and the container a call is about.
pub struct Invocation<'a> {
    pub plugin_dirs: &'a [PathBuf],
    pub container_id: &'a str,
    pub netns: &'a Path,
    pub ifname: &'a str,
    /// The conflist's runtime-provided values, e.g. `portMappings`.
    pub runtime_config: &'a Map<String, Value>,
    /// CNI_ARGS (`K=V;K=V`), e.g. the kubelet's K8S_POD_NAME; none for
    /// the CLI's networks.
    pub args: &'a [(String, String)],
}

/// A CNI result (spec 1.0), as far as berth reads it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CniResult {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Value>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub dns: Value,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct IpConfig {
    /// CIDR notation: "10.77.0.2/24".
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A plugin's error document.
#[derive(Debug, Deserialize)]
struct PluginError {
    #[serde(default)]
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

/// ADD through every plugin of `conflist`; returns the last result. A
/// failed ADD is not undone here: as libcni leaves it to its runtime, the
/// caller runs [`del`] over the whole list (the failed plugin may have
/// done part of its work too).
pub fn add(conflist: &Value, inv: &Invocation<'_>) -> Result<CniResult, NetworkError> {
    let mut prev: Option<Value> = None;
    for plugin in plugins_of(conflist)? {
        let conf = plugin_conf(conflist, plugin, inv, prev.as_ref())?;
        let out = exec(&conf, "ADD", inv)?;
        prev = Some(
            serde_json::from_slice(&out)
                .map_err(|e| NetworkError::BadResult { plugin: plugin_type(plugin).to_owned(), msg: e.to_string() })?,
        );
    }
    let result = prev.unwrap_or(Value::Null);
    serde_json::from_value(result).map_err(|e| NetworkError::BadResult { plugin: "(last)".into(), msg: e.to_string() })
}

/// DEL through every plugin of `conflist`, last first. Every plugin is
/// called even if one fails (the first error is returned): what can be
/// undone is undone.
pub fn del(conflist: &Value, inv: &Invocation<'_>, cached: Option<&CniResult>) -> Result<(), NetworkError> {
    let prev = cached.map(|r| serde_json::to_value(r).unwrap_or(Value::Null));
    let mut first_err = None;
    for plugin in plugins_of(conflist)?.iter().rev() {
        let conf = plugin_conf(conflist, plugin, inv, prev.as_ref())?;
        if let Err(e) = exec(&conf, "DEL", inv) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

fn plugins_of(conflist: &Value) -> Result<&Vec<Value>, NetworkError> {
    conflist["plugins"]
        .as_array()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| NetworkError::BadConfig("a conflist needs a non-empty \"plugins\" array".into()))
}

fn plugin_type(plugin: &Value) -> &str {
    plugin["type"].as_str().unwrap_or("")
}

/// The single-plugin configuration a plugin reads on stdin: the list's
/// name and version, the plugin's own keys, the previous result, and the
/// runtime values for the capabilities the plugin declares.
fn plugin_conf(
    conflist: &Value,
    plugin: &Value,
    inv: &Invocation<'_>,
    prev: Option<&Value>,
) -> Result<Value, NetworkError> {
    let mut conf =
        plugin.as_object().cloned().ok_or_else(|| NetworkError::BadConfig("a plugin must be an object".into()))?;
    conf.insert("cniVersion".into(), conflist["cniVersion"].clone());
    conf.insert("name".into(), conflist["name"].clone());
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    let mut runtime = Map::new();
    if let Some(caps) = plugin["capabilities"].as_object() {
        for (cap, on) in caps {
            if on.as_bool() == Some(true)
                && let Some(v) = inv.runtime_config.get(cap)
            {
                runtime.insert(cap.clone(), v.clone());
            }
        }
    }
    if !runtime.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    Ok(Value::Object(conf))
}

/// Runs one plugin with `command`; returns its stdout.
fn exec(conf: &Value, command: &str, inv: &Invocation<'_>) -> Result<Vec<u8>, NetworkError> {
    let kind = plugin_type(conf).to_owned();
    let binary = find_plugin(&kind, inv.plugin_dirs)?;
    let path = std::env::join_paths(inv.plugin_dirs).unwrap_or_default();
    let mut cmd = Command::new(&binary);
    dies_with_caller(&mut cmd);
    let mut child = cmd
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_PATH", path)
        .env("CNI_ARGS", cni_args(inv.args))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetworkError::Exec { plugin: kind.clone(), source: e })?;
    let input = serde_json::to_vec(conf).unwrap_or_default();
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&input);
    }
    let out = child.wait_with_output().map_err(|e| NetworkError::Exec { plugin: kind.clone(), source: e })?;
    if out.status.success() {
        tracing::debug!(plugin = %kind, command, "CNI plugin done");
        return Ok(out.stdout);
    }
    let (code, msg) = match serde_json::from_slice::<PluginError>(&out.stdout) {
        Ok(e) if !e.msg.is_empty() => {
            (e.code, if e.details.is_empty() { e.msg } else { format!("{}: {}", e.msg, e.details) })
        }
        _ => (0, failure_text(&out)),
    };
    Err(NetworkError::Plugin { plugin: kind, command: command.into(), code, msg })
}

/// CNI_ARGS as libcni joins them: `K=V` pairs separated by `;`.
fn cni_args(args: &[(String, String)]) -> String {
    args.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(";")
}

/// What a plugin that printed no CNI error said: its stderr, or how it
/// ended when it said nothing (a plugin killed by a signal).
fn failure_text(out: &std::process::Output) -> String {
    use std::os::unix::process::ExitStatusExt;
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    match (err.is_empty(), out.status.signal()) {
        (true, Some(sig)) => format!("killed by signal {sig}"),
        (true, None) => format!("exited with {} and no message", out.status.code().unwrap_or(-1)),
        (false, _) => err,
    }
}

/// Makes the plugin die (SIGKILL) if this process dies first. A plugin
/// left running by a killed `berth` would finish its ADD after the
/// `rm -f` that follows has run DEL, and leave its lease and DNAT rules
/// for good; killed with us, it leaves at most part of its work, which
/// that DEL undoes. (The death signal follows the thread that spawns the
/// plugin: it waits for the plugin, so it lives as long.)
fn dies_with_caller(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe calls (prctl, getppid); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            // Dead already, before the signal was armed.
            if rustix::process::getppid() != Some(parent) {
                return Err(rustix::io::Errno::SRCH.into());
            }
            Ok(())
        });
    }
}

fn find_plugin(kind: &str, dirs: &[PathBuf]) -> Result<PathBuf, NetworkError> {
    if kind.is_empty() || kind.contains('/') {
        return Err(NetworkError::BadConfig(format!("plugin type {kind:?} is not a plugin name")));
    }
    dirs.iter()
        .map(|d| d.join(kind))
        .find(|p| p.is_file())
        .ok_or_else(|| NetworkError::NoPlugin { plugin: kind.into(), dirs: dirs.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_plugin_gets_the_list_name_its_keys_the_previous_result_and_only_its_capabilities() {
        let list = json!({ "cniVersion": "1.0.0", "name": "net1", "plugins": [
            { "type": "bridge", "bridge": "b0" },
            { "type": "portmap", "capabilities": { "portMappings": true, "bandwidth": false } }
        ]});
        let mut rc = Map::new();
        rc.insert("portMappings".into(), json!([{ "hostPort": 8080, "containerPort": 80, "protocol": "tcp" }]));
        rc.insert("bandwidth".into(), json!({}));
        let inv = Invocation {
            plugin_dirs: &[],
            container_id: "c1",
            netns: Path::new("/x"),
            ifname: "eth0",
            runtime_config: &rc,
            args: &[],
        };
        let prev = json!({ "cniVersion": "1.0.0", "ips": [] });
        let conf = plugin_conf(&list, &list["plugins"][1], &inv, Some(&prev)).unwrap();
        assert_eq!(conf["name"], "net1");
        assert_eq!(conf["cniVersion"], "1.0.0");
        assert_eq!(conf["prevResult"], prev);
        assert_eq!(conf["runtimeConfig"], json!({ "portMappings": rc["portMappings"] }));
        let first = plugin_conf(&list, &list["plugins"][0], &inv, None).unwrap();
        assert_eq!(first["bridge"], "b0");
        assert!(first.get("prevResult").is_none() && first.get("runtimeConfig").is_none());
    }

    #[test]
    fn results_parse_as_the_spec_writes_them() {
        let r: CniResult = serde_json::from_value(json!({
            "cniVersion": "1.0.0",
            "interfaces": [{ "name": "b0", "mac": "aa:bb:cc:dd:ee:ff" }, { "name": "eth0", "sandbox": "/run/netns/x" }],
            "ips": [{ "interface": 1, "address": "10.77.0.2/24", "gateway": "10.77.0.1" }],
            "routes": [{ "dst": "0.0.0.0/0" }],
            "dns": {}
        }))
        .unwrap();
        assert_eq!(r.ips[0].address, "10.77.0.2/24");
        assert_eq!(r.ips[0].gateway.as_deref(), Some("10.77.0.1"));
        assert_eq!(r.interfaces[1].sandbox, "/run/netns/x");
    }

    #[test]
    fn plugin_names_cannot_be_paths() {
        assert!(matches!(
            find_plugin("../../bin/sh", &[PathBuf::from("/usr/lib/cni")]),
            Err(NetworkError::BadConfig(_))
        ));
        assert!(matches!(find_plugin("nope", &[PathBuf::from("/nonexistent")]), Err(NetworkError::NoPlugin { .. })));
    }
}
