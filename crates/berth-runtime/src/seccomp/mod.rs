//! linux.seccomp: the filter built with libseccomp from config.json, and
//! the user-space notification hand-off.
//!
//! The filter is built by the runtime before it forks, so a bad profile is
//! refused before anything starts, and loaded by the container process as
//! late as the kernel allows: right before exec when no_new_privs is set;
//! without it, loading needs CAP_SYS_ADMIN, so it happens before the
//! process drops its capabilities (as runc does). A container's init whose
//! filter notifies loads it before it reports ready, so the notify fd
//! reaches the agent during `create`, as with runc.
//!
//! libseccomp compiles a profile like docker's default (three
//! architectures, ~350 syscalls) in about 10 ms, which is a third of a
//! container's start. So the compiled BPF is kept in the runtime's state
//! root (`seccomp@cache/`, a name no container ID can have), keyed by the
//! SHA-256 of the profile and the libseccomp version, and the container
//! loads the program with seccomp(2) itself; a profile seen before costs a
//! file read. The state root is root's and on tmpfs (gone at reboot, when
//! the kernel may change). Both paths load the same bytes: a miss compiles,
//! stores, and loads what it stored.
//!
//! With SCMP_ACT_NOTIFY rules, the kernel hands out a notification fd on
//! load. It goes to `listenerPath` with the container's state, as the
//! runtime spec describes: one message whose payload is a
//! ContainerProcessState JSON (`fds: ["seccompFd"]`) and whose SCM_RIGHTS
//! carry the fd. The socket is connected by the runtime beforehand, since
//! the listener's path is not reachable from inside the container.

/// Docker's default profile lives in berth-profiles (the engine uses it
/// too); re-exported where the runtime's users found it.
pub use berth_profiles::seccomp as profile;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use serde::Serialize;

use crate::container::OciState;
use crate::error::{Error, Result};

/// A filter ready to load: the BPF program libseccomp generated, and the
/// seccomp(2) flags to load it with.
pub struct Filter {
    program: Vec<libc::sock_filter>,
    flags: libc::c_ulong,
    /// Some rule asks for user-space notification.
    notify: bool,
}

/// The cache's directory under a runtime state root.
pub const CACHE_DIR: &str = "seccomp@cache";

/// Builds the filter, from the compiled cache under `cache` when this
/// profile was compiled before (see the module docs).
pub fn build_cached(s: &LinuxSeccomp, cache: Option<&std::path::Path>) -> Result<Filter> {
    let flags = load_flags(s);
    let key = cache_key(s);
    let path = cache.map(|d| d.join(format!("{key}.bpf")));
    if let Some(p) = &path
        && let Ok(bytes) = std::fs::read(p)
        && let Some(program) = program_of(&bytes)
    {
        let notify = notifies(s);
        return Ok(Filter { program, flags: flags | if notify { NEW_LISTENER } else { 0 }, notify });
    }
    let (ctx, notify) = build_ctx(s)?;
    let bytes = export(&ctx)?;
    if let (Some(p), Some(dir)) = (&path, cache) {
        store(dir, p, &bytes);
    }
    let program = program_of(&bytes).ok_or_else(|| bad("libseccomp exported no program"))?;
    Ok(Filter { program, flags: flags | if notify { NEW_LISTENER } else { 0 }, notify })
}

const NEW_LISTENER: libc::c_ulong = 1 << 3;

/// The profile's flags as seccomp(2) takes them (TSYNC is not needed: the
/// process that loads is single-threaded).
fn load_flags(s: &LinuxSeccomp) -> libc::c_ulong {
    s.flags().iter().flatten().fold(0, |f, flag| {
        f | match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => 1 << 1,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => 1 << 2,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 1 << 5,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => 0,
        }
    })
}

fn notifies(s: &LinuxSeccomp) -> bool {
    let default = s.default_action();
    s.syscalls().iter().flatten().any(|r| r.action() == LinuxSeccompAction::ScmpActNotify && default != r.action())
}

fn cache_key(s: &LinuxSeccomp) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"berth-seccomp-v1\0");
    h.update(libseccomp_version().as_bytes());
    h.update(b"\0");
    h.update(std::env::consts::ARCH.as_bytes());
    h.update(b"\0");
    h.update(serde_json::to_vec(s).unwrap_or_default());
    hex::encode(h.finalize())
}

/// libseccomp's BPF for the filter (seccomp_export_bpf writes to an fd).
fn export(ctx: &ScmpFilterContext) -> Result<Vec<u8>> {
    use std::io::{Read, Seek};
    let fd = nix::sys::memfd::memfd_create(c"berth-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| Error::os("memfd_create for the seccomp program", std::io::Error::from(e)))?;
    ctx.export_bpf(&fd).map_err(|e| bad(format!("compile: {e}")))?;
    let mut f = std::fs::File::from(fd);
    let mut bytes = Vec::new();
    f.rewind().and_then(|_| f.read_to_end(&mut bytes)).map_err(|e| Error::os("read the seccomp program", e))?;
    Ok(bytes)
}

/// Writes the cache entry whole (temp file + rename); a failure only costs
/// the next start a compile.
fn store(dir: &std::path::Path, path: &std::path::Path, bytes: &[u8]) {
    use std::os::unix::fs::DirBuilderExt;
    let _ = std::fs::DirBuilder::new().mode(0o700).recursive(true).create(dir);
    let _ = berth_fs::write_atomic(path, bytes, 0o600);
}

/// The program in `bytes` (struct sock_filter, 8 bytes each), if it is one.
fn program_of(bytes: &[u8]) -> Option<Vec<libc::sock_filter>> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(8) || bytes.len() / 8 > u16::MAX as usize {
        return None;
    }
    Some(
        bytes
            .chunks_exact(8)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect(),
    )
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Container(format!("linux.seccomp: {}", msg.into()))
}

/// Builds the filter config.json describes (no cache).
pub fn build(s: &LinuxSeccomp) -> Result<Filter> {
    build_cached(s, None)
}

/// The libseccomp filter for the profile; whether it notifies.
fn build_ctx(s: &LinuxSeccomp) -> Result<(ScmpFilterContext, bool)> {
    let default = action(s.default_action(), s.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| bad(format!("defaultAction: {e}")))?;
    // no_new_privs is config.json's process.noNewPrivileges, set by the
    // runtime itself; libseccomp must not set it behind its back.
    ctx.set_ctl_nnp(false).map_err(|e| bad(e.to_string()))?;
    for a in s.architectures().iter().flatten() {
        let arch = arch(*a)?;
        if arch != ScmpArch::native() {
            ctx.add_arch(arch).map_err(|e| bad(format!("architecture {a:?}: {e}")))?;
        }
    }
    for flag in s.flags().iter().flatten() {
        set_flag(&mut ctx, *flag)?;
    }
    let mut notify = false;
    for (i, rule) in s.syscalls().iter().flatten().enumerate() {
        let act = action(rule.action(), rule.errno_ret())?;
        // libseccomp refuses a rule that only repeats the default.
        if act == default {
            continue;
        }
        notify |= act == ScmpAction::Notify;
        let conditions = conditions(rule.args().as_deref().unwrap_or_default())
            .map_err(|e| bad(format!("syscalls[{i}].args: {e}")))?;
        for name in rule.names() {
            // runc skips names this libseccomp (or architecture) does not
            // know: profiles list syscalls newer than the host's kernel.
            let Ok(sc) = ScmpSyscall::from_name(name) else {
                tracing::debug!("seccomp: unknown syscall {name:?} skipped");
                continue;
            };
            add_rule(&mut ctx, act, sc, &conditions).map_err(|e| bad(format!("syscalls[{i}] {name:?}: {e}")))?;
        }
    }
    if notify && s.listener_path().is_none() {
        return Err(bad("SCMP_ACT_NOTIFY needs listenerPath"));
    }
    Ok((ctx, notify))
}

fn add_rule(
    ctx: &mut ScmpFilterContext,
    act: ScmpAction,
    sc: ScmpSyscall,
    groups: &[Vec<ScmpArgCompare>],
) -> std::result::Result<(), libseccomp::error::SeccompError> {
    if groups.is_empty() {
        ctx.add_rule(act, sc)?;
    }
    for group in groups {
        ctx.add_rule_conditional(act, sc, group)?;
    }
    Ok(())
}

/// The rule's argument checks, as groups that each become one libseccomp
/// rule (the checks of a group are ANDed). libseccomp cannot AND two checks
/// of the same argument, so, as runc does, a rule that checks one argument
/// several times becomes one rule per check (ORed).
fn conditions(args: &[LinuxSeccompArg]) -> std::result::Result<Vec<Vec<ScmpArgCompare>>, String> {
    let cmps: Vec<ScmpArgCompare> = args.iter().map(compare).collect::<std::result::Result<_, _>>()?;
    if cmps.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen = std::collections::HashSet::new();
    let repeated = args.iter().any(|a| !seen.insert(a.index()));
    Ok(if repeated { cmps.into_iter().map(|c| vec![c]).collect() } else { vec![cmps] })
}

fn compare(a: &LinuxSeccompArg) -> std::result::Result<ScmpArgCompare, String> {
    if a.index() > 5 {
        return Err(format!("index {} is past the sixth argument", a.index()));
    }
    let op = match a.op() {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        // (arg & value) == valueTwo
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(a.value()),
    };
    let datum = match a.op() {
        LinuxSeccompOperator::ScmpCmpMaskedEq => a.value_two().unwrap_or(0),
        _ => a.value(),
    };
    Ok(ScmpArgCompare::new(a.index() as u32, op, datum))
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction> {
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => ScmpAction::KillThread,
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno.unwrap_or(libc::EPERM as u32) as i32),
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno.unwrap_or(libc::EPERM as u32) as u16),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
    })
}

fn arch(a: Arch) -> Result<ScmpArch> {
    Ok(match a {
        Arch::ScmpArchNative => ScmpArch::native(),
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    })
}

fn set_flag(ctx: &mut ScmpFilterContext, flag: LinuxSeccompFilterFlag) -> Result<()> {
    let r = match flag {
        LinuxSeccompFilterFlag::SeccompFilterFlagLog => ctx.set_ctl_log(true),
        LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true),
        LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => ctx.set_ctl_waitkill(true),
        // The runtime is single-threaded when it loads the filter.
        LinuxSeccompFilterFlag::SeccompFilterFlagTsync => return Ok(()),
    };
    r.map(|_| ()).map_err(|e| {
        bad(format!("flag {flag:?} is not supported by this host's libseccomp ({}): {e}", libseccomp_version()))
    })
}

/// "2.5.4"
pub fn libseccomp_version() -> String {
    libseccomp::ScmpVersion::current().map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro)).unwrap_or_default()
}

impl Filter {
    /// Loads the filter into this process (and what it execs). Returns the
    /// notification fd when a rule notifies.
    pub fn load(&self) -> Result<Option<OwnedFd>> {
        let prog = libc::sock_fprog { len: self.program.len() as u16, filter: self.program.as_ptr().cast_mut() };
        // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER) reads the program that
        // `prog` points to, which lives in `self` for the whole call. A
        // plain syscall: safe between fork and exec, unlike libseccomp's
        // load, which allocates.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc < 0 {
            return Err(Error::os("load the seccomp filter", std::io::Error::last_os_error()));
        }
        if !self.notify {
            return Ok(None);
        }
        // SAFETY: with SECCOMP_FILTER_FLAG_NEW_LISTENER the kernel returns
        // a new listener fd, which this process owns from here on.
        Ok(Some(unsafe { std::os::fd::FromRawFd::from_raw_fd(rc as i32) }))
    }

    /// Whether loading hands out a notification fd.
    pub fn notifies(&self) -> bool {
        self.notify
    }
}

/// The runtime spec's container process state, sent with the notify fd.
#[derive(Serialize)]
struct ContainerProcessState<'a> {
    #[serde(rename = "ociVersion")]
    oci_version: &'a str,
    fds: [&'a str; 1],
    pid: i32,
    #[serde(skip_serializing_if = "str::is_empty")]
    metadata: &'a str,
    state: &'a OciState,
}

/// Sends the notify fd of process `pid` (in the runtime's pid namespace)
/// and the container's state to the seccomp agent.
pub fn send_to_listener(
    sock: BorrowedFd<'_>,
    notify_fd: &OwnedFd,
    pid: i32,
    state: &OciState,
    metadata: &str,
) -> Result<()> {
    let msg =
        ContainerProcessState { oci_version: crate::template::OCI_VERSION, fds: ["seccompFd"], pid, metadata, state };
    let bytes = serde_json::to_vec(&msg).expect("the process state serializes");
    crate::channel::send_packet(sock.as_fd(), &bytes, &[notify_fd.as_raw_fd()])
        .map_err(|e| Error::os("send the seccomp fd to listenerPath", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_profile_builds_and_knows_when_it_notifies() {
        let f = build(&spec(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
                "syscalls":[{"names":["mkdir","mkdirat","no_such_syscall"],"action":"SCMP_ACT_ERRNO","errnoRet":38},
                            {"names":["personality"],"action":"SCMP_ACT_ALLOW"}]}"#,
        ))
        .unwrap();
        assert!(!f.notifies());
        let f = build(&spec(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/agent.sock",
                "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        ))
        .unwrap();
        assert!(f.notifies());
    }

    #[test]
    fn notify_without_a_listener_is_refused() {
        let err = build(&spec(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        ))
        .err()
        .unwrap();
        assert!(err.to_string().contains("listenerPath"), "{err}");
    }

    #[test]
    fn repeated_argument_checks_become_separate_rules() {
        let args: Vec<LinuxSeccompArg> = serde_json::from_str(
            r#"[{"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":0,"value":2,"op":"SCMP_CMP_EQ"}]"#,
        )
        .unwrap();
        assert_eq!(conditions(&args).unwrap().len(), 2);
        let args: Vec<LinuxSeccompArg> = serde_json::from_str(
            r#"[{"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":1,"value":2,"op":"SCMP_CMP_MASKED_EQ","valueTwo":2}]"#,
        )
        .unwrap();
        let groups = conditions(&args).unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].len(), 2);
        let bad: Vec<LinuxSeccompArg> = serde_json::from_str(r#"[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]"#).unwrap();
        assert!(conditions(&bad).is_err());
    }

    #[test]
    fn a_compiled_profile_is_cached_and_a_bad_entry_is_recompiled() {
        let profile = spec(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
                "flags":["SECCOMP_FILTER_FLAG_LOG"],
                "syscalls":[{"names":["read","write","exit_group"],"action":"SCMP_ACT_ALLOW"}]}"#,
        );
        let dir = tempfile::tempdir().unwrap();
        let fresh = build(&profile).unwrap();
        let first = build_cached(&profile, Some(dir.path())).unwrap();
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(entries.len(), 1, "one entry, no temp file left: {entries:?}");
        let cached = build_cached(&profile, Some(dir.path())).unwrap();
        let words = |f: &Filter| f.program.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect::<Vec<_>>();
        assert_eq!(words(&fresh), words(&first));
        assert_eq!(words(&first), words(&cached), "the cache gives back what libseccomp compiled");
        assert_eq!(cached.flags, 1 << 1, "SECCOMP_FILTER_FLAG_LOG");
        // A different profile is a different entry.
        let other =
            spec(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#);
        build_cached(&other, Some(dir.path())).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        // A torn entry is not a program: compiled again, and rewritten.
        std::fs::write(&entries[0], b"12345").unwrap();
        let again = build_cached(&profile, Some(dir.path())).unwrap();
        assert_eq!(words(&again), words(&fresh));
        assert_eq!(std::fs::read(&entries[0]).unwrap().len(), fresh.program.len() * 8);
    }

    /// Whether this host's libseccomp knows every ABI of `abis`
    /// (2.5 predates loongarch64, for one).
    fn libseccomp_knows(abis: &[Arch]) -> bool {
        abis.iter().all(|a| {
            let mut ctx = ScmpFilterContext::new(ScmpAction::Allow).unwrap();
            let a = arch(*a).unwrap();
            a == ScmpArch::native() || ctx.add_arch(a).is_ok()
        })
    }

    /// libseccomp takes every evaluation of the default profile: each
    /// architecture with an entry, with no, Docker's, each single extra,
    /// and all capabilities.
    #[test]
    fn every_evaluation_of_the_default_profile_builds_a_filter() {
        let arches = profile::architectures().unwrap();
        let known = |name: &str| arches.iter().any(|(n, abis)| *n == name && libseccomp_knows(abis));
        assert!(known("x86_64") && known("aarch64"));
        let with = |extra: Option<String>| -> Vec<String> {
            profile::DOCKER_DEFAULT_CAPS.iter().map(|c| c.to_string()).chain(extra).collect()
        };
        let mut capsets = vec![Vec::new(), with(None), caps::all().iter().map(|c| c.to_string()).collect()];
        capsets.extend(caps::all().iter().map(|c| with(Some(c.to_string()))));
        for (name, _) in arches.iter().filter(|(_, abis)| libseccomp_knows(abis)) {
            for caps in &capsets {
                let s = profile::default_profile_for(caps, name).unwrap();
                if let Err(e) = build(&s) {
                    panic!("{name} {caps:?}: {e}");
                }
            }
        }
    }
}
