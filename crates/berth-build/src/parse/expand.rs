//! Docker's variable substitution (BuildKit's `shell.Lex`): `$VAR`,
//! `${VAR}`, `${VAR:-x}`, `${VAR-x}`, `${VAR:+x}`, `${VAR+x}`, `${VAR:?msg}`,
//! `${VAR?msg}`, `${VAR#pat}`, `${VAR##pat}`, `${VAR%pat}`, `${VAR%%pat}`,
//! `${VAR/pat/repl}`, `${VAR//pat/repl}`; quotes removed (single quotes
//! literal, double quotes expand), the escape character escapes the next one.
//!
//! Which instructions docker expands, with the ARG and ENV values in effect
//! at that point of the stage (ENV wins over ARG of the same name):
//!
//! | instruction | expanded |
//! |---|---|
//! | FROM | base and `--platform`, with the meta ARGs (before the first FROM) only |
//! | ENV, LABEL | keys and values, each with [`expand`] |
//! | ARG | the default, with [`expand`] |
//! | ADD, COPY | each source, the destination, `--chown`, `--chmod` (and ADD's `--checksum`) with [`expand`]; `--from` never (BuildKit refuses a `--from` that would change by expansion: "variable expansion is not supported for --from"); heredoc bodies with [`expand_heredoc`] when [`crate::ast::Heredoc::expand`] |
//! | WORKDIR, USER, STOPSIGNAL | [`expand`] |
//! | EXPOSE, VOLUME | each word with [`expand_words`] (one `${PORTS}` may give several) |
//! | RUN `--mount` values | [`expand`] (`from` excepted) |
//! | RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK | no: the shell of the container expands them (RUN sees ARGs and ENVs as environment variables); RUN's heredoc bodies neither (BuildKit ignores `expand` there: the shell sees the body) |
//! | ONBUILD | no: the trigger is expanded when a build FROM the image runs it |
//!
//! An unset variable expands to the empty string (`${X:?}` and `${X?}`
//! excepted: an error).

/// An expansion error (a bad `${...}` or an unterminated quote).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {message}")]
pub struct ExpandError {
    /// The word being expanded.
    pub word: String,
    pub message: String,
}

/// Expands `word` as one word (spaces kept): what ENV, LABEL, WORKDIR, USER,
/// COPY's paths ... get. `lookup` gives a variable's value, `None` when unset.
pub fn expand<F>(word: &str, lookup: F, escape: char) -> Result<String, ExpandError>
where
    F: Fn(&str) -> Option<String>,
{
    let mut lx = Lexer::new(word, escape, &lookup);
    lx.run(word).map(|(s, _)| s)
}

/// Expands `word` and splits the result into words as a shell would
/// (whitespace from an unquoted expansion splits, quoted text does not;
/// empty words are dropped): what EXPOSE and VOLUME get.
pub fn expand_words<F>(word: &str, lookup: F, escape: char) -> Result<Vec<String>, ExpandError>
where
    F: Fn(&str) -> Option<String>,
{
    let mut lx = Lexer::new(word, escape, &lookup);
    lx.run(word).map(|(_, w)| w)
}

/// Expands a COPY/ADD heredoc body as BuildKit does: quotes are plain
/// characters, `$VAR`/`${...}` expand, `\` escapes (whatever the file's
/// escape character).
pub fn expand_heredoc<F>(body: &str, lookup: F) -> Result<String, ExpandError>
where
    F: Fn(&str) -> Option<String>,
{
    let mut lx = Lexer::new(body, '\\', &lookup);
    lx.skip_quotes = true;
    lx.run(body).map(|(s, _)| s)
}

/// Options of the lexer the parser itself needs (heredoc detection): quotes
/// and escapes kept, unset variables left as written.
pub(crate) fn raw_words(word: &str, raw_quotes: bool) -> Result<Vec<String>, ExpandError> {
    let none = |_: &str| None;
    let mut lx = Lexer::new(word, '\\', &none);
    lx.raw_quotes = raw_quotes;
    lx.raw_escapes = raw_quotes;
    lx.skip_unset = true;
    lx.run(word).map(|(_, w)| w)
}

/// Like [`raw_words`] with raw escapes off: the heredoc name lexing.
pub(crate) fn heredoc_words(word: &str, raw_quotes: bool) -> Result<Vec<String>, ExpandError> {
    let none = |_: &str| None;
    let mut lx = Lexer::new(word, '\\', &none);
    lx.raw_quotes = raw_quotes;
    lx.skip_unset = true;
    lx.run(word).map(|(_, w)| w)
}

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_unset: bool,
    /// Quotes are plain characters (heredoc bodies).
    skip_quotes: bool,
    lookup: Lookup<'a>,
}

/// Word splitting of the expanded text: what was quoted or escaped is
/// added raw (never splits), what came from unquoted text or `$VAR` splits
/// on whitespace.
#[derive(Default)]
struct Words {
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }
    fn add_raw_char(&mut self, ch: char) {
        self.buf.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }
    fn add_raw_string(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(self.buf);
        }
        self.words
    }
}

type Step<T> = Result<T, String>;

impl<'a> Lexer<'a> {
    fn new(word: &str, escape: char, lookup: Lookup<'a>) -> Self {
        Lexer {
            chars: word.chars().collect(),
            pos: 0,
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset: false,
            skip_quotes: false,
            lookup,
        }
    }

    fn run(&mut self, word: &str) -> Result<(String, Vec<String>), ExpandError> {
        let raw = self.raw_escapes;
        self.stop_on(None, raw).map_err(|message| ExpandError { word: word.to_string(), message })
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    /// Processes up to `stop` (consumed) or the end when `stop` is None.
    fn stop_on(&mut self, stop: Option<char>, raw_escapes: bool) -> Step<(String, Vec<String>)> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let r = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        r
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Step<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.bump();
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let t = self.dollar()?;
                    result.push_str(&t);
                    words.add_string(&t);
                }
                '<' => {
                    let t = self.possible_heredoc();
                    result.push_str(&t);
                    words.add_raw_string(&t);
                }
                '\'' if !self.skip_quotes => {
                    let t = self.single_quote()?;
                    result.push_str(&t);
                    words.add_raw_string(&t);
                }
                '"' if !self.skip_quotes => {
                    let t = self.double_quote()?;
                    result.push_str(&t);
                    words.add_raw_string(&t);
                }
                _ => {
                    self.bump();
                    if ch != self.escape {
                        words.add_char(ch);
                        result.push(ch);
                        continue;
                    }
                    if self.raw_escapes {
                        words.add_raw_char(ch);
                        result.push(ch);
                    }
                    // The escape character escapes the next one; at the
                    // end it is dropped.
                    let Some(next) = self.bump() else { break };
                    words.add_raw_char(next);
                    result.push(next);
                }
            }
        }
        if let Some(s) = stop {
            return Err(format!("unexpected end of statement while looking for matching {s}"));
        }
        Ok((result, words.finish()))
    }

    fn single_quote(&mut self) -> Step<String> {
        let mut out = String::new();
        let open = self.bump();
        if self.raw_quotes {
            out.extend(open);
        }
        loop {
            match self.bump() {
                None => return Err("unexpected end of statement while looking for matching single-quote".into()),
                Some('\'') => {
                    if self.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Step<String> {
        let mut out = String::new();
        let open = self.bump();
        if self.raw_quotes {
            out.extend(open);
        }
        loop {
            match self.peek() {
                None => return Err("unexpected end of statement while looking for matching double-quote".into()),
                Some('"') => {
                    self.bump();
                    if self.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar()?),
                Some(_) => {
                    let mut ch = self.bump().unwrap_or_default();
                    if ch == self.escape {
                        if self.raw_escapes {
                            out.push(ch);
                        }
                        match self.peek() {
                            // An escape at the very end: the next turn
                            // reports the missing quote.
                            None => continue,
                            // Only these can be escaped in double quotes;
                            // elsewhere the escape character stays.
                            Some(c) if c == '"' || c == '$' || c == self.escape => {
                                ch = c;
                                self.bump();
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(ch);
                }
            }
        }
    }

    fn possible_heredoc(&mut self) -> String {
        self.bump();
        if self.peek() != Some('<') {
            return "<".into();
        }
        self.bump();
        // `<< EOF` stays one word.
        let mut out = String::from("<<");
        while let Some(c @ ('\t' | '\r' | ' ')) = self.peek() {
            out.push(c);
            self.bump();
        }
        out
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.bump();
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.bump();
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            name.push(ch);
            self.bump();
        }
        name
    }

    fn dollar(&mut self) -> Step<String> {
        self.bump();
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.get(&name) {
                Some(v) => v,
                None if self.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.bump();
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.name();
        match self.bump() {
            None => Err("syntax error: missing '}'".into()),
            Some('}') => Ok(match self.get(&name) {
                Some(v) => v,
                None if self.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(ch @ (':' | '+' | '-' | '?' | '#' | '%')) => self.modifier(name, ch),
            Some('/') => self.replace(name),
            Some(ch) => Err(format!("unsupported modifier ({ch}) in substitution")),
        }
    }

    /// `${name<op>word}` after the operator's first character.
    fn modifier(&mut self, name: String, first: char) -> Step<String> {
        let mut op = first;
        let mut ops = first.to_string();
        let null_is_unset = first == ':';
        if null_is_unset {
            op = self.bump().ok_or("syntax error: missing '}'")?;
            ops.push(op);
        }
        let raw = op == '#' || op == '%';
        if null_is_unset && raw {
            return Err(format!("unsupported modifier ({ops}) in substitution"));
        }
        let word = match self.stop_on(Some('}'), raw) {
            Ok((w, _)) => w,
            Err(_) if self.peek().is_none() => return Err("syntax error: missing '}'".into()),
            Err(e) => return Err(e),
        };
        let value = self.get(&name);
        if self.skip_unset && value.is_none() {
            return Ok(format!("${{{name}{ops}{word}}}"));
        }
        let empty = value.as_deref().is_none_or(|v| null_is_unset && v.is_empty());
        match op {
            '-' => Ok(if empty { word } else { value.unwrap_or_default() }),
            '+' => Ok(if empty { String::new() } else { word }),
            '?' => {
                let default = if value.is_none() { "is not allowed to be unset" } else { "is not allowed to be empty" };
                if empty {
                    let msg = if word.is_empty() { default } else { &word };
                    return Err(format!("{name}: {msg}"));
                }
                Ok(value.unwrap_or_default())
            }
            '#' | '%' => {
                let value = value.unwrap_or_default();
                let (greedy, pat) = match word.strip_prefix(op) {
                    Some(rest) => (true, rest),
                    None => (false, word.as_str()),
                };
                let pat = Pattern::parse(pat)?;
                let v: Vec<char> = value.chars().collect();
                Ok(if op == '#' {
                    match pat.prefix_len(&v, greedy) {
                        Some(n) => v[n..].iter().collect(),
                        None => value,
                    }
                } else {
                    match pat.suffix_len(&v, greedy) {
                        Some(n) => v[..v.len() - n].iter().collect(),
                        None => value,
                    }
                })
            }
            _ => Err(format!("unsupported modifier ({ops}) in substitution")),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`.
    fn replace(&mut self, name: String) -> Step<String> {
        let all = self.peek() == Some('/');
        if all {
            self.bump();
        }
        let pattern = match self.stop_on(Some('/'), true) {
            Ok((w, _)) => w,
            Err(_) if self.peek().is_none() => return Err("syntax error: missing '/' in ${}".into()),
            Err(e) => return Err(e),
        };
        let replacement = match self.stop_on(Some('}'), true) {
            Ok((w, _)) => w,
            Err(_) if self.peek().is_none() => return Err("syntax error: missing '}'".into()),
            Err(e) => return Err(e),
        };
        let Some(value) = self.get(&name) else {
            if self.skip_unset {
                return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
            }
            return Ok(String::new());
        };
        let pat = Pattern::parse(&pattern)?;
        // A plain string (the usual case): linear, whatever the value's size.
        if let Some(lit) = pat.literal().filter(|l| !l.is_empty()) {
            return Ok(if all { value.replace(&lit, &replacement) } else { value.replacen(&lit, &replacement, 1) });
        }
        let v: Vec<char> = value.chars().collect();
        // Where a match can start (one backward pass), then the longest
        // match from each start used: linear in practice, like Go's regexp
        // (a greedy `*` match runs to the last possible end).
        let starts = pat.starts(&v);
        let mut out = String::new();
        let mut i = 0;
        let mut last_end: Option<usize> = None;
        let mut replaced = false;
        while i <= v.len() {
            if (all || !replaced) && starts[i] {
                // Empty matches right after a previous match are skipped,
                // as Go's ReplaceAllString does.
                if let Some(n) = pat.longest_match(&v, i).filter(|&n| n > 0 || last_end != Some(i)) {
                    out.push_str(&replacement);
                    replaced = true;
                    last_end = Some(i + n);
                    if n > 0 {
                        i += n;
                        continue;
                    }
                }
            }
            if let Some(c) = v.get(i) {
                out.push(*c);
            }
            i += 1;
        }
        Ok(out)
    }
}

/// A shell pattern of `${VAR#...}` and friends: `*`, `?`, `\` escapes
/// (no bracket expressions, as BuildKit).
#[derive(Debug)]
struct Pattern(Vec<Tok>);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Star,
    Any,
    Lit(char),
}

impl Pattern {
    fn parse(s: &str) -> Step<Pattern> {
        let mut toks = Vec::new();
        let mut it = s.chars().peekable();
        while let Some(c) = it.next() {
            toks.push(match c {
                '*' => Tok::Star,
                '?' => Tok::Any,
                // `\}` and `\/` only escape the `${}` syntax.
                '\\' if matches!(it.peek(), Some('}' | '/')) => continue,
                '\\' => match it.next() {
                    Some(e @ ('*' | '?' | '\\')) => Tok::Lit(e),
                    Some(e) => return Err(format!("invalid pattern ({s}) in substitution: invalid escape '\\{e}'")),
                    None => return Err(format!("invalid pattern ({s}) in substitution: trailing backslash")),
                },
                c => Tok::Lit(c),
            });
        }
        Ok(Pattern(toks))
    }

    /// The pattern as a plain string, when it has no wildcard.
    fn literal(&self) -> Option<String> {
        self.0.iter().map(|t| if let Tok::Lit(c) = t { Some(*c) } else { None }).collect()
    }

    /// `ends[n]`: whether `v[..n]` matches the whole pattern (one pass,
    /// linear in the pattern times the value: no backtracking blow-up).
    fn prefix_ends(toks: &[Tok], v: &[char]) -> Vec<bool> {
        let mut cur = vec![false; v.len() + 1];
        cur[0] = true;
        for t in toks {
            let mut next = vec![false; v.len() + 1];
            match t {
                Tok::Star => {
                    let mut reached = false;
                    for (n, slot) in next.iter_mut().enumerate() {
                        reached |= cur[n];
                        *slot = reached;
                    }
                }
                Tok::Any | Tok::Lit(_) => {
                    for (n, c) in v.iter().enumerate() {
                        if cur[n] && (*t == Tok::Any || *t == Tok::Lit(*c)) {
                            next[n + 1] = true;
                        }
                    }
                }
            }
            cur = next;
        }
        cur
    }

    fn pick(ends: &[bool], greedy: bool) -> Option<usize> {
        if greedy { ends.iter().rposition(|&b| b) } else { ends.iter().position(|&b| b) }
    }

    fn prefix_len(&self, v: &[char], greedy: bool) -> Option<usize> {
        Self::pick(&Self::prefix_ends(&self.0, v), greedy)
    }

    fn suffix_len(&self, v: &[char], greedy: bool) -> Option<usize> {
        let toks: Vec<Tok> = self.0.iter().rev().copied().collect();
        let rev: Vec<char> = v.iter().rev().copied().collect();
        Self::pick(&Self::prefix_ends(&toks, &rev), greedy)
    }

    /// `starts[i]`: whether some match begins at `v[i]`.
    fn starts(&self, v: &[char]) -> Vec<bool> {
        let n = v.len();
        let mut cur = vec![true; n + 1];
        for t in self.0.iter().rev() {
            let mut next = vec![false; n + 1];
            match t {
                Tok::Star => {
                    let mut reach = false;
                    for i in (0..=n).rev() {
                        reach |= cur[i];
                        next[i] = reach;
                    }
                }
                Tok::Any | Tok::Lit(_) => {
                    for i in 0..n {
                        next[i] = cur[i + 1] && (*t == Tok::Any || *t == Tok::Lit(v[i]));
                    }
                }
            }
            cur = next;
        }
        cur
    }

    /// The length of the longest match starting at `v[s]`: the pattern's
    /// states advanced character by character, stopping when none is left.
    fn longest_match(&self, v: &[char], s: usize) -> Option<usize> {
        let toks = &self.0;
        let p = toks.len();
        // A `*` may match nothing: its state also stands for the next one.
        let close = |set: &mut [bool]| {
            for t in 0..p {
                if set[t] && toks[t] == Tok::Star {
                    set[t + 1] = true;
                }
            }
        };
        let mut set = vec![false; p + 1];
        set[0] = true;
        close(&mut set);
        let mut best = set[p].then_some(0);
        for (k, &c) in v[s..].iter().enumerate() {
            let mut next = vec![false; p + 1];
            for t in (0..p).filter(|&t| set[t]) {
                match toks[t] {
                    Tok::Star => next[t] = true,
                    Tok::Any => next[t + 1] = true,
                    Tok::Lit(l) if l == c => next[t + 1] = true,
                    Tok::Lit(_) => {}
                }
            }
            close(&mut next);
            if next[p] {
                best = Some(k + 1);
            }
            if !next.contains(&true) {
                break;
            }
            set = next;
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "PWD" => Some("/home".into()),
            "SHELL" => Some("bash".into()),
            "NULL" => Some(String::new()),
            "SPACE" => Some("abc  def".into()),
            "LEAD" => Some("  ab c".into()),
            "FILE" => Some("dir/sub/name.tar.gz".into()),
            _ => None,
        }
    }

    fn x(w: &str) -> Result<String, String> {
        expand(w, env, '\\').map_err(|e| e.message)
    }

    fn ok(w: &str, want: &str) {
        assert_eq!(x(w), Ok(want.to_string()), "{w:?}");
    }

    fn bad(w: &str, message: &str) {
        assert_eq!(x(w), Err(message.to_string()), "{w:?}");
    }

    #[test]
    fn plain_and_quoted() {
        ok("hello", "hello");
        ok("he'll'o", "hello");
        ok("he\\'llo", "he'llo");
        ok("abc\\tdef", "abctdef");
        ok("\"abc\\tdef\"", "abc\\tdef");
        ok("'abc\\tdef'", "abc\\tdef");
        ok("hello\\", "hello");
        ok("hello\\\\", "hello\\");
        ok("\"hel'lo\"", "hel'lo");
        ok("'hello\\'", "hello\\");
        ok("\"''\"", "''");
        ok("'\"hello\"'", "\"hello\"");
        ok("안'녕'하세요", "안녕하세요");
        bad("he'llo", "unexpected end of statement while looking for matching single-quote");
        bad("he\\\\'llo", "unexpected end of statement while looking for matching single-quote");
        bad("\"hello", "unexpected end of statement while looking for matching double-quote");
        bad("\"hello\\\"", "unexpected end of statement while looking for matching double-quote");
    }

    #[test]
    fn variables() {
        ok("he$PWD", "he/home");
        ok("he${PWD}xx", "he/homexx");
        ok("he$pwd.", "he.");
        ok("he$1x", "hex");
        ok("$.", "$.");
        ok("he$.x", "he$.x");
        ok("he\\$PWD", "he$PWD");
        ok("he\\\\$PWD", "he\\/home");
        ok("\"he\\$PWD\"", "he$PWD");
        ok("\"he\\\\$PWD\"", "he\\/home");
        ok("'$PWD'", "$PWD");
        ok("\"he'$PWD'\"", "he'/home'");
        ok("\\${}aaa", "${}aaa");
        ok("he${hi}xx", "hexx");
        bad("${}", "syntax error: bad substitution");
        bad("he${:x}", "syntax error: bad substitution");
        bad("he${PWD", "syntax error: missing '}'");
        bad("he${.}", "unsupported modifier (.) in substitution");
    }

    #[test]
    fn modifiers() {
        ok("he${XXX:-000}xx", "he000xx");
        ok("he${PWD:-000}xx", "he/homexx");
        ok("he${XXX:-$PWD}xx", "he/homexx");
        ok("he${XXX:-${YYY:-yyy}}xx", "heyyyxx");
        ok("${NULL:-d}", "d");
        ok("${NULL-d}", "");
        ok("${XXX-d}", "d");
        ok("he${XXX:+000}xx", "hexx");
        ok("he${PWD:+000}xx", "he000xx");
        ok("he${PWD:+${SHELL}}xx", "hebashxx");
        ok("${NULL:+set}", "");
        ok("${NULL+set}", "set");
        ok("he${PWD:+${PWD}:}xx", "he/home:xx");
        ok("he${XXX:-\\$PWD:}xx", "he$PWD:xx");
        ok("he${PWD?}", "he/home");
        ok("he${NULL?}", "he");
        bad("he${XXX?}", "XXX: is not allowed to be unset");
        bad("he${XXX:?}", "XXX: is not allowed to be unset");
        bad("he${NULL:?}", "NULL: is not allowed to be empty");
        bad("${XXX:?set it please}", "XXX: set it please");
        bad("he${XXX:YYY}", "unsupported modifier (:Y) in substitution");
        bad("he${PWD:=000}xx", "unsupported modifier (:=) in substitution");
        bad("${XXX:-abc", "syntax error: missing '}'");
    }

    #[test]
    fn pattern_modifiers() {
        ok("${FILE#*/}", "sub/name.tar.gz");
        ok("${FILE##*/}", "name.tar.gz");
        ok("${FILE%.*}", "dir/sub/name.tar");
        ok("${FILE%%.*}", "dir/sub/name");
        ok("${FILE#nomatch}", "dir/sub/name.tar.gz");
        ok("${FILE%?z}", "dir/sub/name.tar.");
        ok("${FILE/sub/SUB}", "dir/SUB/name.tar.gz");
        ok("${FILE//a/A}", "dir/sub/nAme.tAr.gz");
        ok("${FILE/*./}", "gz");
        ok("${XXX/a/b}", "");
        bad("${FILE:#x}", "unsupported modifier (:#) in substitution");
        bad("${FILE#\\x}", "invalid pattern (\\x) in substitution: invalid escape '\\x'");
    }

    #[test]
    fn replacement_in_a_large_value() {
        let big = "ab".repeat(200_000);
        let look = |k: &str| (k == "BIG").then(|| big.clone());
        let out = expand("${BIG//b/c}", look, '\\').expect("expands");
        assert_eq!(out, "ac".repeat(200_000));
        let out = expand("${BIG/b/c}", look, '\\').expect("expands");
        assert!(out.starts_with("acab") && out.len() == big.len());
        let out = expand("${BIG%%b*}", look, '\\').expect("expands");
        assert_eq!(out, "a");
        // Wildcards that can never match, or match once to the end.
        let out = expand("${BIG//a*c/x}", look, '\\').expect("expands");
        assert_eq!(out, big);
        let out = expand("${BIG//a*/x}", look, '\\').expect("expands");
        assert_eq!(out, "x");
        // `ba` pairs; the last `b` has nothing after it.
        let out = expand("${BIG//b?/x}", look, '\\').expect("expands");
        assert_eq!(out, format!("a{}b", "x".repeat(199_999)));
    }

    #[test]
    fn words_split_like_a_shell() {
        let w = |s: &str| expand_words(s, env, '\\').expect("expands");
        assert_eq!(w("hello${SPACE}bye"), ["helloabc", "defbye"]);
        assert_eq!(w("hello\"${SPACE}\"bye"), ["helloabc  defbye"]);
        assert_eq!(w("hello${LEAD}def"), ["hello", "ab", "cdef"]);
        assert_eq!(w("hello\\ there"), ["hello there"]);
        assert_eq!(w("hello\\\" there"), ["hello\"", "there"]);
        assert_eq!(w("80/tcp  ${XXX} 53"), ["80/tcp", "53"]);
        assert_eq!(w("'$x' \"\""), ["$x"]);
        assert!(expand_words("hello\" there", env, '\\').is_err());
    }

    #[test]
    fn backtick_escape() {
        let e = |w: &str| expand(w, env, '`').expect("expands");
        assert_eq!(e("C:\\dir"), "C:\\dir");
        assert_eq!(e("a` b`$PWD"), "a b$PWD");
        assert_eq!(e("\"`\"q\""), "\"q");
    }

    #[test]
    fn heredoc_bodies_keep_quotes() {
        let b = expand_heredoc("echo '$PWD' \"${SHELL}\" \\$PWD it's\n", env).expect("expands");
        assert_eq!(b, "echo '/home' \"bash\" $PWD it's\n");
    }

    #[test]
    fn error_names_the_word() {
        let e = expand("${X:?unset}", |_| None, '\\').expect_err("fails");
        assert_eq!(e.to_string(), "failed to process \"${X:?unset}\": X: unset");
    }
}
