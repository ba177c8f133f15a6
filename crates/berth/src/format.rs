//! docker's human formats: sizes (`4.26MB`), ages (`2 weeks ago`), tables,
//! and `--format` templates.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::sync::Arc;

use gotmpl::parse::{CommandNode, DefineNode, Expr, ListNode, Node, Parser, PipeNode, SmolStr};
use gotmpl::{FuncMap, MissingKey, Value as GoValue};

/// Decimal units with three significant digits, as docker prints sizes.
pub fn human_size(n: u64) -> String {
    // One formatter for every front end: the engine's.
    berth_engine::units::human_size(n)
}

/// docker's HumanDuration (the engine's, shared with berthd).
pub fn human_duration(secs: i64) -> String {
    berth_engine::units::human_duration(secs)
}

/// "2 weeks ago" for an RFC 3339 time; "N/A" when unknown.
pub fn since(created: Option<&str>) -> String {
    berth_engine::units::since(created)
}

/// docker/cli's tables: Go's tabwriter as `tabwriter.NewWriter(out, 10, 1,
/// 3, ' ', 0)` sets it up. A column is as wide as its widest cell plus three
/// spaces, and at least ten; a row's last cell is not a column, so it is
/// never padded; columns are aligned over runs of rows that have them (Go's
/// column blocks).
pub fn table(rows: &[Vec<String>]) -> String {
    let text: String = rows.iter().map(|r| r.join("\t") + "\n").collect();
    tabwrite(&text)
}

const TAB_MIN_WIDTH: usize = 10;
const TAB_PADDING: usize = 3;

/// Aligns tab-separated cells as docker's tabwriter does.
fn tabwrite(text: &str) -> String {
    // The crate pads max(minwidth, cell) + padding; Go pads to
    // max(minwidth, cell + padding): the same once minwidth is lowered by
    // the padding. The crate measures display columns where Go counts runes
    // (only wide characters, CJK or emoji, differ).
    let mut tw = tabwriter::TabWriter::new(Vec::new()).minwidth(TAB_MIN_WIDTH - TAB_PADDING).padding(TAB_PADDING);
    // Writes into a Vec cannot fail.
    let _ = tw.write_all(text.as_bytes());
    let out = tw.into_inner().unwrap_or_default();
    // Cells are split at ASCII bytes and padded with ASCII: still UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A `--format` template as docker takes them: Go's text/template
/// (through the `gotmpl` crate) with docker/cli's functions (`json`,
/// `split`, `join`, `title`, `lower`, `upper`, `pad`, `truncate`), `json`
/// for `{{json .}}`, `\t` and `\n` written as escapes, and a leading
/// `table` for a header row and columns aligned by Go's tabwriter.
///
/// Rows are JSON objects whose keys are docker's field names. Go templates
/// call methods on docker's row structs; gotmpl has no methods, so the one
/// that takes an argument, `.Label "key"` (and `$row.Label "key"`, `"key" |
/// .Label`), is rewritten in the parsed tree into a call of a function
/// given the row: it reads the row's `Labels`, an object or docker's
/// `k=v,k2=v2` string (where a value holding a comma cannot be told apart,
/// as in docker's own `.Labels`).
pub struct Template {
    table: bool,
    parsed: Result<Parsed, String>,
    headers: Vec<(&'static str, &'static str)>,
}

/// A parsed template, with `.Label` calls rewritten.
struct Parsed {
    body: ListNode,
    defines: Vec<DefineNode>,
    /// The fields the template names (`.ID`, `$.Names`): the header row
    /// gives each its column head.
    fields: BTreeSet<String>,
}

/// gotmpl's name for the template; docker's is empty too.
const NAME: &str = "";
/// What `.Label "k"` becomes: a function given the receiver and the key.
const LABEL_FN: &str = "__berth_label";

impl Template {
    /// Parses `s`; a syntax error is reported by [`Template::render`].
    pub fn parse(s: &str) -> Template {
        let (table, text) = docker_format(s);
        Template { table, parsed: Parsed::new(&text), headers: Vec::new() }
    }

    /// Column heads that are not the field's name in capitals (docker's
    /// `ps` heads ID "CONTAINER ID").
    pub fn headers(mut self, h: &[(&'static str, &'static str)]) -> Template {
        self.headers = h.to_vec();
        self
    }

    /// Renders every row, each followed by a newline; with `table`, the
    /// header row first (the template run over the column heads, with
    /// docker's header functions) and the columns aligned.
    pub fn render(&self, rows: &[serde_json::Map<String, serde_json::Value>]) -> anyhow::Result<String> {
        let parsed = self.parsed.as_ref().map_err(|e| anyhow::anyhow!("template parsing error: {e}"))?;
        let tmpl = parsed.template(row_funcs(), MissingKey::Error);
        let mut out = String::new();
        for row in rows {
            tmpl.execute_template_fmt(&mut out, NAME, &to_go(&serde_json::Value::Object(row.clone())))
                .map_err(|e| exec_error(e, row))?;
            out.push('\n');
        }
        if !self.table {
            return Ok(out);
        }
        let heads: BTreeMap<String, GoValue> =
            parsed.fields.iter().map(|f| (f.clone(), GoValue::from(self.head(f)))).collect();
        let mut text = String::new();
        // As docker: a header that fails to render keeps what it wrote.
        let _ = parsed.template(header_funcs(), MissingKey::Invalid).execute_template_fmt(
            &mut text,
            NAME,
            &GoValue::from(heads),
        );
        text.push('\n');
        text.push_str(&out);
        Ok(tabwrite(&text))
    }

    /// Renders each value as `docker inspect --format` does: any JSON (an
    /// inspect document) is the template's dot, each output followed by a
    /// newline; a key a map lacks prints `<no value>`, as Go's maps do.
    /// No `table`: inspect has none.
    pub fn render_values(&self, values: &[serde_json::Value]) -> anyhow::Result<String> {
        let parsed = self.parsed.as_ref().map_err(|e| anyhow::anyhow!("template parsing error: {e}"))?;
        let tmpl = parsed.template(row_funcs(), MissingKey::Invalid);
        let mut out = String::new();
        for v in values {
            tmpl.execute_template_fmt(&mut out, NAME, &to_go(v))
                .map_err(|e| anyhow::anyhow!("template parsing error: {e}"))?;
            out.push('\n');
        }
        Ok(out)
    }

    fn head(&self, field: &str) -> String {
        match self.headers.iter().find(|(f, _)| *f == field) {
            Some((_, h)) => h.to_string(),
            None => upper_words(field),
        }
    }
}

/// docker/cli's `Context.preFormat`: `table` prefix, `json`, blanks
/// around, `\t` and `\n` escapes.
fn docker_format(s: &str) -> (bool, String) {
    let (table, text) = match s.strip_prefix("table") {
        Some(rest) => (true, rest),
        None if s == "json" => (false, "{{json .}}"),
        None => (false, s),
    };
    (table, text.trim_matches(' ').replace("\\t", "\t").replace("\\n", "\n"))
}

impl Parsed {
    fn new(text: &str) -> Result<Parsed, String> {
        let (mut body, mut defines) =
            Parser::new(text, "{{", "}}").and_then(Parser::parse).map_err(|e| e.to_string())?;
        let mut walk = Walk::default();
        walk.list(&mut body);
        for d in &mut defines {
            walk.list(&mut d.body);
        }
        match walk.error {
            Some(e) => Err(e),
            None => Ok(Parsed { body, defines, fields: walk.fields }),
        }
    }

    fn template(&self, funcs: FuncMap, missing: MissingKey) -> gotmpl::Template {
        let mut t = gotmpl::Template::new(NAME).missing_key(missing).funcs(funcs);
        for d in &self.defines {
            t = t.add_parse_tree(&d.name, d.body.clone());
        }
        t.add_parse_tree(NAME, self.body.clone())
    }
}

/// Go's builtin functions and docker's.
const FUNCTIONS: &[&str] = &[
    "and", "call", "html", "index", "slice", "js", "len", "not", "or", "print", "printf", "println", "urlquery", "eq",
    "ge", "gt", "le", "lt", "ne", "json", "split", "join", "title", "lower", "upper", "pad", "truncate", LABEL_FN,
];

/// One pass over the parsed tree: rewrites `.Label "k"` calls, collects
/// the fields named, and refuses unknown functions as Go's parser does
/// (gotmpl would only find them when a row is rendered, so never with no
/// rows).
#[derive(Default)]
struct Walk {
    fields: BTreeSet<String>,
    error: Option<String>,
}

impl Walk {
    fn list(&mut self, l: &mut ListNode) {
        for n in &mut l.nodes {
            self.node(n);
        }
    }

    fn node(&mut self, n: &mut Node) {
        match n {
            Node::List(l) => self.list(l),
            Node::Action(a) => self.pipe(&mut a.pipe),
            Node::If(b) | Node::Range(b) | Node::With(b) => {
                self.pipe(&mut b.pipe);
                self.list(&mut b.body);
                if let Some(e) = &mut b.else_body {
                    self.list(e);
                }
            }
            Node::Template(t) => {
                if let Some(p) = &mut t.pipe {
                    self.pipe(p);
                }
            }
            Node::Define(d) => self.list(&mut d.body),
            Node::Text(_) | Node::Break(_) | Node::Continue(_) => {}
        }
    }

    fn pipe(&mut self, p: &mut PipeNode) {
        for (i, cmd) in p.commands.iter_mut().enumerate() {
            self.command(cmd, i > 0);
        }
    }

    fn command(&mut self, cmd: &mut CommandNode, piped: bool) {
        if cmd.args.len() > 1 || piped {
            rewrite_label(cmd);
        }
        for arg in &mut cmd.args {
            self.expr(arg);
        }
    }

    fn expr(&mut self, e: &mut Expr) {
        match e {
            Expr::Field(_, names) => self.fields.extend(names.first().map(|n| n.to_string())),
            Expr::Variable(_, var, names) if var.as_str() == "$" => {
                self.fields.extend(names.first().map(|n| n.to_string()))
            }
            Expr::Identifier(pos, name) if !FUNCTIONS.contains(&name.as_str()) => {
                self.error.get_or_insert_with(|| format!("template: :{}: function {name:?} not defined", pos.line));
            }
            Expr::Pipe(_, p) => self.pipe(p),
            Expr::Chain(_, inner, _) => self.expr(inner),
            _ => {}
        }
    }
}

/// `.X.Label "k"` (a method call with arguments, which gotmpl does not
/// have) becomes `__berth_label .X "k"`.
fn rewrite_label(cmd: &mut CommandNode) {
    let receiver = match cmd.args.first() {
        Some(Expr::Field(pos, names)) if names.last().is_some_and(|n| n == "Label") => {
            let prefix = &names[..names.len() - 1];
            if prefix.is_empty() { Expr::Dot(*pos) } else { Expr::Field(*pos, prefix.to_vec()) }
        }
        Some(Expr::Variable(pos, var, names)) if names.last().is_some_and(|n| n == "Label") => {
            Expr::Variable(*pos, var.clone(), names[..names.len() - 1].to_vec())
        }
        _ => return,
    };
    let pos = receiver.pos();
    cmd.args[0] = Expr::Identifier(pos, SmolStr::new(LABEL_FN));
    cmd.args.insert(1, receiver);
}

/// A template error, naming the fields a row has when one was missing.
fn exec_error(e: gotmpl::TemplateError, row: &serde_json::Map<String, serde_json::Value>) -> anyhow::Error {
    match e {
        gotmpl::TemplateError::MissingKey { key } => anyhow::anyhow!(
            "template parsing error: can't evaluate field {key} (fields: {})",
            row.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
        e => anyhow::anyhow!("template parsing error: {e}"),
    }
}

fn to_go(v: &serde_json::Value) -> GoValue {
    use serde_json::Value as J;
    match v {
        J::Null => GoValue::Nil,
        J::Bool(b) => GoValue::Bool(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => GoValue::Int(i),
            (None, Some(u)) => GoValue::Uint(u),
            _ => GoValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => GoValue::from(s.as_str()),
        J::Array(a) => GoValue::List(a.iter().map(to_go).collect()),
        J::Object(o) => GoValue::Map(Arc::new(o.iter().map(|(k, v)| (Arc::from(k.as_str()), to_go(v))).collect())),
    }
}

/// The JSON of a template value; `None` for what Go's encoder refuses
/// (functions, NaN). Maps come out with their keys sorted, as Go's do.
fn to_json(v: &GoValue) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    Some(match v {
        GoValue::Nil => J::Null,
        GoValue::Bool(b) => J::Bool(*b),
        GoValue::Int(i) => J::from(*i),
        GoValue::Uint(u) => J::from(*u),
        GoValue::Float(f) => J::Number(serde_json::Number::from_f64(*f)?),
        GoValue::String(s) => J::String(s.to_string()),
        GoValue::List(l) => J::Array(l.iter().map(to_json).collect::<Option<_>>()?),
        GoValue::Map(m) => J::Object(m.iter().map(|(k, v)| Some((k.to_string(), to_json(v)?))).collect::<Option<_>>()?),
        GoValue::Function(_) => return None,
    })
}

/// docker's `json`: Go's encoder without HTML escapes; empty when Go's
/// encoder fails.
fn json(v: &GoValue) -> String {
    let Some(j) = to_json(v) else { return String::new() };
    // Go escapes the two JavaScript line terminators even without HTML
    // escaping; they only occur inside strings.
    j.to_string().replace('\u{2028}', "\\u2028").replace('\u{2029}', "\\u2029")
}

type FnResult = gotmpl::Result<GoValue>;

fn argc(name: &str, args: &[GoValue], n: usize) -> gotmpl::Result<()> {
    if args.len() == n {
        Ok(())
    } else {
        Err(gotmpl::TemplateError::ArgCount { name: name.into(), expected: n, got: args.len() })
    }
}

fn wrong_type(name: &str, want: &str, got: &GoValue) -> gotmpl::TemplateError {
    gotmpl::TemplateError::Exec(format!("{name}: wrong type for value; expected {want}; got {}", got.type_name()))
}

fn string_arg<'a>(name: &str, v: &'a GoValue) -> gotmpl::Result<&'a str> {
    v.as_str().ok_or_else(|| wrong_type(name, "string", v))
}

/// A count (`pad`, `truncate`): Go's strings.Repeat and slicing panic on a
/// negative one, which text/template reports as an error.
fn count_arg(name: &str, v: &GoValue) -> gotmpl::Result<usize> {
    let n = match v {
        GoValue::Int(i) => usize::try_from(*i).ok(),
        GoValue::Uint(u) => usize::try_from(*u).ok(),
        _ => return Err(wrong_type(name, "int", v)),
    };
    n.ok_or_else(|| gotmpl::TemplateError::Exec(format!("{name}: negative count {v}")))
}

fn func(f: impl Fn(&[GoValue]) -> FnResult + Send + Sync + 'static) -> gotmpl::ValueFunc {
    Arc::new(f)
}

fn string_func(name: &'static str, f: fn(&str) -> String) -> gotmpl::ValueFunc {
    func(move |a| {
        argc(name, a, 1)?;
        Ok(GoValue::from(f(string_arg(name, &a[0])?)))
    })
}

/// docker/cli's template functions (templates.go basicFunctions).
fn row_funcs() -> FuncMap {
    let mut m = FuncMap::new();
    m.insert(
        "json".into(),
        func(|a| {
            argc("json", a, 1)?;
            Ok(GoValue::from(json(&a[0])))
        }),
    );
    m.insert(
        "split".into(),
        func(|a| {
            argc("split", a, 2)?;
            let (s, sep) = (string_arg("split", &a[0])?, string_arg("split", &a[1])?);
            Ok(GoValue::List(go_split(s, sep).into_iter().map(GoValue::from).collect()))
        }),
    );
    m.insert(
        "join".into(),
        func(|a| {
            argc("join", a, 2)?;
            let GoValue::List(items) = &a[0] else { return Err(wrong_type("join", "[]string", &a[0])) };
            let items = items.iter().map(|i| string_arg("join", i)).collect::<gotmpl::Result<Vec<_>>>()?;
            Ok(GoValue::from(items.join(string_arg("join", &a[1])?)))
        }),
    );
    m.insert("title".into(), string_func("title", go_title));
    m.insert("lower".into(), string_func("lower", str::to_lowercase));
    m.insert("upper".into(), string_func("upper", str::to_uppercase));
    m.insert("pad".into(), func(pad));
    m.insert(
        "truncate".into(),
        func(|a| {
            argc("truncate", a, 2)?;
            let (s, n) = (string_arg("truncate", &a[0])?, count_arg("truncate", &a[1])?);
            // docker cuts bytes; a cut inside a character moves back to
            // its start, so the output stays UTF-8.
            let end = (0..=n.min(s.len())).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
            Ok(GoValue::from(&s[..end]))
        }),
    );
    m.insert(
        LABEL_FN.into(),
        func(|a| {
            argc("Label", a, 2)?;
            let key = string_arg("Label", &a[1])?;
            Ok(GoValue::from(label(&a[0], key)?))
        }),
    );
    m
}

/// docker/cli's HeaderFunctions: the header row shows the column heads
/// as they are, except for `pad`, which keeps the columns aligned; and
/// `.Label "a.b-c"` heads its column `b c` (SubHeaderContext.Label).
fn header_funcs() -> FuncMap {
    let mut m = FuncMap::new();
    for (name, n) in [("json", 1), ("split", 2), ("join", 2), ("title", 1), ("lower", 1), ("upper", 1), ("truncate", 2)]
    {
        m.insert(
            name.into(),
            func(move |a| {
                argc(name, a, n)?;
                string_arg(name, &a[0])?;
                Ok(a[0].clone())
            }),
        );
    }
    m.insert("pad".into(), func(pad));
    m.insert(
        LABEL_FN.into(),
        func(|a| {
            argc("Label", a, 2)?;
            let key = string_arg("Label", &a[1])?;
            let last = key.rsplit('.').next().unwrap_or(key);
            Ok(GoValue::from(last.replace(['-', '_'], " ")))
        }),
    );
    m
}

/// docker's `pad`: blanks before and after, for a non-empty string.
fn pad(a: &[GoValue]) -> FnResult {
    argc("pad", a, 3)?;
    let s = string_arg("pad", &a[0])?;
    let (before, after) = (count_arg("pad", &a[1])?, count_arg("pad", &a[2])?);
    if s.is_empty() {
        return Ok(GoValue::from(""));
    }
    Ok(GoValue::from(format!("{}{s}{}", " ".repeat(before), " ".repeat(after))))
}

/// A row's label `key`: from its `Labels`, an object or docker's
/// `k=v,k2=v2` string; empty when it has none.
fn label(row: &GoValue, key: &str) -> gotmpl::Result<String> {
    let labels = match row {
        GoValue::Map(m) => m.get("Labels"),
        other => return Err(wrong_type("Label", "a row", other)),
    };
    Ok(match labels {
        Some(GoValue::Map(m)) => m.get(key).map(|v| v.to_string()).unwrap_or_default(),
        Some(GoValue::String(s)) => s
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
            .unwrap_or_default(),
        _ => String::new(),
    })
}

/// Go's strings.Split: an empty separator splits between characters.
fn go_split(s: &str, sep: &str) -> Vec<String> {
    if sep.is_empty() { s.chars().map(String::from).collect() } else { s.split(sep).map(str::to_owned).collect() }
}

/// Go's strings.Title: a capital after each separator (ASCII other than
/// letters, digits and `_`; Unicode spaces).
fn go_title(s: &str) -> String {
    let separator = |c: char| {
        if c.is_ascii() { !(c.is_ascii_alphanumeric() || c == '_') } else { c.is_whitespace() }
    };
    let mut prev = ' ';
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if separator(prev) {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev = c;
    }
    out
}

/// `CreatedAt` to `CREATED AT`, as docker heads its columns.
fn upper_words(field: &str) -> String {
    let mut out = String::new();
    for (i, c) in field.char_indices() {
        if i > 0 && c.is_uppercase() && !field[..i].ends_with(|p: char| p.is_uppercase()) {
            out.push(' ');
        }
        out.extend(c.to_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_look_like_dockers() {
        assert_eq!(human_size(4_261_000), "4.26MB");
        assert_eq!(human_duration(3), "3 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(3600 * 5), "5 hours");
        assert_eq!(human_duration(86400 * 20), "2 weeks");
        assert_eq!(human_duration(86400 * 800), "2 years");
    }

    #[test]
    fn tables_align() {
        // docker's tabwriter: a column is its widest cell and three blanks,
        // and at least ten wide.
        let t = table(&[vec!["A".into(), "BB".into()], vec!["CCC".into(), "D".into()]]);
        assert_eq!(t, "A         BB\nCCC       D\n");
        let t = table(&[vec!["CONTAINER ID".into(), "IMAGE".into(), "NAMES".into()]]);
        assert_eq!(t, "CONTAINER ID   IMAGE     NAMES\n");
    }

    #[test]
    fn table_rows_end_at_newlines() {
        // Found by fuzz/format_template: a newline in a cell was kept inside
        // its row, which then had blanks before it and skewed the columns.
        let mut row = serde_json::Map::new();
        row.insert("ID".into(), "abc".into());
        row.insert("Names".into(), "web\nworker".into());
        let t = Template::parse("table {{.Names}}\\t{{.ID}}");
        let out = t.render(&[row]).unwrap();
        // As Go's tabwriter: the line with one cell ends the column block.
        assert_eq!(out, "NAMES     ID\nweb\nworker    abc\n");
    }

    #[test]
    fn templates_render_as_go_would() {
        let mut row = serde_json::Map::new();
        row.insert("ID".into(), "abc".into());
        row.insert("Names".into(), "web".into());
        row.insert("CreatedAt".into(), "now".into());
        let t = Template::parse("{{.ID}} {{.Names}}");
        assert_eq!(t.render(&[row.clone()]).unwrap(), "abc web\n");
        let t = Template::parse("table {{.ID}}\\t{{.CreatedAt}}");
        assert_eq!(t.render(&[row.clone()]).unwrap(), "ID        CREATED AT\nabc       now\n");
        assert_eq!(Template::parse("{{json .Names}}").render(&[row.clone()]).unwrap(), "\"web\"\n");
        assert!(Template::parse("{{.Nope}}").render(&[row]).is_err());
    }
}
