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

/// `--cpus 1.5` → (quota, period) in microseconds, docker's 100 ms period.
pub fn parse_cpus(value: &str) -> Result<(i64, u64), SpecError> {
    let cpus: f64 = value.trim().parse().map_err(|_| bad("--cpus", value, "not a number of CPUs"))?;
    if !(cpus > 0.0 && cpus <= 1024.0) {
        return Err(bad("--cpus", value, "must be more than 0"));
    }
    const PERIOD: u64 = 100_000;
    Ok(((cpus * PERIOD as f64).round() as i64, PERIOD))
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
    fn cpus_become_a_quota_over_docker_period() {
        assert_eq!(parse_cpus("1.5").unwrap(), (150_000, 100_000));
        assert_eq!(parse_cpus("0.01").unwrap(), (1_000, 100_000));
        assert!(parse_cpus("0").is_err() && parse_cpus("x").is_err());
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
