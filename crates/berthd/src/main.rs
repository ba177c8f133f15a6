//! berthd: the CRI server and the Docker Engine API. Thin: flags, logging, config, then the library
//! serves until SIGTERM or SIGINT, and the socket is removed. Pods and
//! containers are left as they are (their shims hold them).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use berthd::config::{Config, DockerListen, resolve_handlers};
use berthd::runtime::Daemon;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(
    name = "berthd",
    version,
    about = "berth's daemon: a Kubernetes CRI server (runtime.v1) and the Docker Engine API on unix sockets"
)]
struct Cli {
    /// Where images, snapshots and the metadata database live (shared with `berth`).
    #[arg(long, default_value = "/var/lib/berth")]
    root: PathBuf,
    /// Runtime state (locks, sockets, container state).
    #[arg(long, default_value = "/run/berth")]
    runroot: PathBuf,
    /// Configuration file (every key has a default; a missing file is fine).
    #[arg(long, env = "BERTHD_CONFIG", default_value = "/etc/berth/berthd.toml")]
    config: PathBuf,
    /// The OCI runtime of the default "berth" handler (runc's command
    /// line); default: berth-runtime next to berthd.
    #[arg(long)]
    runtime: Option<PathBuf>,
    /// The cgroup pods go under, unless the kubelet names one.
    #[arg(long, env = "BERTH_CGROUP_PARENT", default_value = "/berth")]
    cgroup_parent: String,
    /// The unix socket to serve the CRI on.
    #[arg(long, default_value = "/run/berth/berthd.sock")]
    listen: PathBuf,
    /// Serve the Docker Engine API here (unix:///PATH, or tcp://HOST:PORT
    /// with the config's [docker] TLS settings), whatever the config's
    /// [docker] enabled/listen say.
    #[arg(long, value_name = "unix:///PATH|tcp://HOST:PORT")]
    docker_listen: Option<String>,
    /// Append logs to this file instead of stderr.
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// error, warn, info, debug or trace.
    #[arg(long, default_value = "info")]
    log_level: tracing::Level,
}

fn main() -> ExitCode {
    // A `POST /build` runs the builder in a process of its own.
    if std::env::args_os().nth(1).is_some_and(|a| a == berthd::docker::build::WORKER_ARG) {
        return berthd::docker::build::worker_main();
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("berthd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cli: &Cli) -> Result<()> {
    let builder = tracing_subscriber::fmt().with_max_level(cli.log_level).with_ansi(false);
    match &cli.log_file {
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("open log file {}", p.display()))?;
            builder.with_writer(std::sync::Mutex::new(f)).init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}

fn absolute(p: &Path, flag: &str) -> Result<()> {
    anyhow::ensure!(p.is_absolute(), "--{flag} {}: must be an absolute path", p.display());
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    init_logging(&cli)?;
    for (p, flag) in [(&cli.root, "root"), (&cli.runroot, "runroot"), (&cli.listen, "listen")] {
        absolute(p, flag)?;
    }
    anyhow::ensure!(cli.cgroup_parent.starts_with('/'), "--cgroup-parent {}: must start with /", cli.cgroup_parent);
    let config = Config::load(&cli.config)?;
    // A create ends with its request here, not with the process.
    berth_engine::engine::creates_end_with_their_call();
    let docker = match &cli.docker_listen {
        Some(l) => Some(config.docker.listen_on(l).map_err(|e| anyhow::anyhow!("--docker-listen {e}"))?),
        None if config.docker.enabled => {
            Some(config.docker.listen_on(&config.docker.listen).map_err(anyhow::Error::msg)?)
        }
        None => None,
    };
    let handlers = resolve_handlers(&config, &cli.runroot, cli.runtime.as_deref())?;
    let mut daemon = Daemon::new(config, handlers, cli.root.clone(), cli.runroot.clone(), cli.cgroup_parent.clone());
    // Held until exit: one berthd per state directory.
    let _lock = berthd::socket::lock(&daemon.state_dir.join("berthd.lock"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let served = rt.block_on(async {
        daemon.stream = Some(start_stream_server(&daemon).await?);
        serve(Arc::new(daemon), &cli.listen, docker.as_ref()).await
    });
    // Dropping the runtime would wait for every blocking call still going
    // (a pull from a registry that never answers: for ever). What berthd
    // does survives a SIGKILL at any point, so leaving them is safe.
    rt.shutdown_timeout(std::time::Duration::from_millis(500));
    served
}

/// The streaming server behind Exec, Attach and PortForward: on the
/// engine's containers, or (TEST ONLY, `stream.debug_host_streamer_dir`)
/// on host directories.
async fn start_stream_server(daemon: &Daemon) -> Result<berthd::stream::Server> {
    let cfg = &daemon.config.stream;
    let streamer: Arc<dyn berthd::stream::Streamer> = match &cfg.debug_host_streamer_dir {
        Some(dir) => {
            tracing::warn!(
                dir = %dir.display(),
                "stream.debug_host_streamer_dir is set: Exec runs commands ON THE HOST and PortForward dials the \
                 host's localhost. For tests only, never in production"
            );
            Arc::new(berthd::stream::host::HostStreamer::new(dir.clone()))
        }
        // The default handler's engine: an exec goes through the
        // container's shim, which runs the container's own runtime.
        None => {
            let engine = daemon.engine().map_err(|e| anyhow::anyhow!("{}", e.message()))?;
            Arc::new(berthd::stream::engine::EngineStreamer::new(Arc::new(engine)))
        }
    };
    Ok(berthd::stream::Server::start(cfg, streamer).await?)
}

/// How long calls in flight may take to finish after SIGTERM/SIGINT.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The Docker API's listener, and the socket file to remove at exit.
async fn docker_listener(
    daemon: &Daemon,
    listen: &DockerListen,
) -> Result<(berthd::docker::listen::Listener, Option<berthd::socket::SocketFile>)> {
    use berthd::docker::listen::{Listener, tls_acceptor};
    Ok(match listen {
        DockerListen::Unix(path) => {
            let (l, file) = berthd::socket::bind(path)?;
            tracing::info!(socket = %path.display(), "berthd serving the Docker Engine API");
            (Listener::Unix(l), Some(file))
        }
        DockerListen::Tcp(addr) => {
            let tls = tls_acceptor(&daemon.config.docker)?;
            let l = tokio::net::TcpListener::bind(addr.as_str())
                .await
                .with_context(|| format!("Docker API: listen on tcp://{addr}"))?;
            let verify = daemon.config.docker.tls_ca.is_some();
            if tls.is_none() {
                tracing::warn!(%addr, "serving the Docker Engine API on plain TCP (allow_insecure_tcp): anyone who reaches it is root here");
            }
            tracing::info!(%addr, tls = tls.is_some(), verify_clients = verify, "berthd serving the Docker Engine API");
            (Listener::Tcp(l, tls), None)
        }
    })
}

async fn serve(daemon: Arc<Daemon>, listen: &Path, docker: Option<&DockerListen>) -> Result<()> {
    let mut term = signal(SignalKind::terminate()).context("handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("handle SIGINT")?;
    let (listener, socket) = berthd::socket::bind(listen)?;
    // The Docker API shares the engine and the shutdown: it stops taking
    // connections at the signal, and its socket goes with the CRI's.
    let (docker_stop, docker_stopped) = tokio::sync::watch::channel(false);
    let docker_socket = match docker {
        Some(listen) => {
            let (l, file) = docker_listener(&daemon, listen).await?;
            tokio::spawn(berthd::docker::serve(daemon.clone(), l, docker_stopped));
            file
        }
        None => None,
    };
    tracing::info!(socket = %listen.display(), version = env!("CARGO_PKG_VERSION"), "berthd serving the CRI");
    let (stopping_tx, stopping) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = which, "shutting down; pods and containers keep running");
        let _ = docker_stop.send(true);
        let _ = stopping_tx.send(());
    };
    // tonic's graceful stop waits for every client to hang up: a kubelet
    // never does. Calls in flight get SHUTDOWN_GRACE, then berthd exits
    // anyway (the shims keep every container; nothing is lost).
    let grace = async {
        if stopping.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let served = tokio::select! {
        served = berthd::serve::serve(daemon, listener, shutdown) => served,
        _ = grace => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "clients still connected; stopping without them");
            Ok(())
        }
    };
    socket.remove();
    if let Some(s) = docker_socket {
        s.remove();
    }
    served.context("serve the CRI")?;
    tracing::info!("berthd stopped");
    Ok(())
}
