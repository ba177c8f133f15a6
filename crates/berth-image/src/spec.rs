//! Image config → the pieces of an OCI runtime spec the engine needs, with
//! docker's rules: an Entrypoint given at run time drops the image's Cmd;
//! a missing PATH gets docker's default; WorkingDir defaults to `/`.

use std::collections::BTreeMap;

use oci_spec::image::ImageConfiguration;

/// docker's PATH for images that set none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a container's process and bundle get from its image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimePieces {
    /// Entrypoint followed by Cmd.
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    /// `user[:group]` as the image says (names are resolved in the rootfs).
    pub user: Option<String>,
    /// `80/tcp`, …
    pub exposed_ports: Vec<String>,
    /// Paths the image declares as volumes.
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
}

/// Run-time overrides (`docker run --entrypoint … IMAGE CMD…`, `-e`, `-w`, `-u`).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub cwd: Option<String>,
    pub user: Option<String>,
}

/// Combines the image config with run-time overrides.
pub fn runtime_pieces(config: &ImageConfiguration, o: &Overrides) -> RuntimePieces {
    let c = config.config().clone().unwrap_or_default();
    let entrypoint = o.entrypoint.clone().unwrap_or_else(|| c.entrypoint().clone().unwrap_or_default());
    let cmd = match (&o.cmd, &o.entrypoint) {
        (Some(cmd), _) => cmd.clone(),
        // docker: a new entrypoint resets the image's Cmd.
        (None, Some(_)) => Vec::new(),
        (None, None) => c.cmd().clone().unwrap_or_default(),
    };
    let mut env: Vec<String> = c.env().clone().unwrap_or_default();
    for e in &o.env {
        let key = e.split('=').next().unwrap_or(e);
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    let cwd =
        o.cwd.clone().or_else(|| c.working_dir().clone().filter(|w| !w.is_empty())).unwrap_or_else(|| "/".to_string());
    RuntimePieces {
        args: entrypoint.into_iter().chain(cmd).collect(),
        env,
        cwd,
        user: o.user.clone().or_else(|| c.user().clone().filter(|u| !u.is_empty())),
        exposed_ports: c.exposed_ports().clone().unwrap_or_default(),
        volumes: c.volumes().clone().unwrap_or_default(),
        labels: c.labels().clone().unwrap_or_default().into_iter().collect(),
        stop_signal: c.stop_signal().clone(),
    }
}

/// Resolves `user[:group]` to numeric ids with the rootfs's /etc/passwd and
/// /etc/group contents (docker's rules: a user name gives its primary
/// group; numbers are taken as they are). None if a name is unknown.
pub fn resolve_user(user: &str, passwd: &str, group: &str) -> Option<(u32, u32)> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entry = |file: &str, name: &str| -> Option<Vec<String>> {
        file.lines()
            .map(|l| l.split(':').map(String::from).collect::<Vec<_>>())
            .find(|f| f.first().map(String::as_str) == Some(name))
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(n) => (n, passwd_by_uid(passwd, n).unwrap_or(0)),
        Err(_) => {
            let f = entry(passwd, u)?;
            (f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)
        }
    };
    let gid = match g {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => entry(group, g)?.get(2)?.parse().ok()?,
        },
    };
    Some((uid, gid))
}

fn passwd_by_uid(passwd: &str, uid: u32) -> Option<u32> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.get(2)?.parse::<u32>().ok()? == uid).then(|| f.get(3)?.parse().ok())?
    })
}

/// Applies the pieces to a runtime spec's process and annotations.
pub fn apply(p: &RuntimePieces, spec: &mut oci_spec::runtime::Spec) {
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(p.args.clone()));
    process.set_env(Some(p.env.clone()));
    process.set_cwd(p.cwd.clone().into());
    spec.set_process(Some(process));
    if let Some(sig) = &p.stop_signal {
        let mut ann = spec.annotations().clone().unwrap_or_default();
        // Where containerd records an image's StopSignal for its own kill.
        ann.insert("io.containerd.image.config.stop-signal".into(), sig.clone());
        spec.set_annotations(Some(ann));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(c: serde_json::Value) -> ImageConfiguration {
        serde_json::from_value(serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": c,
            "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .unwrap()
    }

    #[test]
    fn entrypoint_cmd_env_cwd_and_the_rest() {
        let c = config(serde_json::json!({
            "Entrypoint": ["/bin/app"], "Cmd": ["--serve"], "Env": ["A=1", "PATH=/bin"],
            "WorkingDir": "/srv", "User": "app:app", "ExposedPorts": {"80/tcp": {}},
            "Volumes": {"/data": {}}, "Labels": {"l": "v"}, "StopSignal": "SIGQUIT"
        }));
        let p = runtime_pieces(&c, &Overrides::default());
        assert_eq!(p.args, ["/bin/app", "--serve"]);
        assert_eq!(p.env, ["A=1", "PATH=/bin"]);
        assert_eq!(p.cwd, "/srv");
        assert_eq!(p.user.as_deref(), Some("app:app"));
        assert_eq!(p.exposed_ports, ["80/tcp"]);
        assert_eq!(p.volumes, ["/data"]);
        assert_eq!(p.labels.get("l").map(String::as_str), Some("v"));
        assert_eq!(p.stop_signal.as_deref(), Some("SIGQUIT"));

        let p = runtime_pieces(&c, &Overrides { entrypoint: Some(vec!["sh".into()]), ..Default::default() });
        assert_eq!(p.args, ["sh"], "a new entrypoint drops the image's Cmd");
        let p = runtime_pieces(
            &c,
            &Overrides { cmd: Some(vec!["x".into()]), env: vec!["A=2".into()], ..Default::default() },
        );
        assert_eq!(p.args, ["/bin/app", "x"]);
        assert_eq!(p.env, ["PATH=/bin", "A=2"]);
    }

    #[test]
    fn defaults_for_a_bare_config() {
        let p = runtime_pieces(&config(serde_json::json!({})), &Overrides::default());
        assert_eq!(p.env, [DEFAULT_PATH]);
        assert_eq!(p.cwd, "/");
        assert!(p.args.is_empty() && p.user.is_none());
        let mut spec = oci_spec::runtime::Spec::default();
        apply(&p, &mut spec);
        assert_eq!(spec.process().as_ref().unwrap().cwd().to_str(), Some("/"));
    }

    #[test]
    fn users_resolve_in_the_rootfs_files() {
        let passwd = "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
        let group = "root:x:0:\napp:x:1001:\nstaff:x:50:\n";
        assert_eq!(resolve_user("app", passwd, group), Some((1000, 1001)));
        assert_eq!(resolve_user("app:staff", passwd, group), Some((1000, 50)));
        assert_eq!(resolve_user("1000", passwd, group), Some((1000, 1001)));
        assert_eq!(resolve_user("42:43", passwd, group), Some((42, 43)));
        assert_eq!(resolve_user("nobody", passwd, group), None);
    }
}
