//! Containers on CNI networks, with the real plugins from
//! containernetworking-plugins. Each test runs on a thread with a network
//! namespace of its own that plays the host: the bridges, veths and
//! iptables rules the plugins make live there and vanish with it, and the
//! machine's own network is never touched.

use berth_testkit::in_test_host;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_engine::network::{Attachment, NetNs, NetworkError, Networks, PortMapping};

/// Whether the CNI plugins and iptables are installed (scripts/setup.sh
/// installs them; the cgroup v2 guest has the plugins its pods need but no
/// iptables, and networking is not what it tests).
fn have_plugins() -> bool {
    let found = Networks::default_plugin_dirs().iter().any(|d| d.join("bridge").is_file());
    if !found {
        eprintln!(
            "skipped: no CNI plugins in {:?} (install containernetworking-plugins)",
            Networks::default_plugin_dirs()
        );
        return false;
    }
    let iptables = Command::new("iptables").arg("--version").output().is_ok_and(|o| o.status.success());
    if !iptables {
        eprintln!("skipped: no iptables (network rules and published ports need it)");
    }
    iptables
}

/// The test's networks and containers; detaches and unpins everything
/// when dropped, also after a failed assertion.
struct Env {
    _dir: tempfile::TempDir,
    nets: Networks,
    netns_dir: PathBuf,
    attached: Vec<(String, String)>,
    pinned: Vec<PathBuf>,
    children: Vec<Child>,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::Builder::new().prefix("berth-net-").tempdir().unwrap();
        let nets = Networks::new(dir.path().join("net.d"), dir.path().join("state"), Networks::default_plugin_dirs());
        let netns_dir = dir.path().join("netns");
        Env { _dir: dir, nets, netns_dir, attached: vec![], pinned: vec![], children: vec![] }
    }

    /// A container's network namespace with lo up.
    fn container(&mut self, id: &str) -> NetNs {
        let ns = NetNs::create(&self.netns_dir.join(id)).unwrap();
        self.pinned.push(ns.path.clone());
        self.nets.loopback_up(&ns.path, id).unwrap();
        ns
    }

    fn attach(&mut self, net: &str, id: &str, ns: &NetNs, ports: &[PortMapping]) -> Attachment {
        let a = self.nets.attach(net, id, &ns.path, "eth0", ports).unwrap();
        self.attached.push((net.into(), id.into()));
        a
    }

    fn detach(&mut self, net: &str, id: &str) {
        self.nets.detach(net, id, Some(&self.netns_dir.join(id)), "eth0").unwrap();
        self.attached.retain(|(n, i)| !(n == net && i == id));
    }

    /// The engine's order after a container exits: the namespace goes
    /// (and its veth with it), then DEL without a namespace.
    fn remove_then_detach(&mut self, net: &str, id: &str) {
        NetNs::remove(&self.netns_dir.join(id)).unwrap();
        self.nets.detach(net, id, None, "eth0").unwrap();
        self.attached.retain(|(n, i)| !(n == net && i == id));
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for (net, id) in std::mem::take(&mut self.attached) {
            let _ = self.nets.detach(&net, &id, Some(&self.netns_dir.join(&id)), "eth0");
        }
        for p in &self.pinned {
            let _ = NetNs::remove(p);
        }
    }
}

/// A command that runs in `ns` (joined between fork and exec).
fn cmd_in(ns: &NetNs, program: &str, args: &[&str]) -> Command {
    let file = std::fs::File::open(&ns.path).unwrap();
    let mut c = Command::new(program);
    c.args(args);
    // SAFETY: setns is async-signal-safe; the fd stays open in the parent
    // (moved into the closure) until the child has exec'd.
    unsafe {
        c.pre_exec(move || {
            use std::os::fd::AsRawFd;
            if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    c
}

fn output_in(ns: &NetNs, program: &str, args: &[&str]) -> Output {
    cmd_in(ns, program, args).output().unwrap()
}

fn busybox() -> String {
    berth_testkit::busybox().to_string_lossy().into_owned()
}

#[test]
fn two_containers_on_a_network_reach_each_other_and_detach_leaves_nothing() {
    if !have_plugins() {
        return;
    }
    in_test_host(|| {
        let mut env = Env::new();
        let net = env.nets.create("t", None).unwrap();
        let (a, b) = (env.container("ca"), env.container("cb"));
        let aa = env.attach("t", "ca", &a, &[]);
        let ab = env.attach("t", "cb", &b, &[]);
        assert_ne!(aa.address, ab.address);
        assert_eq!(aa.gateway, Some(net.gateway));
        for at in [&aa, &ab] {
            assert_eq!(u32::from(at.address) >> 8, u32::from(net.gateway) >> 8, "{} in {}", at.address, net.subnet);
        }
        // The container sees the address the result reported, on eth0.
        let shown = output_in(&a, &busybox(), &["ip", "-4", "addr", "show", "eth0"]);
        let shown = String::from_utf8_lossy(&shown.stdout);
        assert!(shown.contains(&format!("inet {}/{}", aa.address, aa.prefix_len)), "{shown}");
        let ping = output_in(&a, &busybox(), &["ping", "-c", "1", "-W", "3", &ab.address.to_string()]);
        assert!(ping.status.success(), "ca cannot reach cb: {}", String::from_utf8_lossy(&ping.stdout));
        // Only lo and eth0 in the container; lo is up.
        let links = String::from_utf8_lossy(&output_in(&a, &busybox(), &["ip", "-o", "link"]).stdout).into_owned();
        assert_eq!(links.lines().count(), 2, "{links}");
        assert!(links.lines().next().unwrap().contains("lo: <LOOPBACK,UP"), "{links}");
        assert_eq!(env.nets.endpoints("t").unwrap().len(), 2);
        assert!(matches!(env.nets.remove("t"), Err(NetworkError::InUse(_))), "a network in use stays");

        // The network's own rules: masquerading out of the subnet, and
        // forwarding through the bridge.
        let rules = iptables_save();
        let masq = format!("-A BERTH-POSTROUTING -s {} ! -d {} -j MASQUERADE", net.subnet, net.subnet);
        assert!(rules.contains(&masq), "{rules}");
        assert!(rules.contains(&format!("-A BERTH-FORWARD -o {} -j ACCEPT", net.bridge)), "{rules}");

        env.detach("t", "ca");
        env.remove_then_detach("t", "cb");
        // No veth left on the host side (the kernel removes cb's with its
        // namespace, in the background), no lease, no cached result.
        let deadline = Instant::now() + Duration::from_secs(10);
        let host_links = loop {
            let out = Command::new("ip").args(["-o", "link"]).output().unwrap();
            let links = String::from_utf8_lossy(&out.stdout).into_owned();
            if !links.contains("veth") || Instant::now() > deadline {
                break links;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(!host_links.contains("veth"), "{host_links}");
        let leases: Vec<_> = std::fs::read_dir(env._dir.path().join("state/ipam/t"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|f| f.parse::<Ipv4Addr>().is_ok())
            .collect();
        assert!(leases.is_empty(), "leases left: {leases:?}");
        assert!(env.nets.endpoints("t").unwrap().is_empty());
        // Detaching twice is fine.
        env.nets.detach("t", "ca", Some(&a.path), "eth0").unwrap();
        env.nets.remove("t").unwrap();
        let gone = Command::new("ip").args(["link", "show", &net.bridge]).output().unwrap();
        assert!(!gone.status.success(), "bridge {} left behind", net.bridge);
        let rules = iptables_save();
        assert!(!rules.contains(&net.subnet) && !rules.contains(&net.bridge), "rules left behind: {rules}");
        NetNs::remove(&a.path).unwrap();
        assert!(!a.path.exists() && !b.path.exists());
    })
}

fn iptables_save() -> String {
    let mut all = String::new();
    for table in ["nat", "filter"] {
        let out = Command::new("iptables-save").args(["-t", table]).output().unwrap();
        all.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    all
}

/// GET / from addr:port; the body.
fn http_get(addr: &str, port: u16) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&format!("{addr}:{port}").parse().unwrap(), Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn a_published_port_reaches_the_container_and_is_withdrawn_on_detach() {
    if !have_plugins() {
        return;
    }
    in_test_host(|| {
        let mut env = Env::new();
        let c = env.container("web");
        let port = free_port();
        let ports =
            [PortMapping { host_port: port, container_port: 8080, protocol: "tcp".into(), host_ip: String::new() }];
        let at = env.attach("bridge", "web", &c, &ports);
        let www = env._dir.path().join("www");
        std::fs::create_dir(&www).unwrap();
        std::fs::write(www.join("index.html"), "hello from the container\n").unwrap();
        let httpd = cmd_in(&c, &busybox(), &["httpd", "-f", "-p", "8080", "-h", www.to_str().unwrap()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        env.children.push(httpd);
        let gateway = at.gateway.unwrap().to_string();
        // The host reaches it through the published port on its own address.
        let deadline = Instant::now() + Duration::from_secs(10);
        let body = loop {
            match http_get(&gateway, port) {
                Ok(b) if b.contains("hello") => break b,
                other if Instant::now() > deadline => panic!("no answer on {gateway}:{port}: {other:?}"),
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        assert!(body.contains("hello from the container"), "{body}");
        // Not the container's port directly under another number: 8080 on
        // the host is nothing.
        assert!(http_get(&gateway, 8080).is_err(), "only the published port is open");

        env.detach("bridge", "web");
        assert!(http_get(&gateway, port).is_err(), "the port is still published after detach");
        let nat = Command::new("iptables-save").args(["-t", "nat"]).output().unwrap();
        let nat = String::from_utf8_lossy(&nat.stdout);
        assert!(!nat.contains(&format!("--dport {port}")), "portmap rules left: {nat}");
    })
}

#[test]
fn a_missing_plugin_and_a_bad_network_are_named() {
    in_test_host(|| {
        let dir = tempfile::tempdir().unwrap();
        let nets =
            Networks::new(dir.path().join("net.d"), dir.path().join("state"), vec![dir.path().join("no-plugins")]);
        let ns = NetNs::create(&dir.path().join("ns")).unwrap();
        let err = nets.attach("bridge", "x", &ns.path, "eth0", &[]).unwrap_err();
        assert!(matches!(&err, NetworkError::NoPlugin { plugin, .. } if plugin == "bridge"), "{err}");
        let err = nets.attach("nope", "x", &ns.path, "eth0", &[]).unwrap_err();
        assert_eq!(err.to_string(), "network nope not found");
        NetNs::remove(&ns.path).unwrap();
        assert!(!Path::new(&ns.path).exists());
    })
}

/// The leases host-local holds on network `net`: lease files (named by
/// address) with the container id each holds.
fn leases(state: &Path, net: &str) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(state.join("ipam").join(net)) else { return Vec::new() };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.parse::<Ipv4Addr>().ok()?;
            let holder = std::fs::read_to_string(e.path()).ok()?;
            Some((name, holder.lines().next().unwrap_or("").trim().to_owned()))
        })
        .collect()
}

#[test]
fn detach_releases_the_lease_even_without_a_recorded_attachment() {
    if !have_plugins() {
        return;
    }
    in_test_host(|| {
        let mut env = Env::new();
        let state = env._dir.path().join("state");
        let c = env.container("lost");
        env.attach("bridge", "lost", &c, &[]);
        assert_eq!(leases(&state, "bridge").len(), 1);
        // As if the record had never been written (an ADD killed before
        // any record existed, by an older berth): DEL still runs.
        for f in std::fs::read_dir(state.join("results")).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
        env.remove_then_detach("bridge", "lost");
        assert_eq!(leases(&state, "bridge"), [], "the lease outlived rm");
    })
}

#[test]
fn a_host_port_is_published_once_and_a_refused_attach_leaves_nothing() {
    if !have_plugins() {
        return;
    }
    in_test_host(|| {
        let mut env = Env::new();
        let state = env._dir.path().join("state");
        let port = free_port();
        let web =
            |cport| PortMapping { host_port: port, container_port: cport, protocol: "tcp".into(), host_ip: "".into() };
        let a = env.container("first");
        env.attach("bridge", "first", &a, &[web(80)]);
        let b = env.container("second");
        let err = env.nets.attach("bridge", "second", &b.path, "eth0", &[web(81)]).unwrap_err();
        assert_eq!(err.to_string(), format!("Bind for 0.0.0.0:{port} failed: port is already allocated"));
        let held: Vec<String> = leases(&state, "bridge").into_iter().map(|(_, id)| id).collect();
        assert_eq!(held, ["first"], "the refused attach took a lease");
        assert_eq!(env.nets.endpoints("bridge").unwrap(), ["first"]);
        let rules = iptables_save();
        assert!(!rules.contains("\\\"second\\\""), "rules for the refused attach: {rules}");
        // The same port twice in one attach.
        let err = env.nets.attach("bridge", "second", &b.path, "eth0", &[web(1), web(2)]).unwrap_err();
        assert!(err.to_string().ends_with("port is already allocated"), "{err}");
        // Freed with its holder.
        env.remove_then_detach("bridge", "first");
        env.attach("bridge", "second", &b, &[web(81)]);
        assert_eq!(env.nets.endpoints("bridge").unwrap(), ["second"]);
    })
}
