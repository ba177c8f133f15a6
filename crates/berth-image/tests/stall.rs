//! Registries that stall: one that accepts connections and never says a
//! word, one that answers `/v2/` and then never answers the manifest
//! request, one that stops in the middle of a body. A pull fails after the
//! configured timeouts (retried as configured), with an error naming the
//! registry, instead of hanging for ever.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_image::Reference;
use berth_image::pull::{PullOptions, pull};
use berth_image::registry::{AuthStore, RegistryConfig};
use berth_image::store::Store;

/// How the fake registry treats a request for a manifest.
#[derive(Clone, Copy)]
enum Stall {
    /// Accepts connections and never reads or writes.
    Everything,
    /// Answers `GET /v2/`; never answers a manifest request.
    Manifest,
    /// Answers `GET /v2/`; sends a manifest's headers and 1 byte of it.
    Body,
}

/// A plain-HTTP fake registry on a loopback port; holds every connection
/// open until dropped.
struct Fake {
    port: u16,
    manifest_requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Fake {
    fn start(stall: Stall) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, manifest_requests) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let held = Arc::new(Mutex::new(Vec::new()));
        let (s, m, h) = (stop.clone(), manifest_requests.clone(), held.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        h.lock().unwrap().push(conn.try_clone().unwrap());
                        if !matches!(stall, Stall::Everything) {
                            let m = m.clone();
                            std::thread::spawn(move || serve(conn, stall, &m));
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Fake { port, manifest_requests, stop, held }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for c in self.held.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Answers requests on one connection until it stalls or closes.
fn serve(mut conn: TcpStream, stall: Stall, manifests: &AtomicUsize) {
    loop {
        let mut req = Vec::new();
        let mut byte = [0u8; 1];
        while !req.ends_with(b"\r\n\r\n") {
            match conn.read(&mut byte) {
                Ok(1) => req.push(byte[0]),
                _ => return,
            }
            // TLS first (berth tries https before http on loopback): not
            // spoken here; closing sends it on to plain HTTP at once.
            if req == [0x16] {
                return;
            }
        }
        let req = String::from_utf8_lossy(&req);
        if req.starts_with("GET /v2/ ") {
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            continue;
        }
        manifests.fetch_add(1, Ordering::Relaxed);
        if matches!(stall, Stall::Body) {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n\
                        Content-Length: 500\r\n\r\n{";
            let _ = conn.write_all(head.as_bytes());
        }
        // Silence until the test drops the fake (which shuts this down).
        let _ = conn.read(&mut byte);
        return;
    }
}

/// Short timeouts and two attempts; a watchdog far above them turns a hang
/// into a failure.
fn pull_from(fake: &Fake) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("root")).unwrap();
    let cfg = RegistryConfig {
        certs_dirs: vec![],
        auth: Some(AuthStore { own: tmp.path().join("auth.json"), fallbacks: vec![] }),
        connect_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(500),
        attempts: 2,
        backoff: Duration::from_millis(10),
        ..Default::default()
    };
    let reference = Reference::parse(&format!("{}/stalled/image:1", fake.addr())).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let watchdog = Duration::from_secs(60);
    let res = rt.block_on(async {
        tokio::time::timeout(watchdog, pull(&store, &cfg, &reference, &PullOptions::default())).await
    });
    match res {
        Err(_) => panic!("the pull from {} still hangs after {watchdog:?}", fake.addr()),
        Ok(Ok(_)) => panic!("a pull from a stalled registry succeeded"),
        Ok(Err(e)) => e.to_string(),
    }
}

#[test]
fn a_registry_that_accepts_and_never_answers_fails_the_pull_naming_it() {
    let fake = Fake::start(Stall::Everything);
    let err = pull_from(&fake);
    assert!(err.contains(&fake.addr()), "{err}");
    assert!(err.contains("registry.connect_timeout") || err.contains("registry.idle_timeout"), "{err}");
}

#[test]
fn a_manifest_request_never_answered_is_retried_then_fails() {
    let fake = Fake::start(Stall::Manifest);
    let err = pull_from(&fake);
    assert!(err.contains(&fake.addr()) && err.contains("registry.idle_timeout"), "{err}");
    assert_eq!(fake.manifest_requests.load(Ordering::Relaxed), 2, "two attempts, as configured");
}

#[test]
fn a_body_that_stops_coming_fails_after_the_idle_timeout() {
    let fake = Fake::start(Stall::Body);
    let err = pull_from(&fake);
    assert!(err.contains(&fake.addr()) && err.contains("registry.idle_timeout"), "{err}");
}
