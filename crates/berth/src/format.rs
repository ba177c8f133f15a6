//! docker's human formats: sizes (`4.26MB`), ages (`2 weeks ago`), tables.

/// Decimal units with three significant digits, as docker prints sizes.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    let s = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    format!("{s}{}", UNITS[i])
}

/// docker's HumanDuration.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    match () {
        _ if s < 1 => "Less than a second".into(),
        _ if s == 1 => "1 second".into(),
        _ if s < 60 => format!("{s} seconds"),
        _ if m == 1 => "About a minute".into(),
        _ if m < 60 => format!("{m} minutes"),
        _ if h == 1 => "About an hour".into(),
        _ if h < 48 => format!("{h} hours"),
        _ if h < 24 * 7 * 2 => format!("{d} days"),
        _ if h < 24 * 30 * 2 => format!("{} weeks", d / 7),
        _ if h < 24 * 365 * 2 => format!("{} months", d / 30),
        _ => format!("{} years", d / 365),
    }
}

/// "2 weeks ago" for an RFC 3339 time; "N/A" when unknown.
pub fn since(created: Option<&str>) -> String {
    match created.and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok()) {
        Some(t) => format!("{} ago", human_duration(chrono::Utc::now().signed_duration_since(t).num_seconds())),
        None => "N/A".into(),
    }
}

/// Left-aligned columns separated by at least three spaces (docker's tabwriter).
/// A row's last cell is not padded, so it does not widen its column.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().filter(|r| c + 1 < r.len()).map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A Go template as docker's `--format` takes them, for the forms
/// scripts use: `{{.Field}}`, `{{json .}}`, `{{json .Field}}`,
/// `{{.Field}}\t{{.Other}}`, and a leading `table ` for a header row and
/// aligned columns. Written here because no crate renders Go templates.
pub struct Template {
    table: bool,
    text: String,
    headers: Vec<(&'static str, &'static str)>,
}

impl Template {
    pub fn parse(s: &str) -> Template {
        let (table, text) = match s.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => (true, rest.trim_start()),
            _ => (false, s),
        };
        Template { table, text: text.replace("\\t", "\t").replace("\\n", "\n"), headers: Vec::new() }
    }

    /// Column heads that are not the field's name in capitals (docker's
    /// `ps` heads ID "CONTAINER ID").
    pub fn headers(mut self, h: &[(&'static str, &'static str)]) -> Template {
        self.headers = h.to_vec();
        self
    }

    /// Renders every row; with `table`, a header of the field names first
    /// and the columns aligned.
    pub fn render(&self, rows: &[serde_json::Map<String, serde_json::Value>]) -> anyhow::Result<String> {
        let lines: Vec<String> = rows.iter().map(|r| self.line(r)).collect::<anyhow::Result<_>>()?;
        if !self.table {
            return Ok(lines.iter().map(|l| format!("{l}\n")).collect());
        }
        let header = self.header();
        // A newline ends a row wherever it comes from (the template or a
        // value), as in docker's tabwriter; tabs separate cells.
        let cells: Vec<Vec<String>> = std::iter::once(header)
            .chain(lines)
            .flat_map(|l| l.split('\n').map(|row| row.split('\t').map(str::to_owned).collect()).collect::<Vec<_>>())
            .collect();
        Ok(table(&cells))
    }

    fn header(&self) -> String {
        let mut out = String::new();
        let mut rest = self.text.as_str();
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let Some(end) = rest[start..].find("}}") else { break };
            let action = rest[start + 2..start + end].trim();
            let field = action.trim_start_matches("json").trim().trim_start_matches('.');
            match self.headers.iter().find(|(f, _)| *f == field) {
                Some((_, h)) => out.push_str(h),
                None => out.push_str(&upper_words(field)),
            }
            rest = &rest[start + end + 2..];
        }
        out.push_str(rest);
        out
    }

    fn line(&self, row: &serde_json::Map<String, serde_json::Value>) -> anyhow::Result<String> {
        let mut out = String::new();
        let mut rest = self.text.as_str();
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find("}}")
                .ok_or_else(|| anyhow::anyhow!("--format: unclosed {{{{ in {:?}", self.text))?;
            let action = rest[start + 2..start + end].trim();
            out.push_str(&eval(action, row)?);
            rest = &rest[start + end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn eval(action: &str, row: &serde_json::Map<String, serde_json::Value>) -> anyhow::Result<String> {
    let (json, expr) = match action.strip_prefix("json") {
        Some(e) => (true, e.trim()),
        None => (false, action),
    };
    let value = if expr == "." {
        serde_json::Value::Object(row.clone())
    } else {
        let field =
            expr.strip_prefix('.').ok_or_else(|| anyhow::anyhow!("--format: cannot evaluate {{{{{action}}}}}"))?;
        row.get(field).cloned().ok_or_else(|| {
            anyhow::anyhow!(
                "--format: no field {field:?} (have {})",
                row.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?
    };
    Ok(match (json, value) {
        (true, v) => serde_json::to_string(&v)?,
        (false, serde_json::Value::String(s)) => s,
        (false, serde_json::Value::Null) => String::new(),
        (false, v) => v.to_string(),
    })
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
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_261_000), "4.26MB");
        assert_eq!(human_size(12_300_000), "12.3MB");
        assert_eq!(human_size(123_400_000), "123MB");
        assert_eq!(human_size(1_000_000_000), "1GB");
        assert_eq!(human_duration(3), "3 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(3600 * 5), "5 hours");
        assert_eq!(human_duration(86400 * 20), "2 weeks");
        assert_eq!(human_duration(86400 * 800), "2 years");
    }

    #[test]
    fn tables_align() {
        let t = table(&[vec!["A".into(), "BB".into()], vec!["CCC".into(), "D".into()]]);
        assert_eq!(t, "A     BB\nCCC   D\n");
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
        assert_eq!(out, "NAMES    ID\nweb\nworker   abc\n");
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
        assert_eq!(t.render(&[row.clone()]).unwrap(), "ID    CREATED AT\nabc   now\n");
        assert_eq!(Template::parse("{{json .Names}}").render(&[row.clone()]).unwrap(), "\"web\"\n");
        assert!(Template::parse("{{.Nope}}").render(&[row]).is_err());
    }
}
