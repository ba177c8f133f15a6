//! Identity tokens (docker's `identitytoken`, a credential helper's
//! `<token>` user) are OAuth2 refresh tokens: the client trades one for an
//! access token by a POST of `grant_type=refresh_token` to the realm, as
//! docker does, and never sends it as a password.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use berth_image::registry::{AuthStore, Registry, RegistryConfig};

/// A registry behind Bearer tokens whose token server only takes refresh
/// token R1; logs each request as `METHOD path [authorization] body`.
fn fake_registry() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { break };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() || !(line.starts_with("GET ") || line.starts_with("POST ")) {
                continue; // the client's TLS attempt, before it falls back to HTTP
            }
            let mut parts = line.split_whitespace();
            let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
            let (mut auth, mut len) = (String::new(), 0usize);
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                    break;
                }
                let Some((k, v)) = h.split_once(':') else { continue };
                if k.eq_ignore_ascii_case("authorization") {
                    auth = v.trim().to_string();
                } else if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let body = String::from_utf8_lossy(&body).into_owned();
            log2.lock().unwrap().push(format!("{method} {path} [{auth}] {body}"));
            let form: Vec<(String, String)> = reqwest::Url::parse(&format!("http://x/?{body}"))
                .unwrap()
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let has = |k: &str, v: &str| form.iter().any(|(fk, fv)| fk == k && fv == v);
            let (status, head, reply): (&str, String, &[u8]) = if path.starts_with("/token") {
                if method == "POST" && has("grant_type", "refresh_token") && has("refresh_token", "R1") {
                    ("200 OK", String::new(), br#"{"access_token":"A1","expires_in":300}"#)
                } else {
                    ("401 Unauthorized", String::new(), b"")
                }
            } else if auth != "Bearer A1" {
                let challenge = format!(
                    "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake\",scope=\"repository:app:pull\"\r\n"
                );
                ("401 Unauthorized", challenge, b"")
            } else if path == "/v2/app/manifests/1" {
                ("200 OK", "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n".into(), b"{}")
            } else {
                ("200 OK", String::new(), b"{}")
            };
            let resp =
                format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{head}\r\n", reply.len());
            let _ = s.write_all(resp.as_bytes());
            let _ = s.write_all(reply);
        }
    });
    (port, log)
}

#[test]
fn identity_tokens_are_traded_for_access_tokens() {
    let (port, log) = fake_registry();
    let tmp = tempfile::tempdir().unwrap();
    let registry = format!("127.0.0.1:{port}");
    let own = tmp.path().join("auth.json");
    std::fs::write(&own, format!(r#"{{"auths":{{"{registry}":{{"identitytoken":"R1"}}}}}}"#)).unwrap();
    let cfg = RegistryConfig {
        certs_dirs: vec![],
        auth: Some(AuthStore { own, fallbacks: vec![] }),
        backoff: std::time::Duration::from_millis(5),
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (manifest, _) = rt.block_on(async {
        let reg = Registry::connect(&registry, &cfg).await.unwrap();
        reg.get_manifest("app", "1").await.unwrap()
    });
    assert_eq!(manifest, b"{}");
    let log = log.lock().unwrap();
    let token: Vec<&String> = log.iter().filter(|l| l.contains("/token")).collect();
    assert_eq!(token.len(), 1, "{log:?}");
    let t = token[0];
    assert!(t.starts_with("POST /token [] "), "a POST without the token as a password: {t}");
    for part in ["grant_type=refresh_token", "refresh_token=R1", "service=fake", "scope=repository%3Aapp%3Apull"] {
        assert!(t.contains(part), "{part} in {t}");
    }
    assert!(log.iter().any(|l| l.starts_with("GET /v2/app/manifests/1 [Bearer A1]")), "{log:?}");
}
