use std::io::Write;

use anyhow::{Result, bail};
use berth_runtime::container::{OciState, Status};

use super::Globals;

/// runc's `list` flags. (liboci-cli's lack runc's `-f`, the short form of
/// `--format`.)
#[derive(clap::Args, Debug)]
pub struct List {
    /// select one of: table or json (default: "table")
    #[arg(short = 'f', long, default_value = "table")]
    pub format: String,
    /// display only container IDs
    #[arg(short, long)]
    pub quiet: bool,
}

/// runc's `list`: a table (Go's tabwriter, min width 12, padding 3), JSON
/// (`null` when empty, as Go prints a nil slice), or ids only.
pub fn run(g: &Globals, a: List) -> Result<i32> {
    let mut states = Vec::new();
    for id in g.root.ids()? {
        // A container deleted meanwhile is simply not listed.
        let Ok(c) = g.root.load(&id) else { continue };
        let mut s = c.oci_state(c.status());
        s.owner = c.owner_uid().map(user_name).unwrap_or_default();
        states.push(s);
    }
    let mut out = std::io::stdout().lock();
    if a.quiet {
        for s in &states {
            writeln!(out, "{}", s.id)?;
        }
        return Ok(0);
    }
    match a.format.as_str() {
        "table" => out.write_all(table(&states).as_bytes())?,
        "json" => {
            if states.is_empty() {
                writeln!(out, "null")?;
            } else {
                writeln!(out, "{}", serde_json::to_string(&states)?)?;
            }
        }
        other => bail!("invalid format option {other:?}: use table or json"),
    }
    Ok(0)
}

pub fn table(states: &[OciState]) -> String {
    let mut rows = vec![["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from).to_vec()];
    for s in states {
        let pid = if s.status == Status::Stopped { 0 } else { s.pid };
        rows.push(vec![
            s.id.clone(),
            pid.to_string(),
            s.status.to_string(),
            s.bundle.display().to_string(),
            s.created.clone(),
            s.owner.clone(),
        ]);
    }
    tabwrite(&rows, 12, 3)
}

/// Go's text/tabwriter for tab-terminated cells: every column but the last
/// is padded to max(minwidth, widest cell + padding).
pub fn tabwrite(rows: &[Vec<String>], minwidth: usize, padding: usize) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count() + padding).max().unwrap_or(0).max(minwidth)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                out.push_str(&" ".repeat(widths[i] - cell.chars().count()));
            }
        }
        out.push('\n');
    }
    out
}

/// The user name of a uid, from /etc/passwd, or "#uid" as runc prints it.
fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| format!("#{uid}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn list_takes_runcs_flags() {
        let cli = crate::cli::Cli::try_parse_from(["berth-runtime", "list", "-f", "json", "-q"]).unwrap();
        let Some(crate::cli::Command::List(l)) = cli.command else { panic!("not list") };
        assert_eq!(l.format, "json");
        assert!(l.quiet);
        let cli = crate::cli::Cli::try_parse_from(["berth-runtime", "list", "--format=json"]).unwrap();
        let Some(crate::cli::Command::List(l)) = cli.command else { panic!("not list") };
        assert_eq!(l.format, "json");
    }

    #[test]
    fn table_matches_runc_byte_for_byte() {
        let s = OciState {
            oci_version: "1.2.0".into(),
            id: "t1".into(),
            pid: 2704,
            status: Status::Created,
            bundle: "/tmp/rs".into(),
            rootfs: "/tmp/rs/rootfs".into(),
            created: "2026-11-23T19:40:55.751764629Z".into(),
            owner: "root".into(),
            annotations: None,
        };
        // Captured from `runc list` on this machine.
        let want = "ID          PID         STATUS      BUNDLE      CREATED                          OWNER\n\
                    t1          2704        created     /tmp/rs     2026-11-23T19:40:55.751764629Z   root\n";
        assert_eq!(table(&[s]), want);
    }
}
