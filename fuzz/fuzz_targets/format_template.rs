//! `--format` Go templates (`berth ps/images/inspect --format ...`,
//! `berth::format::Template`) over rows of any shape, and docker's human
//! formats fed from untrusted data (an image's `created`, sizes).
//!
//! Input: the template, then NUL, then bytes that `arbitrary` turns into
//! rows and numbers.
//!
//! Invariants: rendering never panics; text without actions comes out as
//! it is (less the blanks around it, as docker trims them), once per row;
//! `{{json .}}` and `{{json .Field}}` print JSON that parses back to the
//! row and the field; `{{.Field}}` prints a field as Go prints it (a
//! string as it is); a table has every tab expanded.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use berth::format::{self, Template};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

#[derive(Arbitrary, Debug)]
enum Field {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<String>),
}

impl Field {
    fn json(self) -> Value {
        match self {
            Field::Null => Value::Null,
            Field::Bool(b) => b.into(),
            Field::Int(i) => i.into(),
            Field::Str(s) => s.into(),
            Field::List(l) => l.into(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Extra {
    rows: Vec<Vec<(String, Field)>>,
    size: u64,
    secs: i64,
    created: String,
}

fuzz_target!(|data: &[u8]| {
    let (template, rest) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let template = String::from_utf8_lossy(template);
    let Ok(extra) = Extra::arbitrary(&mut Unstructured::new(rest)) else { return };
    let rows: Vec<Map<String, Value>> =
        extra.rows.into_iter().take(8).map(|r| r.into_iter().map(|(k, v)| (k, v.json())).collect()).collect();

    let rendered = Template::parse(&template).render(&rows);
    if !template.contains("{{") && !template.starts_with("table") && template != "json" {
        let text = template.trim_matches(' ').replace("\\t", "\t").replace("\\n", "\n");
        assert_eq!(rendered.ok(), Some(format!("{text}\n").repeat(rows.len())), "plain text");
    }
    if let Ok(out) = Template::parse(&format!("table {template}")).render(&rows) {
        assert!(!out.contains('\t'), "a tab left in {out:?}");
    }
    fields(&rows);
    human(extra.size, extra.secs, &extra.created);
});

fn fields(rows: &[Map<String, Value>]) {
    let whole = Template::parse("{{json .}}").render(rows).expect("{{json .}} renders any row");
    let parsed: Vec<Value> = whole.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let expected: Vec<Value> = rows.iter().cloned().map(Value::Object).collect();
    assert_eq!(parsed, expected, "{{{{json .}}}} parses back to the rows");

    for row in rows {
        let one = std::slice::from_ref(row);
        // Keys that are Go identifiers (`.1` would be a number).
        let ident = |k: &str| {
            k.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        for (k, v) in row.iter().filter(|(k, _)| ident(k)) {
            let json = Template::parse(&format!("{{{{json .{k}}}}}")).render(one).expect("an existing field renders");
            let back: Value = serde_json::from_str(json.trim_end_matches('\n')).expect("JSON");
            assert_eq!(&back, v, "{{{{json .{k}}}}}");
            let plain = Template::parse(&format!("{{{{.{k}}}}}")).render(one).expect("an existing field renders");
            let want = match v {
                Value::String(s) => s.clone(),
                Value::Null => "<no value>".to_string(),
                Value::Array(l) => {
                    format!("[{}]", l.iter().map(|s| s.as_str().unwrap_or_default()).collect::<Vec<_>>().join(" "))
                }
                other => other.to_string(),
            };
            assert_eq!(plain, format!("{want}\n"), "{{{{.{k}}}}}");
        }
    }
}

fn human(size: u64, secs: i64, created: &str) {
    let s = format::human_size(size);
    assert!(s.ends_with('B'), "{s}");
    if size < 1000 {
        assert_eq!(s, format!("{size}B"));
    }
    assert!(!format::human_duration(secs).is_empty());
    let since = format::since(Some(created));
    assert!(since == "N/A" || since.ends_with(" ago"), "{since}");
}
