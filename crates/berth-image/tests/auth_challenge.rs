//! `WWW-Authenticate` as registries send it, end to end through the
//! registry client: one header per scheme (Basic first), and a service
//! name with commas and non-ASCII text inside its quotes. The client must
//! answer the Bearer challenge, and ask the token server for that exact
//! service.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use berth_image::registry::{AuthStore, Registry, RegistryConfig};

const SERVICE: &str = "régistry, east (東京)";

/// Serves `/v2/` behind a Bearer token; logs each request's path and
/// Authorization header.
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
            if r.read_line(&mut line).is_err() || !line.starts_with("GET ") {
                continue; // the client's TLS attempt, before it falls back to HTTP
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut auth = String::new();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':')
                    && k.eq_ignore_ascii_case("authorization")
                {
                    auth = v.trim().to_string();
                }
            }
            log2.lock().unwrap().push(format!("{path} [{auth}]"));
            let mut head = Vec::new();
            let (status, body): (&str, &[u8]) = if path.starts_with("/token?") {
                ("200 OK", br#"{"token":"T1"}"#)
            } else if auth == "Bearer T1" {
                ("200 OK", b"{}")
            } else {
                head.extend_from_slice(b"WWW-Authenticate: Basic realm=\"fake\"\r\n");
                let bearer = format!(
                    "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"{SERVICE}\"\r\n"
                );
                // Raw UTF-8 bytes in the header value, as registries send them.
                head.extend_from_slice(bearer.as_bytes());
                ("401 Unauthorized", b"")
            };
            let mut resp =
                format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len()).into_bytes();
            resp.extend_from_slice(&head);
            resp.extend_from_slice(b"\r\n");
            resp.extend_from_slice(body);
            let _ = s.write_all(&resp);
        }
    });
    (port, log)
}

#[test]
fn bearer_is_answered_among_several_challenges_with_its_exact_service() {
    let (port, log) = fake_registry();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = RegistryConfig {
        certs_dirs: vec![],
        auth: Some(AuthStore { own: tmp.path().join("auth.json"), fallbacks: vec![] }),
        backoff: std::time::Duration::from_millis(5),
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let reg = Registry::connect(&format!("127.0.0.1:{port}"), &cfg).await.unwrap();
        reg.check_login().await.unwrap();
    });
    let log = log.lock().unwrap();
    let token = log.iter().find(|l| l.starts_with("/token?")).unwrap_or_else(|| panic!("no token request: {log:?}"));
    let query = token.trim_start_matches("/token?").split(' ').next().unwrap();
    let service: Vec<String> = reqwest::Url::parse(&format!("http://x/?{query}"))
        .unwrap()
        .query_pairs()
        .filter(|(k, _)| k == "service")
        .map(|(_, v)| v.into_owned())
        .collect();
    assert_eq!(service, [SERVICE], "{log:?}");
    assert!(log.iter().any(|l| l == "/v2/ [Bearer T1]"), "{log:?}");
}
