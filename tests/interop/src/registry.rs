//! A real registry (Debian's `docker-registry`, distribution 2.8) on a free
//! loopback port, plain HTTP, serving a busybox-static image that this
//! module builds with umoci and pushes with skopeo.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;

use crate::proc::{Daemon, run};
use crate::scratch::Scratch;

pub struct Registry {
    /// "127.0.0.1:PORT"
    pub addr: String,
    /// The pushed image: "127.0.0.1:PORT/berth/busybox:latest".
    pub image: String,
    daemon: Daemon,
}

impl Registry {
    /// Starts a registry storing under `scratch`/registry and pushes the
    /// busybox image to it.
    pub fn start(scratch: &Scratch) -> Registry {
        crate::require_program("docker-registry", "docker-registry");
        crate::require_program("umoci", "umoci");
        crate::require_program("skopeo", "skopeo");
        let dir = scratch.dir("registry");
        // A port picked by the kernel can be taken again before the
        // registry binds it: retry with another.
        let mut last = String::new();
        for attempt in 0..5 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let config = dir.join(format!("config-{attempt}.yml"));
            std::fs::write(&config, config_yaml(&dir.join("storage"), &addr)).expect("registry config");
            let mut daemon = Daemon::spawn(
                "docker-registry",
                Command::new("docker-registry").arg("serve").arg(&config),
                dir.join(format!("registry-{attempt}.log")),
                10,
            );
            let up = crate::wait_for_opt(20, || {
                if daemon.has_exited() {
                    return Some(false);
                }
                (http_get(&addr, "/v2/") == Some(200)).then_some(true)
            });
            if up == Some(true) {
                let image = format!("{addr}/berth/busybox:latest");
                let r = Registry { addr, image, daemon };
                r.push_busybox(scratch);
                return r;
            }
            last = daemon.log_tail();
            daemon.stop();
        }
        panic!("docker-registry did not come up; last log:\n{last}");
    }

    fn push_busybox(&self, scratch: &Scratch) {
        let layout = scratch.path().join("oci");
        build_busybox_image(&layout, &scratch.dir("image-build"));
        run(
            Command::new("skopeo")
                .args(["--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"])
                .arg(format!("oci:{}:busybox", layout.display()))
                .arg(format!("docker://{}", self.image)),
            120,
        )
        .ok("skopeo copy (push the busybox image)");
        assert_eq!(http_get(&self.addr, "/v2/berth/busybox/manifests/latest"), Some(200), "the pushed image is served");
    }

    pub fn pid(&self) -> i32 {
        self.daemon.pid()
    }
}

fn config_yaml(storage: &Path, addr: &str) -> String {
    format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: berth-interop\n",
        storage.display()
    )
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// The status code of `GET path` on `addr`, plain HTTP/1.0.
pub fn http_get(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/vnd.oci.image.manifest.v1+json\r\n\r\n")
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split(' ').nth(1)?.parse().ok()
}

/// An OCI image layout at `layout`, tag `busybox`: one layer holding
/// Debian's busybox-static with a link per applet (the test kit's rootfs),
/// Cmd ["sh"], PATH set. Built with umoci in `work`.
pub fn build_busybox_image(layout: &Path, work: &Path) {
    let umoci = |args: &[&str]| {
        run(Command::new("umoci").args(args), 120).ok(&format!("umoci {}", args.join(" ")));
    };
    let image = format!("{}:busybox", layout.display());
    let bundle = work.join("bundle");
    umoci(&["init", "--layout", &layout.display().to_string()]);
    umoci(&["new", "--image", &image]);
    umoci(&["unpack", "--image", &image, &bundle.display().to_string()]);
    berth_testkit::make_busybox_rootfs(&bundle.join("rootfs"));
    umoci(&["repack", "--image", &image, &bundle.display().to_string()]);
    umoci(&[
        "config",
        "--image",
        &image,
        "--config.cmd",
        "sh",
        "--config.env",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ]);
    std::fs::remove_dir_all(&bundle).expect("remove the unpacked bundle");
}
