//! Image references (`berth pull/run/tag NAME`, and every name in an
//! archive or index annotation): berth's parser against docker's grammar.
//!
//! Invariants: berth accepts exactly what docker's `ParseNormalizedNamed`
//! accepts (except digests other than sha256, which berth refuses on
//! purpose) and normalizes it the same way; an accepted reference prints
//! as a string that parses back to itself; its digest is well-formed; its
//! familiar name names the same repository. Also digests and platforms:
//! what parses prints back the same.

#![no_main]

use berth_fuzz::docker_ref;
use berth_image::{Digest, Platform, Reference};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    reference(s);
    digest(s);
    platform(s);
});

fn reference(s: &str) {
    let berth = Reference::parse(s);
    let docker = docker_ref::parse_normalized(s);
    let r = match (berth, docker) {
        (Ok(r), Some(d)) => {
            assert_eq!(r.registry(), d.domain, "registry of {s:?}");
            assert_eq!(r.repository(), d.path, "repository of {s:?}");
            let tag = d.tag.clone().or_else(|| d.digest.is_none().then(|| "latest".to_string()));
            assert_eq!(r.tag(), tag.as_deref(), "tag of {s:?}");
            assert_eq!(r.digest().map(|x| x.to_string()), d.digest, "digest of {s:?}");
            r
        }
        (Ok(r), None) => panic!("berth accepts {s:?} (as {r}), docker refuses it"),
        (Err(e), Some(d)) => {
            // berth verifies what it pulls, and only knows sha256.
            let other_digest = d.digest.as_deref().is_some_and(|x| !x.starts_with("sha256:"));
            assert!(other_digest, "berth refuses {s:?} ({e}), docker accepts it as {d:?}");
            return;
        }
        (Err(_), None) => return,
    };

    let printed = r.to_string();
    let again = Reference::parse(&printed).unwrap_or_else(|e| panic!("{s:?} printed as {printed:?}, which fails: {e}"));
    assert_eq!(again, r, "{s:?} printed as {printed:?} parses differently");
    assert_eq!(again.to_string(), printed);

    if let Some(d) = r.digest() {
        assert_eq!(d.hex().len(), 64);
        assert!(d.hex().bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{d}");
        assert_eq!(r.manifest_reference(), d.to_string());
        assert_eq!(d.to_string().parse::<Digest>().ok().as_ref(), Some(d));
    }
    let familiar = Reference::parse(&r.familiar_name())
        .unwrap_or_else(|e| panic!("familiar name {:?} of {s:?} fails: {e}", r.familiar_name()));
    assert_eq!(familiar.name(), r.name(), "familiar name of {s:?}");
    let tagged = r.with_tag("latest");
    assert_eq!(Reference::parse(&tagged.to_string()).ok(), Some(tagged));
}

fn digest(s: &str) {
    if let Ok(d) = s.parse::<Digest>() {
        assert_eq!(d.to_string(), s, "a digest prints as it was given");
        assert_eq!(d.hex().len(), 64);
        assert_eq!(Digest::from_hex(d.hex()).ok(), Some(d));
    }
}

fn platform(s: &str) {
    if let Ok(p) = s.parse::<Platform>() {
        let printed = p.to_string();
        assert_eq!(printed.parse::<Platform>().ok(), Some(p), "platform {s:?} printed as {printed:?}");
    }
}
