//! A container's life after `create`: start (-a, -i), restart, pause,
//! unpause, attach, and `exec -t` on a pty of its own.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use berth_engine::engine::Engine;
use berth_engine::engine::{ExitWatch, Watched};
use berth_engine::ops::ExecOptions;
use berth_engine::store::{ContainerRecord, Status};
use clap::Args;

use super::logs::LogFollower;
use super::run::{RunArgs, create_container, start_failed};

#[derive(Args)]
pub struct StartArgs {
    /// Attach stdout/stderr and exit with the container's code
    #[arg(short, long)]
    attach: bool,
    /// Attach stdin
    #[arg(short, long)]
    interactive: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct AttachArgs {
    /// Do not attach stdin
    #[arg(long)]
    no_stdin: bool,
    container: String,
}

/// `berth create`: prints the new container's ID.
pub fn create(engine: &Engine, config: &crate::config::Config, r: RunArgs) -> Result<()> {
    let rec = create_container(engine, config, r)?;
    println!("{}", rec.id);
    Ok(())
}

/// `berth start`: each container under a new shim; with `-a` (one
/// container) its output is followed and its exit code returned.
pub fn start(engine: &Engine, a: StartArgs) -> Result<i32> {
    if (a.attach || a.interactive) && a.containers.len() > 1 {
        bail!("you cannot start and attach multiple containers at once");
    }
    for c in &a.containers {
        let rec = engine.refresh(&engine.containers()?.get(c)?);
        if matches!(rec.status, Status::Running | Status::Paused) {
            if a.attach || a.interactive {
                return attach_to(engine, &rec.id, a.interactive);
            }
            println!("{c}");
            continue;
        }
        let log = engine.log_path(&rec);
        // Only this start's output: what an earlier run logged stays out.
        let follower = LogFollower::at_end(log);
        let (rec, mut watch) = match engine.start_watched(&rec.id) {
            Ok(started) => started,
            Err(e) => return start_failed(e),
        };
        if a.attach || a.interactive {
            let tty = rec.config.tty;
            return follow(engine, &rec, a.interactive, tty, follower, Some(&mut watch));
        }
        println!("{c}");
    }
    Ok(0)
}

/// `berth attach`: this terminal to a running container's stdio until it
/// ends; its exit code.
pub fn attach(engine: &Engine, a: AttachArgs) -> Result<i32> {
    attach_to(engine, &a.container, !a.no_stdin)
}

fn attach_to(engine: &Engine, key: &str, stdin: bool) -> Result<i32> {
    let rec = engine.refresh(&engine.containers()?.get(key)?);
    if !matches!(rec.status, Status::Running | Status::Paused) {
        bail!("You cannot attach to a stopped container, start it first");
    }
    let tty = rec.config.tty;
    let stdin = stdin && rec.config.stdin;
    engine.container_event(&rec, "attach", &[]);
    follow(engine, &rec, stdin, tty, LogFollower::at_end(engine.log_path(&rec)), None)
}

/// Copies the container's output (and with `stdin` this terminal's input)
/// until it ends; its exit code. With the shim's exit watch (the CLI
/// started the container) the end is the shim's report; the shim removes
/// nothing (`--rm`) until the caller drops the watch, after the last
/// output is copied. Without it, or if the shim dies, the engine's wait.
pub(crate) fn follow(
    engine: &Engine,
    rec: &ContainerRecord,
    stdin: bool,
    tty: bool,
    mut follower: LogFollower,
    watch: Option<&mut ExitWatch>,
) -> Result<i32> {
    let _terminal = if stdin || tty { Some(super::terminal::forward_stdin(engine, rec, tty)?) } else { None };
    if let Some(watch) = watch {
        loop {
            let _ = follower.pump();
            match watch.wait(Duration::from_millis(10)) {
                Watched::Exited(code) => {
                    follower.pump()?;
                    return Ok(code);
                }
                Watched::Running => {}
                Watched::Lost => break,
            }
        }
    }
    Ok(engine.wait(&rec.id, || {
        let _ = follower.pump();
    })?)
}

pub fn restart(engine: &Engine, a: super::ops::StopArgs) -> Result<()> {
    for c in a.containers {
        engine.restart(&c, Duration::from_secs(a.time))?;
        println!("{c}");
    }
    Ok(())
}

pub fn pause(engine: &Engine, containers: &[String], on: bool) -> Result<()> {
    for c in containers {
        if on {
            engine.pause(c)?;
        } else {
            engine.unpause(c)?;
        }
        println!("{c}");
    }
    Ok(())
}

/// `exec -t`: the process on its own pty; this terminal raw while it
/// runs, its size passed on (and on SIGWINCH); the process's exit code.
pub fn exec_tty(engine: &Engine, key: &str, o: &ExecOptions, stdin: bool) -> Result<i32> {
    let terminal = super::terminal::Terminal::enter()?;
    let session = match engine.exec_tty(key, o) {
        Ok(s) => s,
        Err(e) => {
            drop(terminal);
            return exec_failed(e);
        }
    };
    if o.detach {
        return Ok(0);
    }
    let master = session.master.try_clone().context("dup the pty master")?;
    if let Some((rows, cols)) = super::terminal::window_size() {
        set_size(&master, rows, cols);
    }
    if terminal.is_raw() {
        let m = master.try_clone().context("dup the pty master")?;
        super::terminal::on_resize(move |rows, cols| set_size(&m, rows, cols))?;
    }
    if stdin {
        let mut to = std::fs::File::from(master.try_clone().context("dup the pty master")?);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut input = std::io::stdin().lock();
            while let Ok(n) = input.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    let mut from = std::fs::File::from(master);
    let (done_tx, done) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let _done = done_tx;
        let mut buf = [0u8; 8192];
        let mut stdout = std::io::stdout();
        // EIO once the process and every holder of the pty's slave end are
        // gone: that is the end of the output.
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || stdout.write_all(&buf[..n]).and_then(|_| stdout.flush()).is_err() {
                break;
            }
        }
    });
    let code = session.wait()?;
    // The output ends with the process unless something it started still
    // holds the pty: then stop copying shortly after, as docker does.
    let _ = done.recv_timeout(Duration::from_secs(1));
    drop(terminal);
    Ok(code)
}

/// docker's codes for an exec that could not start: 126/127 with the
/// runtime's message, else an error.
pub fn exec_failed(e: berth_engine::Error) -> Result<i32> {
    super::run::cannot_run(e, "exec in the container")
}

fn set_size(master: &OwnedFd, rows: u16, cols: u16) {
    let ws = rustix::termios::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // Best effort: a container that ended has no terminal to resize.
    let _ = rustix::termios::tcsetwinsize(master, ws);
}
