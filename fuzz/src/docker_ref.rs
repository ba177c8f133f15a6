//! An oracle for image references: docker's own grammar
//! (distribution/reference's regular expressions and
//! `ParseNormalizedNamed`), written from its definition and independent
//! of berth's hand-written parser, so the two can be compared.

use std::sync::LazyLock;

use regex::Regex;

/// A reference as docker normalizes it.
#[derive(Debug, PartialEq, Eq)]
pub struct DockerRef {
    pub domain: String,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

const DEFAULT_DOMAIN: &str = "docker.io";
const NAME_TOTAL_LENGTH_MAX: usize = 255;

static REFERENCE: LazyLock<Regex> = LazyLock::new(|| {
    // Go's \w is ASCII only: spelled out, as Rust's \w is Unicode.
    let path_component = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*";
    let domain_component = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
    let domain_name = format!(r"{domain_component}(?:\.{domain_component})*");
    let host = format!(r"(?:{domain_name}|\[(?:[a-fA-F0-9:]+)\])");
    let domain_and_port = format!(r"{host}(?::[0-9]+)?");
    let tag = r"[0-9A-Za-z_][0-9A-Za-z_.-]{0,127}";
    let digest = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
    let pattern = format!(
        r"^(?P<name>(?:(?P<domain>{domain_and_port})/)?(?P<path>{path_component}(?:/{path_component})*))(?::(?P<tag>{tag}))?(?:@(?P<digest>{digest}))?$"
    );
    Regex::new(&pattern).expect("the reference grammar compiles")
});

static IDENTIFIER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-f0-9]{64}$").expect("compiles"));
static ENCODED: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-f0-9]+$").expect("compiles"));

/// docker's `splitDockerDomain`.
fn split_docker_domain(name: &str) -> (String, String) {
    let Some((first, rest)) = name.split_once('/') else {
        return (DEFAULT_DOMAIN.into(), format!("library/{name}"));
    };
    let (domain, remote) = if first == "localhost" || first.contains(['.', ':']) || first.to_lowercase() != first {
        (first.to_string(), rest.to_string())
    } else {
        (DEFAULT_DOMAIN.to_string(), name.to_string())
    };
    // berth also takes registry-1.docker.io (the host that serves Docker
    // Hub's API) for docker.io, where docker keeps it as a registry of its
    // own: a deliberate difference, so the oracle does the same.
    let domain = if domain == "index.docker.io" || domain == "registry-1.docker.io" {
        DEFAULT_DOMAIN.to_string()
    } else {
        domain
    };
    let remote = if domain == DEFAULT_DOMAIN && !remote.contains('/') { format!("library/{remote}") } else { remote };
    (domain, remote)
}

/// docker's `ParseNormalizedNamed`, `None` where docker refuses. The
/// digest is checked as go-digest does (sha256, sha384, sha512 with their
/// lengths in lowercase hex).
pub fn parse_normalized(s: &str) -> Option<DockerRef> {
    if IDENTIFIER.is_match(s) {
        return None;
    }
    let (domain, remainder) = split_docker_domain(s);
    let remote_name = remainder.split_once(':').map_or(remainder.as_str(), |(n, _)| n);
    if remote_name.to_lowercase() != remote_name {
        return None;
    }
    let full = format!("{domain}/{remainder}");
    let caps = REFERENCE.captures(&full)?;
    // Since distribution/reference v0.5, the path alone is limited.
    if caps["path"].len() > NAME_TOTAL_LENGTH_MAX {
        return None;
    }
    let digest = caps.name("digest").map(|d| d.as_str().to_string());
    if let Some(d) = &digest {
        let (alg, enc) = d.split_once(':')?;
        let len = match alg {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            _ => return None,
        };
        if enc.len() != len || !ENCODED.is_match(enc) {
            return None;
        }
    }
    // docker's grammar can read an invalid host (`a.b_c`) as a first path
    // component and so return a reference without a registry: nothing
    // could pull it, so count it as refused.
    let domain = caps.name("domain")?.as_str().to_string();
    Some(DockerRef {
        domain,
        path: caps["path"].to_string(),
        tag: caps.name("tag").map(|m| m.as_str().to_string()),
        digest,
    })
}
