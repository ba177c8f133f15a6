//! `GetContainerEvents`: the stream of container and pod sandbox
//! lifecycle events the kubelet's evented PLEG reads, as containerd sends
//! them (a sandbox's events carry its ID as `container_id`).
//!
//! One dispatcher task owns the order of events. berthd's own calls
//! (create, start, stop, remove of pods and containers) hand it a small
//! [`Note`] through an unbounded channel (a note per RPC, so it grows only
//! as fast as RPCs arrive and the dispatcher drains it without waiting on
//! anyone). It also looks at the engine's records of the "k8s" namespace
//! to notice containers that ended on their own: one database read, plus
//! the shim's state.json/exit.json of each container it last saw running
//! (nothing is read for stopped ones). It looks at once when a shim
//! records an exit (each running container's shim directory is watched
//! with inotify, [`ExitWatch`]), and every `[events] poll_interval` anyway
//! (for what no watch sees: a record removed by the `berth` CLI, a watch
//! the kernel refused). It remembers the last event of each ID, so a
//! container both stopped by the kubelet and seen exited is announced
//! once.
//!
//! Subscribers get a bounded broadcast channel ([`CAPACITY`] events): a
//! subscriber that falls that far behind is dropped with an error (as
//! containerd drops a slow one), so none can stall berthd or grow its
//! memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use berth_cri_api::v1;
use berth_engine::engine::Engine;
use berth_engine::pod::K8S_NAMESPACE;
use berth_engine::store::Status as EngineStatus;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::io::unix::AsyncFd;
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use crate::containers::CONTAINER_EXT;
use crate::pods::{SANDBOX_EXT, now_ns};
use crate::runtime::Daemon;

/// Events a subscriber may fall behind by before it is dropped.
pub const CAPACITY: usize = 1024;

pub use v1::ContainerEventType as Kind;

/// What happened to a container or sandbox, as berthd's call saw it.
#[derive(Debug, Clone)]
pub struct Note {
    pub id: String,
    /// The sandbox it belongs to (its own ID for a sandbox).
    pub sandbox_id: String,
    pub kind: Kind,
    pub at: i64,
}

/// The daemon's event hub.
pub struct Events {
    notes: mpsc::UnboundedSender<Note>,
    /// Taken by [`spawn`].
    pending: Mutex<Option<mpsc::UnboundedReceiver<Note>>>,
    out: broadcast::Sender<v1::ContainerEventResponse>,
}

impl Default for Events {
    fn default() -> Self {
        let (notes, rx) = mpsc::unbounded_channel();
        let (out, _) = broadcast::channel(CAPACITY);
        Events { notes, pending: Mutex::new(Some(rx)), out }
    }
}

impl Events {
    /// Records that `id` (of sandbox `sandbox_id`) was created, started,
    /// stopped or deleted by berthd. Never blocks.
    pub fn publish(&self, id: &str, sandbox_id: &str, kind: Kind) {
        let note = Note { id: id.to_owned(), sandbox_id: sandbox_id.to_owned(), kind, at: now_ns() };
        // Fails only once the dispatcher is gone (shutdown).
        let _ = self.notes.send(note);
    }

    /// A new subscriber's stream: events from now on; an error ends it
    /// when it falls more than [`CAPACITY`] events behind.
    pub fn subscribe(&self) -> impl tokio_stream::Stream<Item = Result<v1::ContainerEventResponse, Status>> + use<> {
        futures_util::stream::unfold(Some(self.out.subscribe()), |rx| async move {
            let mut rx = rx?;
            match rx.recv().await {
                Ok(ev) => Some((Ok(ev), Some(rx))),
                // The error is the last item: a dropped subscriber must
                // relist, as it missed events.
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let msg = format!(
                        "GetContainerEvents: subscriber too slow, {n} events missed: dropped (subscribe again and relist)"
                    );
                    Some((Err(Status::resource_exhausted(msg)), None))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
    }
}

/// Starts the dispatcher (once; later calls do nothing). It ends when the
/// daemon goes.
pub fn spawn(d: &Arc<Daemon>) {
    let Some(rx) = d.events.pending.lock().ok().and_then(|mut p| p.take()) else { return };
    tokio::spawn(dispatch(Arc::downgrade(d), rx));
}

/// The last event of each ID.
type Known = HashMap<String, (Kind, String)>;

async fn dispatch(d: Weak<Daemon>, mut rx: mpsc::UnboundedReceiver<Note>) {
    let mut known = Known::new();
    let mut seeded = false;
    let every = d.upgrade().map(|d| d.config.events.poll_interval).unwrap_or_default();
    let mut tick = tokio::time::interval(every.max(std::time::Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut exits = ExitWatch::new();
    loop {
        let note = tokio::select! {
            n = rx.recv() => match n {
                Some(n) => Some(n),
                None => return,
            },
            _ = tick.tick() => None,
            _ = exits.fired() => None,
        };
        let Some(daemon) = d.upgrade() else { return };
        let notes = match note {
            Some(n) => {
                // Watched from its start: its exit wakes the next look.
                if n.kind == Kind::ContainerStartedEvent
                    && let Ok(engine) = daemon.engine()
                    && exits.watch(&engine, &n.id)
                {
                    tick.reset_immediately();
                }
                vec![n]
            }
            None => {
                tick.reset();
                match poll(daemon.clone(), std::mem::take(&mut known), seeded).await {
                    Ok((k, notes)) => {
                        known = k;
                        seeded = true;
                        if let Ok(engine) = daemon.engine()
                            && exits.follow(&engine, &known)
                        {
                            tick.reset_immediately();
                        }
                        notes
                    }
                    Err((k, e)) => {
                        known = k;
                        tracing::warn!("container events: look at the engine's records: {}", e.message());
                        Vec::new()
                    }
                }
            }
        };
        for n in notes {
            if fresh(&mut known, &n) && daemon.events.out.receiver_count() > 0 {
                let ev = event(&daemon, n).await;
                // No subscriber left: nobody to tell.
                let _ = daemon.events.out.send(ev);
            }
        }
    }
}

/// Wakes the dispatcher when a shim records its container's exit
/// (exit.json appears in the shim's state directory): one inotify watch
/// per running container, none for the others. Without inotify (or when
/// the kernel refuses a watch) the periodic look still finds the exit.
struct ExitWatch {
    fd: Option<AsyncFd<Watches>>,
    dirs: HashMap<String, WatchDescriptor>,
    warned: bool,
}

/// The inotify instance, as tokio wants it (nix's type has no AsRawFd).
struct Watches(Inotify);

impl std::os::fd::AsRawFd for Watches {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

impl ExitWatch {
    fn new() -> ExitWatch {
        let fd =
            Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(|e| e.to_string()).and_then(|i| {
                // SAFETY: the Inotify (and its descriptor) is owned by the
                // AsyncFd from here on: it stays open and is the same
                // descriptor until the AsyncFd is dropped.
                unsafe { AsyncFd::register_with_interest(Watches(i), tokio::io::Interest::READABLE) }
                    .map_err(|e| e.to_string())
            });
        let fd = fd.map_err(|e| tracing::warn!("container events: no inotify ({e}); exits are found by polling")).ok();
        ExitWatch { fd, dirs: HashMap::new(), warned: false }
    }

    /// Watches container `id`'s shim directory; true if its exit is
    /// already recorded (it ended before the watch).
    fn watch(&mut self, engine: &Engine, id: &str) -> bool {
        let Some(fd) = &self.fd else { return false };
        if self.dirs.contains_key(id) {
            return false;
        }
        let dir = engine.state_dir(id);
        match fd.get_ref().0.add_watch(&dir, AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO) {
            Ok(wd) => {
                self.dirs.insert(id.to_owned(), wd);
                dir.join("exit.json").exists()
            }
            Err(e) => {
                if !std::mem::replace(&mut self.warned, true) {
                    tracing::warn!(dir = %dir.display(), "container events: cannot watch ({e}); such exits are found by polling");
                }
                false
            }
        }
    }

    /// Watches exactly the containers last seen running; true if one of
    /// them has already ended.
    fn follow(&mut self, engine: &Engine, known: &Known) -> bool {
        let running = |id: &String| known.get(id).is_some_and(|(k, _)| *k == Kind::ContainerStartedEvent);
        let gone: Vec<String> = self.dirs.keys().filter(|id| !running(id)).cloned().collect();
        for id in gone {
            if let (Some(fd), Some(wd)) = (&self.fd, self.dirs.remove(&id)) {
                // Fails harmlessly when the directory (and so the watch) is gone.
                let _ = fd.get_ref().0.rm_watch(wd);
            }
        }
        let mut ended = false;
        for id in known.keys().filter(|id| running(id)) {
            ended |= self.watch(engine, id);
        }
        ended
    }

    /// Resolves when an exit.json appears in a watched directory.
    async fn fired(&self) {
        let Some(fd) = &self.fd else { return std::future::pending().await };
        loop {
            let Ok(mut ready) = fd.readable().await else { return std::future::pending().await };
            match ready.get_inner().0.read_events() {
                Ok(events) => {
                    if events.iter().any(|e| e.name.as_deref().is_some_and(|n| n == "exit.json")) {
                        return;
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => ready.clear_ready(),
                Err(_) => return std::future::pending().await,
            }
        }
    }
}

/// Whether `n` tells something new about its ID (and remembers it): a
/// container both stopped by a call and seen exited is stopped once.
fn fresh(known: &mut Known, n: &Note) -> bool {
    let last = known.get(&n.id).map(|(k, _)| *k);
    let new = match (last, n.kind) {
        (Some(l), k) if l == k => false,
        // Gone already (a deletion both called and seen is told once).
        (None, Kind::ContainerDeletedEvent) => false,
        (Some(Kind::ContainerStoppedEvent), Kind::ContainerStartedEvent) => true,
        (Some(Kind::ContainerStoppedEvent), Kind::ContainerCreatedEvent) => false,
        _ => true,
    };
    if n.kind == Kind::ContainerDeletedEvent {
        known.remove(&n.id);
    } else if new {
        known.insert(n.id.clone(), (n.kind, n.sandbox_id.clone()));
    }
    new
}

/// The engine's k8s records now: STOPPED for each container last seen
/// started that has exited, DELETED for each gone without berthd's call.
/// The first look only learns what is there.
async fn poll(d: Arc<Daemon>, known: Known, seeded: bool) -> Result<(Known, Vec<Note>), (Known, Status)> {
    let joined = tokio::task::spawn_blocking(move || {
        let r = look(&d, &known, seeded);
        (known, r)
    })
    .await;
    match joined {
        Ok((mut known, Ok((seen, notes)))) => {
            if !seeded {
                known = seen;
            }
            Ok((known, notes))
        }
        Ok((known, Err(e))) => Err((known, e)),
        Err(e) => Err((Known::new(), Status::internal(e.to_string()))),
    }
}

fn look(d: &Daemon, known: &Known, seeded: bool) -> Result<(Known, Vec<Note>), Status> {
    let engine = d.engine()?;
    let recs = engine
        .containers()
        .and_then(|s| Ok(s.list()?))
        .map_err(|e| crate::pods::engine_status("list containers", e))?;
    let at = now_ns();
    let mut seen = Known::new();
    let mut notes = Vec::new();
    for rec in recs.iter().filter(|r| r.namespace == K8S_NAMESPACE) {
        let sandbox_id = if rec.extensions.contains_key(SANDBOX_EXT) {
            rec.id.clone()
        } else if let Some(meta) = rec.extensions.get(CONTAINER_EXT) {
            meta["sandbox_id"].as_str().unwrap_or_default().to_owned()
        } else {
            continue;
        };
        let last = known.get(&rec.id).map(|(k, _)| *k);
        if seeded && last != Some(Kind::ContainerStartedEvent) {
            seen.insert(rec.id.clone(), (last.unwrap_or(Kind::ContainerCreatedEvent), sandbox_id));
            continue;
        }
        // Only what may run is asked of its shim.
        let status = if matches!(rec.status, EngineStatus::Running | EngineStatus::Paused) {
            engine.refresh(rec).status
        } else {
            rec.status
        };
        let kind = match status {
            EngineStatus::Created => Kind::ContainerCreatedEvent,
            EngineStatus::Running | EngineStatus::Paused | EngineStatus::Restarting => Kind::ContainerStartedEvent,
            _ => Kind::ContainerStoppedEvent,
        };
        if seeded && kind == Kind::ContainerStoppedEvent {
            notes.push(Note { id: rec.id.clone(), sandbox_id: sandbox_id.clone(), kind, at });
        }
        seen.insert(rec.id.clone(), (kind, sandbox_id));
    }
    if seeded {
        for (id, (_, sandbox_id)) in known.iter().filter(|(id, _)| !seen.contains_key(*id)) {
            let (id, sandbox_id) = (id.clone(), sandbox_id.clone());
            notes.push(Note { id, sandbox_id, kind: Kind::ContainerDeletedEvent, at });
        }
    }
    Ok((seen, notes))
}

/// The event for `n`, with its sandbox's status and its containers'
/// statuses as they are now (as containerd fills them).
async fn event(d: &Arc<Daemon>, n: Note) -> v1::ContainerEventResponse {
    let req = v1::PodSandboxStatusRequest { pod_sandbox_id: n.sandbox_id.clone(), verbose: false };
    let pod_sandbox_status = crate::pods::status(d.clone(), req).await.ok().and_then(|r| r.status);
    let mut containers_statuses = Vec::new();
    if pod_sandbox_status.is_some() {
        // The pod's containers by one read of the records: only theirs
        // are refreshed (ListContainers would refresh every container).
        let (daemon, sandbox_id) = (d.clone(), n.sandbox_id.clone());
        let ids = tokio::task::spawn_blocking(move || members(&daemon, &sandbox_id)).await.unwrap_or_default();
        for container_id in ids {
            let req = v1::ContainerStatusRequest { container_id, verbose: false };
            if let Ok(Some(s)) = crate::containers::status(d.clone(), req).await.map(|r| r.status) {
                containers_statuses.push(s);
            }
        }
    }
    v1::ContainerEventResponse {
        container_id: n.id,
        container_event_type: n.kind as i32,
        created_at: n.at,
        pod_sandbox_status,
        containers_statuses,
    }
}

/// The IDs of sandbox `sandbox_id`'s containers.
fn members(d: &Daemon, sandbox_id: &str) -> Vec<String> {
    let recs = d.engine().ok().and_then(|e| e.containers().and_then(|s| Ok(s.list()?)).ok()).unwrap_or_default();
    recs.into_iter()
        .filter(|r| r.namespace == K8S_NAMESPACE)
        .filter(|r| r.extensions.get(CONTAINER_EXT).is_some_and(|m| m["sandbox_id"] == sandbox_id))
        .map(|r| r.id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    fn note(id: &str, kind: Kind) -> Note {
        Note { id: id.into(), sandbox_id: "s".into(), kind, at: 0 }
    }

    #[test]
    fn a_container_stopped_twice_is_announced_once_and_nothing_follows_its_deletion() {
        let mut k = Known::new();
        let seq = [
            (Kind::ContainerCreatedEvent, true),
            (Kind::ContainerStartedEvent, true),
            (Kind::ContainerStoppedEvent, true),
            (Kind::ContainerStoppedEvent, false),
            (Kind::ContainerDeletedEvent, true),
        ];
        for (kind, want) in seq {
            assert_eq!(fresh(&mut k, &note("c", kind)), want, "{kind:?}");
        }
        assert!(k.is_empty(), "a deleted ID is forgotten: {k:?}");
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_dropped_with_an_error_and_the_stream_ends() {
        let ev = Events::default();
        let mut s = Box::pin(ev.subscribe());
        for i in 0..CAPACITY + 5 {
            let e = v1::ContainerEventResponse { container_id: i.to_string(), ..Default::default() };
            ev.out.send(e).unwrap();
        }
        let first = s.next().await.unwrap();
        let err = first.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("too slow"), "{}", err.message());
        assert!(s.next().await.is_none(), "a dropped subscriber's stream ends");
    }
}
