//! Image references, normalized as docker does: `busybox` is
//! `docker.io/library/busybox:latest`, `localhost:5000/a/b@sha256:…` keeps
//! its host, port and digest. Tested on distribution/reference's own
//! vectors (tests/reference_vectors.rs) and fuzzed against a model of its
//! grammar (fuzz/fuzz_targets/reference.rs).
//!
//! Ours rather than oci-spec's `distribution::Reference` (0.10), which
//! differs from docker's `ParseNormalizedNamed` where users notice: it
//! takes no IPv6 registry (`[::1]:5000/app`); it accepts a bare 64-digit
//! hex string (an image ID) as a repository name; an uppercase first
//! component (`Foo/bar`) is not a registry there; it has no familiar name
//! (`busybox` for docker.io/library/busybox); its errors do not say what
//! was wrong (uppercase, length, digest) beyond "invalid reference
//! format"; and its digest is a string, where ours is a verified sha256
//! [`Digest`]. Deliberate differences from docker: `registry-1.docker.io`
//! (the host serving Docker Hub's API) is also read as docker.io; digests
//! other than sha256 are refused (docker's default build refuses them
//! too); a familiar name is shortened only when it parses back to the same
//! repository (docker shows `docker.io/a.b/c` as `a.b/c`, another registry).

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// The registry a name without a host refers to.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The host that actually serves docker.io's registry API.
pub const DEFAULT_REGISTRY_API_HOST: &str = "registry-1.docker.io";
pub const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;

/// A fully normalized image reference.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalizes `s`. A reference with neither tag nor digest
    /// gets the tag `latest`.
    pub fn parse(s: &str) -> Result<Reference> {
        let bad = |reason: &str| Error::InvalidReference { reference: s.to_string(), reason: reason.to_string() };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        // docker refuses these: a bare 64-digit hex string is an image ID,
        // and a repository of that name could never be told from one.
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(bad("cannot specify 64-byte hexadecimal strings (an image ID is not a repository name)"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>().map_err(|_| bad("invalid digest"))?)),
            None => (s, None),
        };
        // A tag is after the last ':' that comes after the last '/', so a
        // host's port is never taken for a tag.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(bad("invalid tag"));
        }
        let (registry, path) = split_registry(name);
        if !valid_host(registry) {
            return Err(bad("invalid registry host"));
        }
        let mut repository = path.to_string();
        if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad("repository name must be lowercase"));
        }
        if !repository.split('/').all(valid_path_component) {
            return Err(bad("invalid repository name"));
        }
        // The path alone, as distribution/reference since v0.5 (docker 24):
        // the registry does not count.
        if repository.len() > MAX_NAME_LEN {
            return Err(bad("repository name too long"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Reference { registry: registry.to_string(), repository, tag, digest })
    }

    /// `docker.io`, `localhost:5000`, `[::1]:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host (and port) that serves the registry API.
    pub fn api_host(&self) -> &str {
        if self.registry == DEFAULT_REGISTRY { DEFAULT_REGISTRY_API_HOST } else { &self.registry }
    }

    /// `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The name as docker shows it: `busybox`, `user/app`,
    /// `localhost:5000/app`: the shortest of those forms that still parses
    /// to this repository. So `library/a/b` stays (`a/b` is docker.io/a/b),
    /// and so do `docker.io/a.b/c` (`a.b/c` names the registry a.b) and
    /// `library/<64 hex digits>` (the bare digits are an image ID).
    pub fn familiar_name(&self) -> String {
        let full = self.name();
        if self.registry != DEFAULT_REGISTRY {
            return full;
        }
        let official = self.repository.strip_prefix("library/").filter(|o| !o.contains('/'));
        official
            .into_iter()
            .chain([self.repository.as_str()])
            .find(|short| Reference::parse(short).is_ok_and(|r| r.name() == full))
            .map_or(full, str::to_string)
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference { tag: Some(tag.to_string()), digest: None, ..self.clone() }
    }

    /// The same repository pinned to `digest`, without a tag
    /// (`name@sha256:…`, docker's RepoDigests form).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference { tag: None, digest: Some(digest), ..self.clone() }
    }

    /// What to ask the registry for: the digest when there is one, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }
}

fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        // An IPv6 literal (`[::1]`) always has a ':'.
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            if first == "index.docker.io" || first == "registry-1.docker.io" {
                (DEFAULT_REGISTRY, rest)
            } else {
                (first, rest)
            }
        }
        // docker: a first component with uppercase letters is a host too.
        Some((first, rest)) if first.chars().any(|c| c.is_ascii_uppercase()) => (first, rest),
        _ => (DEFAULT_REGISTRY, name),
    }
}

fn valid_host(h: &str) -> bool {
    if h.is_empty() {
        return false;
    }
    let (host, port) = if let Some(rest) = h.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, tail)) => {
                // docker's grammar: hex digits and colons only.
                if v6.is_empty() || !v6.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
                    return false;
                }
                match tail.strip_prefix(':') {
                    Some(p) => return !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()),
                    None => return tail.is_empty(),
                }
            }
            None => return false,
        }
    } else {
        match h.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (h, None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()))
    {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

impl FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Reference> {
        Reference::parse(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn short_names_get_docker_io_library_and_latest() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(norm("docker.io/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("index.docker.io/library/busybox"), "docker.io/library/busybox:latest");
    }

    #[test]
    fn hosts_with_ports_are_not_tags() {
        let r = Reference::parse("localhost:5000/app").unwrap();
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.repository(), "app");
        assert_eq!(r.tag(), Some("latest"));
        let r = Reference::parse("127.0.0.1:35001/a/b/c:v1.2-rc_3").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:35001");
        assert_eq!(r.repository(), "a/b/c");
        assert_eq!(r.tag(), Some("v1.2-rc_3"));
        assert_eq!(norm("[::1]:5000/app:1"), "[::1]:5000/app:1");
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("registry.example.com/app"), "registry.example.com/app:latest");
    }

    #[test]
    fn digests_are_kept_and_imply_no_tag() {
        let r = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().to_string(), D);
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        assert_eq!(r.manifest_reference(), D);
        let r = Reference::parse(&format!("localhost:5000/app:v1@{D}")).unwrap();
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.manifest_reference(), D);
    }

    #[test]
    fn familiar_names_strip_the_defaults() {
        assert_eq!(Reference::parse("busybox").unwrap().familiar_name(), "busybox");
        assert_eq!(Reference::parse("user/app").unwrap().familiar_name(), "user/app");
        assert_eq!(Reference::parse("localhost:5000/app").unwrap().familiar_name(), "localhost:5000/app");
        assert_eq!(Reference::parse("busybox").unwrap().api_host(), "registry-1.docker.io");
    }

    #[test]
    fn a_familiar_name_names_the_same_repository() {
        // Found by fuzz/reference: `library/a/b` was shown as `a/b`, which
        // is docker.io/a/b.
        let r = Reference::parse("docker.io/library/a/b").unwrap();
        assert_eq!(r.familiar_name(), "library/a/b");
        assert_eq!(Reference::parse(&r.familiar_name()).unwrap().name(), r.name());
        // And `docker.io/a.b/c` as `a.b/c` would name the registry a.b.
        let id = D.strip_prefix("sha256:").unwrap();
        assert_eq!(Reference::parse(&format!("library/{id}")).unwrap().familiar_name(), format!("library/{id}"));
        for name in ["docker.io/a.b/c", "docker.io/index.docker.io/c"] {
            let r = Reference::parse(name).unwrap();
            assert_eq!(r.familiar_name(), name);
            assert_eq!(Reference::parse(&r.familiar_name()).unwrap().name(), r.name());
        }
    }

    #[test]
    fn invalid_references_are_refused() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-tag",
            "busy box",
            "a//b",
            "a/",
            "/a",
            "app@sha256:123",
            "app@md5:abc",
            "-app",
            "app-",
            "a..b",
            "localhost:port/app",
            &format!("busybox:{}", "t".repeat(129)),
            &format!("example.com/{}", "a".repeat(256)),
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_bare_image_id_is_not_a_repository_name() {
        // Found by fuzz/reference: docker's ParseNormalizedNamed refuses it.
        let id = D.strip_prefix("sha256:").unwrap();
        let e = Reference::parse(id).unwrap_err().to_string();
        assert!(e.contains("64-byte hexadecimal"), "{e}");
        assert_eq!(norm(&format!("library/{id}")), format!("docker.io/library/{id}:latest"));
        assert!(Reference::parse(&id[1..]).is_ok(), "63 digits are a name");
    }

    #[test]
    fn ipv6_hosts_follow_the_distribution_grammar() {
        // Found by fuzz/reference: "[464]" (no ':') was taken for a
        // registry, and dots were allowed inside the brackets; docker
        // refuses both.
        for bad in ["[464]/b", "[::ffff:1.2.3.4]:5000/app"] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(Reference::parse("[fe80::1]/app").unwrap().registry(), "[fe80::1]");
    }

    #[test]
    fn separators_follow_the_distribution_grammar() {
        for ok in ["a_b", "a__b", "a.b", "a-b", "a---b", "a1/b2/c3"] {
            assert!(Reference::parse(ok).is_ok(), "{ok:?} refused");
        }
        for bad in ["a___b", "a._b", "a-.b"] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn with_tag_and_digest() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.with_tag("x").to_string(), "docker.io/library/busybox:x");
        assert_eq!(r.with_digest(D.parse().unwrap()).to_string(), format!("docker.io/library/busybox@{D}"));
    }
}
