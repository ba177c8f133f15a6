//! Platforms (`linux/arm64/v8`) and the choice of one manifest from an index.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::{Descriptor, ImageIndex};

use crate::error::{Error, Result};

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform berth runs on, in Go's names (what images use).
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform { os: "linux".into(), architecture: arch.into(), variant: variant.map(Into::into) }
    }

    /// True if an index entry's platform satisfies this one. A missing
    /// variant matches any; arm64's implied variant is v8.
    pub fn matches(&self, p: &oci_spec::image::Platform) -> bool {
        if p.os().to_string() != self.os || p.architecture().to_string() != self.architecture {
            return false;
        }
        let norm = |v: Option<&str>| -> Option<String> {
            match (self.architecture.as_str(), v) {
                ("arm64", None) => Some("v8".into()),
                (_, v) => v.map(Into::into),
            }
        };
        match &self.variant {
            None => true,
            Some(want) => norm(p.variant().as_deref()).as_deref() == Some(want.as_str()),
        }
    }

    /// Picks the manifest for this platform from an index, skipping
    /// attestation manifests (platform unknown/unknown).
    pub fn select<'a>(&self, index: &'a ImageIndex, reference: &str) -> Result<&'a Descriptor> {
        let candidates: Vec<&Descriptor> = index.manifests().iter().collect();
        // Exact variant first, then any variant when none was asked for.
        if let Some(d) = candidates.iter().find(|d| d.platform().as_ref().is_some_and(|p| self.matches(p))) {
            return Ok(d);
        }
        let available: Vec<String> = candidates
            .iter()
            .filter_map(|d| d.platform().as_ref())
            .map(|p| {
                let mut s = format!("{}/{}", p.os(), p.architecture());
                if let Some(v) = p.variant() {
                    s.push('/');
                    s.push_str(v);
                }
                s
            })
            .collect();
        Err(Error::NoPlatform {
            reference: reference.to_string(),
            wanted: self.to_string(),
            available: if available.is_empty() { "none".into() } else { available.join(", ") },
        })
    }
}

impl FromStr for Platform {
    type Err = Error;
    fn from_str(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &&str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(ok) {
            return Err(Error::InvalidPlatform(s.to_string()));
        }
        let mut arch = parts[1].to_ascii_lowercase();
        // Aliases docker accepts.
        if arch == "x86_64" || arch == "x86-64" {
            arch = "amd64".into();
        } else if arch == "aarch64" {
            arch = "arm64".into();
        }
        Ok(Platform {
            os: parts[0].to_ascii_lowercase(),
            architecture: arch,
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> ImageIndex {
        let d = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        let e = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        serde_json::from_str(&format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"{e}","platform":{{"architecture":"unknown","os":"unknown"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"{d}","platform":{{"architecture":"amd64","os":"linux"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":2,"digest":"{d}","platform":{{"architecture":"arm","os":"linux","variant":"v6"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":3,"digest":"{d}","platform":{{"architecture":"arm64","os":"linux"}}}}]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn selects_by_os_arch_variant() {
        let i = index();
        let p: Platform = "linux/amd64".parse().unwrap();
        assert_eq!(p.select(&i, "x").unwrap().size(), 1);
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.select(&i, "x").unwrap().size(), 3);
        let p: Platform = "linux/arm/v6".parse().unwrap();
        assert_eq!(p.select(&i, "x").unwrap().size(), 2);
        let p: Platform = "linux/arm/v7".parse().unwrap();
        let e = p.select(&i, "x").unwrap_err().to_string();
        assert!(e.contains("linux/arm/v7") && e.contains("linux/arm/v6"), "{e}");
        let p: Platform = "linux/s390x".parse().unwrap();
        assert!(p.select(&i, "x").is_err());
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!("linux/x86_64".parse::<Platform>().unwrap().to_string(), "linux/amd64");
        assert_eq!("linux/arm64/v8".parse::<Platform>().unwrap().to_string(), "linux/arm64/v8");
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux/../x".parse::<Platform>().is_err());
    }
}
