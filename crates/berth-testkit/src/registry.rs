//! A real registry for tests: Debian's `docker-registry` on 127.0.0.1 at a
//! free port, filesystem storage in its own temp dir, optionally with TLS
//! (a CA made here) and htpasswd basic auth (bcrypt). Dropping it stops
//! the registry by its PID and removes the directory.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to start a [`Registry`].
#[derive(Default, Clone)]
pub struct RegistryOptions {
    pub tls: bool,
    /// (user, password) pairs for htpasswd basic auth.
    pub users: Vec<(String, String)>,
}

pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    ca_pem: Option<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Registry {
    /// A registry holding busybox (every applet linked, as the runtime
    /// tests use it; `sh` its command) as `ADDR/test/busybox:1`; the
    /// registry and that reference.
    pub fn with_busybox() -> (Registry, String) {
        use crate::image::{Comp, Layer, OciLayout};
        let reg = Registry::start();
        let tmp = tempfile::tempdir().unwrap();
        let rootfs = tmp.path().join("rootfs");
        crate::make_busybox_rootfs(&rootfs);
        let mut layout = OciLayout::new(&tmp.path().join("layout"));
        let env = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        let img = layout.image(
            &[Layer::new().tree(".", &rootfs).tar()],
            Comp::Gzip,
            serde_json::json!({"Cmd": ["sh"], "Env": [env]}),
            "amd64",
        );
        layout.tag(&img, "1");
        let image = format!("{}/test/busybox:1", reg.addr());
        layout.push("1", &image, &[]);
        (reg, image)
    }

    /// Plain HTTP, no auth.
    pub fn start() -> Registry {
        Registry::start_with(RegistryOptions::default())
    }

    pub fn start_with(opts: RegistryOptions) -> Registry {
        let bin = ["/usr/bin/docker-registry", "/usr/sbin/docker-registry"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("docker-registry not found: apt-get install docker-registry (scripts/setup.sh)");
        let dir = tempfile::tempdir().unwrap();
        let mut last_err = String::new();
        // A port found free can be taken before the registry binds it: try a few.
        for _ in 0..5 {
            let port = free_port();
            let mut cfg = format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            );
            let mut ca_pem = None;
            if opts.tls {
                let (ca, cert, key) = make_certs();
                std::fs::write(dir.path().join("server.crt"), cert).unwrap();
                std::fs::write(dir.path().join("server.key"), key).unwrap();
                cfg.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    dir.path().join("server.crt").display(),
                    dir.path().join("server.key").display()
                ));
                ca_pem = Some(ca);
            }
            if !opts.users.is_empty() {
                let mut htpasswd = String::new();
                for (u, p) in &opts.users {
                    let h = bcrypt::hash_with_result(p, 5).unwrap().format_for_version(bcrypt::Version::TwoY);
                    htpasswd.push_str(&format!("{u}:{h}\n"));
                }
                std::fs::write(dir.path().join("htpasswd"), htpasswd).unwrap();
                cfg.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                    dir.path().join("htpasswd").display()
                ));
            }
            std::fs::write(dir.path().join("config.yml"), cfg).unwrap();
            let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
            let mut child = Command::new(bin)
                .arg("serve")
                .arg(dir.path().join("config.yml"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start docker-registry");
            let start = Instant::now();
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Registry { child, dir, port, ca_pem };
                }
                if let Ok(Some(status)) = child.try_wait() {
                    last_err = format!(
                        "exited {status}: {}",
                        std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
                    );
                    break;
                }
                if start.elapsed() > Duration::from_secs(20) {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = "did not listen within 20 s".into();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("docker-registry failed to start: {last_err}");
    }

    /// `127.0.0.1:PORT`, as references name it.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The CA that signed the TLS certificate (PEM), if TLS is on.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Writes the CA as a certs.d tree (`DIR/127.0.0.1:PORT/ca.crt`) and
    /// returns DIR.
    pub fn certs_d(&self, dir: &Path) -> PathBuf {
        let d = dir.join(self.addr());
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("ca.crt"), self.ca_pem.as_deref().expect("registry without TLS")).unwrap();
        dir.to_path_buf()
    }

    /// Where the registry keeps a blob's bytes (to corrupt them in tests).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir.path().join("data/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a server certificate for 127.0.0.1 and localhost it signed:
/// (CA PEM, server cert PEM, server key PEM).
pub fn make_certs() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "berth test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}
