//! Bearer token auth and retries, against a small fake registry (Debian's
//! docker-registry needs a full token service for Bearer auth): the
//! challenge's realm, service and scope must be followed, the token sent,
//! and a 503 retried.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use berth_image::pull::{PullOptions, pull};
use berth_image::registry::{AuthStore, Credentials, RegistryConfig};
use berth_image::store::Store;
use berth_image::{Error, Reference};
use berth_testkit::image::{Layer, gzip, sha256};
use serde_json::json;

struct Fake {
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

/// Serves one image as `app:1`, behind Bearer tokens; the first authorized
/// manifest request gets a 503.
fn fake_registry(user: Option<(&str, &str)>) -> Fake {
    let layer_tar = Layer::new().file("hello", b"world").tar();
    let layer = gzip(&layer_tar);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&layer_tar)]}
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(&layer), "size": layer.len()}]
    }))
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let expected_basic = user.map(|(u, p)| {
        use base64::Engine;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")))
    });
    let log2 = log.clone();
    std::thread::spawn(move || {
        let mut failed_once = false;
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { break };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut auth = String::new();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                    break;
                }
                if let Some(v) = h.strip_prefix("authorization: ").or(h.strip_prefix("Authorization: ")) {
                    auth = v.trim().to_string();
                }
            }
            log2.lock().unwrap().push(format!("{path} [{auth}]"));
            let challenge = format!(
                "Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake\",scope=\"repository:app:pull\""
            );
            let (status, headers, body): (&str, Vec<String>, Vec<u8>) = if path.starts_with("/token") {
                let ok = path.contains("service=fake")
                    && path.contains("scope=repository%3Aapp%3Apull")
                    && expected_basic.as_ref().is_none_or(|b| *b == auth);
                if ok {
                    ("200 OK", vec![], br#"{"token":"T1"}"#.to_vec())
                } else {
                    ("401 Unauthorized", vec![], vec![])
                }
            } else if auth != "Bearer T1" {
                ("401 Unauthorized", vec![format!("WWW-Authenticate: {challenge}")], vec![])
            } else if path == "/v2/app/manifests/1" {
                if !failed_once {
                    failed_once = true;
                    ("503 Service Unavailable", vec![], vec![])
                } else {
                    (
                        "200 OK",
                        vec!["Content-Type: application/vnd.oci.image.manifest.v1+json".into()],
                        manifest.clone(),
                    )
                }
            } else if path == format!("/v2/app/blobs/{}", sha256(&config)) {
                ("200 OK", vec![], config.clone())
            } else if path == format!("/v2/app/blobs/{}", sha256(&layer)) {
                ("200 OK", vec![], layer.clone())
            } else if path == "/v2/" {
                ("200 OK", vec![], b"{}".to_vec())
            } else {
                ("404 Not Found", vec![], vec![])
            };
            let mut resp = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
            for h in headers {
                resp.push_str(&h);
                resp.push_str("\r\n");
            }
            resp.push_str("\r\n");
            let _ = s.write_all(resp.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    Fake { port, log }
}

fn setup() -> (tempfile::TempDir, Store, RegistryConfig) {
    berth_testkit::require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("root")).unwrap();
    let cfg = RegistryConfig {
        certs_dirs: vec![],
        auth: Some(AuthStore { own: tmp.path().join("auth.json"), fallbacks: vec![] }),
        backoff: std::time::Duration::from_millis(5),
        ..Default::default()
    };
    (tmp, store, cfg)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn bearer_tokens_follow_the_challenge_and_503_is_retried() {
    let fake = fake_registry(None);
    let (_tmp, store, cfg) = setup();
    let r = Reference::parse(&format!("127.0.0.1:{}/app:1", fake.port)).unwrap();
    let rec = rt().block_on(pull(&store, &cfg, &r, &PullOptions::default())).unwrap();
    let fs = store.snapshots.fs_path(&rec.layers[0].chain_id);
    assert_eq!(std::fs::read(fs.join("hello")).unwrap(), b"world");
    let log = fake.log.lock().unwrap();
    let tokens = log.iter().filter(|l| l.starts_with("/token")).count();
    assert_eq!(tokens, 1, "one token for one scope: {log:?}");
    let manifests: Vec<_> = log.iter().filter(|l| l.starts_with("/v2/app/manifests/1 [Bearer T1]")).collect();
    assert_eq!(manifests.len(), 2, "the 503 was retried: {log:?}");
}

#[test]
fn token_requests_carry_stored_credentials() {
    let fake = fake_registry(Some(("carol", "pw")));
    let (_tmp, store, cfg) = setup();
    let r = Reference::parse(&format!("127.0.0.1:{}/app:1", fake.port)).unwrap();
    let err = rt().block_on(pull(&store, &cfg, &r, &PullOptions::default())).unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");
    cfg.auth_store()
        .set(&format!("127.0.0.1:{}", fake.port), &Credentials { username: "carol".into(), password: "pw".into() })
        .unwrap();
    rt().block_on(pull(&store, &cfg, &r, &PullOptions::default())).unwrap();
}
