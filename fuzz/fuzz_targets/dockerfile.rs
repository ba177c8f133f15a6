//! Dockerfiles and `.dockerignore` files (`berth build`'s frontend,
//! `berth_build::parse`, `parse::expand`, `ignore::Ignore`): all of it
//! comes from the build context, untrusted.
//!
//! Input: a Dockerfile, then optionally NUL and a `.dockerignore`, then NUL
//! and a path to match against it.
//!
//! Invariants: nothing panics; an error's position is inside the file
//! (line 1..=lines+1, column >= 1) and it prints as `Dockerfile:L:C: msg`;
//! a parsed file has its stages numbered in order, lower-case stage names,
//! instructions in line order with `line <= end_line <= lines`; expanding
//! any raw value never panics, and a word without `$`, quotes or escapes
//! expands to itself; an ONBUILD trigger as stored parses back to the
//! same instruction; `.dockerignore`: `skip_dir(d)` implies every path
//! under `d` is excluded, and the root is never excluded.

#![no_main]

use berth_build::ast::{Dockerfile, Instruction};
use berth_build::parse::{expand, expand_words, parse_trigger};
use berth_build::{Ignore, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.splitn(3, '\0');
    let dockerfile = parts.next().unwrap_or_default();
    check_dockerfile(dockerfile);
    if let Some(ignore) = parts.next() {
        check_ignore(ignore, parts.next().unwrap_or("a/b"));
    }
});

fn lines(text: &str) -> usize {
    text.split_inclusive('\n').count()
}

fn check_dockerfile(text: &str) {
    let n = lines(text);
    let d = match parse(text) {
        Ok(d) => d,
        Err(e) => {
            assert!(e.line >= 1 && e.line <= n + 1, "{e} outside {n} lines");
            assert!(e.column >= 1, "{e}");
            assert!(e.to_string().starts_with(&format!("Dockerfile:{}:{}: ", e.line, e.column)));
            return;
        }
    };
    check_parsed(&d, n);
}

fn check_parsed(d: &Dockerfile, n: usize) {
    assert!(d.escape == '\\' || d.escape == '`');
    assert!(!d.stages.is_empty());
    let mut last = 0;
    for (i, s) in d.stages.iter().enumerate() {
        assert_eq!(s.index, i);
        if let Some(name) = &s.name {
            assert_eq!(*name, name.to_ascii_lowercase());
        }
        assert!(s.line > last && s.line <= n);
        last = s.line;
        for l in &s.instructions {
            assert!(l.line > last && l.line <= l.end_line && l.end_line <= n, "{l:?} with {n} lines");
            last = l.end_line;
            expand_all(&l.inner, d.escape);
        }
    }
    for a in &d.meta_args {
        if let Some(v) = &a.inner.default {
            expand_one(v, d.escape);
        }
    }
}

/// Expands what the executor would, with a lookup that knows some names.
fn expand_all(inst: &Instruction, escape: char) {
    match inst {
        Instruction::Env(kv) | Instruction::Label(kv) => kv.iter().for_each(|(k, v)| {
            expand_one(k, escape);
            expand_one(v, escape);
        }),
        Instruction::Workdir(w) | Instruction::User(w) | Instruction::Stopsignal(w) => expand_one(w, escape),
        Instruction::Expose(v) | Instruction::Volume(v) => v.iter().for_each(|w| expand_one(w, escape)),
        Instruction::Copy(c) => c.sources.iter().chain([&c.dest]).for_each(|w| expand_one(w, escape)),
        Instruction::Add(a) => a.copy.sources.iter().for_each(|w| expand_one(w, escape)),
        Instruction::Arg(args) => args.iter().filter_map(|a| a.default.as_ref()).for_each(|w| expand_one(w, escape)),
        // The trigger as stored in the image parses back to the same
        // instruction (with the default escape: docker stores no escape).
        Instruction::Onbuild(o) if escape == '\\' => match parse_trigger(&o.trigger) {
            Ok(again) => assert_eq!(again.inner, *o.instruction, "{:?}", o.trigger),
            Err(e) => panic!("trigger {:?}: {e}", o.trigger),
        },
        _ => {}
    }
}

fn lookup(name: &str) -> Option<String> {
    match name {
        "A" => Some("a b".into()),
        "E" => Some(String::new()),
        "P" => Some("/x/y.tar.gz".into()),
        _ => None,
    }
}

fn expand_one(word: &str, escape: char) {
    let one = expand(word, lookup, escape);
    let _ = expand_words(word, lookup, escape);
    let special = |c: char| matches!(c, '$' | '\'' | '"') || c == escape;
    if !word.contains(special) {
        assert_eq!(one.as_deref(), Ok(word), "{word:?}");
    }
}

fn check_ignore(text: &str, path: &str) {
    let Ok(ig) = Ignore::parse(text) else { return };
    assert!(!ig.excluded("."));
    assert!(!ig.excluded(""));
    let excluded = ig.excluded(path);
    // Every directory on the way down: skipping it must not hide a path
    // that is not excluded.
    // A walker's paths: no empty, `.` or `..` components (those clean to
    // another path, not one under the directory).
    let comps: Vec<&str> = path.split('/').collect();
    if comps.iter().any(|c| matches!(*c, "" | "." | "..")) {
        return;
    }
    for i in 1..comps.len() {
        let dir = comps[..i].join("/");
        if ig.skip_dir(&dir) {
            assert!(excluded, "{dir:?} skipped but {path:?} is not excluded, with {text:?}");
        }
    }
}
