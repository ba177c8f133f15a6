//! berth's engine: what the `berth` CLI and `berthd` drive, every
//! operation of theirs behind one API: images ([`images`]: pull, push,
//! list, load, import, login ...), containers ([`engine`], [`ops`],
//! [`observe`], [`copy`]), volumes, networks and the store checks. It
//! runs containers only through `berth-shim`, reaches the shim's files
//! only through `berth_shim::client`, and calls the OCI runtime only
//! through `berth-oci-cli`'s typed wrapper (the one the shim uses too);
//! it keeps its records in redb and attaches containers to networks
//! through the standard CNI plugins. Failures are [`Error`].

pub mod changes;
pub mod check;
pub mod copy;
pub mod crilog;
pub mod engine;
pub mod error;
pub mod events;
pub mod execio;
pub mod execsync;
pub mod images;
pub mod liveness;
pub mod logconfig;
pub mod logread;
pub mod names;
pub mod network;
pub mod observe;
pub mod ops;
pub mod pod;
pub mod prune;
mod rootview;
pub mod spec;
pub mod store;
pub mod system;
pub mod userns;
pub mod volume;

pub use error::Error;

impl engine::Engine {
    /// The OCI runtime's command line with the engine's state root: the
    /// one way the engine runs the runtime (the shim uses the same
    /// wrapper).
    pub fn oci_runtime(&self) -> berth_oci_cli::Runtime {
        berth_oci_cli::Runtime::new(&self.runtime).root(self.runroot.join("runtime"))
    }

    /// The runtime a container was made with (`--runtime`, a CRI runtime
    /// handler), else the engine's: only it knows the container's state
    /// (runc's, crun's and berth-runtime's state files differ).
    pub fn oci_runtime_of(&self, rec: &store::ContainerRecord) -> berth_oci_cli::Runtime {
        let bin = rec.config.runtime.as_deref().unwrap_or(&self.runtime);
        berth_oci_cli::Runtime::new(bin).root(self.runroot.join("runtime"))
    }

    /// [`Self::oci_runtime_of`] the container `id` names (the engine's
    /// runtime when there is no such record any more).
    pub(crate) fn oci_runtime_for(&self, id: &str) -> berth_oci_cli::Runtime {
        match self.containers().and_then(|s| s.get(id).map_err(Into::into)) {
            Ok(rec) if rec.id == id => self.oci_runtime_of(&rec),
            _ => self.oci_runtime(),
        }
    }
}

/// Sizes as docker prints them (go-units), for every front end: one
/// implementation of `%.Ng` with a unit.
pub mod units {
    const DECIMAL: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    const BINARY: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

    /// docker's HumanSizeWithPrecision(n, 3), as `images`, `system df` and
    /// `stats`' I/O columns print: "4.26MB", "123MB", "0B".
    pub fn human_size(n: u64) -> String {
        custom_size(n, 1000.0, &DECIMAL, 3)
    }

    /// docker's BytesSize (binary units, four digits), as `stats`' memory
    /// and `info` print: "64MiB", "1.066MiB".
    pub fn bytes_size(n: u64) -> String {
        custom_size(n, 1024.0, &BINARY, 4)
    }

    /// docker's HumanDuration.
    pub fn human_duration(secs: i64) -> String {
        let s = secs.max(0);
        let (m, h, d) = (s / 60, s / 3600, s / 86400);
        match () {
            _ if s < 1 => "Less than a second".into(),
            _ if s == 1 => "1 second".into(),
            _ if s < 60 => format!("{s} seconds"),
            _ if m == 1 => "About a minute".into(),
            _ if m < 60 => format!("{m} minutes"),
            _ if h == 1 => "About an hour".into(),
            _ if h < 48 => format!("{h} hours"),
            _ if h < 24 * 7 * 2 => format!("{d} days"),
            _ if h < 24 * 30 * 2 => format!("{} weeks", d / 7),
            _ if h < 24 * 365 * 2 => format!("{} months", d / 30),
            _ => format!("{} years", d / 365),
        }
    }

    /// "2 weeks ago" for an RFC 3339 time; "N/A" when unknown.
    pub fn since(created: Option<&str>) -> String {
        match created.and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok()) {
            Some(t) => format!("{} ago", human_duration(chrono::Utc::now().signed_duration_since(t).num_seconds())),
            None => "N/A".into(),
        }
    }

    /// `%.{digits}g` with a unit from `units`, each `base` times the last
    /// (go-units' CustomSize).
    fn custom_size(n: u64, base: f64, units: &[&str], digits: usize) -> String {
        let mut v = n as f64;
        let mut i = 0;
        while v >= base && i < units.len() - 1 {
            v /= base;
            i += 1;
        }
        let int_digits = if v < 1.0 { 1 } else { (v.log10().floor() as usize) + 1 };
        let decimals = digits.saturating_sub(int_digits);
        let mut s = format!("{v:.decimals$}");
        if s.contains('.') {
            s = s.trim_end_matches('0').trim_end_matches('.').to_owned();
        }
        format!("{s}{}", units[i])
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn sizes_print_as_docker_prints_them() {
            assert_eq!(human_size(0), "0B");
            assert_eq!(human_size(999), "999B");
            assert_eq!(human_size(4_261_000), "4.26MB");
            assert_eq!(human_size(12_300_000), "12.3MB");
            assert_eq!(human_size(123_400_000), "123MB");
            assert_eq!(human_size(1_000_000_000), "1GB");
            assert_eq!(bytes_size(64 * 1024 * 1024), "64MiB");
            assert_eq!(bytes_size(1_117_388), "1.066MiB");
            assert_eq!(bytes_size(512), "512B");
        }
    }
}
