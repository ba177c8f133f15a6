//! berth-runtime: runc's command line over the berth-runtime library.
//! Errors go to the log (and to stderr) and exit 1, as runc's do; `run`
//! and `exec` in the foreground exit with the container process's code.

mod cli;

use clap::Parser;

fn main() {
    // Before the runtime opens anything of its own (--preserve-fds).
    berth_runtime::launch::note_inherited_fds();
    // Seal before anything else, so the re-executed runtime is the only one
    // that pays for parsing (a failure here is reported, with logging set
    // up, by the same call in dispatch).
    if cli::enters_container(std::env::args_os().skip(1)) {
        let _ = berth_runtime::seal::seal();
    }
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
            let msg = render(&e);
            match exec_errno(&e) {
                Some(errno) => tracing::error!(errno = i64::from(errno), "{msg}"),
                None => tracing::error!("{msg}"),
            }
            if !logging.to_stderr {
                eprintln!("{msg}");
            }
            1
        }
    };
    std::process::exit(code);
}

/// The errno of a failed exec of the container's program, for the log
/// line's `errno` field.
fn exec_errno(e: &anyhow::Error) -> Option<i32> {
    e.chain().find_map(|c| match c.downcast_ref::<berth_runtime::Error>() {
        Some(berth_runtime::Error::Exec { errno, .. }) => Some(*errno),
        _ => None,
    })
}

/// The error and its causes, "outer: inner", without repeating a cause
/// whose text an outer message already carries.
fn render(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}
