//! `WWW-Authenticate` challenges (RFC 9110 section 11.6.1, formerly RFC
//! 7235): a header value is a comma-separated list of challenges, each a
//! scheme and then either a token68 or a comma-separated list of
//! `name=value` parameters (a token or a quoted string).
//!
//! Hand-written: the crates that parse this either refuse non-ASCII text
//! in quoted strings and token68 (`http-auth`, on purpose) or are
//! abandoned with a hyper 0.11 API (`www-authenticate`). Registries send
//! UTF-8 in realms and services, and the same commas that separate
//! parameters also separate challenges, so the parser looks ahead: after a
//! comma, `name =` continues the challenge and anything else starts the
//! next one.

/// One challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthChallenge {
    /// The scheme, in lower case (schemes are case-insensitive).
    pub scheme: String,
    /// A token68 given instead of parameters (`Negotiate a2V5==`).
    pub token68: Option<String>,
    /// The parameters in the order given: names in lower case (they are
    /// case-insensitive), values with their quotes and escapes undone.
    pub params: Vec<(String, String)>,
}

impl AuthChallenge {
    /// The first parameter named `name` (any case).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Every challenge of one header value, in order. At a syntax error the
/// challenge being read keeps the parameters read before it and parsing
/// stops there: a client still answers what it understood, as docker's
/// does.
pub fn parse_challenges(header: &str) -> Vec<AuthChallenge> {
    let mut c = Cursor { s: header.as_bytes(), text: header, i: 0 };
    let mut out = Vec::new();
    loop {
        c.skip_list_separators();
        if c.eof() {
            return out;
        }
        let Some(scheme) = c.token() else { return out };
        let mut challenge = AuthChallenge { scheme: scheme.to_ascii_lowercase(), token68: None, params: Vec::new() };
        let spaced = c.skip_ows();
        let complete = if c.eof() || c.at(b',') {
            true
        } else if !spaced {
            false
        } else if let Some(t) = c.token68() {
            challenge.token68 = Some(t.to_string());
            true
        } else {
            c.params(&mut challenge.params)
        };
        out.push(challenge);
        if !complete {
            return out;
        }
    }
}

struct Cursor<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
}

/// RFC 9110 tchar.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110 token68's characters, before its trailing `=`s.
fn is_token68_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)
}

impl<'a> Cursor<'a> {
    fn eof(&self) -> bool {
        self.i >= self.s.len()
    }

    fn at(&self, b: u8) -> bool {
        self.s.get(self.i) == Some(&b)
    }

    /// Optional white space; whether there was any.
    fn skip_ows(&mut self) -> bool {
        let start = self.i;
        while self.at(b' ') || self.at(b'\t') {
            self.i += 1;
        }
        self.i > start
    }

    /// Blanks and commas: list elements may be empty (RFC 9110 5.6.1).
    fn skip_list_separators(&mut self) {
        while self.at(b' ') || self.at(b'\t') || self.at(b',') {
            self.i += 1;
        }
    }

    /// Slices only ever end at ASCII bytes, so they are UTF-8.
    fn slice(&self, start: usize, end: usize) -> &'a str {
        &self.text[start..end]
    }

    fn token(&mut self) -> Option<&'a str> {
        let start = self.i;
        while self.s.get(self.i).is_some_and(|&b| is_tchar(b)) {
            self.i += 1;
        }
        (self.i > start).then(|| self.slice(start, self.i))
    }

    /// A token68, if what follows is one that ends the challenge (then a
    /// comma or the end); else nothing is consumed.
    fn token68(&mut self) -> Option<&'a str> {
        let start = self.i;
        while self.s.get(self.i).is_some_and(|&b| is_token68_char(b)) {
            self.i += 1;
        }
        if self.i == start {
            return None;
        }
        while self.at(b'=') {
            self.i += 1;
        }
        let end = self.i;
        self.skip_ows();
        if self.eof() || self.at(b',') {
            return Some(self.slice(start, end));
        }
        self.i = start;
        None
    }

    /// The parameters of one challenge. False on a syntax error.
    fn params(&mut self, params: &mut Vec<(String, String)>) -> bool {
        loop {
            let before = self.i;
            if !params.is_empty() {
                self.skip_list_separators();
            }
            match self.param() {
                Some(p) => params.push(p),
                // The next challenge starts here (or garbage, which the
                // caller finds).
                None if !params.is_empty() => {
                    self.i = before;
                    return true;
                }
                None => return false,
            }
            self.skip_ows();
            if self.eof() {
                return true;
            }
            if !self.at(b',') {
                return false;
            }
        }
    }

    /// `name BWS = BWS (token / quoted-string)`, or nothing consumed.
    fn param(&mut self) -> Option<(String, String)> {
        let start = self.i;
        let parsed = self.param_inner();
        if parsed.is_none() {
            self.i = start;
        }
        parsed
    }

    fn param_inner(&mut self) -> Option<(String, String)> {
        let name = self.token()?.to_ascii_lowercase();
        self.skip_ows();
        if !self.at(b'=') {
            return None;
        }
        self.i += 1;
        self.skip_ows();
        let value = if self.at(b'"') { self.quoted()? } else { self.token()?.to_string() };
        Some((name, value))
    }

    /// A quoted string's value, its backslash escapes undone. Any
    /// character but `"` and `\` stands for itself, UTF-8 included.
    fn quoted(&mut self) -> Option<String> {
        let rest = &self.text[self.i + 1..];
        let mut value = String::new();
        let mut chars = rest.char_indices();
        while let Some((at, c)) = chars.next() {
            match c {
                '"' => {
                    self.i += 1 + at + 1;
                    return Some(value);
                }
                '\\' => value.push(chars.next()?.1),
                c => value.push(c),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(scheme: &str, params: &[(&str, &str)]) -> AuthChallenge {
        AuthChallenge {
            scheme: scheme.into(),
            token68: None,
            params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn rfc7235_two_challenges_in_one_header() {
        // RFC 7235 section 4.1's example.
        let h = r#"Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple""#;
        assert_eq!(
            parse_challenges(h),
            [
                ch("newauth", &[("realm", "apps"), ("type", "1"), ("title", "Login to \"apps\"")]),
                ch("basic", &[("realm", "simple")]),
            ]
        );
    }

    #[test]
    fn rfc_examples_of_each_scheme() {
        // RFC 7617 (Basic), RFC 6750 (Bearer), RFC 7616 (Digest).
        assert_eq!(
            parse_challenges(r#"Basic realm="WallyWorld", charset="UTF-8""#),
            [ch("basic", &[("realm", "WallyWorld"), ("charset", "UTF-8")])]
        );
        assert_eq!(
            parse_challenges(
                r#"Bearer realm="example", error="invalid_token", error_description="The access token expired""#
            ),
            [ch(
                "bearer",
                &[("realm", "example"), ("error", "invalid_token"), ("error_description", "The access token expired")]
            )]
        );
        let digest = parse_challenges(
            "Digest\n realm=\"http-auth@example.org\",\n qop=\"auth, auth-int\",\n algorithm=SHA-256"
                .replace('\n', "")
                .as_str(),
        );
        assert_eq!(digest[0].param("qop"), Some("auth, auth-int"));
        assert_eq!(digest[0].param("algorithm"), Some("SHA-256"));
    }

    #[test]
    fn distribution_challenge_vectors() {
        // docker/distribution's TestAuthChallengeParse: a bare token value,
        // and escapes of ordinary characters (\l is l).
        let h = r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",other=fun,slashed="he\"\l\lo""#;
        let c = &parse_challenges(h)[0];
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://auth.example.com/token"));
        assert_eq!(c.param("service"), Some("registry.example.com"));
        assert_eq!(c.param("other"), Some("fun"));
        assert_eq!(c.param("slashed"), Some("he\"llo"));
    }

    #[test]
    fn commas_inside_quotes_belong_to_the_value() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push repository:c:pull""#;
        let c = parse_challenges(h);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].param("scope"), Some("repository:a/b:pull,push repository:c:pull"));
    }

    #[test]
    fn token68_and_bare_schemes() {
        assert_eq!(
            parse_challenges(r#"Negotiate a2V5+/x==, Basic realm="x", NTLM"#),
            [
                AuthChallenge { scheme: "negotiate".into(), token68: Some("a2V5+/x==".into()), params: vec![] },
                ch("basic", &[("realm", "x")]),
                ch("ntlm", &[]),
            ]
        );
        // `name=` followed by nothing is a token68, not a parameter.
        assert_eq!(parse_challenges("Custom abc=")[0].token68.as_deref(), Some("abc="));
    }

    #[test]
    fn names_are_case_insensitive_and_blanks_allowed() {
        let c = parse_challenges(r#"  ,BEARER Realm = "x" ,  SERVICE=y ,, , basic REALM="z","#);
        assert_eq!(c, [ch("bearer", &[("realm", "x"), ("service", "y")]), ch("basic", &[("realm", "z")])]);
        assert_eq!(c[0].param("ReAlM"), Some("x"));
    }

    #[test]
    fn non_ascii_in_quoted_strings_is_kept() {
        let c = parse_challenges(r#"Bearer realm="https://régistry.test/tök\"en",service="Zürich, 東京""#);
        assert_eq!(c, [ch("bearer", &[("realm", "https://régistry.test/tök\"en"), ("service", "Zürich, 東京")])]);
    }

    #[test]
    fn syntax_errors_keep_what_came_before() {
        let c = parse_challenges(r#"Bearer realm="x",service="y",=oops, Basic realm="z""#);
        assert_eq!(c, [ch("bearer", &[("realm", "x"), ("service", "y")])]);
        // A lone word after a comma is a scheme without parameters.
        let c = parse_challenges(r#"Bearer realm="x",other"#);
        assert_eq!(c, [ch("bearer", &[("realm", "x")]), ch("other", &[])]);
        let c = parse_challenges(r#"Bearer realm="unterminated"#);
        assert_eq!(c, [ch("bearer", &[])]);
        assert!(parse_challenges("").is_empty());
        assert!(parse_challenges("=x").is_empty());
        assert_eq!(parse_challenges("Basic\u{e9}")[0].scheme, "basic");
        // A trailing backslash inside quotes.
        assert_eq!(parse_challenges(r#"Bearer realm="a\"#), [ch("bearer", &[])]);
    }
}
