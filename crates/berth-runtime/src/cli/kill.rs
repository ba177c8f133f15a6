use anyhow::{Result, bail};
use berth_runtime::lifecycle;
use clap::Args;
use nix::sys::signal::Signal;

use super::Globals;

/// runc's `kill ID [SIGNAL]`. liboci-cli's Kill makes the signal
/// mandatory; runc defaults it to SIGTERM and scripts rely on that, so this
/// one is ours.
#[derive(Args, Debug)]
pub struct Kill {
    /// Container identifier
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new(), required = true)]
    pub container_id: String,
    /// Signal name (TERM, SIGTERM) or number
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
    /// Send the signal to every process in the container
    #[arg(short, long)]
    pub all: bool,
}

pub fn run(g: &Globals, a: Kill) -> Result<i32> {
    let sig = parse_signal(&a.signal)?;
    let c = g.load(&a.container_id)?;
    lifecycle::kill(&c, sig, a.all)?;
    Ok(0)
}

/// "9", "KILL", "SIGKILL" and "sigkill" all name SIGKILL.
pub fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return match Signal::try_from(n) {
            Ok(sig) => Ok(sig),
            Err(_) => bail!("unknown signal {s:?}"),
        };
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    match name.parse::<Signal>() {
        Ok(sig) => Ok(sig),
        Err(_) => bail!("unknown signal {s:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_like_runc() {
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), Signal::SIGUSR1);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("99").is_err());
    }
}
