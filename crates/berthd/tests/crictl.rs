//! berthd driven as a user would: crictl v1.36 on its socket, and the
//! daemon's start-up, refusal and shutdown as seen from outside. Each test
//! has its own berthd (root, runroot, socket, config, cgroup parent),
//! stopped and removed when it ends.

use std::process::Command;

use berth_testkit::cri::Berthd;
use nix::sys::signal::Signal;
use serde_json::Value;

fn info(d: &Berthd) -> Value {
    serde_json::from_str(&d.crictl_ok(&["info"])).expect("crictl info prints JSON")
}

fn condition<'a>(info: &'a Value, kind: &str) -> &'a Value {
    info["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or_else(|| panic!("no {kind} condition in {info}"))
}

#[test]
fn crictl_version_names_berth() {
    let d = Berthd::start("");
    let out = d.crictl_ok(&["version"]);
    assert!(out.contains("RuntimeName:  berth"), "{out}");
    assert!(out.contains("RuntimeApiVersion:  v1"), "{out}");
    assert!(out.contains(&format!("RuntimeVersion:  {}", env!("CARGO_PKG_VERSION"))), "{out}");
}

#[test]
fn crictl_info_has_network_ready_only_with_a_cni_config() {
    let d = Berthd::start("");
    let i = info(&d);
    assert_eq!(condition(&i, "RuntimeReady")["status"], true, "{i}");
    let net = condition(&i, "NetworkReady");
    assert_eq!(net["status"], false, "{i}");
    assert_eq!(net["reason"], "NetworkPluginNotReady", "{i}");
    let conf_dir = d.cni_conf_dir();
    assert!(net["message"].as_str().unwrap().contains(&conf_dir.display().to_string()), "{i}");
    // The config and handlers are in the verbose info.
    assert_eq!(i["config"]["cgroupDriver"], "cgroupfs", "{i}");
    assert_eq!(i["config"]["runtimes"][0]["name"], "berth", "{i}");
    let handlers: Vec<&str> =
        i["runtimeHandlers"].as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap_or("")).collect();
    assert_eq!(handlers, ["", "berth"], "{i}");

    // A conflist appears: the next Status sees it, no restart needed.
    std::fs::write(
        conf_dir.join("10-test.conflist"),
        r#"{"cniVersion": "1.0.0", "name": "test", "plugins": [{"type": "loopback"}]}"#,
    )
    .unwrap();
    let i = info(&d);
    assert_eq!(condition(&i, "NetworkReady")["status"], true, "{i}");
}

#[test]
fn crictl_runtime_config_says_cgroupfs() {
    let d = Berthd::start("");
    let out = d.crictl_ok(&["runtime-config"]);
    assert!(out.contains("cgroup driver:   CGROUPFS"), "{out}");
}

#[test]
fn update_runtime_config_keeps_the_pod_cidr_and_refuses_a_bad_one() {
    let d = Berthd::start("");
    d.crictl_ok(&["update-runtime-config", "--pod-cidr", "10.99.0.0/16"]);
    assert_eq!(info(&d)["config"]["podCIDR"], "10.99.0.0/16");
    let state = d.dir.path().join("run/berthd/pod-cidr");
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "10.99.0.0/16");
    let out = d.crictl(&["update-runtime-config", "--pod-cidr", "10.99.0.0/33"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("InvalidArgument") && err.contains("10.99.0.0/33") && err.contains("prefix length must be 0-32"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "10.99.0.0/16");
}

#[test]
fn every_runtime_v1_rpc_is_served_metric_descriptors_included() {
    let d = Berthd::start("");
    let out = d.crictl_ok(&["metricdescs"]);
    assert!(out.contains("container_memory_working_set_bytes"), "{out}");
}

#[test]
fn rpcs_unknown_to_the_bindings_are_unimplemented_and_named() {
    let d = Berthd::start("");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status = rt.block_on(async {
        let channel = berth_cri_api::connect_unix(&d.endpoint()).await.unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        // cri-api v0.33's UpdatePodSandboxResources: newer than the bindings.
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/runtime.v1.RuntimeService/UpdatePodSandboxResources",
        );
        let codec =
            tonic_prost::ProstCodec::<berth_cri_api::v1::VersionRequest, berth_cri_api::v1::VersionResponse>::default();
        grpc.unary(tonic::Request::new(berth_cri_api::v1::VersionRequest::default()), path, codec).await.unwrap_err()
    });
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    assert_eq!(status.message(), "UpdatePodSandboxResources: not yet implemented in berthd");
}

#[test]
fn systemd_cgroup_driver_is_refused_at_start() {
    let f = Berthd::try_start("cgroup_driver = \"systemd\"\n").err().expect("berthd started with the systemd driver");
    assert_eq!(f.status.and_then(|s| s.code()), Some(1), "{f:?}");
    assert!(f.stderr.contains("cgroup_driver = \"systemd\" is not supported"), "{}", f.stderr);
    assert!(f.stderr.contains("set cgroup_driver = \"cgroupfs\""), "{}", f.stderr);
}

#[test]
fn sigterm_and_sigint_stop_serving_and_remove_only_the_socket() {
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let mut d = Berthd::start("");
        d.crictl_ok(&["update-runtime-config", "--pod-cidr", "10.98.0.0/16"]);
        let status = d.stop_with(sig).expect("berthd did not exit");
        assert!(status.success(), "{sig}: {status}: {}", d.stderr());
        assert!(!d.socket().exists(), "{sig}: socket left");
        // State is kept for the next start.
        assert!(d.dir.path().join("run/berthd/pod-cidr").exists(), "{sig}");
        assert!(d.stderr().contains("shutting down; pods and containers keep running"), "{}", d.stderr());
    }
}

/// A client that never hangs up (a kubelet) does not keep berthd from
/// stopping: calls get a grace period, then berthd exits.
#[test]
fn sigterm_stops_berthd_while_a_client_stays_connected() {
    use std::io::Write;
    let mut d = Berthd::start("");
    let mut client = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    // The HTTP/2 preface and an empty SETTINGS frame: a gRPC connection
    // that is open and idle.
    client.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").unwrap();
    d.crictl_ok(&["version"]);
    let status = d.stop_with(Signal::SIGTERM).expect("berthd waited for its client and did not exit");
    assert!(status.success(), "{status}: {}", d.stderr());
    assert!(d.stderr().contains("clients still connected; stopping without them"), "{}", d.stderr());
    drop(client);
}

/// berthd stops on SIGTERM within its grace also while a call is stuck
/// in blocking work (here a pull from a "registry" that takes connections
/// and never answers): dropping the async runtime waited for it.
#[test]
fn sigterm_stops_berthd_while_a_pull_hangs() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let _held = std::thread::spawn(move || silent.incoming().take(8).flatten().collect::<Vec<_>>());
    let mut d = Berthd::start("");
    let mut pull = d.crictl_cmd().args(["pull", &format!("{addr}/silent/image:1")]).spawn().unwrap();
    // The pull is under way once the registry has its connection.
    std::thread::sleep(std::time::Duration::from_millis(800));
    let began = std::time::Instant::now();
    let status = d.stop_with(Signal::SIGTERM);
    let took = began.elapsed();
    let _ = pull.kill();
    let _ = pull.wait();
    let status = status.expect("berthd did not exit within 30 s of SIGTERM");
    assert!(status.success(), "{status}: {}", d.stderr());
    assert!(took < std::time::Duration::from_secs(15), "berthd took {took:?} to stop: {}", d.stderr());
}

/// berthd started by hand on the socket (and state) of `d`, or others.
fn berthd_on(d: &Berthd, listen: &std::path::Path, runroot: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_berthd"))
        .arg("--root")
        .arg(d.dir.path().join("root2"))
        .arg("--runroot")
        .arg(runroot)
        .arg("--listen")
        .arg(listen)
        .arg("--config")
        .arg(d.dir.path().join("berthd.toml"))
        .arg("--runtime")
        .arg(berth_testkit::workspace_bin("berth-runtime"))
        .output()
        .unwrap()
}

#[test]
fn a_live_socket_or_state_dir_is_not_taken_over() {
    let d = Berthd::start("");
    let other_run = d.dir.path().join("run2");
    let out = berthd_on(&d, &d.socket(), &other_run);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another process is listening on it"), "{err}");
    let out = berthd_on(&d, &d.dir.path().join("other.sock"), &d.dir.path().join("run"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another berthd already runs with this state directory"), "{err}");
    assert!(!d.dir.path().join("other.sock").exists());
    // The first one still serves.
    d.crictl_ok(&["version"]);
}

#[test]
fn a_stale_socket_is_replaced_and_a_regular_file_is_kept() {
    let mut d = Berthd::start("");
    let sock = d.socket();
    // SIGKILL leaves the socket file behind: the next start replaces it.
    let status = d.stop_with(Signal::SIGKILL).unwrap();
    assert!(!status.success());
    assert!(sock.exists());
    let mut child = Command::new(env!("CARGO_BIN_EXE_berthd"))
        .arg("--runroot")
        .arg(d.dir.path().join("run"))
        .arg("--listen")
        .arg(&sock)
        .arg("--config")
        .arg(d.dir.path().join("berthd.toml"))
        .arg("--runtime")
        .arg(berth_testkit::workspace_bin("berth-runtime"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let served = (0..500).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        d.crictl(&["version"]).status.success()
    });
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(served, "berthd did not serve on the stale socket's path");
    assert!(!sock.exists());
    // Not a socket: refused, and the file is left alone.
    std::fs::write(&sock, "mine").unwrap();
    let out = berthd_on(&d, &sock, &d.dir.path().join("run3"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists and is not a socket"));
    assert_eq!(std::fs::read_to_string(&sock).unwrap(), "mine");
}

#[test]
fn two_berthds_side_by_side_keep_their_own_state() {
    let a = Berthd::start("");
    let mut b = Berthd::start("sandbox_image = \"registry.k8s.io/pause:3.9\"\n");
    a.crictl_ok(&["update-runtime-config", "--pod-cidr", "10.97.0.0/16"]);
    b.crictl_ok(&["update-runtime-config", "--pod-cidr", "10.96.0.0/16"]);
    let (ia, ib) = (info(&a), info(&b));
    assert_eq!((&ia["config"]["podCIDR"], &ib["config"]["podCIDR"]), (&"10.97.0.0/16".into(), &"10.96.0.0/16".into()));
    assert_eq!(ia["config"]["sandboxImage"], "registry.k8s.io/pause:3.10");
    assert_eq!(ib["config"]["sandboxImage"], "registry.k8s.io/pause:3.9");
    assert_eq!(ia["config"]["runroot"], a.dir.path().join("run").display().to_string());
    assert_eq!(ib["config"]["runroot"], b.dir.path().join("run").display().to_string());
    // Stopping one leaves the other serving.
    assert!(b.stop_with(Signal::SIGTERM).unwrap().success());
    a.crictl_ok(&["version"]);
    assert_eq!(info(&a)["config"]["podCIDR"], "10.97.0.0/16");
}
