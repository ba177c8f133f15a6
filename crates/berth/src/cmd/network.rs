//! `network create/ls/rm/inspect/connect/disconnect`.

use anyhow::{Result, bail};
use berth_engine::engine::Engine;

#[derive(clap::Subcommand)]
pub enum NetworkCmd {
    /// Create a network (a bridge with its own subnet)
    Create {
        #[arg(long)]
        subnet: Option<String>,
        /// Set metadata on a network (KEY=VALUE)
        #[arg(long)]
        label: Vec<String>,
        name: String,
    },
    /// Connect a container to a network
    Connect {
        /// Add a network-scoped alias for the container
        #[arg(long)]
        alias: Vec<String>,
        network: String,
        container: String,
    },
    /// Disconnect a container from a network
    Disconnect {
        /// Force the container to disconnect from a network
        #[arg(short, long)]
        force: bool,
        network: String,
        container: String,
    },
    /// List networks
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove networks
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Display detailed information on networks
    Inspect {
        #[arg(required = true)]
        networks: Vec<String>,
    },
}

pub fn network(engine: &Engine, c: NetworkCmd) -> Result<()> {
    let nets = engine.networks();
    match c {
        NetworkCmd::Create { subnet, label, name } => {
            let labels = label
                .iter()
                .map(|l| l.split_once('=').map_or((l.clone(), String::new()), |(k, v)| (k.into(), v.into())))
                .collect();
            engine.create_network(&name, subnet.as_deref(), labels)?;
            println!("{name}");
        }
        NetworkCmd::Connect { alias, network, container } => {
            engine.connect(&network, &container, &alias)?;
        }
        NetworkCmd::Disconnect { force, network, container } => {
            engine.disconnect(&network, &container, force)?;
        }
        NetworkCmd::Ls { quiet } => {
            let mut all = nets.list()?;
            if !all.iter().any(|n| n.name == berth_engine::network::DEFAULT_NETWORK) {
                all.insert(0, nets.ensure_default()?);
            }
            if !quiet {
                println!("{:<20} {:<10} {:<18} DRIVER", "NAME", "DEVICE", "SUBNET");
            }
            for n in all {
                if quiet {
                    println!("{}", n.name);
                } else {
                    println!("{:<20} {:<10} {:<18} bridge", n.name, n.bridge, n.subnet);
                }
            }
        }
        NetworkCmd::Rm { networks } => {
            for n in networks {
                let users = nets.endpoints(&n)?;
                if !users.is_empty() {
                    bail!("network {n} has active endpoints ({} containers): remove them first", users.len());
                }
                engine.remove_network(&n)?;
                println!("{n}");
            }
        }
        NetworkCmd::Inspect { networks } => {
            let mut out = Vec::new();
            for n in networks {
                let net = nets.get(&n)?;
                let containers = nets.endpoints(&n)?;
                out.push(serde_json::json!({
                    "Name": net.name, "Driver": "bridge",
                    "IPAM": { "Config": [{ "Subnet": net.subnet, "Gateway": net.gateway.to_string() }] },
                    "Options": { "com.docker.network.bridge.name": net.bridge },
                    "Containers": containers,
                }));
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(())
}
