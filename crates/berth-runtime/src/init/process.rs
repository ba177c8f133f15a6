//! The last steps before exec, shared by a container's init and by exec:
//! resource limits, OOM score, identity and capabilities, the program's
//! path and environment, and the exec itself.

use std::collections::HashSet;
use std::ffi::CString;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability, CapsHashSet};
use nix::errno::Errno;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};
use oci_spec::runtime::{LinuxCapabilities, PosixRlimitType, Process};

use crate::error::{Context, Error, Result};
use crate::sys;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// process.rlimits. Raising a hard limit needs CAP_SYS_RESOURCE; where the
/// runtime lacks it, the limit is clamped to the current hard limit with a
/// warning, as containerd's restrict_oom_score_adj does for OOM scores.
pub fn apply_rlimits(process: &Process) -> Result<()> {
    for r in process.rlimits().iter().flatten() {
        let res = resource(r.typ());
        let (soft, hard) = (r.soft(), r.hard());
        match setrlimit(res, soft, hard) {
            Ok(()) => {}
            Err(Errno::EPERM) => {
                let (_, cur_hard) = getrlimit(res).step(|| format!("getrlimit {:?}", r.typ()))?;
                if hard <= cur_hard {
                    return Err(Error::os(format!("setrlimit {:?}", r.typ()), Errno::EPERM));
                }
                tracing::warn!(
                    "{:?}: raising the hard limit to {hard} needs CAP_SYS_RESOURCE, which the runtime lacks; \
                     keeping the hard limit at {cur_hard}",
                    r.typ()
                );
                setrlimit(res, soft.min(cur_hard), cur_hard).step(|| format!("setrlimit {:?} (clamped)", r.typ()))?;
            }
            Err(e) => return Err(Error::os(format!("setrlimit {:?}", r.typ()), e)),
        }
    }
    Ok(())
}

fn resource(t: PosixRlimitType) -> Resource {
    match t {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

/// process.oomScoreAdj. Lowering it below the current value needs
/// CAP_SYS_RESOURCE; without it the current value is kept, with a warning
/// (containerd's restrict_oom_score_adj).
pub fn apply_oom_score_adj(process: &Process) -> Result<()> {
    let Some(want) = process.oom_score_adj() else { return Ok(()) };
    let file = "/proc/self/oom_score_adj";
    match std::fs::write(file, want.to_string()) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) => {
            let cur: i32 = std::fs::read_to_string(file).step(|| format!("read {file}"))?.trim().parse().unwrap_or(0);
            if want >= cur {
                return Err(Error::os(format!("write {want} to {file}"), e));
            }
            tracing::warn!(
                "oomScoreAdj {want} is below the runtime's own {cur}, and lowering it needs CAP_SYS_RESOURCE, \
                 which the runtime lacks; keeping {cur}"
            );
            Ok(())
        }
        Err(e) => Err(Error::os(format!("write {want} to {file}"), e)),
    }
}

/// Switches to process.user and applies process.capabilities, in the order
/// that works: bounding set first (needs CAP_SETPCAP, still root), then the
/// ids with PR_SET_KEEPCAPS so the permitted set survives, then the
/// effective/permitted/inheritable sets, then ambient.
pub fn apply_identity(process: &Process) -> Result<()> {
    let caps = process.capabilities().as_ref();
    let wanted = caps.map(Wanted::from_spec).transpose()?;
    if let Some(w) = &wanted {
        drop_bounding(&w.bounding)?;
    }
    let user = process.user();
    let keep = wanted.is_some() && user.uid() != 0;
    if keep {
        sys::set_keep_caps(true).step(|| "prctl(PR_SET_KEEPCAPS)")?;
    }
    let groups: Vec<Gid> = user.additional_gids().iter().flatten().map(|g| Gid::from_raw(*g)).collect();
    match setgroups(&groups) {
        // setgroups is denied in a user namespace whose gid map was written
        // without privilege; the container then keeps no extra groups.
        Err(Errno::EPERM) if groups.is_empty() => {}
        r => r.step(|| format!("setgroups {:?}", user.additional_gids()))?,
    }
    let gid = Gid::from_raw(user.gid());
    setresgid(gid, gid, gid).step(|| format!("setgid {}", user.gid()))?;
    let uid = Uid::from_raw(user.uid());
    setresuid(uid, uid, uid).step(|| format!("setuid {}", user.uid()))?;
    if keep {
        sys::set_keep_caps(false).step(|| "prctl(PR_SET_KEEPCAPS)")?;
    }
    if let Some(w) = &wanted {
        set_sets(w)?;
    }
    Ok(())
}

/// The capability sets of process.capabilities, limited to what the
/// kernel knows and the runtime itself holds.
struct Wanted {
    bounding: CapsHashSet,
    effective: CapsHashSet,
    permitted: CapsHashSet,
    inheritable: CapsHashSet,
    ambient: CapsHashSet,
}

impl Wanted {
    fn from_spec(c: &LinuxCapabilities) -> Result<Wanted> {
        let supported = supported_caps();
        let held =
            caps::read(None, CapSet::Permitted).map_err(|e| Error::Container(format!("read capabilities: {e}")))?;
        let mut warned = HashSet::new();
        let mut convert = |set: &Option<oci_spec::runtime::Capabilities>| -> CapsHashSet {
            let mut out = CapsHashSet::new();
            for c in set.iter().flatten() {
                let name = format!("CAP_{c}");
                let Ok(cap) = name.parse::<Capability>() else {
                    if warned.insert(name.clone()) {
                        tracing::warn!("capability {name} is unknown to berth-runtime; skipped");
                    }
                    continue;
                };
                if !supported.contains(&cap) {
                    if warned.insert(name.clone()) {
                        tracing::warn!("capability {name} is not supported by this kernel; skipped");
                    }
                    continue;
                }
                if !held.contains(&cap) {
                    if warned.insert(name.clone()) {
                        tracing::warn!(
                            "capability {name} is not held by the runtime, so it cannot be granted; skipped"
                        );
                    }
                    continue;
                }
                out.insert(cap);
            }
            out
        };
        Ok(Wanted {
            bounding: convert(c.bounding()),
            effective: convert(c.effective()),
            permitted: convert(c.permitted()),
            inheritable: convert(c.inheritable()),
            ambient: convert(c.ambient()),
        })
    }
}

/// The capabilities this kernel knows: all up to the highest one that
/// PR_CAPBSET_READ accepts, probed from the top (one call on a current
/// kernel; caps' thread_all_supported asks for each of forty-one).
fn supported_caps() -> CapsHashSet {
    let mut all: Vec<Capability> = caps::all().into_iter().collect();
    all.sort_by_key(|c| c.index());
    let last = all.iter().rev().find(|c| caps::has_cap(None, CapSet::Bounding, **c).is_ok()).map(|c| c.index());
    all.into_iter().filter(|c| last.is_some_and(|l| c.index() <= l)).collect()
}

/// Drops from the bounding set every supported capability not in `keep`,
/// without reading it first: dropping one that is already gone succeeds
/// (given CAP_SETPCAP; without it, only one still there is an error).
fn drop_bounding(keep: &CapsHashSet) -> Result<()> {
    for cap in supported_caps().difference(keep) {
        match caps::drop(None, CapSet::Bounding, *cap) {
            Ok(()) => {}
            Err(_) if matches!(caps::has_cap(None, CapSet::Bounding, *cap), Ok(false)) => {}
            Err(e) => return Err(Error::Container(format!("drop {cap} from the bounding set: {e}"))),
        }
    }
    Ok(())
}

fn set_sets(w: &Wanted) -> Result<()> {
    let err = |set: &str, e: caps::errors::CapsError| Error::Container(format!("set {set} capabilities: {e}"));
    // Inheritable while the old permitted set still allows it; effective
    // before permitted shrinks under it.
    caps::set(None, CapSet::Inheritable, &w.inheritable).map_err(|e| err("inheritable", e))?;
    caps::set(None, CapSet::Effective, &w.effective).map_err(|e| err("effective", e))?;
    caps::set(None, CapSet::Permitted, &w.permitted).map_err(|e| err("permitted", e))?;
    caps::clear(None, CapSet::Ambient).map_err(|e| err("ambient", e))?;
    for cap in &w.ambient {
        // The kernel only allows ambient capabilities that are also
        // permitted and inheritable; runc warns and goes on, so do we.
        if let Err(e) = caps::raise(None, CapSet::Ambient, *cap) {
            tracing::warn!("cannot raise ambient capability {cap}: {e}");
        }
    }
    Ok(())
}

/// The program to exec, found as runc finds it (Go's exec.LookPath over the
/// process's PATH), with runc's error messages.
pub fn find_program(arg0: &str, env: &[String]) -> Result<PathBuf> {
    if arg0.contains('/') {
        return match check_executable(Path::new(arg0)) {
            Ok(()) => Ok(PathBuf::from(arg0)),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                Err(exec_error(libc::ENOENT, format!("exec: {arg0:?}: stat {arg0}: no such file or directory")))
            }
            Err(e) => Err(exec_error(errno_of(&e), format!("exec: {arg0:?}: {}", io_message(&e)))),
        };
    }
    let path = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH);
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(arg0);
        if check_executable(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    // Go's LookPath reports ENOENT here too (exec.ErrNotFound wraps it).
    Err(exec_error(libc::ENOENT, format!("exec: {arg0:?}: executable file not found in $PATH")))
}

fn exec_error(errno: i32, message: String) -> Error {
    Error::Exec { errno, message }
}

/// The errno behind a failed check; EACCES for the refusals
/// check_executable makes itself (a directory, no x bit), as execve would.
fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EACCES)
}

fn check_executable(p: &Path) -> std::io::Result<()> {
    let meta = std::fs::metadata(p)?;
    if meta.is_dir() || meta.permissions().mode() & 0o111 == 0 {
        return Err(std::io::Error::from(ErrorKind::PermissionDenied));
    }
    Ok(())
}

fn io_message(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// process.env, plus `extra`, plus HOME from the container's /etc/passwd
/// when neither sets it (as runc does). A name given twice keeps its first
/// place and its last value, as runc's os.Setenv leaves it: `exec --env
/// K=V` overrides the container's K.
pub fn environment(process: &Process, extra: &[String]) -> Vec<String> {
    let given = process.env().iter().flatten().chain(extra);
    let mut env: Vec<String> = Vec::new();
    let mut place: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for kv in given {
        let name = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
        match place.get(name) {
            Some(&i) => env[i] = kv.clone(),
            None => {
                place.insert(name, env.len());
                env.push(kv.clone());
            }
        }
    }
    if !place.contains_key("HOME") {
        let home = home_of(process.user().uid()).unwrap_or_else(|| "/".into());
        env.push(format!("HOME={home}"));
    }
    env
}

fn home_of(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[5].to_string())
    })
}

/// Replaces this process with the program. Returns only on failure.
pub fn exec(program: &Path, args: &[String], env: &[String]) -> Error {
    let to_c = |s: &str| CString::new(s).map_err(|_| Error::Container(format!("exec: {s:?} contains a NUL byte")));
    let prepared = (|| -> Result<(CString, Vec<CString>, Vec<CString>)> {
        let path = to_c(&program.to_string_lossy())?;
        let argv = args.iter().map(|a| to_c(a)).collect::<Result<Vec<_>>>()?;
        let envp = env.iter().map(|e| to_c(e)).collect::<Result<Vec<_>>>()?;
        Ok((path, argv, envp))
    })();
    let (path, argv, envp) = match prepared {
        Ok(p) => p,
        Err(e) => return e,
    };
    let e = match nix::unistd::execve(&path, &argv, &envp) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    let arg0 = args.first().map(String::as_str).unwrap_or("");
    exec_error(e as i32, format!("exec: {arg0:?}: {}", e.desc().to_lowercase()))
}

/// The working directory, entered as the container's user (falling back to
/// the check as root when the user cannot reach it, which fails later with
/// a clear error anyway).
///
/// The directory must then be inside the container's root: a cwd through a
/// magic link (`/proc/self/fd/N` of an fd the runtime still holds) could
/// otherwise put the process in a host directory (CVE-2024-21626). The
/// kernel's getcwd says so: it does not start with `/` (glibc turns that
/// into ENOENT) for a directory the root cannot reach.
pub fn enter_cwd(cwd: &Path) -> Result<()> {
    let what = || format!("chdir to cwd {:?} set in config.json", cwd.display().to_string());
    nix::unistd::chdir(cwd).step(what)?;
    match nix::unistd::getcwd() {
        Ok(now) if now.is_absolute() => Ok(()),
        _ => Err(Error::Container(format!(
            "cwd {:?} is outside the container's root filesystem",
            cwd.display().to_string()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_lookup_uses_the_process_path_and_runc_messages() {
        let env = vec!["PATH=/nonexistent:/bin:/usr/bin".to_string()];
        let sh = find_program("sh", &env).unwrap();
        assert!(sh.ends_with("sh"));
        let e = find_program("no-such-program-here", &env).unwrap_err();
        assert_eq!(e.to_string(), "exec: \"no-such-program-here\": executable file not found in $PATH");
        let e = find_program("/no/such/file", &env).unwrap_err();
        assert_eq!(e.to_string(), "exec: \"/no/such/file\": stat /no/such/file: no such file or directory");
        let e = find_program("/etc/passwd", &env).unwrap_err();
        assert_eq!(e.to_string(), "exec: \"/etc/passwd\": permission denied");
    }

    fn errno(e: Error) -> Option<i32> {
        match e {
            Error::Exec { errno, .. } => Some(errno),
            _ => None,
        }
    }

    #[test]
    fn a_program_that_cannot_run_carries_its_errno() {
        let env = vec!["PATH=/nonexistent:/bin:/usr/bin".to_string()];
        assert_eq!(errno(find_program("no-such-program-here", &env).unwrap_err()), Some(libc::ENOENT));
        assert_eq!(errno(find_program("/no/such/file", &env).unwrap_err()), Some(libc::ENOENT));
        assert_eq!(errno(find_program("/etc/passwd", &env).unwrap_err()), Some(libc::EACCES));
        assert_eq!(errno(find_program("/", &env).unwrap_err()), Some(libc::EACCES));
        // execve's own refusal: a file with the x bit and no format the
        // kernel knows.
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk");
        std::fs::write(&junk, [0u8, 1, 2, 3]).unwrap();
        std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = exec(&junk, &["junk".into()], &[]);
        assert_eq!(e.to_string(), "exec: \"junk\": exec format error");
        assert_eq!(errno(e), Some(libc::ENOEXEC));
    }

    #[test]
    fn home_is_added_only_when_missing() {
        let p: Process =
            serde_json::from_str(r#"{"user":{"uid":0,"gid":0},"cwd":"/","args":["sh"],"env":["A=1"]}"#).unwrap();
        let env = environment(&p, &["LISTEN_FDS=1".into()]);
        assert_eq!(env[0], "A=1");
        assert_eq!(env[1], "LISTEN_FDS=1");
        assert!(env[2].starts_with("HOME="));
        let p: Process =
            serde_json::from_str(r#"{"user":{"uid":0,"gid":0},"cwd":"/","args":["sh"],"env":["HOME=/x"]}"#).unwrap();
        assert_eq!(environment(&p, &[]), vec!["HOME=/x".to_string()]);
    }

    #[test]
    fn a_later_value_replaces_an_earlier_one_in_its_place() {
        let p: Process = serde_json::from_str(
            r#"{"user":{"uid":0,"gid":0},"cwd":"/","args":["sh"],"env":["A=1","HOME=/h","B=2","A=3","C=","C=4"]}"#,
        )
        .unwrap();
        let env = environment(&p, &["B=5".into()]);
        assert_eq!(env, ["A=3", "HOME=/h", "B=5", "C=4"]);
    }
}
