//! docker's value syntaxes for `run` flags: sizes (`--memory 512m`),
//! CPUs (`--cpus 1.5`), volumes (`-v src:dst:ro`), `--mount k=v,...` and
//! `--tmpfs /run:size=64m`. Each parser names the flag and the value it
//! could not read.

use std::path::PathBuf;

use super::SpecError;

/// A mount the user asked for, in the engine's terms.
#[derive(Debug, Clone, PartialEq)]
pub enum UserMount {
    /// A host path (`-v /src:/dst`, `--mount type=bind`).
    Bind { source: PathBuf, target: String, readonly: bool, propagation: Option<String> },
    /// A named volume (`-v name:/dst`, `--mount type=volume`); the engine
    /// creates it on first use.
    Volume { name: String, target: String, readonly: bool },
    /// An anonymous volume (`-v /dst`, or the image's `Volumes`).
    Anonymous { target: String },
    /// `--tmpfs`, `--mount type=tmpfs`.
    Tmpfs { target: String, options: Vec<String> },
}

impl UserMount {
    pub fn target(&self) -> &str {
        match self {
            UserMount::Bind { target, .. }
            | UserMount::Volume { target, .. }
            | UserMount::Anonymous { target }
            | UserMount::Tmpfs { target, .. } => target,
        }
    }
}

fn bad(flag: &str, value: &str, why: impl Into<String>) -> SpecError {
    SpecError::Flag { flag: flag.into(), value: value.into(), why: why.into() }
}

/// docker's sizes: a number with an optional b, k, m, g (or kb, mb, gb;
/// case-insensitive), in bytes, powers of 1024.
pub fn parse_size(flag: &str, value: &str) -> Result<i64, SpecError> {
    let v = value.trim().to_ascii_lowercase();
    let digits = v.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(v.len());
    let (num, unit) = v.split_at(digits);
    let num: f64 = num.parse().map_err(|_| bad(flag, value, "not a size (like 512m or 2g)"))?;
    let mult: i64 = match unit.trim_end_matches('b').trim_end_matches('i') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(bad(flag, value, "unknown unit (use b, k, m, g)")),
    };
    let bytes = num * mult as f64;
    if !(0.0..9.0e18).contains(&bytes) {
        return Err(bad(flag, value, "out of range"));
    }
    Ok(bytes as i64)
}

/// `--memory`: a size; 0 and -1 mean no limit (`None`), as docker's 0
/// and podman's -1 do. The lower bound is [`super::RunFlags::validate`]'s.
pub fn parse_memory(value: &str) -> Result<Option<i64>, SpecError> {
    if value.trim() == "-1" {
        return Ok(None);
    }
    Ok(Some(parse_size("--memory", value)?).filter(|m| *m != 0))
}

/// docker's CFS period for `--cpus`: 100 ms, in microseconds.
const CPU_PERIOD: u64 = 100_000;

/// `--cpus 1.5` → (quota, period) in microseconds, docker's 100 ms
/// period; 0 means no limit (`None`), as in docker. The range is checked
/// by [`check_cpus`].
pub fn parse_cpus(value: &str) -> Result<Option<(i64, u64)>, SpecError> {
    let cpus: f64 = value.trim().parse().map_err(|_| bad("--cpus", value, "not a number of CPUs"))?;
    if !cpus.is_finite() {
        return Err(bad("--cpus", value, "not a number of CPUs"));
    }
    if cpus == 0.0 {
        return Ok(None);
    }
    // `as` saturates: an absurd value stays absurd and fails the range check.
    Ok(Some(((cpus * CPU_PERIOD as f64).round() as i64, CPU_PERIOD)))
}

/// docker's range for `--cpus`: 0.01 (the kernel's smallest quota, 1 ms
/// per 100 ms) up to the CPUs the host has, with docker's message for
/// both ends.
pub fn check_cpus(quota: i64, period: u64, host_cpus: usize) -> Result<(), SpecError> {
    let (quota, period) = (i128::from(quota), i128::from(period));
    if quota * 100 < period || quota > period * host_cpus as i128 {
        return Err(SpecError::CpuRange(host_cpus));
    }
    Ok(())
}

/// The CPUs this process may run on, as docker counts them
/// (sched_getaffinity, not the cgroup's quota).
pub fn host_cpus() -> usize {
    use nix::sched::{CpuSet, sched_getaffinity};
    match sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count()).filter(|i| set.is_set(*i).unwrap_or(false)).count().max(1),
        Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// docker's `-e`: `KEY=VALUE` as given; a bare `KEY` takes the caller's
/// value (`lookup`), and is left out when the caller has none.
pub fn env_from_caller(kv: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Option<String>, SpecError> {
    if kv.is_empty() || kv.starts_with('=') {
        return Err(bad("-e", kv, "no variable name (want KEY=VALUE or KEY)"));
    }
    if kv.contains('=') { Ok(Some(kv.to_owned())) } else { Ok(lookup(kv).map(|v| format!("{kv}={v}"))) }
}

fn check_target(flag: &str, value: &str, target: &str) -> Result<(), SpecError> {
    if !target.starts_with('/') {
        return Err(bad(flag, value, format!("the container path {target:?} must be absolute")));
    }
    if target == "/" {
        return Err(bad(flag, value, "cannot mount over /"));
    }
    Ok(())
}

/// `-v [SRC:]DST[:OPTS]`: SRC an absolute host path (bind) or a volume
/// name; OPTS from ro, rw, z, Z (labels: nothing to do without SELinux),
/// and propagation (private, rprivate, shared, rshared, slave, rslave).
pub fn parse_volume(value: &str) -> Result<UserMount, SpecError> {
    let parts: Vec<&str> = value.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [dst] => (None, *dst, ""),
        [src, dst] => (Some(*src), *dst, ""),
        [src, dst, opts] => (Some(*src), *dst, *opts),
        _ => return Err(bad("-v", value, "want [SOURCE:]TARGET[:OPTIONS]")),
    };
    check_target("-v", value, dst)?;
    let (mut readonly, mut propagation) = (false, None);
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => readonly = true,
            "rw" => readonly = false,
            "z" | "Z" => {}
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => propagation = Some(o.to_owned()),
            "nocopy" => {}
            _ => return Err(bad("-v", value, format!("unknown option {o:?}"))),
        }
    }
    let target = dst.to_owned();
    Ok(match src {
        None => UserMount::Anonymous { target },
        Some(s) if s.starts_with('/') => UserMount::Bind { source: s.into(), target, readonly, propagation },
        Some(s) if s.starts_with('.') || s.contains('/') => {
            return Err(bad("-v", value, "a host path must be absolute; a volume name has no '/'"));
        }
        Some("") => return Err(bad("-v", value, "empty source")),
        Some(name) => UserMount::Volume { name: name.to_owned(), target, readonly },
    })
}

/// `--mount type=bind|volume|tmpfs,source=..,target=..,readonly,...`
/// (docker's keys and their aliases: src, destination/dst, ro).
pub fn parse_mount(value: &str) -> Result<UserMount, SpecError> {
    let (mut kind, mut source, mut target, mut readonly) = ("volume".to_owned(), None, None, false);
    let (mut propagation, mut tmpfs_opts) = (None, Vec::new());
    for field in value.split(',') {
        let (k, v) = field.split_once('=').map_or((field, None), |(k, v)| (k, Some(v)));
        let need =
            |v: Option<&str>| v.map(str::to_owned).ok_or_else(|| bad("--mount", value, format!("{k} needs a value")));
        match k {
            "type" => kind = need(v)?,
            "source" | "src" => source = Some(need(v)?),
            "target" | "destination" | "dst" => target = Some(need(v)?),
            "readonly" | "ro" => readonly = !matches!(v, Some("false" | "0")),
            "bind-propagation" => propagation = Some(need(v)?),
            "tmpfs-size" => tmpfs_opts.push(format!("size={}", parse_size("--mount tmpfs-size", &need(v)?)?)),
            "tmpfs-mode" => tmpfs_opts.push(format!("mode={}", need(v)?)),
            "consistency" | "volume-nocopy" => {}
            _ => return Err(bad("--mount", value, format!("unknown key {k:?}"))),
        }
    }
    let target = target.ok_or_else(|| bad("--mount", value, "target is required"))?;
    check_target("--mount", value, &target)?;
    match kind.as_str() {
        "bind" => {
            let source = source.ok_or_else(|| bad("--mount", value, "a bind mount needs a source"))?;
            if !source.starts_with('/') {
                return Err(bad("--mount", value, "a bind source must be an absolute host path"));
            }
            Ok(UserMount::Bind { source: source.into(), target, readonly, propagation })
        }
        "volume" => Ok(match source {
            Some(name) => UserMount::Volume { name, target, readonly },
            None => UserMount::Anonymous { target },
        }),
        "tmpfs" => {
            if readonly {
                tmpfs_opts.push("ro".into());
            }
            Ok(UserMount::Tmpfs { target, options: tmpfs_opts })
        }
        other => Err(bad("--mount", value, format!("unknown type {other:?} (bind, volume, tmpfs)"))),
    }
}

/// `--tmpfs /run[:opts]`; options as mount(8) takes them for tmpfs.
pub fn parse_tmpfs(value: &str) -> Result<UserMount, SpecError> {
    let (target, opts) = value.split_once(':').unwrap_or((value, ""));
    check_target("--tmpfs", value, target)?;
    let options = opts.split(',').filter(|o| !o.is_empty()).map(str::to_owned).collect();
    Ok(UserMount::Tmpfs { target: target.to_owned(), options })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_docker_reads_them() {
        assert_eq!(parse_size("--memory", "512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("--memory", "2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("--memory", "64kb").unwrap(), 64 << 10);
        assert_eq!(parse_size("--memory", "1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("--memory", "4096").unwrap(), 4096);
        let e = parse_size("--memory", "12q").unwrap_err().to_string();
        assert!(e.contains("--memory") && e.contains("12q"), "{e}");
    }

    #[test]
    fn memory_minus_one_and_zero_mean_no_limit() {
        assert_eq!(parse_memory("-1").unwrap(), None);
        assert_eq!(parse_memory("0").unwrap(), None);
        assert_eq!(parse_memory("64m").unwrap(), Some(64 << 20));
        assert!(parse_memory("-2").is_err() && parse_memory("lots").is_err());
    }

    #[test]
    fn cpus_become_a_quota_over_docker_period() {
        assert_eq!(parse_cpus("1.5").unwrap(), Some((150_000, 100_000)));
        assert_eq!(parse_cpus("0.01").unwrap(), Some((1_000, 100_000)));
        assert_eq!(parse_cpus("0").unwrap(), None, "docker's 0: no limit");
        for bad in ["x", "nan", "inf", ""] {
            assert!(parse_cpus(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpus_outside_dockers_range_get_dockers_message() {
        let range = |v: &str| {
            let (q, p) = parse_cpus(v).unwrap().unwrap();
            check_cpus(q, p, 2).map_err(|e| e.to_string())
        };
        assert_eq!(range("2"), Ok(()));
        assert_eq!(range("0.01"), Ok(()));
        let msg = "range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available";
        for v in ["2.01", "0.009", "0.0000001", "-1", "1e300"] {
            assert_eq!(range(v), Err(msg.to_owned()), "{v}");
        }
        assert!(host_cpus() >= 1);
    }

    #[test]
    fn bare_env_names_come_from_the_caller() {
        let caller = |k: &str| (k == "SET").then(|| "from caller".to_owned());
        assert_eq!(env_from_caller("A=b=c", caller).unwrap().as_deref(), Some("A=b=c"));
        assert_eq!(env_from_caller("EMPTY=", caller).unwrap().as_deref(), Some("EMPTY="));
        assert_eq!(env_from_caller("SET", caller).unwrap().as_deref(), Some("SET=from caller"));
        assert_eq!(env_from_caller("UNSET", caller).unwrap(), None);
        for bad in ["", "=x"] {
            assert!(env_from_caller(bad, caller).unwrap_err().to_string().contains("no variable name"), "{bad}");
        }
    }

    #[test]
    fn volumes_binds_and_anonymous() {
        assert_eq!(
            parse_volume("/srv/data:/data:ro,rslave").unwrap(),
            UserMount::Bind {
                source: "/srv/data".into(),
                target: "/data".into(),
                readonly: true,
                propagation: Some("rslave".into())
            }
        );
        assert_eq!(
            parse_volume("cache:/var/cache").unwrap(),
            UserMount::Volume { name: "cache".into(), target: "/var/cache".into(), readonly: false }
        );
        assert_eq!(parse_volume("/scratch").unwrap(), UserMount::Anonymous { target: "/scratch".into() });
        for bad in ["rel/dir:/x", "/a:b", "/a:/b:bogus", "/a:/", "a:b:c:d"] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mount_flag_keys_and_aliases() {
        assert_eq!(
            parse_mount("type=bind,src=/h,dst=/c,ro").unwrap(),
            UserMount::Bind { source: "/h".into(), target: "/c".into(), readonly: true, propagation: None }
        );
        assert_eq!(
            parse_mount("type=tmpfs,target=/t,tmpfs-size=1m,tmpfs-mode=1770").unwrap(),
            UserMount::Tmpfs { target: "/t".into(), options: vec!["size=1048576".into(), "mode=1770".into()] }
        );
        assert_eq!(parse_mount("target=/v").unwrap(), UserMount::Anonymous { target: "/v".into() });
        assert!(parse_mount("type=bind,target=/c").unwrap_err().to_string().contains("needs a source"));
        assert!(parse_mount("type=nfs,target=/c").is_err());
        assert!(parse_mount("type=bind,source=/h").unwrap_err().to_string().contains("target is required"));
    }

    #[test]
    fn tmpfs_flag() {
        assert_eq!(
            parse_tmpfs("/run:rw,size=64m").unwrap(),
            UserMount::Tmpfs { target: "/run".into(), options: vec!["rw".into(), "size=64m".into()] }
        );
        assert!(parse_tmpfs("run").is_err());
    }
}
