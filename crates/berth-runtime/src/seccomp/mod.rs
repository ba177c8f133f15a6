//! linux.seccomp: the filter built with libseccomp from config.json, and
//! the user-space notification hand-off.
//!
//! The filter is built by the runtime before it forks, so a bad profile is
//! refused before anything starts, and loaded by the container process as
//! late as the kernel allows: right before exec when no_new_privs is set;
//! without it, loading needs CAP_SYS_ADMIN, so it happens before the
//! process drops its capabilities (as runc does).
//!
//! With SCMP_ACT_NOTIFY rules, the kernel hands out a notification fd on
//! load. It goes to `listenerPath` with the container's state, as the
//! runtime spec describes: one message whose payload is a
//! ContainerProcessState JSON (`fds: ["seccompFd"]`) and whose SCM_RIGHTS
//! carry the fd. The socket is connected by the runtime beforehand, since
//! the listener's path is not reachable from inside the container.

pub mod profile;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use serde::Serialize;

use crate::container::OciState;
use crate::error::{Error, Result};

/// A filter ready to load.
pub struct Filter {
    ctx: ScmpFilterContext,
    /// Some rule asks for user-space notification.
    notify: bool,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Container(format!("linux.seccomp: {}", msg.into()))
}

/// Builds the filter config.json describes.
pub fn build(s: &LinuxSeccomp) -> Result<Filter> {
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
    Ok(Filter { ctx, notify })
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
        self.ctx.load().map_err(|e| Error::Container(format!("load the seccomp filter: {e}")))?;
        if !self.notify {
            return Ok(None);
        }
        let fd = self.ctx.get_notify_fd().map_err(|e| Error::Container(format!("seccomp notify fd: {e}")))?;
        // SAFETY: libseccomp returns the kernel's listener fd, which this
        // process owns from here on (libseccomp does not close it).
        Ok(Some(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }))
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

/// Sends the notify fd and the state to the seccomp agent.
pub fn send_to_listener(sock: BorrowedFd<'_>, notify_fd: &OwnedFd, state: &OciState, metadata: &str) -> Result<()> {
    let msg = ContainerProcessState {
        oci_version: crate::template::OCI_VERSION,
        fds: ["seccompFd"],
        pid: state.pid,
        metadata,
        state,
    };
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
}
