//! Docker's Dockerfile parser (BuildKit's `frontend/dockerfile/parser` and
//! `instructions`), rule for rule:
//!
//! - parser directives (`# syntax=`, `# escape=`, `# check=`) only before
//!   anything else (a blank line, a comment or an instruction ends them),
//!   each at most once; a byte-order mark is ignored;
//! - comments and blank lines are skipped, also between continuation lines;
//!   a line ending in the escape character continues on the next one (the
//!   character and the newline removed, leading whitespace of the next line
//!   kept);
//! - instruction names are case-insensitive; flags (`--name[=value]`) come
//!   first; the JSON array form is used when the arguments parse as a JSON
//!   array of strings;
//! - here-documents (`<<EOF`, `<<-EOF`, `<<"EOF"`, several per line) in RUN,
//!   COPY, ADD (and ONBUILD of those), their bodies read from the lines
//!   after the instruction.
//!
//! Berth is stricter than docker in one way: an unknown flag is an error on
//! every instruction (docker ignores flags on ARG and STOPSIGNAL).

pub mod expand;
mod instruction;
mod mount;
mod words;

pub use expand::{ExpandError, expand, expand_heredoc, expand_words};
pub use mount::parse_mount;

use crate::ast::{Dockerfile, Heredoc, Instruction, Located, Stage};
use instruction::Parsed;

/// A syntax error: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Dockerfile:{line}:{column}: {message}")]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
}

impl ParseError {
    /// An expansion error met while dispatching `at` (the executor's
    /// `${X:?}` or bad `${...}`), reported like a syntax error at the
    /// instruction's first line: `Dockerfile:5:1: failed to process ...`.
    pub fn expansion<T>(at: &Located<T>, err: &ExpandError) -> ParseError {
        ParseError::at(at.line, 1, err.to_string())
    }

    pub(crate) fn at(line: usize, column: usize, message: impl Into<String>) -> Self {
        ParseError { line, column, message: message.into() }
    }
}

/// One instruction's text, its continuation lines joined, and where each
/// piece of it came from (for the columns of errors).
#[derive(Debug)]
pub(crate) struct Logical {
    pub text: String,
    pub line: usize,
    pub end_line: usize,
    /// (byte offset in `text`, line, column of that byte).
    segs: Vec<(usize, usize, usize)>,
}

impl Logical {
    /// Line and column of byte `off` of `text`.
    pub fn pos(&self, off: usize) -> (usize, usize) {
        let off = off.min(self.text.len());
        let &(start, line, col) = self.segs.iter().rev().find(|s| s.0 <= off).unwrap_or(&self.segs[0]);
        let chars = self.text[start..].char_indices().take_while(|(i, _)| start + i < off).count();
        (line, col + chars)
    }

    pub fn err(&self, off: usize, message: impl Into<String>) -> ParseError {
        let (line, column) = self.pos(off);
        ParseError::at(line, column, message)
    }
}

struct Directives {
    escape: char,
    syntax: Option<String>,
    seen: Vec<String>,
    done: bool,
}

impl Directives {
    /// Reads `line` as a possible directive; true when it was one.
    fn check(&mut self, line: &str) -> Result<bool, String> {
        if self.done {
            return Ok(false);
        }
        let Some((key, value)) = directive(line) else {
            self.done = true;
            return Ok(false);
        };
        if !matches!(key.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(false);
        }
        if self.seen.contains(&key) {
            return Err(format!("only one {key} parser directive can be used"));
        }
        match key.as_str() {
            "escape" => {
                self.escape = match value.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    _ => return Err(format!("invalid escape token '{value}' does not match ` or \\")),
                }
            }
            "syntax" => self.syntax = Some(value),
            _ => {}
        }
        self.seen.push(key);
        Ok(true)
    }
}

/// `# key = value` (the key lower-cased, the value trimmed).
fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix('#')?.trim_start();
    let key_len = rest.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(rest.len());
    let key = &rest[..key_len];
    if !key.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let value = rest[key_len..].trim_start().strip_prefix('=')?.trim();
    (!value.is_empty()).then(|| (key.to_ascii_lowercase(), value.to_string()))
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

/// Removes a trailing continuation (the escape character, then only spaces
/// or tabs, not itself escaped): `(line, continues)`.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    if let Some(before) = t.strip_suffix(escape)
        && (before.is_empty() || !before.ends_with(escape))
    {
        return (before, true);
    }
    (line, false)
}

/// The lines of `text`, each with its line ending.
fn lines_of(text: &str) -> Vec<&str> {
    text.split_inclusive('\n').collect()
}

/// Parses a whole Dockerfile.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines = lines_of(text);
    let mut d = Directives { escape: '\\', syntax: None, seen: Vec::new(), done: false };
    let mut out = Dockerfile { escape: '\\', syntax: None, meta_args: Vec::new(), stages: Vec::new() };
    let mut any = false;
    let mut i = 0;
    while i < lines.len() {
        let Some(l) = read_logical(&lines, &mut i, &mut d)? else { continue };
        any = true;
        let split = words::split_command(&l, 0, d.escape);
        let heredocs = read_heredocs(&l, &split, &lines, &mut i, d.escape)?;
        let end_line = i.max(l.end_line);
        let original = l.text.trim().to_string();
        match instruction::parse_instruction(&l, &split, heredocs, d.escape)? {
            Parsed::From(from) => out.stages.push(Stage {
                index: out.stages.len(),
                name: from.name,
                base: from.base,
                platform: from.platform,
                line: l.line,
                original,
                instructions: Vec::new(),
            }),
            Parsed::Inst(inst) => match (out.stages.last_mut(), inst) {
                (Some(stage), inst) => {
                    stage.instructions.push(Located { line: l.line, end_line, original, inner: inst });
                }
                (None, Instruction::Arg(args)) => out.meta_args.extend(args.into_iter().map(|inner| Located {
                    line: l.line,
                    end_line,
                    original: original.clone(),
                    inner,
                })),
                (None, _) => return Err(l.err(split.cmd.off, "no build stage in current context")),
            },
        }
    }
    if !any {
        return Err(ParseError::at(lines.len().max(1), 1, "file with no instructions"));
    }
    if out.stages.is_empty() {
        return Err(ParseError::at(1, 1, "dockerfile contains no stages to build"));
    }
    out.escape = d.escape;
    out.syntax = d.syntax;
    Ok(out)
}

/// Parses an ONBUILD trigger from a base image's config (`OnBuild`), as a
/// build FROM that image runs it: exactly one instruction, which may have
/// heredocs (as [`crate::ast::Onbuild::trigger`] writes them); never FROM,
/// ONBUILD or MAINTAINER. Positions in errors are within the trigger.
pub fn parse_trigger(trigger: &str) -> Result<Located<Instruction>, ParseError> {
    let lines = lines_of(trigger);
    let mut d = Directives { escape: '\\', syntax: None, seen: Vec::new(), done: true };
    let mut found = None;
    let mut i = 0;
    while i < lines.len() {
        let Some(l) = read_logical(&lines, &mut i, &mut d)? else { continue };
        if found.is_some() {
            return Err(ParseError::at(l.line, 1, "onbuild trigger should be a single expression"));
        }
        let split = words::split_command(&l, 0, d.escape);
        let name = split.cmd.text.to_ascii_uppercase();
        if matches!(name.as_str(), "FROM" | "MAINTAINER" | "ONBUILD") {
            return Err(l.err(split.cmd.off, format!("{name} isn't allowed as an ONBUILD trigger")));
        }
        let heredocs = read_heredocs(&l, &split, &lines, &mut i, d.escape)?;
        let end_line = i.max(l.end_line);
        let Parsed::Inst(inner) = instruction::parse_instruction(&l, &split, heredocs, d.escape)? else {
            return Err(l.err(split.cmd.off, "FROM isn't allowed as an ONBUILD trigger"));
        };
        found = Some(Located { line: l.line, end_line, original: l.text.trim().to_string(), inner });
    }
    found.ok_or_else(|| ParseError::at(1, 1, "onbuild trigger should be a single expression"))
}

/// Reads the next instruction's lines from `lines[*i..]` (skipping blank
/// lines, comments and directives), continuations joined.
fn read_logical(lines: &[&str], i: &mut usize, d: &mut Directives) -> Result<Option<Logical>, ParseError> {
    let first = trim_newline(lines[*i]);
    *i += 1;
    let line_no = *i;
    let stripped = first.trim_start();
    let lead = first[..first.len() - stripped.len()].chars().count();
    d.check(stripped).map_err(|m| ParseError::at(line_no, 1, m))?;
    if is_comment(stripped) {
        return Ok(None);
    }
    let (start, mut continues) = trim_continuation(stripped, d.escape);
    if !continues && start.is_empty() {
        return Ok(None);
    }
    let mut l =
        Logical { text: start.to_string(), line: line_no, end_line: line_no, segs: vec![(0, line_no, 1 + lead)] };
    while continues && *i < lines.len() {
        let raw = trim_newline(lines[*i]);
        *i += 1;
        d.check(raw).map_err(|m| ParseError::at(*i, 1, m))?;
        l.end_line = *i;
        // Comments and blank lines inside a continuation are skipped (docker
        // warns about the blank ones).
        if is_comment(raw) || raw.trim().is_empty() {
            continue;
        }
        let (piece, more) = trim_continuation(raw, d.escape);
        l.segs.push((l.text.len(), *i, 1));
        l.text.push_str(piece);
        continues = more;
    }
    if l.text.trim().is_empty() {
        return Ok(None);
    }
    Ok(Some(l))
}

/// A heredoc's delimiter as written (`<<-"EOF"`), before its body is read.
pub(crate) struct HeredocHead {
    pub name: String,
    pub expand: bool,
    pub strip_tabs: bool,
}

/// Parses one word as a heredoc redirection (`[n]<<[-]WORD`), None when it
/// is not one.
pub(crate) fn parse_heredoc_word(word: &str) -> Result<Option<HeredocHead>, String> {
    let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let Some(rest) = rest.strip_prefix("<<") else { return Ok(None) };
    let (strip_tabs, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.trim_start_matches([' ', '\t', '\n', '\x0c', '\r']);
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let words = expand::heredoc_words(rest, false).map_err(|e| e.to_string())?;
    let [name] = words.as_slice() else { return Ok(None) };
    let raw = expand::heredoc_words(rest, true).map_err(|e| e.to_string())?;
    let quotes = |s: &str| s.chars().filter(|c| matches!(c, '\'' | '"')).count();
    // A quote removed by the lexer means the delimiter was quoted: the
    // body is then not expanded.
    let expand = raw.first().is_some_and(|r| quotes(r) == quotes(name));
    Ok(Some(HeredocHead { name: name.clone(), expand, strip_tabs }))
}

/// Whether this instruction may hold heredocs (RUN, COPY, ADD, also behind
/// ONBUILD; never in the JSON form).
fn can_contain_heredoc(l: &Logical, split: &words::Split, escape: char) -> bool {
    let inner;
    let split = if split.cmd.text.eq_ignore_ascii_case("onbuild") {
        inner = words::split_command(l, split.args.off, escape);
        &inner
    } else {
        split
    };
    let cmd = split.cmd.text.to_ascii_lowercase();
    matches!(cmd.as_str(), "run" | "copy" | "add") && !matches!(words::parse_json(&split.args.text), Ok(Some(_)))
}

/// Reads the bodies of the heredocs `l` opens from the lines after it.
fn read_heredocs(
    l: &Logical,
    split: &words::Split,
    lines: &[&str],
    i: &mut usize,
    escape: char,
) -> Result<Vec<Heredoc>, ParseError> {
    if !l.text.contains("<<") || !can_contain_heredoc(l, split, escape) {
        return Ok(Vec::new());
    }
    // An unbalanced quote on the line means no heredocs, as in docker.
    let words = expand::raw_words(&l.text, true).unwrap_or_default();
    let mut docs = Vec::new();
    for word in &words {
        let head = parse_heredoc_word(word).map_err(|m| l.err(split.cmd.off, m))?;
        let Some(head) = head else { continue };
        let mut body = String::new();
        let mut terminated = false;
        while *i < lines.len() {
            let line = lines[*i];
            *i += 1;
            let mut candidate = trim_newline(line);
            if head.strip_tabs {
                candidate = candidate.trim_start_matches('\t');
            }
            if candidate == head.name {
                terminated = true;
                break;
            }
            body.push_str(line);
        }
        if !terminated {
            let off = l.text.match_indices("<<").nth(docs.len()).map_or(split.cmd.off, |(o, _)| o);
            return Err(l.err(off, "unterminated heredoc"));
        }
        if head.strip_tabs {
            body = body.split_inclusive('\n').map(|s| s.trim_start_matches('\t')).collect();
        }
        docs.push(Heredoc { name: head.name, body, expand: head.expand, strip_tabs: head.strip_tabs });
    }
    Ok(docs)
}

#[cfg(test)]
mod tests;
