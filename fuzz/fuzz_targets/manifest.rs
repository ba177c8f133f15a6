//! Manifests and indexes as a registry (or an archive) sends them, with
//! the Content-Type it claims, and the platform choice from an index.
//!
//! Invariants: a chosen manifest's platform is the one asked for, and it
//! is the first entry that matches; when none matches, the error names
//! the platform asked for; every digest berth takes from a descriptor is
//! a well-formed sha256 digest; a parsed document serializes to one that
//! parses to the same kind with the same descriptors.

#![no_main]

use berth_image::media::{self, Document};
use berth_image::{Digest, Platform};
use libfuzzer_sys::fuzz_target;
use oci_spec::image::Descriptor;

/// The Content-Type header the registry sends, picked by the first byte.
const CONTENT_TYPES: [Option<&str>; 7] = [
    None,
    Some(media::OCI_INDEX),
    Some(media::DOCKER_MANIFEST_LIST),
    Some(media::OCI_MANIFEST),
    Some(media::DOCKER_MANIFEST),
    Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
    Some("text/html"),
];

const PLATFORMS: [&str; 6] =
    ["linux/amd64", "linux/arm64", "linux/arm64/v8", "linux/arm/v7", "linux/386", "windows/amd64"];

fuzz_target!(|data: &[u8]| {
    let Some((&first, json)) = data.split_first() else { return };
    let content_type = CONTENT_TYPES[first as usize % CONTENT_TYPES.len()];
    let Ok(doc) = Document::parse(json, content_type) else { return };
    match &doc {
        Document::Index(index) => {
            for p in
                PLATFORMS.iter().map(|p| p.parse::<Platform>().expect("a valid platform")).chain([Platform::host()])
            {
                select(&p, index);
            }
            index.manifests().iter().for_each(descriptor);
        }
        Document::Manifest(m) => {
            descriptor(m.config());
            m.layers().iter().for_each(descriptor);
        }
    }
    reparse(&doc);
});

fn select(p: &Platform, index: &oci_spec::image::ImageIndex) {
    match p.select(index, "fuzz") {
        Ok(d) => {
            let got = d.platform().as_ref().expect("a chosen manifest has a platform");
            assert!(p.matches(got), "{p} chose {got:?}");
            let first = index.manifests().iter().position(|m| m.platform().as_ref().is_some_and(|x| p.matches(x)));
            assert!(first.is_some_and(|i| std::ptr::eq(&index.manifests()[i], d)), "{p}: not the first match");
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(&p.to_string()), "the error names the platform asked for: {msg}");
            assert!(!index.manifests().iter().any(|m| m.platform().as_ref().is_some_and(|x| p.matches(x))));
        }
    }
}

fn descriptor(d: &Descriptor) {
    if let Ok(digest) = media::digest_of(d) {
        assert_eq!(digest.hex().len(), 64);
        assert_eq!(digest.to_string().parse::<Digest>().ok(), Some(digest.clone()));
        assert_eq!(digest.to_string(), d.digest().to_string(), "berth's digest is the descriptor's");
    }
}

fn reparse(doc: &Document) {
    let (bytes, kind) = match doc {
        Document::Index(i) => (serde_json::to_vec(i).expect("serializes"), "index"),
        Document::Manifest(m) => (serde_json::to_vec(m).expect("serializes"), "manifest"),
    };
    let again = Document::parse(&bytes, None).unwrap_or_else(|e| {
        panic!("a parsed {kind} serializes to {}, which fails: {e}", String::from_utf8_lossy(&bytes))
    });
    match (doc, &again) {
        (Document::Index(a), Document::Index(b)) => assert_eq!(a.manifests(), b.manifests()),
        (Document::Manifest(a), Document::Manifest(b)) => {
            assert_eq!(a.config(), b.config());
            assert_eq!(a.layers(), b.layers());
        }
        _ => {
            panic!("a parsed {kind} serializes to {}, which parses as the other kind", String::from_utf8_lossy(&bytes))
        }
    }
}
