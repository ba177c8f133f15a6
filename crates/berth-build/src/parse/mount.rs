//! `RUN --mount=...`, as BuildKit reads it (`commands_runmount.go`): CSV
//! fields `key=value` (or a bare `ro`, `rw`, `required`), keys
//! case-insensitive.
//!
//! The parser reads each mount once, values as written, so unknown keys,
//! kinds and bad values are syntax errors. BuildKit expands values at
//! dispatch; berth's executor expands the string values (`target`,
//! `source`, `id`, `env`) with [`crate::parse::expand`] the same way, and
//! [`parse_mount`] lets it re-read a spec whole with an expander. `from`
//! never expands (as in BuildKit).

use crate::ast::{MountKind, RunMount, Sharing};

/// Reads one `--mount` value; `expand` is applied to every value (not
/// keys) before it is interpreted.
pub fn parse_mount<F>(spec: &str, mut expand: F) -> Result<RunMount, String>
where
    F: FnMut(&str) -> Result<String, String>,
{
    let fields = csv_fields(spec).map_err(|e| format!("failed to parse csv mounts: {e}"))?;
    let mut m = RunMount {
        kind: MountKind::Bind,
        target: None,
        source: None,
        from: None,
        readonly: false,
        id: None,
        sharing: Sharing::Shared,
        mode: None,
        uid: None,
        gid: None,
        size: None,
        required: false,
        env: None,
    };
    let mut ro_auto = true;
    let mut sharing = None;
    for field in &fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), v),
            None => {
                match field.to_ascii_lowercase().as_str() {
                    "readonly" | "ro" => m.readonly = true,
                    "readwrite" | "rw" => m.readonly = false,
                    "required" if secret_or_ssh(m.kind) => m.required = true,
                    "required" => {
                        return Err(format!("unexpected key 'required' for mount type '{}'", kind_name(m.kind)));
                    }
                    _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
                }
                if !field.eq_ignore_ascii_case("required") {
                    ro_auto = false;
                }
                continue;
            }
        };
        if key == "from" && value.find('$').is_some_and(|i| i != value.len() - 1) {
            return Err("'from' doesn't support variable expansion, define alias stage instead".into());
        }
        let value = if key == "from" { value.to_string() } else { expand(value)? };
        let bad = || format!("invalid value for {key}: {value}");
        match key.as_str() {
            "type" => m.kind = mount_kind(&value).ok_or_else(|| format!("unsupported mount type {value:?}"))?,
            "from" => m.from = Some(value),
            "source" | "src" => m.source = Some(value),
            "target" | "dst" | "destination" => m.target = Some(value),
            "readonly" | "ro" => {
                m.readonly = go_bool(&value).ok_or_else(bad)?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.readonly = !go_bool(&value).ok_or_else(bad)?;
                ro_auto = false;
            }
            "required" if secret_or_ssh(m.kind) => m.required = go_bool(&value).ok_or_else(bad)?,
            "size" if m.kind == MountKind::Tmpfs => m.size = Some(ram_in_bytes(&value).ok_or_else(bad)?),
            "required" | "size" => {
                return Err(format!("unexpected key '{key}' for mount type '{}'", kind_name(m.kind)));
            }
            "id" => m.id = Some(value),
            "sharing" => {
                sharing = Some(match value.to_ascii_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => return Err(format!("unsupported sharing value {value:?}")),
                })
            }
            "mode" => {
                m.mode = Some(u32::from_str_radix(&value, 8).map_err(|_| format!("invalid value {value} for mode"))?)
            }
            "uid" => m.uid = Some(value.parse().map_err(|_| format!("invalid value {value} for uid"))?),
            "gid" => m.gid = Some(value.parse().map_err(|_| format!("invalid value {value} for gid"))?),
            "env" => m.env = Some(value),
            _ => return Err(format!("unexpected key '{key}' in '{field}'")),
        }
    }
    check(&mut m, ro_auto, sharing)?;
    Ok(m)
}

/// The parse-time read: values as written (typed values with a `$` are
/// refused: berth does not expand them later).
pub(crate) fn parse_at_parse_time(spec: &str) -> Result<RunMount, String> {
    parse_mount(spec, |v| Ok(v.to_string())).map_err(|e| {
        if spec.contains('$') && !e.starts_with("'from'") {
            format!("{e} (berth expands only target, source, id and env of a mount)")
        } else {
            e
        }
    })
}

fn check(m: &mut RunMount, ro_auto: bool, sharing: Option<Sharing>) -> Result<(), String> {
    let file_info_allowed = matches!(m.kind, MountKind::Secret | MountKind::Ssh | MountKind::Cache);
    if !file_info_allowed {
        let kind = kind_name(m.kind);
        for (name, set) in [("mode", m.mode.is_some()), ("uid", m.uid.is_some()), ("gid", m.gid.is_some())] {
            if set {
                return Err(format!("{name} not allowed for {kind:?} type mounts"));
            }
        }
    }
    if ro_auto {
        m.readonly = !matches!(m.kind, MountKind::Cache | MountKind::Tmpfs);
    }
    if m.kind == MountKind::Secret {
        if m.from.is_some() {
            return Err("secret mount should not have a from".into());
        }
        if sharing.is_some() {
            return Err("secret mount should not define sharing".into());
        }
        if m.source.is_none() && m.target.is_none() && m.id.is_none() {
            return Err("invalid secret mount. one of source, target required".into());
        }
        if m.source.is_some() && m.id.is_some() {
            return Err("both source and id can't be set".into());
        }
    }
    if sharing.is_some() && m.kind != MountKind::Cache {
        return Err(format!("invalid cache sharing set for {} mount", kind_name(m.kind)));
    }
    m.sharing = sharing.unwrap_or(Sharing::Shared);
    Ok(())
}

fn secret_or_ssh(k: MountKind) -> bool {
    matches!(k, MountKind::Secret | MountKind::Ssh)
}

fn mount_kind(v: &str) -> Option<MountKind> {
    Some(match v.to_ascii_lowercase().as_str() {
        "bind" => MountKind::Bind,
        "cache" => MountKind::Cache,
        "tmpfs" => MountKind::Tmpfs,
        "secret" => MountKind::Secret,
        "ssh" => MountKind::Ssh,
        _ => return None,
    })
}

fn kind_name(k: MountKind) -> &'static str {
    match k {
        MountKind::Bind => "bind",
        MountKind::Cache => "cache",
        MountKind::Tmpfs => "tmpfs",
        MountKind::Secret => "secret",
        MountKind::Ssh => "ssh",
    }
}

/// Go's `strconv.ParseBool`.
fn go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// docker/go-units' `RAMInBytes`: `64m`, `1.5g`, `512KiB`, `100` (binary
/// multiples).
fn ram_in_bytes(v: &str) -> Option<u64> {
    let num_len = v.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(v.len());
    let (num, rest) = v.split_at(num_len);
    if !num.starts_with(|c: char| c.is_ascii_digit()) || num.ends_with('.') || num.contains("..") {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let mut chars = rest.chars().peekable();
    let mult: f64 = match chars.peek().map(char::to_ascii_lowercase) {
        Some(u @ ('k' | 'm' | 'g' | 't' | 'p')) => {
            chars.next();
            let exp = "kmgtp".find(u).unwrap_or(0) as i32 + 1;
            1024f64.powi(exp)
        }
        _ => 1.0,
    };
    let tail: String = chars.collect::<String>().to_ascii_lowercase();
    if !matches!(tail.as_str(), "" | "i" | "b" | "ib") {
        return None;
    }
    let bytes = n * mult;
    (bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// One CSV record (Go's encoding/csv rules: `"` quotes a whole field, `""`
/// inside it is a quote).
fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut f = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("extraneous or missing \" in quoted-field".into()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        f.push('"');
                    }
                    Some('"') => break,
                    Some(c) => f.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(f);
                    return Ok(fields);
                }
                Some(',') => fields.push(f),
                Some(_) => return Err("extraneous or missing \" in quoted-field".into()),
            }
            continue;
        }
        loop {
            match chars.next() {
                None => {
                    fields.push(f);
                    return Ok(fields);
                }
                Some(',') => break,
                Some('"') => return Err("bare \" in non-quoted-field".into()),
                Some(c) => f.push(c),
            }
        }
        fields.push(f);
    }
}
