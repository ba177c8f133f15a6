//! `berth pull` from a registry that accepts connections and never
//! answers: the timeouts of /etc/berth/config.toml's `[registry]` bound
//! it, and the error names the registry.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn pull_from_a_silent_registry_fails_after_the_configured_timeouts_naming_it() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // Accepted and held, never read or written.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming() {
            held.push(c);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let text = "[registry]\nconnect_timeout = 1\nidle_timeout = 0.5\nattempts = 2\nbackoff = 10\n";
    std::fs::write(&config, text).unwrap();
    let mut pull = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--config")
        .arg(&config)
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--runroot")
        .arg(dir.path().join("run"))
        .args(["pull", "-q", &format!("{addr}/silent/image:1")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A watchdog far above the timeouts: a hang fails the test.
    let deadline = Instant::now() + Duration::from_secs(60);
    while pull.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = pull.kill();
            let _ = pull.wait();
            panic!("berth pull from {addr} still hangs after 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = pull.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("cannot reach registry {addr}")), "{err}");
    assert!(err.contains("registry.idle_timeout") || err.contains("registry.connect_timeout"), "{err}");
}
