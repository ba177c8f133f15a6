//! Credential helpers end to end: `berth login`, `pull` and `logout`
//! against a registry with htpasswd auth, with docker's config naming a
//! helper (`credsStore`, `credHelpers`) and a fake `docker-credential-fake`
//! on PATH that keeps what it is given in files and logs every call.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use berth_testkit::image::{Comp, OciLayout, busybox_layer};
use berth_testkit::registry::{Registry, RegistryOptions};
use serde_json::json;

/// What docker-credential-helpers' helpers do, as a shell script: one
/// file per server URL; "credentials not found in native keychain" when
/// there is none.
const FAKE_HELPER: &str = r#"#!/bin/sh
dir=$(dirname "$0")
input=$(cat)
printf '%s %s\n' "$1" "$input" >> "$dir/log"
case "$1" in
store)
    url=$(printf '%s' "$input" | sed -n 's/.*"ServerURL":"\([^"]*\)".*/\1/p')
    printf '%s' "$input" > "$dir/creds-$(printf '%s' "$url" | tr '/:' '__')" ;;
get|erase)
    f="$dir/creds-$(printf '%s' "$input" | tr '/:' '__')"
    if [ ! -f "$f" ]; then echo "credentials not found in native keychain"; exit 1; fi
    if [ "$1" = get ]; then cat "$f"; else rm "$f"; fi ;;
*) echo "unknown verb $1"; exit 1 ;;
esac
"#;

struct Berth {
    tmp: tempfile::TempDir,
}

impl Berth {
    /// berth with its own root, auth file, docker config (`docker_config`)
    /// and helpers directory at the head of PATH.
    fn new(docker_config: serde_json::Value) -> Berth {
        berth_testkit::require_root();
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("config.toml"), "[registry]\ncerts_dirs = []\n").unwrap();
        std::fs::create_dir_all(tmp.path().join("docker")).unwrap();
        std::fs::write(tmp.path().join("docker/config.json"), docker_config.to_string()).unwrap();
        let bin = tmp.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for (name, script) in [
            ("docker-credential-fake", FAKE_HELPER),
            ("docker-credential-broken", "#!/bin/sh\necho 'keychain is locked' >&2\nexit 3\n"),
        ] {
            std::fs::write(bin.join(name), script).unwrap();
            std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Berth { tmp }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let path = format!("{}:{}", self.path("bin").display(), std::env::var("PATH").unwrap_or_default());
        let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
        c.arg("--root")
            .arg(self.path("root"))
            .arg("--runroot")
            .arg(self.path("run"))
            .arg("--config")
            .arg(self.path("config.toml"))
            .args(args)
            .env("BERTH_AUTH_FILE", self.path("auth.json"))
            .env("DOCKER_CONFIG", self.path("docker"))
            .env("PATH", path)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "berth {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    }

    fn login(&self, registry: &str, user: &str, password: &str) -> Output {
        let mut c = self.cmd(&["login", "-u", user, "--password-stdin", registry]);
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), format!("{password}\n").as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// The helper's calls: verb and what it read.
    fn helper_log(&self) -> String {
        std::fs::read_to_string(self.path("bin/log")).unwrap_or_default()
    }

    /// Puts credentials in the fake helper's keeping, as a login through
    /// docker would have.
    fn helper_holds(&self, server: &str, user: &str, secret: &str) {
        let name = format!("creds-{}", server.replace(['/', ':'], "_"));
        let body = json!({"ServerURL": server, "Username": user, "Secret": secret});
        std::fs::write(self.path("bin").join(name), body.to_string()).unwrap();
    }
}

fn registry_with_image() -> (Registry, String) {
    let reg = Registry::start_with(RegistryOptions { users: vec![("bob".into(), "pw".into())], ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let mut l = OciLayout::new(tmp.path());
    let img = l.image(&[busybox_layer()], Comp::Gzip, json!({"Cmd": ["sh"]}), "amd64");
    l.tag(&img, "t");
    let name = format!("{}/h:1", reg.addr());
    l.push("t", &name, &["--dest-creds", "bob:pw"]);
    (reg, name)
}

fn auth_file_has(path: &Path, needle: &str) -> bool {
    std::fs::read_to_string(path).unwrap_or_default().contains(needle)
}

#[test]
fn login_pull_logout_through_creds_store() {
    let (reg, name) = registry_with_image();
    let b = Berth::new(json!({"credsStore": "fake"}));
    assert!(!b.run(&["pull", "-q", &name]).status.success(), "anonymous pulls are refused");
    assert!(b.helper_log().contains(&format!("get {}", reg.addr())), "{}", b.helper_log());

    let out = b.login(&reg.addr(), "bob", "pw");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stored = format!(r#"store {{"ServerURL":"{}","Username":"bob","Secret":"pw"}}"#, reg.addr());
    assert!(b.helper_log().contains(&stored), "{}", b.helper_log());
    assert!(!auth_file_has(&b.path("auth.json"), "auth\""), "the secret went to the helper only");

    b.ok(&["pull", "-q", &name]);
    b.ok(&["rmi", &name]);

    assert!(b.ok(&["logout", &reg.addr()]).contains("Removing login credentials"));
    assert!(b.helper_log().contains(&format!("erase {}", reg.addr())), "{}", b.helper_log());
    assert!(!b.run(&["pull", "-q", &name]).status.success(), "logged out");
}

#[test]
fn cred_helpers_answer_for_their_registry() {
    let (reg, name) = registry_with_image();
    let b = Berth::new(json!({"credHelpers": {reg.addr(): "fake"}}));
    b.helper_holds(&reg.addr(), "bob", "pw");
    b.ok(&["pull", "-q", &name]);
    assert_eq!(b.helper_log().lines().next(), Some(format!("get {}", reg.addr()).as_str()));
}

#[test]
fn a_failing_helper_is_named_in_the_error() {
    let (reg, name) = registry_with_image();
    let b = Berth::new(json!({"credHelpers": {reg.addr(): "broken"}}));
    let out = b.run(&["pull", "-q", &name]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("docker-credential-broken get") && err.contains("keychain is locked"), "{err}");
}
