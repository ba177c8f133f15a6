//! Container records in redb. berth has no daemon: several `berth`
//! processes may use the database at once, so it is opened in redb's
//! multi-writer mode (byte-range locks) and every change is one write
//! transaction. Names are unique through their own table, written in the
//! same transaction as the record, so two `run --name x` at once cannot
//! both win. Long operations on one container (start, stop, rm) hold
//! [`ContainerLock`] as well, a flock that dies with its process.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use redb::{ConcurrencyMode, Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::logconfig::LogConfig;
use crate::network::PortMapping;

const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");
const NAMES: TableDefinition<&str, &str> = TableDefinition::new("container_names");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("No such container: {0}")]
    NotFound(String),
    #[error("multiple containers match {0:?}: give more of the id")]
    Ambiguous(String),
    #[error(
        "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name."
    )]
    NameInUse { name: String, id: String },
    #[error("invalid container name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at most 1024 of them")]
    BadName(String),
    #[error("container database {}: {source}", path.display())]
    Db { path: PathBuf, source: redb::Error },
    #[error("container record {id} is corrupt: {source}")]
    Corrupt { id: String, source: serde_json::Error },
    #[error("lock container {id}: {source}")]
    Lock { id: String, source: std::io::Error },
}

/// docker's container states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

/// What the engine knows of a container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// 64 hex digits.
    pub id: String,
    pub name: String,
    /// The reference the user gave, and the image's config digest.
    pub image: String,
    pub image_id: String,
    /// RFC 3339.
    pub created: String,
    pub status: Status,
    pub pid: Option<i32>,
    pub shim_pid: Option<i32>,
    pub exit_code: Option<i32>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub bundle: PathBuf,
    #[serde(default)]
    pub restart_count: u32,
    /// The last run ended with an OOM kill in its cgroup (the shim saw
    /// it): docker's State.OOMKilled, the CRI's reason OOMKilled. A start
    /// clears it.
    #[serde(default)]
    pub oom_killed: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What the container was made with beyond its image and labels.
    #[serde(default, deserialize_with = "null_is_default")]
    pub config: ContainerConfig,
    /// The engine namespace it lives in: "" is the default one (the CLI's,
    /// and every record that predates namespaces); berthd's are in
    /// [`crate::pod::K8S_NAMESPACE`]. As containerd's namespaces: `ps`
    /// lists one namespace, commands by ID reach every one.
    #[serde(default, skip_serializing_if = "String::is_empty", deserialize_with = "null_is_default")]
    pub namespace: String,
    /// What a front end keeps with the container, written in the same
    /// transaction as the record (containerd's container extensions): the
    /// engine stores it and never reads it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "null_is_default")]
    pub extensions: BTreeMap<String, serde_json::Value>,
}

/// What `run`/`create` asked for that the engine needs again later (to
/// start, attach, list, inspect, remove): the record's `config`, in the
/// JSON shape records have always had, so every existing record loads
/// (fields it lacks take their defaults).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerConfig {
    /// `--network` as given: "none", "host", "bridge" or a network's
    /// name ("" in records that predate it: the default network).
    #[serde(default, deserialize_with = "null_is_default")]
    pub network: String,
    /// `--restart` as given (`no`, `always`, `unless-stopped`, `on-failure[:N]`).
    #[serde(default)]
    pub restart: Option<String>,
    #[serde(default, deserialize_with = "null_is_default")]
    pub tty: bool,
    /// `-i`: the shim keeps stdin for attach clients.
    #[serde(default, deserialize_with = "null_is_default")]
    pub stdin: bool,
    /// The command line given after the image (docker's `Cmd` override).
    #[serde(default, deserialize_with = "null_is_default")]
    pub args: Vec<String>,
    #[serde(default, deserialize_with = "null_is_default")]
    pub ports: Vec<PortMapping>,
    /// The named and anonymous volumes it mounts.
    #[serde(default, deserialize_with = "null_is_default")]
    pub volumes: Vec<String>,
    /// `--init`: a static init runs as pid 1.
    #[serde(default, deserialize_with = "null_is_default")]
    pub init: bool,
    /// `--rm`.
    #[serde(default, deserialize_with = "null_is_default")]
    pub auto_remove: bool,
    /// Its address on its network, once attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `--log-driver`/`--log-opt`; None in records that predate them
    /// (json-file, never rotated: see [`LogConfig::of_record`]).
    #[serde(default)]
    pub log: Option<LogConfig>,
    /// The OCI runtime binary it was made with, when not the engine's
    /// (a CRI runtime handler's); its shim runs this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<PathBuf>,
    /// More names it answers to on its network (docker's network aliases;
    /// compose gives each container its service's name).
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_is_default")]
    pub aliases: Vec<String>,
    /// The networks it was connected to after it was made (`network
    /// connect`), each on its own interface.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_is_default")]
    pub networks: Vec<Connection>,
}

/// A network a container was connected to after its creation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    pub network: String,
    /// eth1, eth2 ...
    pub ifname: String,
    pub address: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// `null` as the type's default: records written as `Value`s may hold a
/// null where a field had no value.
fn null_is_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl ContainerRecord {
    /// docker's status words for `ps` and the API's `/containers/json`
    /// ("Up 5 seconds", "Exited (0) 2 minutes ago", "Created" ...), which
    /// scripts match (docker's container/state.go).
    pub fn status_text(&self) -> String {
        use crate::units::since;
        let up_for = || since(self.started_at.as_deref()).trim_end_matches(" ago").to_owned();
        match self.status {
            Status::Running => format!("Up {}", up_for()),
            Status::Paused => format!("Up {} (Paused)", up_for()),
            Status::Exited => {
                format!("Exited ({}) {}", self.exit_code.unwrap_or(-1), since(self.finished_at.as_deref()))
            }
            Status::Created => "Created".into(),
            Status::Restarting => {
                format!("Restarting ({}) {}", self.exit_code.unwrap_or(0), since(self.finished_at.as_deref()))
            }
            Status::Removing => "Removal In Progress".into(),
            Status::Dead => "Dead".into(),
        }
    }

    /// A container just created: no process yet.
    pub fn new(id: &str, name: &str, image: &str, image_id: &str, bundle: PathBuf) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            name: name.into(),
            image: image.into(),
            image_id: image_id.into(),
            created: crate::volume::now_rfc3339(),
            status: Status::Created,
            pid: None,
            shim_pid: None,
            exit_code: None,
            started_at: None,
            finished_at: None,
            bundle,
            restart_count: 0,
            oom_killed: false,
            labels: BTreeMap::new(),
            config: ContainerConfig::default(),
            namespace: String::new(),
            extensions: BTreeMap::new(),
        }
    }
}

pub struct ContainerStore {
    db: Database,
    path: PathBuf,
}

impl ContainerStore {
    /// Opens (creating) the database at `path`, shared with other berth
    /// processes.
    pub fn open(path: &Path) -> Result<ContainerStore, StoreError> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let db = Database::builder()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .create(path)
            .map_err(|e| StoreError::Db { path: path.into(), source: e.into() })?;
        let store = ContainerStore { db, path: path.into() };
        // Tables exist from the start, so readers never see them missing;
        // made (a commit, with its fsyncs) only when they are not there.
        let present =
            store.db.begin_read().is_ok_and(|r| r.open_table(CONTAINERS).is_ok() && r.open_table(NAMES).is_ok());
        if !present {
            store.write(|tx| {
                tx.open_table(CONTAINERS)?;
                tx.open_table(NAMES)?;
                Ok(())
            })?;
        }
        Ok(store)
    }

    fn db_err(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Db { path: self.path.clone(), source: e.into() }
    }

    /// Runs `f` in one write transaction and commits it.
    fn write<T>(&self, f: impl FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error>) -> Result<T, StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.db_err(e))?;
        let out = f(&tx).map_err(|e| self.db_err(e))?;
        tx.commit().map_err(|e| self.db_err(e))?;
        Ok(out)
    }

    /// Adds a new container; its name must be free.
    pub fn insert(&self, rec: &ContainerRecord) -> Result<(), StoreError> {
        check_name(&rec.name)?;
        let bytes = serde_json::to_vec(rec).map_err(|e| StoreError::Corrupt { id: rec.id.clone(), source: e })?;
        let taken = self.write(|tx| {
            let mut names = tx.open_table(NAMES)?;
            if let Some(owner) = names.get(rec.name.as_str())? {
                return Ok(Some(owner.value().to_owned()));
            }
            names.insert(rec.name.as_str(), rec.id.as_str())?;
            tx.open_table(CONTAINERS)?.insert(rec.id.as_str(), bytes.as_slice())?;
            Ok(None)
        })?;
        match taken {
            Some(id) => Err(StoreError::NameInUse { name: rec.name.clone(), id }),
            None => Ok(()),
        }
    }

    /// A container by full id, name, or unique id prefix (docker's order).
    pub fn get(&self, key: &str) -> Result<ContainerRecord, StoreError> {
        let key = key.strip_prefix('/').unwrap_or(key);
        let tx = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = tx.open_table(CONTAINERS).map_err(|e| self.db_err(e))?;
        if let Some(v) = table.get(key).map_err(|e| self.db_err(e))? {
            return decode(key, v.value());
        }
        let names = tx.open_table(NAMES).map_err(|e| self.db_err(e))?;
        if let Some(id) = names.get(key).map_err(|e| self.db_err(e))? {
            let id = id.value().to_owned();
            if let Some(v) = table.get(id.as_str()).map_err(|e| self.db_err(e))? {
                return decode(&id, v.value());
            }
        }
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::NotFound(key.into()));
        }
        let mut found = None;
        for entry in table.range(key..).map_err(|e| self.db_err(e))? {
            let (k, v) = entry.map_err(|e| self.db_err(e))?;
            if !k.value().starts_with(key) {
                break;
            }
            if found.is_some() {
                return Err(StoreError::Ambiguous(key.into()));
            }
            found = Some(decode(k.value(), v.value())?);
        }
        found.ok_or_else(|| StoreError::NotFound(key.into()))
    }

    /// Every container, oldest first.
    pub fn list(&self) -> Result<Vec<ContainerRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = tx.open_table(CONTAINERS).map_err(|e| self.db_err(e))?;
        let mut all = Vec::new();
        for entry in table.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = entry.map_err(|e| self.db_err(e))?;
            all.push(decode(k.value(), v.value())?);
        }
        all.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(all)
    }

    /// Changes a record in one transaction; returns the new record.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut ContainerRecord)) -> Result<ContainerRecord, StoreError> {
        let mut rec = None;
        let mut err = None;
        self.write(|tx| {
            let mut table = tx.open_table(CONTAINERS)?;
            let Some(bytes) = table.get(id)?.map(|v| v.value().to_vec()) else { return Ok(()) };
            match serde_json::from_slice::<ContainerRecord>(&bytes) {
                Ok(mut r) => {
                    f(&mut r);
                    r.id = id.to_owned();
                    if let Ok(b) = serde_json::to_vec(&r) {
                        table.insert(id, b.as_slice())?;
                    }
                    rec = Some(r);
                }
                Err(e) => err = Some(StoreError::Corrupt { id: id.into(), source: e }),
            }
            Ok(())
        })?;
        if let Some(e) = err {
            return Err(e);
        }
        rec.ok_or_else(|| StoreError::NotFound(id.into()))
    }

    /// Gives a container a new, free name.
    pub fn rename(&self, id: &str, new: &str) -> Result<(), StoreError> {
        check_name(new)?;
        let rec = self.get(id)?;
        let bytes = |r: &ContainerRecord| serde_json::to_vec(r).unwrap_or_default();
        let mut renamed = rec.clone();
        renamed.name = new.to_owned();
        let taken = self.write(|tx| {
            let mut names = tx.open_table(NAMES)?;
            if let Some(owner) = names.get(new)? {
                return Ok(Some(owner.value().to_owned()));
            }
            names.remove(rec.name.as_str())?;
            names.insert(new, rec.id.as_str())?;
            tx.open_table(CONTAINERS)?.insert(rec.id.as_str(), bytes(&renamed).as_slice())?;
            Ok(None)
        })?;
        match taken {
            Some(owner) => Err(StoreError::NameInUse { name: new.into(), id: owner }),
            None => Ok(()),
        }
    }

    /// Forgets a container and frees its name.
    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        let rec = self.get(id)?;
        self.write(|tx| {
            tx.open_table(CONTAINERS)?.remove(rec.id.as_str())?;
            let mut names = tx.open_table(NAMES)?;
            let owned = names.get(rec.name.as_str())?.is_some_and(|v| v.value() == rec.id);
            if owned {
                names.remove(rec.name.as_str())?;
            }
            Ok(())
        })
    }
}

fn decode(id: &str, bytes: &[u8]) -> Result<ContainerRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { id: id.into(), source: e })
}

/// docker's rule for container names.
fn check_name(name: &str) -> Result<(), StoreError> {
    if crate::names::is_valid_container_name(name) { Ok(()) } else { Err(StoreError::BadName(name.into())) }
}

/// A new container id: 64 hex digits from the kernel's random source.
pub fn new_id() -> String {
    let mut bytes = [0u8; 32];
    if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)) {
        // Not fatal: time and pid still make ids unique on one machine.
        tracing::warn!("read /dev/urandom: {e}");
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        bytes[..16].copy_from_slice(&t.to_le_bytes());
        bytes[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An exclusive lock on one container for the length of an operation, so
/// two `berth` processes never start and remove it at once. A flock: the
/// kernel drops it if the holder dies.
pub struct ContainerLock {
    _flock: nix::fcntl::Flock<std::fs::File>,
}

impl ContainerLock {
    pub fn acquire(lock_dir: &Path, id: &str) -> Result<ContainerLock, StoreError> {
        Self::take(lock_dir, id, nix::fcntl::FlockArg::LockExclusive)?
            .ok_or_else(|| StoreError::Lock { id: id.into(), source: std::io::ErrorKind::WouldBlock.into() })
    }

    /// [`ContainerLock::acquire`] without waiting: None while another
    /// holds it (another berth, or this process through another call).
    pub fn try_acquire(lock_dir: &Path, id: &str) -> Result<Option<ContainerLock>, StoreError> {
        Self::take(lock_dir, id, nix::fcntl::FlockArg::LockExclusiveNonblock)
    }

    fn take(lock_dir: &Path, id: &str, how: nix::fcntl::FlockArg) -> Result<Option<ContainerLock>, StoreError> {
        let err = |e: std::io::Error| StoreError::Lock { id: id.into(), source: e };
        std::fs::create_dir_all(lock_dir).map_err(err)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lock_dir.join(format!("{id}.lock")))
            .map_err(err)?;
        match nix::fcntl::Flock::lock(file, how) {
            Ok(flock) => Ok(Some(ContainerLock { _flock: flock })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(err(e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: &str) -> ContainerRecord {
        ContainerRecord::new(id, name, "busybox", "sha256:00", "/b".into())
    }

    /// Records as berth wrote them while `config` was a JSON value: one
    /// made by `run -p 8080:80 -v data:/d --rm --log-opt max-size=1m` and
    /// attached to a network, and one from before `config` existed.
    #[test]
    fn records_written_in_the_old_json_shape_load_into_typed_configs() {
        let id = "a".repeat(64);
        let full = format!(
            r#"{{"id":"{id}","name":"web","image":"busybox","image_id":"sha256:00","created":"2026-01-01T00:00:00Z",
            "status":"running","pid":10,"shim_pid":9,"exit_code":null,"started_at":null,"finished_at":null,
            "bundle":"/b","restart_count":2,"labels":{{"k":"v"}},
            "config":{{"network":"net1","restart":null,"tty":true,"args":["sh","-c","true"],
            "ports":[{{"hostPort":8080,"containerPort":80,"protocol":"tcp"}}],"volumes":["data"],
            "stdin":false,"init":true,"autoRemove":true,
            "log":{{"Type":"json-file","Config":{{"max-size":"1m"}}}},"address":"10.89.0.2","someday":1}}}}"#
        );
        let dir = tempfile::tempdir().unwrap();
        let s = ContainerStore::open(&dir.path().join("c.redb")).unwrap();
        let oldest = full.replace(&id, &"b".repeat(64)).replace(r#""name":"web""#, r#""name":"old""#);
        let oldest = format!("{}\"config\":null}}", &oldest[..oldest.find("\"config\"").unwrap()]);
        s.write(|tx| {
            let mut t = tx.open_table(CONTAINERS)?;
            for (key, rec) in [(id.clone(), &full), ("b".repeat(64), &oldest)] {
                t.insert(key.as_str(), rec.as_bytes())?;
            }
            Ok(())
        })
        .unwrap();
        let c = s.get(&id).unwrap().config;
        assert_eq!((c.network.as_str(), c.restart.as_deref(), c.tty, c.stdin), ("net1", None, true, false));
        assert_eq!(c.args, ["sh", "-c", "true"]);
        assert_eq!((c.ports[0].host_port, c.ports[0].container_port, c.ports[0].host_ip.as_str()), (8080, 80, ""));
        assert_eq!(c.volumes, ["data"]);
        assert!(c.init && c.auto_remove);
        assert_eq!(c.address.as_deref(), Some("10.89.0.2"));
        let log = c.log.unwrap();
        assert_eq!((log.driver.as_str(), log.opts["max-size"].as_str()), ("json-file", "1m"));
        let old = s.get(&"b".repeat(64)).unwrap();
        assert_eq!(old.config, ContainerConfig::default(), "a null config is the defaults");
        assert_eq!(crate::logconfig::LogConfig::of_record(&old.config).driver, "json-file");
        // Written back, a typed config keeps the shape old readers knew.
        let v = serde_json::to_value(s.get(&id).unwrap()).unwrap();
        assert_eq!(v["config"]["autoRemove"], true);
        assert_eq!(v["config"]["ports"][0]["hostPort"], 8080);
    }

    #[test]
    fn records_are_found_by_id_name_and_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContainerStore::open(&dir.path().join("c.redb")).unwrap();
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        s.insert(&record(&a, "web")).unwrap();
        s.insert(&record(&b, "db")).unwrap();
        assert_eq!(s.get(&a).unwrap().name, "web");
        assert_eq!(s.get("db").unwrap().id, b);
        assert_eq!(s.get("/db").unwrap().id, b);
        assert_eq!(s.get(&a[..12]).unwrap().id, a);
        assert!(matches!(s.get("ffff-no"), Err(StoreError::NotFound(_))));
        assert_eq!(s.get("nothing").unwrap_err().to_string(), "No such container: nothing");
        let err = s.insert(&record(&new_id(), "web")).unwrap_err();
        assert!(matches!(&err, StoreError::NameInUse { id, .. } if *id == a), "{err}");
        assert!(matches!(s.insert(&record(&new_id(), "-bad")), Err(StoreError::BadName(_))));
        assert_eq!(s.list().unwrap().len(), 2);
    }

    #[test]
    fn prefixes_that_match_two_are_ambiguous() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContainerStore::open(&dir.path().join("c.redb")).unwrap();
        s.insert(&record(&format!("ab{}", "0".repeat(62)), "x")).unwrap();
        s.insert(&record(&format!("ab{}", "1".repeat(62)), "y")).unwrap();
        assert!(matches!(s.get("ab"), Err(StoreError::Ambiguous(_))));
        assert_eq!(s.get("ab1").unwrap().name, "y");
    }

    #[test]
    fn update_rename_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContainerStore::open(&dir.path().join("c.redb")).unwrap();
        let id = new_id();
        s.insert(&record(&id, "one")).unwrap();
        let r = s
            .update(&id, |r| {
                r.status = Status::Exited;
                r.exit_code = Some(3);
            })
            .unwrap();
        assert_eq!((r.status, r.exit_code), (Status::Exited, Some(3)));
        assert_eq!(s.get(&id).unwrap().exit_code, Some(3));
        s.insert(&record(&new_id(), "two")).unwrap();
        assert!(matches!(s.rename(&id, "two"), Err(StoreError::NameInUse { .. })));
        s.rename(&id, "uno").unwrap();
        assert_eq!(s.get("uno").unwrap().id, id);
        assert!(s.get("one").is_err(), "the old name is free");
        s.insert(&record(&new_id(), "one")).unwrap();
        s.remove("uno").unwrap();
        assert!(s.get(&id).is_err());
        s.insert(&record(&new_id(), "uno")).unwrap();
        assert!(matches!(s.update("nope", |_| {}), Err(StoreError::NotFound(_))));
    }
}
