//! Credentials and challenges.
//!
//! Credentials come from berth's own auth file (written by `berth login`;
//! `~/.config/berth/auth.json` or `$BERTH_AUTH_FILE`) and then from
//! docker's `~/.docker/config.json` (`$DOCKER_CONFIG/config.json`); both use
//! docker's format: `{"auths": {"host:port": {"auth": base64(user:pass)}}}`,
//! `identitytoken` for a refresh token, and credential helpers
//! ([`super::credentials`]): `credHelpers` (per registry) and `credsStore`
//! (the rest). In each file, in order: the registry's credHelpers entry,
//! then its `auths` entry, then credsStore; the first file that has
//! credentials wins. `login` stores through the first helper a file names
//! for the registry, else in berth's own file; `logout` erases from both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::challenge::{AuthChallenge, parse_challenges};
use super::credentials::{CredentialHelper, HelperPath, IDENTITY_TOKEN_USER};
use crate::error::{Error, IoContext, Result, json_err};
use crate::reference::DEFAULT_REGISTRY;

/// A user name and password (or token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        write!(f, "Credentials({}, ***)", self.username)
    }
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        format!("Basic {}", B64.encode(format!("{}:{}", self.username, self.password)))
    }
}

#[derive(Serialize, Deserialize, Default, Debug)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(rename = "credsStore", default, skip_serializing_if = "Option::is_none")]
    creds_store: Option<String>,
    #[serde(rename = "credHelpers", default, skip_serializing_if = "BTreeMap::is_empty")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Serialize, Deserialize, Default, Debug, Clone)]
struct AuthEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    /// docker's refresh token for the registry's token server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identitytoken: Option<String>,
}

impl AuthFile {
    /// The helper this file's credHelpers names for `registry`.
    fn registry_helper(&self, registry: &str) -> Option<&str> {
        keys_for(registry).iter().find_map(|k| self.cred_helpers.get(k)).map(String::as_str).filter(|h| !h.is_empty())
    }

    /// The helper that keeps `registry`'s credentials: its own, else the
    /// default store.
    fn helper(&self, registry: &str) -> Option<&str> {
        self.registry_helper(registry).or(self.creds_store.as_deref().filter(|h| !h.is_empty()))
    }
}

/// The server URLs a helper may hold a registry's credentials under:
/// docker's key for Docker Hub (its v1 index URL), then podman's; the
/// registry as named elsewhere.
fn helper_urls(registry: &str) -> Vec<String> {
    if registry == DEFAULT_REGISTRY {
        vec!["https://index.docker.io/v1/".into(), registry.into()]
    } else {
        vec![registry.into()]
    }
}

/// The first of `urls` a helper has credentials for.
fn helper_get(name: &str, registry: &str, path: &HelperPath) -> Result<Option<Credentials>> {
    let helper = CredentialHelper::new(name, path);
    for url in helper_urls(registry) {
        if let Some(c) = helper.get(&url)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// The keys a registry may be stored under: docker.io is stored by docker
/// as its v1 index URL.
fn keys_for(registry: &str) -> Vec<String> {
    let mut keys = vec![registry.to_string(), format!("https://{registry}"), format!("http://{registry}")];
    if registry == DEFAULT_REGISTRY {
        keys.extend(["https://index.docker.io/v1/".to_string(), "index.docker.io".to_string()]);
    }
    keys
}

/// Where credentials are looked up, in order.
#[derive(Clone, Debug)]
pub struct AuthStore {
    /// berth's own file, where `login` writes.
    pub own: PathBuf,
    /// Read-only fallbacks (docker's config.json).
    pub fallbacks: Vec<PathBuf>,
}

impl AuthStore {
    /// The default locations for the current user.
    pub fn default_paths() -> AuthStore {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
        let own = std::env::var_os("BERTH_AUTH_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".config/berth/auth.json"));
        let docker = std::env::var_os("DOCKER_CONFIG")
            .map(|d| PathBuf::from(d).join("config.json"))
            .unwrap_or_else(|| home.join(".docker/config.json"));
        AuthStore { own, fallbacks: vec![docker] }
    }

    /// Credentials for `registry` (as in references: `host:port`), if any.
    pub fn get(&self, registry: &str) -> Result<Option<Credentials>> {
        self.get_in(registry, &HelperPath::Env)
    }

    pub(crate) fn get_in(&self, registry: &str, path: &HelperPath) -> Result<Option<Credentials>> {
        for file_path in self.files() {
            let Some(file) = read_file(file_path)? else { continue };
            if let Some(helper) = file.registry_helper(registry) {
                match helper_get(helper, registry, path)? {
                    Some(c) => return Ok(Some(c)),
                    None => continue,
                }
            }
            for key in keys_for(registry) {
                if let Some(e) = file.auths.get(&key)
                    && let Some(c) = decode(e, file_path)?
                {
                    return Ok(Some(c));
                }
            }
            if let Some(store) = file.creds_store.as_deref().filter(|s| !s.is_empty())
                && let Some(c) = helper_get(store, registry, path)?
            {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    fn files(&self) -> impl Iterator<Item = &PathBuf> {
        std::iter::once(&self.own).chain(&self.fallbacks)
    }

    /// The helper the first file that names one gives `registry`.
    fn helper_for(&self, registry: &str) -> Result<Option<String>> {
        for path in self.files() {
            if let Some(file) = read_file(path)?
                && let Some(h) = file.helper(registry)
            {
                return Ok(Some(h.to_string()));
            }
        }
        Ok(None)
    }

    /// Stores credentials: through the credential helper configured for
    /// `registry`, else in berth's own file (mode 0600).
    pub fn set(&self, registry: &str, creds: &Credentials) -> Result<()> {
        self.set_in(registry, creds, &HelperPath::Env)
    }

    pub(crate) fn set_in(&self, registry: &str, creds: &Credentials, path: &HelperPath) -> Result<()> {
        if let Some(helper) = self.helper_for(registry)? {
            let url = &helper_urls(registry)[0];
            CredentialHelper::new(&helper, path).store(url, creds)?;
            // A copy left in our own file would be read before the helper's.
            self.remove_own(registry)?;
            return Ok(());
        }
        let mut file = read_file(&self.own)?.unwrap_or_default();
        file.auths.insert(registry.to_string(), encode(creds));
        write_file(&self.own, &file)
    }

    /// Removes credentials from the registry's credential helper and from
    /// berth's own file. Returns whether there were any.
    pub fn remove(&self, registry: &str) -> Result<bool> {
        self.remove_in(registry, &HelperPath::Env)
    }

    pub(crate) fn remove_in(&self, registry: &str, path: &HelperPath) -> Result<bool> {
        let mut found = false;
        if let Some(helper) = self.helper_for(registry)? {
            let helper = CredentialHelper::new(&helper, path);
            for url in helper_urls(registry) {
                found |= helper.erase(&url)?;
            }
        }
        Ok(self.remove_own(registry)? || found)
    }

    fn remove_own(&self, registry: &str) -> Result<bool> {
        let Some(mut file) = read_file(&self.own)? else { return Ok(false) };
        let mut found = false;
        for key in keys_for(registry) {
            found |= file.auths.remove(&key).is_some();
        }
        if found {
            write_file(&self.own, &file)?;
        }
        Ok(found)
    }
}

/// An auths entry: an identity token as docker writes one, else
/// base64(user:password).
fn encode(creds: &Credentials) -> AuthEntry {
    match creds.identity_token() {
        Some(t) => AuthEntry { identitytoken: Some(t.to_string()), ..Default::default() },
        None => {
            AuthEntry { auth: Some(B64.encode(format!("{}:{}", creds.username, creds.password))), ..Default::default() }
        }
    }
}

fn read_file(path: &Path) -> Result<Option<AuthFile>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(serde_json::from_slice(&b).map_err(json_err(format!("parse {}", path.display())))?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io { context: format!("read {}", path.display()), source: e }),
    }
}

fn write_file(path: &Path, file: &AuthFile) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
    }
    let data = serde_json::to_vec_pretty(file).map_err(json_err("auth file"))?;
    // Credentials: private, on disk before they replace the old file, and
    // never half-written when two logins race.
    berth_fs::write_atomic_durable(path, &data, 0o600).ctx(|| format!("write {}", path.display()))
}

fn decode(e: &AuthEntry, path: &Path) -> Result<Option<Credentials>> {
    if let Some(t) = e.identitytoken.as_deref().filter(|t| !t.is_empty()) {
        return Ok(Some(Credentials { username: IDENTITY_TOKEN_USER.into(), password: t.into() }));
    }
    if let Some(a) = &e.auth
        && !a.is_empty()
    {
        let bad = || Error::Auth { registry: path.display().to_string(), reason: "malformed auth entry".into() };
        let raw = B64.decode(a.trim()).map_err(|_| bad())?;
        let s = String::from_utf8(raw).map_err(|_| bad())?;
        let (u, p) = s.split_once(':').ok_or_else(bad)?;
        return Ok(Some(Credentials { username: u.into(), password: p.into() }));
    }
    if let (Some(u), Some(p)) = (&e.username, &e.password) {
        return Ok(Some(Credentials { username: u.clone(), password: p.clone() }));
    }
    Ok(None)
}

/// docker's OAuth2 client id is "docker"; ours names berth.
const TOKEN_CLIENT_ID: &str = "berth";

/// The request for a Bearer token at `url`: the challenge's realm with
/// its service and scopes as query parameters. With an identity token,
/// docker's OAuth2 refresh: a POST of the form `grant_type=refresh_token`,
/// the token, service, scopes (space-separated) and client id to the
/// realm. Else a GET, with Basic credentials when there are some.
pub(crate) fn token_request(
    http: &reqwest::Client,
    url: reqwest::Url,
    creds: Option<&Credentials>,
) -> reqwest::RequestBuilder {
    let Some(token) = creds.and_then(Credentials::identity_token) else {
        let req = http.get(url);
        return match creds {
            Some(c) => req.header(reqwest::header::AUTHORIZATION, c.basic_header()),
            None => req,
        };
    };
    let mut form = vec![
        ("grant_type", "refresh_token".to_string()),
        ("refresh_token", token.to_string()),
        ("client_id", TOKEN_CLIENT_ID.to_string()),
    ];
    let mut scopes = Vec::new();
    let mut realm = url.clone();
    // What the realm itself carries in its query stays there.
    let others: Vec<(String, String)> = url
        .query_pairs()
        .filter_map(|(k, v)| match k.as_ref() {
            "service" => {
                form.push(("service", v.into_owned()));
                None
            }
            "scope" => {
                scopes.push(v.into_owned());
                None
            }
            _ => Some((k.into_owned(), v.into_owned())),
        })
        .collect();
    realm.set_query(None);
    if !others.is_empty() {
        realm.query_pairs_mut().extend_pairs(others);
    }
    form.push(("scope", scopes.join(" ")));
    http.post(realm).form(&form)
}

/// The challenge berth answers, out of those a 401 offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

/// The challenge to answer in one `WWW-Authenticate` value: its first
/// Bearer challenge with a realm, else Basic (see [`super::challenge`]
/// for the grammar).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    choose(&parse_challenges(header))
}

/// The challenge to answer among all of a response's `WWW-Authenticate`
/// headers (a registry may send one per scheme). Values are read as UTF-8
/// bytes, so a realm or service with non-ASCII text is kept.
pub fn challenge_from_headers(headers: &reqwest::header::HeaderMap) -> Option<Challenge> {
    let all: Vec<AuthChallenge> = headers
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .flat_map(|v| parse_challenges(&String::from_utf8_lossy(v.as_bytes())))
        .collect();
    choose(&all)
}

/// Bearer first, as docker's token handler comes before its basic one.
fn choose(all: &[AuthChallenge]) -> Option<Challenge> {
    let bearer = all.iter().filter(|c| c.scheme == "bearer").find_map(|c| {
        Some(Challenge::Bearer {
            realm: c.param("realm")?.to_string(),
            service: c.param("service").map(str::to_string),
            scope: c.param("scope").map(str::to_string),
        })
    });
    bearer.or_else(|| all.iter().any(|c| c.scheme == "basic").then_some(Challenge::Basic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull,push".into()),
            }
        );
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn challenge_parameters_keep_their_characters() {
        // Found by fuzz/auth_challenge: bytes were taken for characters, so
        // any non-ASCII character came out as mojibake.
        let c = parse_challenge(r#"Bearer realm="https://régistry.test/tök\"en",service="régistry""#).unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://régistry.test/tök\"en".into(),
                service: Some("régistry".into()),
                scope: None,
            }
        );
    }

    #[test]
    fn credentials_from_docker_config_and_own_file() {
        let tmp = tempfile::tempdir().unwrap();
        let docker = tmp.path().join("config.json");
        std::fs::write(
            &docker,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},"127.0.0.1:5000":{"auth":"YTpiOmM="}},"currentContext":"x"}"#,
        )
        .unwrap();
        let store = AuthStore { own: tmp.path().join("own/auth.json"), fallbacks: vec![docker] };
        assert_eq!(store.get("docker.io").unwrap().unwrap().username, "user");
        let c = store.get("127.0.0.1:5000").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("a", "b:c"));
        assert!(store.get("other.example").unwrap().is_none());

        let mine = Credentials { username: "me".into(), password: "secret".into() };
        store.set("127.0.0.1:5000", &mine).unwrap();
        assert_eq!(store.get("127.0.0.1:5000").unwrap().unwrap(), mine);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&store.own).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(store.remove("127.0.0.1:5000").unwrap());
        assert_eq!(store.get("127.0.0.1:5000").unwrap().unwrap().username, "a");
        assert!(!format!("{mine:?}").contains("secret"));
    }

    #[test]
    fn credentials_are_never_written_through_a_planted_temp_name() {
        let tmp = tempfile::tempdir().unwrap();
        let own = tmp.path().join("own/auth.json");
        std::fs::create_dir_all(own.parent().unwrap()).unwrap();
        // Where a fixed temp name (auth.tmp) would have been opened.
        let leak = tmp.path().join("world-readable");
        std::os::unix::fs::symlink(&leak, own.with_extension("tmp")).unwrap();
        let store = AuthStore { own: own.clone(), fallbacks: vec![] };
        store.set("127.0.0.1:5000", &Credentials { username: "me".into(), password: "secret".into() }).unwrap();
        assert!(!leak.exists(), "the credentials went through the symlink");
        assert_eq!(store.get("127.0.0.1:5000").unwrap().unwrap().username, "me");
    }

    use super::super::credentials::tests::fake_helper;

    fn write(path: &Path, json: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, json).unwrap();
    }

    fn creds(u: &str, p: &str) -> Credentials {
        Credentials { username: u.into(), password: p.into() }
    }

    #[test]
    fn cred_helpers_come_before_auths_and_creds_store_after() {
        let tmp = tempfile::tempdir().unwrap();
        let helpers = fake_helper(tmp.path());
        let fake = CredentialHelper::new("fake", &helpers);
        fake.store("reg.test", &creds("from-helper", "h")).unwrap();
        fake.store("other.test", &creds("from-store", "s")).unwrap();
        let docker = tmp.path().join("docker/config.json");
        // base64("from-file:f")
        write(
            &docker,
            r#"{"auths":{"reg.test":{"auth":"ZnJvbS1maWxlOmY="},"plain.test":{"auth":"ZnJvbS1maWxlOmY="}},
                "credHelpers":{"reg.test":"fake"},"credsStore":"fake"}"#,
        );
        let store = AuthStore { own: tmp.path().join("own/auth.json"), fallbacks: vec![docker] };
        let get = |r: &str| store.get_in(r, &helpers).unwrap().map(|c| c.username);
        assert_eq!(get("reg.test").as_deref(), Some("from-helper"), "credHelpers before auths");
        assert_eq!(get("plain.test").as_deref(), Some("from-file"), "auths before credsStore");
        assert_eq!(get("other.test").as_deref(), Some("from-store"), "credsStore for the rest");
        assert_eq!(get("none.test"), None, "the helper's not-found is anonymous");
        // Docker Hub under docker's key, then podman's.
        assert_eq!(get("docker.io"), None);
        let log = std::fs::read_to_string(tmp.path().join("log")).unwrap();
        assert!(log.contains("get https://index.docker.io/v1/\nget docker.io\n"), "{log}");
    }

    #[test]
    fn login_and_logout_go_through_the_configured_helper() {
        let tmp = tempfile::tempdir().unwrap();
        let helpers = fake_helper(tmp.path());
        let docker = tmp.path().join("docker/config.json");
        write(&docker, r#"{"credsStore":"fake"}"#);
        let own = tmp.path().join("own/auth.json");
        // A copy from before the helper was set up.
        write(&own, r#"{"auths":{"reg.test":{"auth":"b2xkOm9sZA=="}}}"#);
        let store = AuthStore { own: own.clone(), fallbacks: vec![docker] };
        store.set_in("reg.test", &creds("bob", "pw"), &helpers).unwrap();
        let log = std::fs::read_to_string(tmp.path().join("log")).unwrap();
        assert!(log.contains(r#"store {"ServerURL":"reg.test","Username":"bob","Secret":"pw"}"#), "{log}");
        assert!(!std::fs::read_to_string(&own).unwrap().contains("reg.test"), "the old copy is gone");
        assert_eq!(store.get_in("reg.test", &helpers).unwrap(), Some(creds("bob", "pw")));
        assert!(store.remove_in("reg.test", &helpers).unwrap());
        assert!(std::fs::read_to_string(tmp.path().join("log")).unwrap().contains("erase reg.test"));
        assert_eq!(store.get_in("reg.test", &helpers).unwrap(), None);
        assert!(!store.remove_in("reg.test", &helpers).unwrap(), "nothing left to remove");
    }

    #[test]
    fn a_failing_helper_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let helpers = fake_helper(tmp.path());
        let docker = tmp.path().join("config.json");
        write(&docker, r#"{"credHelpers":{"reg.test":"broken"}}"#);
        let store = AuthStore { own: tmp.path().join("own.json"), fallbacks: vec![docker] };
        let e = store.get_in("reg.test", &helpers).unwrap_err().to_string();
        assert!(e.contains("docker-credential-broken") && e.contains("keychain locked"), "{e}");
        assert_eq!(store.get_in("elsewhere.test", &helpers).unwrap(), None, "other registries are not its");
    }

    #[test]
    fn identity_tokens_in_auth_files() {
        let tmp = tempfile::tempdir().unwrap();
        let docker = tmp.path().join("config.json");
        write(&docker, r#"{"auths":{"https://index.docker.io/v1/":{"auth":"","identitytoken":"refresh-1"}}}"#);
        let store = AuthStore { own: tmp.path().join("own/auth.json"), fallbacks: vec![docker] };
        let c = store.get("docker.io").unwrap().unwrap();
        assert_eq!(c.identity_token(), Some("refresh-1"));
        store.set("reg.test", &c).unwrap();
        let own = std::fs::read_to_string(&store.own).unwrap();
        assert!(own.contains(r#""identitytoken": "refresh-1""#), "{own}");
        assert_eq!(store.get("reg.test").unwrap().unwrap().identity_token(), Some("refresh-1"));
    }
}
