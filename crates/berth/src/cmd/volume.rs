//! `volume create/ls/rm/inspect/prune`.

use anyhow::Result;
use berth_engine::engine::Engine;

#[derive(clap::Subcommand)]
pub enum VolumeCmd {
    /// Create a volume
    Create {
        #[arg(short, long)]
        label: Vec<String>,
        name: String,
    },
    /// List volumes
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove volumes
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Display detailed information on volumes
    Inspect {
        #[arg(required = true)]
        volumes: Vec<String>,
    },
}

pub fn volume(engine: &Engine, c: VolumeCmd) -> Result<()> {
    let vols = engine.volumes();
    match c {
        VolumeCmd::Create { label, name } => {
            let labels = label
                .iter()
                .map(|l| l.split_once('=').map_or((l.clone(), String::new()), |(k, v)| (k.to_owned(), v.to_owned())))
                .collect();
            println!("{}", engine.create_volume(&name, labels, false)?.name);
        }
        VolumeCmd::Ls { quiet } => {
            if !quiet {
                println!("DRIVER    VOLUME NAME");
            }
            for v in vols.list()? {
                if quiet { println!("{}", v.name) } else { println!("{:<9} {}", v.driver, v.name) }
            }
        }
        VolumeCmd::Rm { volumes } => {
            for v in volumes {
                engine.remove_volume(&v, &engine.volume_users(&v)?)?;
                println!("{v}");
            }
        }
        VolumeCmd::Inspect { volumes } => {
            let all = volumes.iter().map(|v| vols.get(v)).collect::<Result<Vec<_>, _>>()?;
            println!("{}", serde_json::to_string_pretty(&all)?);
        }
    }
    Ok(())
}
