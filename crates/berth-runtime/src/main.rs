//! berth-runtime: runc's command line over the berth-runtime library.
//! Errors go to the log (and to stderr) and exit 1, as runc's do; `run`
//! and `exec` in the foreground exit with the container process's code.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    let logging = match cli::logging::init(&args.global) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("berth-runtime: {e:#}");
            std::process::exit(1);
        }
    };
    let code = match cli::dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{e:#}");
            tracing::error!("{msg}");
            if !logging.to_stderr {
                eprintln!("{msg}");
            }
            1
        }
    };
    std::process::exit(code);
}
