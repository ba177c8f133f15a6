//! Content digests (`sha256:<hex>`), and a hasher that checks them while
//! bytes stream past.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A sha256 content digest. Only sha256 is accepted: it is what every
/// registry and image in use produces, and a digest berth cannot verify
/// must never be trusted.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest { hex: hex::encode(Sha256::digest(data)) }
    }

    /// The 64 hex digits, which name the blob on disk.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex digits, as docker shows image IDs.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }

    pub fn from_hex(hex: &str) -> Result<Digest> {
        format!("sha256:{hex}").parse()
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Digest> {
        let hex = s.strip_prefix("sha256:").ok_or_else(|| Error::InvalidDigest(s.to_string()))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(Error::InvalidDigest(s.to_string()));
        }
        Ok(Digest { hex: hex.to_string() })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = Error;
    fn try_from(d: &oci_spec::image::Digest) -> Result<Digest> {
        d.to_string().parse()
    }
}

impl From<&Digest> for oci_spec::image::Digest {
    fn from(d: &Digest) -> oci_spec::image::Digest {
        // A berth Digest is always a valid sha256 digest, which oci-spec accepts.
        oci_spec::image::Digest::from_str(&d.to_string()).unwrap_or_else(|_| unreachable!("valid sha256 digest"))
    }
}

/// Incremental sha256 with a byte count.
#[derive(Clone, Default)]
pub struct Hasher {
    inner: Sha256,
    len: u64,
}

impl Hasher {
    pub fn new() -> Hasher {
        Hasher::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
        self.len += data.len() as u64;
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn finish(self) -> Digest {
        Digest { hex: hex::encode(self.inner.finalize()) }
    }
}

/// A reader that hashes what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Hasher::new() }
    }
    pub fn get_ref(&self) -> &R {
        &self.inner
    }
    /// The digest and length of everything read so far.
    pub fn finish(self) -> (Digest, u64) {
        let len = self.hasher.len();
        (self.hasher.finish(), len)
    }
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }
    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_digest_is_the_well_known_one() {
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn refuses_other_algorithms_and_bad_hex() {
        assert!("sha512:abcd".parse::<Digest>().is_err());
        assert!("sha256:ABCDEF".parse::<Digest>().is_err());
        assert!(format!("sha256:{}", "g".repeat(64)).parse::<Digest>().is_err());
        assert!(format!("sha256:{}/../x", "a".repeat(60)).parse::<Digest>().is_err());
    }

    #[test]
    fn hasher_matches_one_shot() {
        let mut h = Hasher::new();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.len(), 11);
        assert_eq!(h.finish(), Digest::of(b"hello world"));
    }
}
