//! Registry auth challenges: the `WWW-Authenticate` header a registry (any
//! server berth pulls from) answers 401 with, parsed by
//! `registry::auth::parse_challenge`.
//!
//! Invariants: a Bearer challenge written back as a header (quoted, with
//! backslash escapes, as registries send it) parses to the same realm,
//! service and scope, whatever characters they hold; the scheme is
//! case-insensitive. Every challenge list (`registry::challenge`) written
//! back (parameters quoted) parses to the same challenges.

#![no_main]

use berth_image::registry::auth::{Challenge, parse_challenge};
use berth_image::registry::challenge::parse_challenges;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else { return };
    let all = parse_challenges(header);
    let written: Vec<String> = all
        .iter()
        .map(|c| match &c.token68 {
            Some(t) => format!("{} {t}", c.scheme),
            None if c.params.is_empty() => c.scheme.clone(),
            None => {
                let params: Vec<String> = c.params.iter().map(|(k, v)| format!("{k}={}", quote(v))).collect();
                format!("{} {}", c.scheme, params.join(", "))
            }
        })
        .collect();
    let again = written.join(", ");
    assert_eq!(parse_challenges(&again), all, "{header:?} parsed, written back as {again:?}");

    let Some(challenge) = parse_challenge(header) else { return };
    if let Challenge::Bearer { realm, service, scope } = &challenge {
        let mut h = format!("Bearer realm={}", quote(realm));
        if let Some(s) = service {
            h.push_str(&format!(",service={}", quote(s)));
        }
        if let Some(s) = scope {
            h.push_str(&format!(",scope={}", quote(s)));
        }
        assert_eq!(parse_challenge(&h).as_ref(), Some(&challenge), "{header:?} parsed, written back as {h:?}");
        let lower = h.replacen("Bearer", "bearer", 1);
        assert_eq!(parse_challenge(&lower).as_ref(), Some(&challenge), "the scheme is case-insensitive");
    }
});

/// An HTTP quoted-string (RFC 9110 5.6.4).
fn quote(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}
