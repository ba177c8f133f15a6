//! `ps`: docker's columns, `--filter`, `--format`, `--no-trunc`.

use anyhow::{Context, Result, bail};
use berth_engine::engine::Engine;
use berth_engine::store::{ContainerRecord, Status};
use clap::Args;

#[derive(Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    all: bool,
    /// Only display container IDs
    #[arg(short, long)]
    quiet: bool,
    /// Filter: id, name, label, status, exited, ancestor (key=value)
    #[arg(short, long)]
    filter: Vec<String>,
    /// table, json, or a Go template ({{.ID}} {{.Names}} ...)
    #[arg(long)]
    format: Option<String>,
    /// Do not truncate IDs and commands
    #[arg(long)]
    no_trunc: bool,
    /// Show the n last created containers
    #[arg(short = 'n', long)]
    last: Option<usize>,
    /// Show the latest created container
    #[arg(short, long)]
    latest: bool,
    /// List this engine namespace's containers instead of the default
    /// one's (berthd keeps Kubernetes' pods and containers in "k8s")
    #[arg(long, default_value = "")]
    namespace: String,
}

/// `berth ps`: docker's columns, `--filter`, `--format`, `--no-trunc`.
pub fn ps(engine: &Engine, a: PsArgs) -> Result<()> {
    let filters = a.filter.iter().map(|f| PsFilter::parse(f)).collect::<Result<Vec<_>>>()?;
    let mut recs: Vec<ContainerRecord> = engine.containers()?.list()?.iter().map(|r| engine.refresh(r)).collect();
    // Newest first, as docker lists them.
    recs.sort_by(|x, y| y.created.cmp(&x.created));
    let show_all =
        a.all || a.last.is_some() || a.latest || filters.iter().any(|f| f.key == "status" || f.key == "exited");
    let recs: Vec<ContainerRecord> = recs
        .into_iter()
        .filter(|r| r.namespace == a.namespace)
        .filter(|r| show_all || matches!(r.status, Status::Running | Status::Paused | Status::Restarting))
        .filter(|r| filters_match(&filters, r))
        .take(if a.latest { 1 } else { a.last.unwrap_or(usize::MAX) })
        .collect();
    if a.quiet {
        for r in &recs {
            println!("{}", if a.no_trunc { &r.id[..] } else { &r.id[..12] });
        }
        return Ok(());
    }
    let rows: Vec<serde_json::Map<String, serde_json::Value>> = recs.iter().map(|r| ps_row(r, a.no_trunc)).collect();
    let template = match a.format.as_deref() {
        None | Some("table") => {
            "table {{.ID}}\\t{{.Image}}\\t{{.Command}}\\t{{.RunningFor}}\\t{{.Status}}\\t{{.Ports}}\\t{{.Names}}"
        }
        Some("json") => "{{json .}}",
        Some(t) => t,
    };
    let heads = [("ID", "CONTAINER ID"), ("RunningFor", "CREATED")];
    print!("{}", berth::format::Template::parse(template).headers(&heads).render(&rows)?);
    Ok(())
}

/// One container as docker's `ps --format` fields.
fn ps_row(r: &ContainerRecord, no_trunc: bool) -> serde_json::Map<String, serde_json::Value> {
    let cmd = r.config.args.join(" ");
    let cmd = if no_trunc || cmd.chars().count() <= 20 {
        format!("\"{cmd}\"")
    } else {
        format!("\"{}…\"", cmd.chars().take(19).collect::<String>())
    };
    let status = r.status_text();
    let state = serde_json::to_value(r.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let ports: Vec<String> = r
        .config
        .ports
        .iter()
        .map(|p| {
            let ip = if p.host_ip.is_empty() { "0.0.0.0" } else { p.host_ip.as_str() };
            format!("{ip}:{}->{}/{}", p.host_port, p.container_port, p.protocol)
        })
        .collect();
    let labels: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let v = serde_json::json!({
        "ID": if no_trunc { &r.id[..] } else { &r.id[..12] },
        "Image": r.image,
        "Command": cmd,
        "CreatedAt": r.created,
        "RunningFor": berth::format::since(Some(&r.created)),
        "Ports": ports.join(", "),
        "State": state,
        "Status": status,
        "Names": r.name,
        "Labels": labels.join(","),
        "Mounts": r.config.volumes.join(","),
        "Networks": r.config.network,
    });
    v.as_object().cloned().unwrap_or_default()
}

/// One `--filter key=value`.
struct PsFilter {
    key: String,
    value: String,
}

impl PsFilter {
    fn parse(s: &str) -> Result<PsFilter> {
        let (k, v) = s.split_once('=').with_context(|| format!("--filter {s:?}: want key=value"))?;
        if !["id", "name", "label", "status", "exited", "ancestor"].contains(&k) {
            bail!("--filter {k:?}: berth filters on id, name, label, status, exited and ancestor");
        }
        Ok(PsFilter { key: k.to_owned(), value: v.to_owned() })
    }

    fn matches(&self, r: &ContainerRecord) -> bool {
        let v = self.value.as_str();
        match self.key.as_str() {
            "id" => r.id.starts_with(v),
            "name" => r.name.contains(v.trim_start_matches('/')),
            "label" => match v.split_once('=') {
                Some((k, want)) => r.labels.get(k).is_some_and(|have| have == want),
                None => r.labels.contains_key(v),
            },
            "status" => serde_json::to_value(r.status).is_ok_and(|s| s == v),
            "exited" => r.status == Status::Exited && r.exit_code.is_some_and(|c| c.to_string() == v),
            "ancestor" => {
                r.image == v || r.image_id.trim_start_matches("sha256:").starts_with(v.trim_start_matches("sha256:"))
            }
            _ => false,
        }
    }
}

/// docker's rule: filters with the same key are alternatives; different
/// keys must all hold.
fn filters_match(filters: &[PsFilter], r: &ContainerRecord) -> bool {
    let mut keys: Vec<&str> = filters.iter().map(|f| f.key.as_str()).collect();
    keys.dedup();
    keys.iter().all(|k| filters.iter().filter(|f| f.key == *k).any(|f| f.matches(r)))
}
