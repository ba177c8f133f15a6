use super::*;
use serde_json::{Value, json};

fn rootfs() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("etc")).unwrap();
    std::fs::write(d.path().join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\napp:x:100:101::/home/app:/bin/sh\n")
        .unwrap();
    std::fs::write(d.path().join("etc/group"), "root:x:0:\napp:x:101:\n").unwrap();
    d
}

fn image() -> ImageDefaults {
    ImageDefaults {
        entrypoint: vec!["/entry".into()],
        cmd: vec!["serve".into(), "--port=80".into()],
        env: vec!["PATH=/opt/bin:/bin".into(), "MODE=image".into()],
        working_dir: "/srv".into(),
        user: "app".into(),
    }
}

fn spec_json(flags: &RunFlags, paths: &Paths) -> Value {
    serde_json::to_value(build("0123456789abcdef0123", &image(), flags, paths).unwrap()).unwrap()
}

#[test]
fn entrypoint_and_cmd_follow_dockers_rules() {
    let img = image();
    let f = |entrypoint: Option<&str>, args: &[&str]| RunFlags {
        entrypoint: entrypoint.map(str::to_owned),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    assert_eq!(command(&img, &f(None, &[])).unwrap(), ["/entry", "serve", "--port=80"]);
    assert_eq!(command(&img, &f(None, &["x"])).unwrap(), ["/entry", "x"]);
    assert_eq!(command(&img, &f(Some("/bin/sh"), &[])).unwrap(), ["/bin/sh"], "--entrypoint drops the image's Cmd");
    assert_eq!(command(&img, &f(Some(""), &["echo", "hi"])).unwrap(), ["echo", "hi"]);
    assert!(matches!(command(&ImageDefaults::default(), &f(None, &[])), Err(SpecError::NoCommand)));
}

#[test]
fn defaults_are_dockers() {
    let r = rootfs();
    let paths = Paths { rootfs: r.path().into(), cgroups_path: "/berth/x".into(), ..Default::default() };
    let s = spec_json(&RunFlags::default(), &paths);
    let p = &s["process"];
    assert_eq!(p["user"]["uid"], 100);
    assert_eq!(p["user"]["gid"], 101);
    assert_eq!(p["cwd"], "/srv");
    assert_eq!(p["noNewPrivileges"], false);
    assert_eq!(s["hostname"], "0123456789ab", "the short id");
    let env: Vec<&str> = p["env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(env, ["HOSTNAME=0123456789ab", "PATH=/opt/bin:/bin", "MODE=image", "HOME=/home/app"]);
    let caps: Vec<&str> =
        p["capabilities"]["bounding"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(caps.len(), 14);
    assert!(caps.contains(&"CAP_NET_BIND_SERVICE") && !caps.contains(&"CAP_SYS_ADMIN"));
    assert!(p["capabilities"].get("inheritable").is_none(), "no inheritable capabilities");
    assert!(s["linux"]["seccomp"]["syscalls"].as_array().is_some_and(|a| !a.is_empty()), "the default profile");
    assert_eq!(s["linux"]["maskedPaths"].as_array().unwrap().len(), 11);
    let shm = s["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/dev/shm").unwrap();
    assert!(shm["options"].as_array().unwrap().contains(&json!("size=67108864")));
    assert!(
        s["linux"]["namespaces"].as_array().unwrap().iter().any(|n| n["type"] == "network" && n.get("path").is_none()),
        "a network namespace of its own, made by the runtime"
    );
}

#[test]
fn flags_override_and_add() {
    let r = rootfs();
    let paths = Paths {
        rootfs: r.path().into(),
        netns: NsMode::Join("/run/berth/netns/x".into()),
        hosts: Some("/run/berth/c/hosts".into()),
        mounts: vec![
            ResolvedMount::Bind { source: "/data".into(), target: "/data".into(), readonly: true, propagation: None },
            ResolvedMount::Tmpfs { target: "/dev/shm".into(), options: vec!["size=1m".into()] },
        ],
        ..Default::default()
    };
    let flags = RunFlags {
        env: vec!["MODE=flag".into(), "NEW=1".into()],
        user: Some("0:0".into()),
        workdir: Some("/tmp".into()),
        hostname: Some("web".into()),
        tty: true,
        read_only: true,
        cap_drop: vec!["ALL".into()],
        cap_add: vec!["net_admin".into()],
        security_opt: vec!["no-new-privileges".into()],
        memory: Some(32 << 20),
        cpus: Some((50_000, 100_000)),
        pids_limit: Some(20),
        labels: vec![("tier".into(), "web".into())],
        ..Default::default()
    };
    let s = spec_json(&flags, &paths);
    let p = &s["process"];
    assert_eq!((p["user"]["uid"].as_u64(), p["cwd"].as_str()), (Some(0), Some("/tmp")));
    let env: Vec<&str> = p["env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(env, ["HOSTNAME=web", "PATH=/opt/bin:/bin", "TERM=xterm", "MODE=flag", "NEW=1", "HOME=/root"]);
    assert_eq!(p["capabilities"]["bounding"], json!(["CAP_NET_ADMIN"]));
    assert_eq!((p["terminal"].as_bool(), p["noNewPrivileges"].as_bool()), (Some(true), Some(true)));
    assert_eq!(s["root"]["readonly"], true);
    assert_eq!(s["linux"]["resources"]["memory"]["limit"], 32 << 20);
    assert_eq!(s["linux"]["resources"]["cpu"]["quota"], 50_000);
    assert_eq!(s["linux"]["resources"]["pids"]["limit"], 20);
    assert_eq!(s["annotations"]["tier"], "web");
    let ns = s["linux"]["namespaces"].as_array().unwrap();
    assert!(ns.contains(&json!({ "type": "network", "path": "/run/berth/netns/x" })));
    let mounts = s["mounts"].as_array().unwrap();
    let at = |d: &str| mounts.iter().filter(|m| m["destination"] == d).collect::<Vec<_>>();
    assert_eq!(at("/dev/shm").len(), 1, "the user's /dev/shm replaces the default");
    assert_eq!(at("/dev/shm")[0]["options"], json!(["nosuid", "nodev", "noexec", "size=1m"]));
    assert_eq!(at("/data")[0]["options"], json!(["rbind", "ro", "rprivate"]));
    assert_eq!(at("/etc/hosts")[0]["source"], "/run/berth/c/hosts");
}

#[test]
fn privileged_gets_everything_and_bad_flags_are_named() {
    let r = rootfs();
    let paths = Paths { rootfs: r.path().into(), ..Default::default() };
    let s = spec_json(&RunFlags { privileged: true, ..Default::default() }, &paths);
    assert!(s["process"]["capabilities"]["bounding"].as_array().unwrap().len() > 35);
    assert!(s["linux"].get("seccomp").is_none() && s["linux"].get("maskedPaths").is_none());
    assert_eq!(s["linux"]["resources"]["devices"], json!([{ "allow": true, "access": "rwm" }]));
    let unconfined =
        spec_json(&RunFlags { security_opt: vec!["seccomp=unconfined".into()], ..Default::default() }, &paths);
    assert!(unconfined["linux"].get("seccomp").is_none());

    let err = |flags: RunFlags| build("id", &image(), &flags, &paths).unwrap_err().to_string();
    assert!(err(RunFlags { cap_add: vec!["FLY".into()], ..Default::default() }).contains("\"FLY\""));
    assert!(err(RunFlags { user: Some("ghost".into()), ..Default::default() }).contains("ghost"));
    assert!(
        err(RunFlags { security_opt: vec!["apparmor=custom".into()], ..Default::default() })
            .contains("apparmor=custom")
    );
    assert!(err(RunFlags { workdir: Some("rel".into()), ..Default::default() }).contains("absolute"));
}

#[test]
fn init_runs_in_front_of_the_command() {
    let r = rootfs();
    let paths = Paths { rootfs: r.path().into(), init: Some("/usr/bin/tini-static".into()), ..Default::default() };
    let s = spec_json(&RunFlags { args: vec!["sleep".into(), "9".into()], ..Default::default() }, &paths);
    assert_eq!(s["process"]["args"], json!(["/sbin/docker-init", "--", "/entry", "sleep", "9"]));
    let m = s["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == INIT_PATH).expect("init mount");
    assert_eq!(m["source"], "/usr/bin/tini-static");
    assert!(m["options"].as_array().unwrap().contains(&json!("ro")), "{m}");
}

#[test]
fn a_pod_member_joins_shared_namespaces_and_the_hosts_uts_keeps_the_hosts_name() {
    let r = rootfs();
    let ns = |s: &Value| -> Vec<(String, Option<String>)> {
        s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["type"].as_str().unwrap().to_owned(), n["path"].as_str().map(str::to_owned)))
            .collect()
    };
    let paths = Paths {
        rootfs: r.path().into(),
        netns: NsMode::Join("/run/x/netns".into()),
        namespaces: Namespaces {
            pid: NsMode::Join("/proc/42/ns/pid".into()),
            ipc: NsMode::Join("/proc/42/ns/ipc".into()),
            uts: NsMode::Join("/proc/42/ns/uts".into()),
        },
        ..Default::default()
    };
    let s = spec_json(&RunFlags { hostname: Some("pod".into()), ..Default::default() }, &paths);
    let got = ns(&s);
    for (typ, path) in [("pid", "/proc/42/ns/pid"), ("ipc", "/proc/42/ns/ipc"), ("uts", "/proc/42/ns/uts")] {
        assert!(got.contains(&(typ.to_owned(), Some(path.to_owned()))), "{typ} joins {path}: {got:?}");
    }
    assert!(got.contains(&("network".to_owned(), Some("/run/x/netns".to_owned()))));
    assert!(got.contains(&("mount".to_owned(), None)), "its own mount namespace");
    assert_eq!(s["hostname"], "pod", "the pod's name, set again in the shared UTS namespace");

    let host = Paths {
        rootfs: r.path().into(),
        namespaces: Namespaces { pid: NsMode::Host, ipc: NsMode::Host, uts: NsMode::Host },
        netns: NsMode::Host,
        ..Default::default()
    };
    let s = spec_json(&RunFlags::default(), &host);
    let kinds: Vec<String> = ns(&s).into_iter().map(|(t, _)| t).collect();
    assert!(!kinds.iter().any(|k| k == "pid" || k == "ipc" || k == "uts" || k == "network"), "{kinds:?}");
    assert!(s.get("hostname").is_none(), "the host's UTS namespace keeps the host's name: {}", s["hostname"]);
}
