//! `top`, `stats`, `cp`, `port` and `rename`.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use berth::format;
use berth_engine::engine::Engine;
use berth_engine::network::PortMapping;
use berth_engine::observe::{Process, Sample};
use berth_engine::store::{ContainerRecord, Status};
use berth_engine::units::{bytes_size, human_size};
use clap::Args;

#[derive(Args)]
pub struct TopArgs {
    container: String,
    /// ps options (docker passes them to ps; berth shows ps -ef's columns)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    ps_options: Vec<String>,
}

#[derive(Args)]
pub struct StatsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    all: bool,
    /// Print one reading and exit
    #[arg(long)]
    no_stream: bool,
    /// Do not truncate output
    #[arg(long)]
    no_trunc: bool,
    /// `table` (default) or `json` (one object per line)
    #[arg(long)]
    format: Option<String>,
    containers: Vec<String>,
}

#[derive(Args)]
pub struct CpArgs {
    /// Archive mode: keep the owners (uid:gid) of what is copied
    #[arg(short, long)]
    archive: bool,
    /// Follow a symlink given as SRC_PATH (not supported: the link is copied)
    #[arg(short = 'L', long)]
    follow_link: bool,
    /// Say nothing on success
    #[arg(short, long)]
    quiet: bool,
    /// CONTAINER:SRC_PATH or a local path
    src: String,
    /// CONTAINER:DEST_PATH or a local path
    dest: String,
}

#[derive(Args)]
pub struct PortArgs {
    container: String,
    /// PRIVATE_PORT[/PROTO]
    port: Option<String>,
}

#[derive(Args)]
pub struct RenameArgs {
    container: String,
    new_name: String,
}

#[derive(Args)]
pub struct DiffArgs {
    container: String,
}

/// `berth diff`: docker's letters (A added, C changed, D deleted), one
/// path per line, sorted.
pub fn diff(engine: &Engine, a: DiffArgs) -> Result<()> {
    let mut out = String::new();
    for c in engine.changes(&a.container)? {
        out.push_str(&format!("{} {}\n", c.kind.letter(), c.path));
    }
    print!("{out}");
    Ok(())
}

/// `berth top`: ps -ef's columns for the container's processes.
pub fn top(engine: &Engine, a: TopArgs) -> Result<()> {
    if !a.ps_options.is_empty() && a.ps_options != ["-ef"] {
        bail!("ps options are not supported: berth top shows ps -ef's columns");
    }
    let procs = engine.top(&a.container)?;
    let mut rows = vec![["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"].map(String::from).to_vec()];
    let now = chrono::Local::now();
    rows.extend(procs.iter().map(|p| top_row(p, &now)));
    print!("{}", format::table(&rows));
    Ok(())
}

fn top_row(p: &Process, now: &chrono::DateTime<chrono::Local>) -> Vec<String> {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(p.uid))
        .ok()
        .flatten()
        .map_or_else(|| p.uid.to_string(), |u| u.name);
    vec![
        user,
        p.pid.to_string(),
        p.ppid.to_string(),
        p.cpu_percent.to_string(),
        stime(p.start_time, now),
        p.tty.clone(),
        cpu_time(p.cpu_seconds),
        p.cmd.clone(),
    ]
}

/// ps's STIME: the hour today, else the day.
fn stime(secs: u64, now: &chrono::DateTime<chrono::Local>) -> String {
    use chrono::TimeZone;
    match chrono::Local.timestamp_opt(secs as i64, 0).single() {
        Some(t) if t.date_naive() == now.date_naive() => t.format("%H:%M").to_string(),
        Some(t) => t.format("%b%d").to_string(),
        None => "?".into(),
    }
}

/// ps's TIME: [DD-]HH:MM:SS.
fn cpu_time(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 { format!("{d}-{h:02}:{m:02}:{s:02}") } else { format!("{h:02}:{m:02}:{s:02}") }
}

/// `berth stats`: two readings a second apart make the CPU %; without
/// --no-stream the screen is redrawn every second until interrupted.
pub fn stats(engine: &Engine, a: StatsArgs) -> Result<()> {
    let json = match a.format.as_deref() {
        None | Some("table") => false,
        Some("json") | Some("{{json .}}") => true,
        Some(other) => bail!("unsupported --format {other:?}: use table or json"),
    };
    let interval = Duration::from_secs(1);
    let mut before = sample_all(engine, &a)?;
    loop {
        std::thread::sleep(if a.no_stream { Duration::from_millis(500) } else { interval });
        let now = sample_all(engine, &a)?;
        let mut out = String::new();
        if !a.no_stream && !json {
            // docker's redraw: clear the screen, cursor home.
            out.push_str("\x1b[2J\x1b[H");
        }
        let rows: Vec<Vec<String>> =
            now.iter().map(|s| stats_row(s, before.iter().find(|b| b.id == s.id).unwrap_or(s), a.no_trunc)).collect();
        if json {
            for r in &rows {
                out.push_str(&stats_json(r).to_string());
                out.push('\n');
            }
        } else {
            let mut t = vec![
                ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"]
                    .map(String::from)
                    .to_vec(),
            ];
            t.extend(rows);
            out.push_str(&format::table(&t));
        }
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out.as_bytes())?;
        stdout.flush()?;
        if a.no_stream {
            return Ok(());
        }
        before = now;
    }
}

/// A reading of each container asked for (or each running one; all with
/// -a), in the order shown.
fn sample_all(engine: &Engine, a: &StatsArgs) -> Result<Vec<Sample>> {
    let recs: Vec<ContainerRecord> = if a.containers.is_empty() {
        // The default namespace's, as `ps` lists them (berthd's are named by ID).
        engine
            .current_containers()?
            .into_iter()
            .filter(|r| r.namespace.is_empty() && (a.all || r.status == Status::Running))
            .collect()
    } else {
        let store = engine.containers()?;
        a.containers.iter().map(|c| store.get(c)).collect::<Result<_, _>>()?
    };
    let mut out = Vec::new();
    for rec in recs {
        match engine.sample(&rec) {
            Ok(s) => out.push(s),
            // Ended between the listing and the reading: shown as stopped.
            Err(_) if engine.refresh(&rec).status != Status::Running => {
                out.push(engine.sample(&engine.refresh(&rec))?);
            }
            Err(e) => return Err(e).with_context(|| format!("stats of {}", rec.name)),
        }
    }
    Ok(out)
}

fn stats_row(now: &Sample, before: &Sample, no_trunc: bool) -> Vec<String> {
    let id = if no_trunc { now.id.clone() } else { now.id[..12.min(now.id.len())].to_owned() };
    vec![
        id,
        now.name.clone(),
        format!("{:.2}%", now.cpu_percent(before)),
        format!("{} / {}", bytes_size(now.mem_usage), bytes_size(now.mem_limit)),
        format!("{:.2}%", now.mem_percent()),
        format!("{} / {}", human_size(now.net_rx), human_size(now.net_tx)),
        format!("{} / {}", human_size(now.blk_read), human_size(now.blk_write)),
        now.pids.to_string(),
    ]
}

/// docker's `stats --format json` object for a table row.
fn stats_json(r: &[String]) -> serde_json::Value {
    serde_json::json!({
        "BlockIO": r[6], "CPUPerc": r[2], "Container": r[0], "ID": r[0], "MemPerc": r[4],
        "MemUsage": r[3], "Name": r[1], "NetIO": r[5], "PIDs": r[7],
    })
}

/// One side of `cp`: `CONTAINER:PATH`, or a local path (absolute, or
/// starting with `.`, or without a colon), as docker splits them.
fn split_cp_arg(arg: &str) -> (Option<&str>, &str) {
    if arg.starts_with('/') || arg.starts_with('.') {
        return (None, arg);
    }
    match arg.split_once(':') {
        Some((c, p)) if !c.is_empty() => (Some(c), p),
        _ => (None, arg),
    }
}

/// `berth cp`: exactly one side is in a container.
pub fn cp(engine: &Engine, a: CpArgs) -> Result<()> {
    if a.follow_link {
        bail!("cp -L is not supported: the symlink itself is copied");
    }
    if a.src == "-" || a.dest == "-" {
        bail!("cp with a tar stream (-) is not supported: copy to or from a path");
    }
    let _ = a.quiet;
    match (split_cp_arg(&a.src), split_cp_arg(&a.dest)) {
        ((Some(_), _), (Some(_), _)) => bail!("copying between containers is not supported"),
        ((None, _), (None, _)) => bail!("must specify at least one container source"),
        ((Some(c), src), (None, dst)) => engine
            .copy_from_container(c, src, Path::new(dst), a.archive)
            .with_context(|| format!("copy {c}:{src} to {dst}"))?,
        ((None, src), (Some(c), dst)) => engine
            .copy_into_container(c, Path::new(src), dst, a.archive)
            .with_context(|| format!("copy {src} to {c}:{dst}"))?,
    }
    Ok(())
}

/// `berth port`: the container's published ports, as docker prints them.
pub fn port(engine: &Engine, a: PortArgs) -> Result<()> {
    let rec = engine.containers()?.get(&a.container)?;
    let mut ports: Vec<PortMapping> = rec.config.ports.clone();
    ports.sort_by(|x, y| {
        (x.container_port, &x.protocol, x.host_port).cmp(&(y.container_port, &y.protocol, y.host_port))
    });
    let host = |p: &PortMapping| {
        let ip = if p.host_ip.is_empty() { "0.0.0.0" } else { p.host_ip.as_str() };
        format!("{ip}:{}", p.host_port)
    };
    match a.port {
        None => {
            for p in &ports {
                println!("{}/{} -> {}", p.container_port, p.protocol, host(p));
            }
        }
        Some(want) => {
            let (num, proto) = want.split_once('/').unwrap_or((&want, "tcp"));
            let num: u16 = num.parse().with_context(|| format!("invalid port {want:?}"))?;
            let found: Vec<&PortMapping> =
                ports.iter().filter(|p| p.container_port == num && p.protocol == proto).collect();
            if found.is_empty() {
                bail!("No public port '{num}/{proto}' published for {}", a.container);
            }
            for p in found {
                println!("{}", host(p));
            }
        }
    }
    Ok(())
}

/// `berth rename`: names stay unique (the store checks in the same
/// transaction as the change).
pub fn rename(engine: &Engine, a: RenameArgs) -> Result<()> {
    let store = engine.containers()?;
    let rec = store.get(&a.container)?;
    let new = a.new_name.strip_prefix('/').unwrap_or(&a.new_name);
    if rec.name == new {
        bail!("Renaming a container with the same name as its current name");
    }
    engine.rename(&rec.id, new)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cp_arguments_split_as_docker_splits_them() {
        assert_eq!(split_cp_arg("web:/etc/hosts"), (Some("web"), "/etc/hosts"));
        assert_eq!(split_cp_arg("/tmp/a:b"), (None, "/tmp/a:b"));
        assert_eq!(split_cp_arg("./x:y"), (None, "./x:y"));
        assert_eq!(split_cp_arg("file"), (None, "file"));
    }

    #[test]
    fn ps_times() {
        assert_eq!(cpu_time(0), "00:00:00");
        assert_eq!(cpu_time(3661), "01:01:01");
        assert_eq!(cpu_time(90_000), "1-01:00:00");
    }
}
