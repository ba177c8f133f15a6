//! Splitting one logical line (continuations joined) into the instruction,
//! its `--flags` and its arguments, as BuildKit's parser does; every piece
//! keeps its byte offset in the line so an error can name its column.

use super::{Logical, ParseError};

/// Whitespace that separates words (Go's `[\t\v\f\r ]+`).
pub(crate) fn is_sep(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

/// A piece of the line and where it starts.
#[derive(Debug, Clone)]
pub(crate) struct Piece {
    pub text: String,
    pub off: usize,
}

/// `INSTRUCTION [--flag...] args`.
#[derive(Debug)]
pub(crate) struct Split {
    pub cmd: Piece,
    pub flags: Vec<Piece>,
    /// Trimmed; `off` is where it starts (the line's end when empty).
    pub args: Piece,
}

/// Splits `l.text[from..]`.
pub(crate) fn split_command(l: &Logical, from: usize, escape: char) -> Split {
    let s = &l.text[from..];
    let lead = s.len() - s.trim_start().len();
    let body = s.trim();
    let start = from + lead;
    let cmd_len = body.find(is_sep).unwrap_or(body.len());
    let cmd = Piece { text: body[..cmd_len].to_string(), off: start };
    let after = &body[cmd_len..];
    let rest_off = start + cmd_len + (after.len() - after.trim_start_matches(is_sep).len());
    let rest = after.trim_start_matches(is_sep);
    let (flags, args_rel) = extract_flags(rest, escape);
    let args = &rest[args_rel..];
    let args_lead = args.len() - args.trim_start().len();
    let args = Piece { text: args.trim().to_string(), off: rest_off + args_rel + args_lead };
    let flags = flags.into_iter().map(|p| Piece { off: p.off + rest_off, ..p }).collect();
    Split { cmd, flags, args }
}

/// The leading `--flag[=value]` words (quotes removed, escapes applied) and
/// the offset where the arguments start. A lone `--` ends the flags.
fn extract_flags(line: &str, escape: char) -> (Vec<Piece>, usize) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut buf = String::new();
    let mut start = 0;
    let mut blank_ok = false;
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (pos, ch) = chars[i];
        i += 1;
        match phase {
            Phase::Spaces => {
                if ch.is_whitespace() {
                    continue;
                }
                if !line[pos..].starts_with("--") {
                    return (words, pos);
                }
                phase = Phase::Word;
                start = pos;
                i -= 1;
            }
            Phase::Word => {
                if ch.is_whitespace() {
                    phase = Phase::Spaces;
                    if buf == "--" {
                        return (words, pos);
                    }
                    if blank_ok || !buf.is_empty() {
                        words.push(Piece { text: std::mem::take(&mut buf), off: start });
                    }
                    buf.clear();
                    blank_ok = false;
                } else if ch == '\'' || ch == '"' {
                    phase = Phase::Quote(ch);
                    blank_ok = true;
                } else if ch == escape {
                    if let Some(&(_, next)) = chars.get(i) {
                        buf.push(next);
                        i += 1;
                    }
                } else {
                    buf.push(ch);
                }
            }
            Phase::Quote(q) => {
                if ch == q {
                    phase = Phase::Word;
                } else if ch == escape {
                    match chars.get(i) {
                        Some(&(_, next)) => {
                            buf.push(next);
                            i += 1;
                        }
                        None => phase = Phase::Word,
                    }
                } else {
                    buf.push(ch);
                }
            }
        }
    }
    if phase != Phase::Spaces && buf != "--" && (blank_ok || !buf.is_empty()) {
        words.push(Piece { text: buf, off: start });
    }
    (words, line.len())
}

/// Words of ARG, ENV and LABEL: split on whitespace outside quotes, quotes
/// and escapes kept (expansion removes them later).
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut buf = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    let mut i = 0;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        if let Some(q) = quote {
            if ch == q {
                quote = None;
            }
            // In double quotes the escape character escapes; in single
            // quotes nothing does.
            if ch == escape && q != '\'' {
                if i == chars.len() {
                    quote = None;
                    continue;
                }
                buf.push(ch);
                buf.push(chars[i]);
                i += 1;
                continue;
            }
            buf.push(ch);
            continue;
        }
        if !in_word {
            if ch.is_whitespace() {
                continue;
            }
            in_word = true;
        }
        if ch.is_whitespace() {
            if blank_ok || !buf.is_empty() {
                words.push(std::mem::take(&mut buf));
            }
            in_word = false;
            blank_ok = false;
            continue;
        }
        if ch == '\'' || ch == '"' {
            quote = Some(ch);
            blank_ok = true;
        }
        if ch == escape {
            if i == chars.len() {
                continue;
            }
            buf.push(ch);
            buf.push(chars[i]);
            i += 1;
            continue;
        }
        buf.push(ch);
    }
    if in_word && (blank_ok || !buf.is_empty()) {
        words.push(buf);
    }
    words
}

/// Whitespace-separated words (FROM, EXPOSE, and the non-JSON form of COPY,
/// ADD and VOLUME): no quote handling, as docker.
pub(crate) fn split_ws(rest: &str) -> Vec<String> {
    rest.split(is_sep).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

/// The JSON array form: `Ok(None)` when `rest` is not a JSON array (the
/// shell form applies), an error when it is an array of something other
/// than strings.
pub(crate) fn parse_json(rest: &str) -> Result<Option<Vec<String>>, &'static str> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Ok(None);
    }
    let Ok(items) = serde_json::from_str::<Vec<serde_json::Value>>(rest) else {
        return Ok(None);
    };
    items
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err("when using JSON array syntax, arrays must be comprised of strings only"),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// What a flag is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    Str,
    /// Repeatable.
    Strs,
}

/// The flags of one instruction, checked against what it accepts.
#[derive(Default)]
pub(crate) struct Flags {
    /// (name, value, offset); bools hold "true"/"false".
    pub set: Vec<(String, String, usize)>,
}

impl Flags {
    pub fn parse(l: &Logical, words: &[Piece], spec: &[(&str, Kind)]) -> Result<Flags, ParseError> {
        let mut flags = Flags::default();
        for w in words {
            let (name, value) = match w.text.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (w.text.as_str(), None),
            };
            let err = |msg: String| l.err(w.off, msg);
            let bare = name.strip_prefix("--").unwrap_or(name);
            let Some(&(_, kind)) = spec.iter().find(|(n, _)| *n == bare) else {
                return Err(err(format!("unknown flag: {name}")));
            };
            if kind != Kind::Strs && flags.set.iter().any(|(n, _, _)| n == bare) {
                return Err(err(format!("duplicate flag specified: {name}")));
            }
            let value = match (kind, value) {
                (Kind::Bool, None) => "true".to_string(),
                (Kind::Bool, Some("")) | (Kind::Str | Kind::Strs, None) => {
                    return Err(err(format!("missing a value on flag: {name}")));
                }
                (Kind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                    "true" => "true".into(),
                    "false" => "false".into(),
                    _ => return Err(err(format!("expecting boolean value for flag {name}, not: {v}"))),
                },
                (_, Some(v)) => v.to_string(),
            };
            flags.set.push((bare.to_string(), value, w.off));
        }
        Ok(flags)
    }

    pub fn str(&self, name: &str) -> Option<String> {
        self.set.iter().find(|(n, _, _)| n == name).map(|(_, v, _)| v.clone())
    }

    pub fn bool(&self, name: &str) -> bool {
        self.str(name).as_deref() == Some("true")
    }

    /// Values of a repeatable flag, with their offsets.
    pub fn all(&self, name: &str) -> Vec<(String, usize)> {
        self.set.iter().filter(|(n, _, _)| n == name).map(|(_, v, o)| (v.clone(), *o)).collect()
    }

    pub fn off(&self, name: &str) -> Option<usize> {
        self.set.iter().find(|(n, _, _)| n == name).map(|(_, _, o)| *o)
    }
}
