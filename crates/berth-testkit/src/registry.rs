//! A real registry for tests: Debian's `docker-registry` (the CNCF
//! distribution registry) on 127.0.0.1 at a free port, plain HTTP, storage
//! in a temp dir; stopped by PID when dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// The registry binary, if installed (the cgroup v2 guest has none).
pub fn binary() -> Option<PathBuf> {
    ["/usr/bin/docker-registry", "/usr/local/bin/registry"].iter().map(PathBuf::from).find(|p| p.exists())
}

impl Registry {
    pub fn start() -> Registry {
        let bin = binary().expect("docker-registry is not installed (apt-get install docker-registry)");
        let dir = tempfile::Builder::new().prefix("berth-registry-").tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .expect("start docker-registry");
        let mut r = Registry { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !r.ready() {
            assert!(r.child.try_wait().unwrap().is_none(), "docker-registry exited at start");
            assert!(Instant::now() < deadline, "docker-registry did not answer on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn ready(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let req = format!("GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n", self.port);
        let mut out = String::new();
        let answered = s.write_all(req.as_bytes()).is_ok() && s.read_to_string(&mut out).is_ok();
        answered && (out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"))
    }

    /// "127.0.0.1:PORT".
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
