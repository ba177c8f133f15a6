use std::io::Write;
use std::process::Command;

use anyhow::{Context, Result, bail};
use berth_runtime::lifecycle;

use super::Globals;

/// runc's `ps`: the container's pids as JSON, or the host's `ps` output
/// (with the given options, default -ef) cut down to the container's
/// processes.
pub fn run(g: &Globals, a: liboci_cli::Ps) -> Result<i32> {
    let c = g.load(&a.container_id)?;
    let pids = lifecycle::pids(&c)?;
    let mut out = std::io::stdout().lock();
    match a.format.as_str() {
        "json" => {
            writeln!(out, "{}", serde_json::to_string(&pids)?)?;
            return Ok(0);
        }
        "table" => {}
        other => bail!("invalid format option {other:?}: use table or json"),
    }
    let opts = if a.ps_options.is_empty() { vec!["-ef".to_string()] } else { a.ps_options.clone() };
    let output = Command::new("ps").args(&opts).output().context("run ps")?;
    if !output.status.success() {
        bail!("ps {}: {}", opts.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    out.write_all(filter_ps(&text, &pids)?.as_bytes())?;
    Ok(0)
}

/// Keeps the header and the lines whose PID column is one of `pids`.
pub fn filter_ps(text: &str, pids: &[i32]) -> Result<String> {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let Some(col) = header.split_whitespace().position(|h| h == "PID") else {
        bail!("couldn't find PID field in ps output");
    };
    let mut out = format!("{header}\n");
    for line in lines {
        let pid = line.split_whitespace().nth(col).and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_container_processes_are_kept() {
        let ps = "UID        PID  PPID  C STIME TTY          TIME CMD\n\
                  root         1     0  0 19:40 ?        00:00:00 init\n\
                  root      2704     1  0 19:40 ?        00:00:00 sleep 100\n";
        let out = filter_ps(ps, &[2704]).unwrap();
        assert_eq!(out.lines().count(), 2);
        assert!(out.contains("sleep 100"));
        assert!(filter_ps("no header here\n", &[1]).is_err());
    }
}
