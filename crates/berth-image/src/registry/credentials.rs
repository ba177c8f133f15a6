//! Credential helpers, as docker and podman run them (the
//! docker-credential-helpers protocol): `docker-credential-NAME get` with
//! the server URL on stdin answers `{"ServerURL","Username","Secret"}` on
//! stdout; `store` takes that JSON on stdin; `erase` takes the server URL.
//! A helper that has nothing says so with the message "credentials not
//! found in native keychain" and a failing exit status. A username of
//! `<token>` marks the secret as an identity token (a refresh token for
//! the registry's token server), as docker stores them.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::auth::Credentials;
use crate::error::{Error, Result};

/// What helpers answer when they hold nothing for a server.
const NOT_FOUND: &str = "credentials not found in native keychain";
/// docker's username for an identity token.
pub const IDENTITY_TOKEN_USER: &str = "<token>";

/// Where helper programs are found: `$PATH`, as docker looks them up, or
/// one directory (tests).
#[derive(Clone, Debug, Default)]
pub enum HelperPath {
    #[default]
    Env,
    Dir(PathBuf),
}

/// One credential helper, `docker-credential-NAME`.
#[derive(Clone, Debug)]
pub struct CredentialHelper {
    name: String,
    program: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct HelperCredentials {
    #[serde(rename = "ServerURL", default)]
    server_url: String,
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

impl CredentialHelper {
    /// The helper named `name` in a config's `credsStore` or `credHelpers`.
    pub fn new(name: &str, path: &HelperPath) -> CredentialHelper {
        let file = format!("docker-credential-{name}");
        let program = match path {
            HelperPath::Env => PathBuf::from(file),
            HelperPath::Dir(d) => d.join(file),
        };
        CredentialHelper { name: name.to_string(), program }
    }

    /// The program run, as users know it.
    pub fn program_name(&self) -> String {
        format!("docker-credential-{}", self.name)
    }

    /// The credentials stored for `server_url`; `None` when the helper has
    /// none.
    pub fn get(&self, server_url: &str) -> Result<Option<Credentials>> {
        let Some(out) = self.run("get", server_url.as_bytes(), server_url)? else { return Ok(None) };
        let c: HelperCredentials = serde_json::from_slice(&out)
            .map_err(|e| self.error(server_url, "get", format!("answered what is not credentials JSON ({e})")))?;
        if c.username.is_empty() && c.secret.is_empty() {
            return Ok(None);
        }
        Ok(Some(Credentials { username: c.username, password: c.secret }))
    }

    /// Stores `creds` for `server_url`.
    pub fn store(&self, server_url: &str, creds: &Credentials) -> Result<()> {
        let body = HelperCredentials {
            server_url: server_url.to_string(),
            username: creds.username.clone(),
            secret: creds.password.clone(),
        };
        let body = serde_json::to_vec(&body).map_err(|e| self.error(server_url, "store", e.to_string()))?;
        self.run("store", &body, server_url)?;
        Ok(())
    }

    /// Erases what is stored for `server_url`; whether there was anything.
    pub fn erase(&self, server_url: &str) -> Result<bool> {
        Ok(self.run("erase", server_url.as_bytes(), server_url)?.is_some())
    }

    /// Runs one verb; its stdout, or `None` when the helper has nothing
    /// for the server.
    fn run(&self, verb: &str, input: &[u8], server_url: &str) -> Result<Option<Vec<u8>>> {
        let mut child = Command::new(&self.program)
            .arg(verb)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.error(server_url, verb, format!("cannot run it: {e}")))?;
        // A helper that exits without reading its input closes the pipe:
        // its exit status says what went wrong.
        let _ = child.stdin.take().map(|mut stdin| stdin.write_all(input));
        let out = child.wait_with_output().map_err(|e| self.error(server_url, verb, e.to_string()))?;
        if out.status.success() {
            return Ok(Some(out.stdout));
        }
        let said = String::from_utf8_lossy(&out.stdout);
        if said.trim() == NOT_FOUND {
            return Ok(None);
        }
        let said = [said.trim(), String::from_utf8_lossy(&out.stderr).trim()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        Err(self.error(server_url, verb, format!("{} ({said})", out.status)))
    }

    fn error(&self, server_url: &str, verb: &str, reason: String) -> Error {
        Error::Auth { registry: server_url.to_string(), reason: format!("{} {verb}: {reason}", self.program_name()) }
    }

    #[cfg(test)]
    pub(crate) fn program(&self) -> &std::path::Path {
        &self.program
    }
}

impl Credentials {
    /// The identity token, when these are one (username `<token>`).
    pub fn identity_token(&self) -> Option<&str> {
        (self.username == IDENTITY_TOKEN_USER).then_some(self.password.as_str())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::*;

    /// A fake helper in `dir`, named `fake`: keeps one file per server URL,
    /// logs each call (verb and input) to `dir/log`.
    pub(crate) fn fake_helper(dir: &Path) -> HelperPath {
        let script = r#"#!/bin/sh
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
        let p = dir.join("docker-credential-fake");
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let broken = dir.join("docker-credential-broken");
        std::fs::write(&broken, "#!/bin/sh\necho 'keychain locked' >&2\nexit 3\n").unwrap();
        std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
        HelperPath::Dir(dir.to_path_buf())
    }

    #[test]
    fn store_get_erase_through_the_protocol() {
        let tmp = tempfile::tempdir().unwrap();
        let h = CredentialHelper::new("fake", &fake_helper(tmp.path()));
        assert_eq!(h.get("registry.test:5000").unwrap(), None, "not found is no credentials");
        let c = Credentials { username: "bob".into(), password: "p\"w".into() };
        h.store("registry.test:5000", &c).unwrap();
        assert_eq!(h.get("registry.test:5000").unwrap(), Some(c));
        assert!(h.erase("registry.test:5000").unwrap());
        assert!(!h.erase("registry.test:5000").unwrap());
        let log = std::fs::read_to_string(tmp.path().join("log")).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines[0], "get registry.test:5000");
        assert_eq!(lines[1], r#"store {"ServerURL":"registry.test:5000","Username":"bob","Secret":"p\"w"}"#);
        assert_eq!(lines[3], "erase registry.test:5000");
    }

    #[test]
    fn identity_tokens_are_told_apart() {
        let tmp = tempfile::tempdir().unwrap();
        let h = CredentialHelper::new("fake", &fake_helper(tmp.path()));
        let t = Credentials { username: IDENTITY_TOKEN_USER.into(), password: "refresh-me".into() };
        h.store("https://index.docker.io/v1/", &t).unwrap();
        let got = h.get("https://index.docker.io/v1/").unwrap().unwrap();
        assert_eq!(got.identity_token(), Some("refresh-me"));
        assert_eq!(Credentials { username: "bob".into(), password: "x".into() }.identity_token(), None);
    }

    #[test]
    fn failures_name_the_helper() {
        let tmp = tempfile::tempdir().unwrap();
        let path = fake_helper(tmp.path());
        let e = CredentialHelper::new("broken", &path).get("r.test").unwrap_err().to_string();
        assert!(e.contains("docker-credential-broken get") && e.contains("keychain locked"), "{e}");
        let e = CredentialHelper::new("absent", &path).get("r.test").unwrap_err().to_string();
        assert!(e.contains("docker-credential-absent") && e.contains("cannot run"), "{e}");
        assert!(CredentialHelper::new("x", &HelperPath::Env).program().ends_with("docker-credential-x"));
    }
}
