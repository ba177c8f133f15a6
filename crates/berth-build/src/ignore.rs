//! `.dockerignore`, with docker's rules (moby/patternmatcher and its
//! `ignorefile` reader):
//!
//! - a UTF-8 BOM is dropped; a line starting with `#` (in its first column)
//!   is a comment; other lines are trimmed, blank ones skipped;
//! - `!pattern` is an exception: it re-includes what earlier patterns
//!   excluded; the last pattern that matches a path decides;
//! - patterns are cleaned like paths (`./a/../b/` is `b`) and a leading `/`
//!   is dropped: every pattern is relative to the context's root;
//! - `*` is any run of characters but `/`, `?` one character but `/`,
//!   `[a-z]`/`[^a-z]` a class, `\` escapes; `**` is any number of
//!   directories (`**/x` matches `x` anywhere, `a/**` everything under `a`);
//! - a path is excluded when it or one of its parent directories matches
//!   (so `dir` excludes everything under `dir`, and `!dir/keep` re-includes
//!   one file under it).
//!
//! As with docker, excluding `Dockerfile` or `.dockerignore` does not stop
//! the build from reading them: the executor still reads both, but a COPY or
//! ADD of the context must not copy them when they are excluded.

use std::fmt;

/// A bad pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(".dockerignore:{line}: {pattern:?}: {message}")]
pub struct IgnoreError {
    /// 1-based line in the file (0 for patterns not read from a file).
    pub line: usize,
    pub pattern: String,
    pub message: String,
}

/// The patterns of a `.dockerignore` (or of `COPY --exclude`).
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    patterns: Vec<Pattern>,
}

#[derive(Clone)]
struct Pattern {
    /// Cleaned, without its `!`.
    text: String,
    exception: bool,
    kind: MatchKind,
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", if self.exception { "!" } else { "" }, self.text)
    }
}

/// patternmatcher's match types: plain strings compare, `x/**` is a prefix,
/// `**x` a suffix, the rest a glob.
#[derive(Debug, Clone)]
enum MatchKind {
    Exact,
    Prefix(String),
    Suffix(String),
    Glob(Vec<Tok>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(char),
    /// `*`: anything but `/`.
    Star,
    /// `?`: one character but `/`.
    Quest,
    /// `[...]`: (negated, ranges).
    Class(bool, Vec<(char, char)>),
    /// `**` (with its `/`) inside a pattern: nothing, or anything ending
    /// in `/`.
    DirStar,
    /// `**` at the end: anything.
    Any,
}

impl Ignore {
    /// Reads a `.dockerignore` file's text.
    pub fn parse(text: &str) -> Result<Ignore, IgnoreError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.starts_with('#') {
                continue;
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            patterns.push(Pattern::new(line).map_err(|message| IgnoreError {
                line: i + 1,
                pattern: line.to_string(),
                message,
            })?);
        }
        Ok(Ignore { patterns })
    }

    /// Builds a matcher from patterns as given (`COPY --exclude=...`).
    pub fn from_patterns<I, S>(patterns: I) -> Result<Ignore, IgnoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Vec::new();
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            out.push(Pattern::new(p).map_err(|message| IgnoreError { line: 0, pattern: p.to_string(), message })?);
        }
        Ok(Ignore { patterns: out })
    }

    /// Whether there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether any pattern is an exception (`!...`).
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }

    /// Whether `rel_path` (relative to the context root, `/`-separated) is
    /// excluded. The root itself never is.
    pub fn excluded(&self, rel_path: &str) -> bool {
        let path = clean(rel_path.trim_start_matches('/'));
        if path == "." {
            return false;
        }
        let parents: Vec<usize> = path.match_indices('/').map(|(i, _)| i).collect();
        let chars: Vec<char> = path.chars().collect();
        let mut matched = false;
        for p in &self.patterns {
            // An exclusion can only flip "not matched", an exception only
            // "matched": the others need no evaluation.
            if p.exception != matched {
                continue;
            }
            let hit = match &p.kind {
                // The path or one of its parents, in one pass.
                MatchKind::Glob(toks) => {
                    let reach = glob_prefixes(toks, &chars);
                    reach[chars.len()] || chars.iter().enumerate().any(|(i, c)| *c == '/' && reach[i])
                }
                _ => p.matches(&path) || parents.iter().any(|&i| p.matches(&path[..i])),
            };
            if hit {
                matched = !p.exception;
            }
        }
        matched
    }

    /// Whether a walker may skip directory `rel_dir` with everything under
    /// it: it is excluded and no exception could re-include anything below
    /// it. (When this is false for an excluded directory, walk into it and
    /// ask [`Ignore::excluded`] for each entry.)
    pub fn skip_dir(&self, rel_dir: &str) -> bool {
        if !self.excluded(rel_dir) {
            return false;
        }
        let dir = clean(rel_dir.trim_start_matches('/'));
        let comps: Vec<&str> = dir.split('/').collect();
        !self.patterns.iter().filter(|p| p.exception).any(|p| p.could_match_under(&comps))
    }
}

impl Pattern {
    fn new(raw: &str) -> Result<Pattern, String> {
        let (exception, rest) = match raw.strip_prefix('!') {
            Some(r) => (true, r.trim()),
            None => (false, raw),
        };
        if exception && rest.is_empty() {
            return Err("illegal exclusion pattern: \"!\"".into());
        }
        let mut text = clean(rest);
        if text.len() > 1 && text.starts_with('/') {
            text.remove(0);
        }
        let kind = compile(&text)?;
        Ok(Pattern { text, exception, kind })
    }

    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            MatchKind::Exact => path == self.text,
            MatchKind::Prefix(p) => path.starts_with(p.as_str()),
            MatchKind::Suffix(s) => path.ends_with(s.as_str()) || s.strip_prefix('/').is_some_and(|s| path == s),
            MatchKind::Glob(toks) => glob(toks, &path.chars().collect::<Vec<_>>()),
        }
    }

    /// Whether this pattern could match `comps` joined or a path below it
    /// (conservative: true unless a component of the pattern rules it out).
    fn could_match_under(&self, comps: &[&str]) -> bool {
        // Without `**` (and a class, which may match `/`), a pattern of n
        // components matches only paths of n components.
        let n = self.text.split('/').count();
        if !self.text.contains("**") && !self.text.contains('[') && n <= comps.len() {
            return false;
        }
        for (pc, dc) in self.text.split('/').zip(comps) {
            if pc.contains("**") {
                return true;
            }
            let Ok(MatchKind::Glob(toks)) = compile(pc) else {
                if pc != *dc {
                    return false;
                }
                continue;
            };
            if !glob(&toks, &dc.chars().collect::<Vec<_>>()) {
                return false;
            }
        }
        true
    }
}

/// patternmatcher's `compile`, to a match kind.
fn compile(pattern: &str) -> Result<MatchKind, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut toks = Vec::new();
    let mut kind = 0; // 0 exact, 1 prefix, 2 suffix, 3 glob
    let mut i = 0;
    let mut first = true;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        match ch {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i == chars.len() {
                    if kind == 0 {
                        kind = 1;
                    } else {
                        toks.push(Tok::Any);
                        kind = 3;
                    }
                } else {
                    toks.push(Tok::DirStar);
                    kind = 3;
                }
                if first {
                    kind = 2;
                }
            }
            '*' => {
                toks.push(Tok::Star);
                kind = 3;
            }
            '?' => {
                toks.push(Tok::Quest);
                kind = 3;
            }
            '\\' => match chars.get(i) {
                Some(&c) => {
                    i += 1;
                    toks.push(Tok::Lit(c));
                    kind = 3;
                }
                None => return Err("syntax error in pattern".into()),
            },
            '[' => {
                let (tok, used) = class(&chars[i..]).ok_or("syntax error in pattern")?;
                i += used;
                toks.push(tok);
                kind = 3;
            }
            c => toks.push(Tok::Lit(c)),
        }
        first = false;
    }
    Ok(match kind {
        0 => MatchKind::Exact,
        1 => MatchKind::Prefix(pattern[..pattern.len() - 2].to_string()),
        2 => MatchKind::Suffix(pattern[2..].to_string()),
        _ => MatchKind::Glob(toks),
    })
}

/// A `[...]` class after its `[` (filepath.Match's grammar): the token and
/// the characters used, None when malformed.
fn class(chars: &[char]) -> Option<(Tok, usize)> {
    let mut i = 0;
    let negated = chars.first() == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let one = |i: &mut usize| -> Option<char> {
        let c = *chars.get(*i)?;
        *i += 1;
        match c {
            '-' | ']' => None,
            '\\' => {
                let e = *chars.get(*i)?;
                *i += 1;
                Some(e)
            }
            c => Some(c),
        }
    };
    loop {
        if chars.get(i) == Some(&']') && !ranges.is_empty() {
            return Some((Tok::Class(negated, ranges), i + 1));
        }
        let lo = one(&mut i)?;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') {
            i += 1;
            hi = one(&mut i)?;
            if hi < lo {
                return None;
            }
        }
        ranges.push((lo, hi));
    }
}

/// `reach[n]`: whether `s[..n]` matches the whole of `toks`. One forward
/// pass per token, linear in the path: a path and all its parent
/// directories are matched at once, and no pattern (`**/**/**...`) can
/// make it backtrack.
fn glob_prefixes(toks: &[Tok], s: &[char]) -> Vec<bool> {
    let n = s.len();
    let mut cur = vec![false; n + 1];
    cur[0] = true;
    for tok in toks {
        let mut next = vec![false; n + 1];
        match tok {
            Tok::Star => {
                // From a reached position, through any run of non-'/'.
                let mut live = false;
                for i in 0..=n {
                    live = cur[i] || (live && s[i - 1] != '/');
                    next[i] = live;
                }
            }
            Tok::DirStar => {
                // Nothing, or anything that ends with a '/'.
                let mut seen = false;
                for i in 0..=n {
                    if i > 0 && s[i - 1] == '/' && seen {
                        next[i] = true;
                    }
                    seen |= cur[i];
                    next[i] |= cur[i];
                }
            }
            Tok::Any => {
                let mut seen = false;
                for i in 0..=n {
                    seen |= cur[i];
                    next[i] = seen;
                }
            }
            _ => {
                for i in 0..n {
                    let c = s[i];
                    let ok = match tok {
                        Tok::Lit(l) => *l == c,
                        Tok::Quest => c != '/',
                        Tok::Class(neg, ranges) => ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *neg,
                        _ => false,
                    };
                    if cur[i] && ok {
                        next[i + 1] = true;
                    }
                }
            }
        }
        cur = next;
    }
    cur
}

/// Whether the whole of `s` matches `toks`.
fn glob(toks: &[Tok], s: &[char]) -> bool {
    glob_prefixes(toks, s)[s.len()]
}

/// Go's `path.Clean`.
fn clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => match out.last() {
                Some(&last) if last != ".." => {
                    out.pop();
                }
                _ if rooted => {}
                _ => out.push(".."),
            },
            c => out.push(c),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, path: &str) -> bool {
        Ignore::from_patterns([pattern]).expect("pattern").excluded(path)
    }

    #[test]
    fn single_patterns_as_patternmatcher() {
        let table: &[(&str, &str, bool)] = &[
            ("**", "file", true),
            ("**", "dir/file", true),
            ("**/", "file", true),
            ("**/**", "dir/file", true),
            ("dir/**", "dir/file", true),
            ("dir/**", "dir/dir2/file", true),
            ("**/dir", "dir", true),
            ("**/dir", "dir/file", true),
            ("**/dir2/*", "dir/dir2/file", true),
            ("**/dir2/**", "dir/dir2/dir3/file", true),
            ("**file", "file", true),
            ("**file", "dir/dir/file", true),
            ("**/file*.txt", "dir/dir/file.txt", true),
            ("**/**/*.txt2", "dir/dir/file.txt", false),
            ("**/*.txt", "file.txt", true),
            ("a**/*.txt", "a/file.txt", true),
            ("a**/*.txt", "a/dir/dir/file.txt", true),
            ("a/*.txt", "a/dir/file.txt", false),
            ("a/*.txt", "a/file.txt", true),
            ("a/*.txt**", "a/file.txt", true),
            ("a[b-d]e", "ae", false),
            ("a[b-d]e", "ace", true),
            ("a[^b-d]e", "aze", true),
            ("a[^b-d]e", "ace", false),
            (".*", ".foo", true),
            (".*", "foo", false),
            ("abc.def", "abcdef", false),
            ("abc?def", "abcZdef", true),
            ("abc?def", "abcdef", false),
            ("a\\\\", "a\\", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("**/foo/bar", "foo/bar", true),
            ("**/foo/bar", "dir/dir2/foo/bar", true),
            ("abc/**", "abc", false),
            ("abc/**", "abc/def/ghi", true),
            ("**/.foo", ".foo", true),
            ("**/.foo", "bar.foo", false),
            ("a(b)c/def", "a(b)c/def", true),
            ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
            ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", true),
            ("a*/b", "abc/b", true),
            ("a*/b", "a/c/b", false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
            ("a?b", "a☺b", true),
            ("a?b", "a/b", false),
            ("[\\]a]", "]", true),
            ("[x\\-]", "-", true),
            ("[x\\-]", "z", false),
        ];
        for &(pattern, path, want) in table {
            assert_eq!(m(pattern, path), want, "{pattern:?} on {path:?}");
        }
    }

    #[test]
    fn bad_patterns_are_errors() {
        for p in ["[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[z-a]", "[abc", "!"] {
            assert!(Ignore::from_patterns([p]).is_err(), "{p:?}");
        }
        let e = Ignore::parse("ok\n\n# c\n[abc\n").expect_err("bad");
        assert_eq!((e.line, e.pattern.as_str()), (4, "[abc"));
        assert_eq!(e.to_string(), ".dockerignore:4: \"[abc\": syntax error in pattern");
    }

    #[test]
    fn a_directory_excludes_its_contents() {
        let ig = Ignore::parse("node_modules\nbuild/\n").expect("parses");
        assert!(ig.excluded("node_modules"));
        assert!(ig.excluded("node_modules/a/b.js"));
        assert!(ig.excluded("build/out"));
        assert!(!ig.excluded("src/node_modules_x"));
        // Relative to the root only.
        assert!(!ig.excluded("src/node_modules"));
    }

    #[test]
    fn comments_whitespace_leading_slash_and_dots() {
        let ig = Ignore::parse("\u{feff}# comment\n  # not a comment  \n\n   /abs/path  \n./dot/./x/../y\n")
            .expect("parses");
        assert!(ig.excluded("# not a comment"));
        assert!(ig.excluded("abs/path"));
        assert!(ig.excluded("dot/y"));
        assert!(!ig.excluded("dot/x"));
        assert!(!ig.excluded("comment"));
        // Paths are cleaned too.
        assert!(ig.excluded("./abs//path/"));
        assert!(ig.excluded("/abs/path"));
        // The root is never excluded.
        assert!(!Ignore::parse("*\n").expect("parses").excluded("."));
    }

    #[test]
    fn exceptions_and_last_match_wins() {
        let ig = Ignore::parse("*.md\n!README.md\nREADME-secret.md\n").expect("parses");
        assert!(ig.excluded("CHANGES.md"));
        assert!(!ig.excluded("README.md"));
        assert!(ig.excluded("README-secret.md"));
        assert!(!ig.excluded("docs/x.md"), "* does not cross /");

        let ig = Ignore::parse("**\n!util/docker/web\n").expect("parses");
        assert!(!ig.excluded("util/docker/web/foo"));
        assert!(ig.excluded("util/docker/other"));
        let ig = Ignore::parse("**\n!util/docker/web\nutil/docker/web/foo\n").expect("parses");
        assert!(ig.excluded("util/docker/web/foo"));
        assert!(!ig.excluded("util/docker/web/bar"));

        // An exception before the pattern it would undo does nothing.
        let ig = Ignore::from_patterns(["!main.go", "*.go"]).expect("parses");
        assert!(ig.excluded("main.go"));
        let ig = Ignore::from_patterns(["docs/*", "!docs/README.md"]).expect("parses");
        assert!(!ig.excluded("docs/README.md"));
        assert!(ig.excluded("docs/other.md"));
        assert!(!ig.excluded("docs"));

        // An exception re-includes a file under an excluded directory.
        let ig = Ignore::parse("docs\n!docs/keep.txt\n").expect("parses");
        assert!(ig.excluded("docs"));
        assert!(ig.excluded("docs/drop.txt"));
        assert!(!ig.excluded("docs/keep.txt"));
        assert!(ig.has_exceptions());
    }

    #[test]
    fn skip_dir_only_when_no_exception_reaches_inside() {
        let ig = Ignore::parse("docs\n!docs/keep.txt\ntarget\n!**/*.rs\nvendor\n!src/*/x\n").expect("parses");
        assert!(!ig.skip_dir("docs"), "docs/keep.txt is re-included");
        assert!(!ig.skip_dir("target"), "**/*.rs may be inside");
        let ig = Ignore::parse("docs\n!docs/keep.txt\ntarget\n!src/*/x\n").expect("parses");
        assert!(ig.skip_dir("target"));
        assert!(!ig.skip_dir("src"), "not excluded at all");
        let ig = Ignore::parse("*\n!src/*/x\n").expect("parses");
        assert!(ig.skip_dir("lib"));
        assert!(!ig.skip_dir("src"));
        assert!(!ig.skip_dir("src/a"));
        assert!(ig.skip_dir("src/a/y"));
    }

    #[test]
    fn deep_paths_and_many_double_stars_stay_linear() {
        // Found by fuzzing: `****`-style patterns on a deep path used to
        // backtrack for seconds per path.
        let deep = format!("{}x", "a/".repeat(3000));
        let ig = Ignore::from_patterns(["**/**/**/**/x", "!**/**/**/**/b/**", "****y"]).expect("parses");
        assert!(ig.excluded(&deep));
        // `****y` is a glob (`(.*/)?(.*/)?y`): `y` as a whole name only.
        assert!(!ig.excluded(&format!("{}xy", "a/".repeat(3000))));
        assert!(ig.excluded(&format!("{}y/z", "a/".repeat(3000))));
        assert!(ig.excluded(&format!("{}y", "a/".repeat(3000))));
        assert!(!ig.excluded(&format!("{}b/x", "a/".repeat(3000))));
        assert!(!ig.skip_dir(&"a/".repeat(3000)));
    }

    #[test]
    fn go_path_clean() {
        for (a, b) in [
            ("", "."),
            ("a/b/", "a/b"),
            ("./a", "a"),
            ("a/../..", ".."),
            ("/../a", "/a"),
            ("a//b/./c/..", "a/b"),
            ("/", "/"),
        ] {
            assert_eq!(clean(a), b, "{a:?}");
        }
    }
}
