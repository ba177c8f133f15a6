//! What berth keeps of each attachment: one file per container and
//! interface under `STATE/results`, written *before* CNI ADD with the
//! ports to publish (the intent), then again with ADD's result.
//!
//! Why before: a `berth` killed during ADD leaves a lease, a veth and
//! portmap's DNAT chain, and only a DEL with the same container ID,
//! network and `portMappings` undoes them (portmap does nothing without
//! the mappings). With the intent on disk, `rm -f` can always run that
//! DEL, with the result as prevResult when there is one. And since every
//! attachment's ports are on disk before its ADD, a host port is given
//! out once: [`reserve`] checks and writes under one lock, so two
//! parallel `run -p 8080:80` cannot both get it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{CniResult, NetworkError, PortMapping};

/// One attachment: the ports it publishes and, once ADD has finished,
/// its result.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Endpoint {
    #[serde(default)]
    pub result: Option<CniResult>,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
}

fn io<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> NetworkError + 'p {
    move |e| NetworkError::Io { what, path: path.to_owned(), source: e }
}

/// The endpoint recorded at `path`; `None` if there is none (or it is not
/// readable: an unreadable record still gets its DEL, without ports).
pub(super) fn read(path: &Path) -> Option<Endpoint> {
    let text = std::fs::read(path).ok()?;
    match serde_json::from_slice(&text) {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::warn!("{}: unreadable attachment record: {e}", path.display());
            None
        }
    }
}

/// Writes `endpoint` at `path` whole or not at all (temp file + rename),
/// so a reader never sees half of it.
pub(super) fn write(path: &Path, endpoint: &Endpoint) -> Result<(), NetworkError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // No ".json" at the end: listings skip it.
    let tmp = dir.join(format!(".{name}.tmp"));
    let text = serde_json::to_vec(endpoint).unwrap_or_default();
    std::fs::write(&tmp, text).map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename", &tmp))
}

/// Records the intent to attach with `ports` at `path`, unless one of
/// them is already published by another attachment in `dir` (or twice in
/// `ports`): then docker's "port is already allocated", and nothing is
/// written. `lock_path` serialises the check and the write with other
/// attaches.
///
/// The lock is one fixed, long-lived file outside `dir` (as host-local's
/// `ipam/NET/lock` and the image store's `gc.lock`): `dir` holds one
/// record per attachment and nothing else, so every file there names a
/// container and is removed with it.
pub(super) fn reserve(dir: &Path, lock_path: &Path, path: &Path, ports: &[PortMapping]) -> Result<(), NetworkError> {
    let intent = Endpoint { result: None, ports: ports.to_vec() };
    if ports.is_empty() {
        // Nothing to check, so nothing to serialise with other attaches.
        return write(path, &intent);
    }
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path)
        .map_err(io("open", lock_path))?;
    // A flock: the kernel drops it if this process is killed.
    let _lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| io("lock", lock_path)(e.into()))?;
    for (i, p) in ports.iter().enumerate() {
        if ports[..i].iter().any(|q| clash(p, q)) {
            return Err(allocated(p));
        }
    }
    for other in records(dir)?.into_iter().filter(|f| f != path) {
        let published = read(&other).map(|e| e.ports).unwrap_or_default();
        if let Some(p) = ports.iter().find(|p| published.iter().any(|q| clash(p, q))) {
            return Err(allocated(p));
        }
    }
    write(path, &intent)
}

/// The attachment records in `dir`.
pub(super) fn records(dir: &Path) -> Result<Vec<PathBuf>, NetworkError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("read", dir)(e)),
    };
    Ok(entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".json") && !name.starts_with('.')
        })
        .map(|e| e.path())
        .collect())
}

/// Two publications that cannot both be had: the same protocol and host
/// port, on the same address or with either on every address (its
/// socket would cover the other's).
fn clash(a: &PortMapping, b: &PortMapping) -> bool {
    let any = |ip: &str| ip.is_empty() || ip == "0.0.0.0";
    a.protocol == b.protocol
        && a.host_port == b.host_port
        && (a.host_ip == b.host_ip || any(&a.host_ip) || any(&b.host_ip))
}

fn allocated(p: &PortMapping) -> NetworkError {
    let ip = if p.host_ip.is_empty() { "0.0.0.0" } else { p.host_ip.as_str() };
    NetworkError::PortAllocated { addr: format!("{ip}:{}", p.host_port) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(spec: &str) -> PortMapping {
        PortMapping::parse(spec).unwrap()
    }

    #[test]
    fn a_host_port_is_given_out_once_per_address_and_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let d = &dir.path().join("results");
        let lock = dir.path().join("ports.lock");
        let reserve = |path: &Path, ports: &[PortMapping]| reserve(d, &lock, path, ports);
        reserve(&d.join("bridge-a-eth0.json"), &[port("8080:80")]).unwrap();
        let err = reserve(&d.join("bridge-b-eth0.json"), &[port("8080:81")]).unwrap_err();
        assert_eq!(err.to_string(), "Bind for 0.0.0.0:8080 failed: port is already allocated");
        assert!(!d.join("bridge-b-eth0.json").exists(), "a refused intent is not written");
        let err = reserve(&d.join("n-c-eth0.json"), &[port("127.0.0.1:8080:80")]).unwrap_err();
        assert_eq!(err.to_string(), "Bind for 127.0.0.1:8080 failed: port is already allocated");
        // Another protocol, another port: free.
        reserve(&d.join("bridge-d-eth0.json"), &[port("8080:80/udp"), port("8081:80")]).unwrap();
        // Twice in one request.
        let err = reserve(&d.join("bridge-e-eth0.json"), &[port("9000:80"), port("9000:81")]).unwrap_err();
        assert_eq!(err.to_string(), "Bind for 0.0.0.0:9000 failed: port is already allocated");
        // Two specific addresses do not clash; the same record may be rewritten.
        reserve(&d.join("bridge-f-eth0.json"), &[port("127.0.0.1:9001:80")]).unwrap();
        reserve(&d.join("bridge-g-eth0.json"), &[port("127.0.0.2:9001:80")]).unwrap();
        reserve(&d.join("bridge-g-eth0.json"), &[port("127.0.0.2:9001:80")]).unwrap();
        let kept = read(&d.join("bridge-a-eth0.json")).unwrap();
        assert!(kept.result.is_none());
        assert_eq!(kept.ports, [port("8080:80")]);
        assert_eq!(records(d).unwrap().len(), 4, "no temp file counts");
        let names: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 4, "the results dir holds the records only: {names:?}");
        assert!(lock.exists(), "the lock is beside it");
    }
}
