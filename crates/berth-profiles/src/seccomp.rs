//! The default seccomp profile containers get: equal in effect to Docker's
//! default profile, kept as data in `profiles/seccomp-default.json`.
//!
//! The data is an allow-list of rules, each with conditions on the
//! container's capabilities, the host's architecture and kernel. A
//! container's profile is that list evaluated once: the rules whose
//! conditions hold become plain linux.seccomp rules, which the runtime
//! turns into a filter like any config.json's.
//!
//! The format is berth's own (see the JSON's comments):
//!
//! - `default`: the action for every call no rule allows (`{"errno": "EPERM"}`);
//! - `architectures`: per host architecture, the ABIs the filter covers (a
//!   64-bit host also runs 32-bit tasks, which must not escape the filter);
//! - `rules`: `syscalls`, `action` (`"allow"`, the default, or
//!   `{"errno": NAME}`), `args_any` (alternatives, each a check such as
//!   `"arg0 == PER_LINUX32"` or `"arg0 & CLONE_NEWNS|CLONE_NEWPID == 0"`,
//!   several joined by `&&`), and `when` (`any_cap`, `no_cap`, `arch`,
//!   `not_arch`, `min_kernel`);
//! - `never`: calls no rule may allow, as a guard for whoever edits the list.

use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder, LinuxSeccompOperator, LinuxSyscall,
};
use serde::Deserialize;

pub use crate::DOCKER_DEFAULT_CAPS;
use crate::{Error, Result};

const PROFILE_JSON: &str = include_str!("../profiles/seccomp-default.json");

/// The default profile, evaluated for a container with capabilities `caps`
/// (names like "CAP_SYS_ADMIN") on this host's architecture.
///
/// `caps` should be the container's bounding set, as Docker uses: a
/// capability the process can still raise counts as one it has.
pub fn default_profile(caps: &[String]) -> Result<LinuxSeccomp> {
    default_profile_for(caps, host_arch())
}

/// Same, for an explicit architecture (for tests: "x86_64", "aarch64", ...).
pub fn default_profile_for(caps: &[String], arch: &str) -> Result<LinuxSeccomp> {
    let target = Target { arch, caps: normalize_caps(caps), kernel: host_kernel()? };
    profile()?.evaluate(&target)
}

/// The architectures the profile has an entry for, each with the seccomp
/// ABIs its filter covers (for the runtime's check that libseccomp takes
/// every evaluation).
pub fn architectures() -> Result<Vec<(&'static str, Vec<Arch>)>> {
    let p = profile()?;
    let abis = |names: &[String]| names.iter().map(|n| arch(n).map_err(Error::Malformed)).collect::<Result<Vec<_>>>();
    p.architectures.iter().map(|(name, list)| Ok((name.as_str(), abis(list)?))).collect()
}

/// The embedded profile, parsed and checked once.
fn profile() -> Result<&'static Profile> {
    static PROFILE: OnceLock<std::result::Result<Profile, String>> = OnceLock::new();
    PROFILE.get_or_init(|| Profile::parse(PROFILE_JSON)).as_ref().map_err(|e| Error::Malformed(e.clone()))
}

/// What the rules are evaluated against.
struct Target<'a> {
    arch: &'a str,
    caps: HashSet<String>,
    kernel: Kernel,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    comment: String,
    default: Action,
    architectures: BTreeMap<String, Vec<String>>,
    rules: Vec<Rule>,
    never: Vec<Group>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    comment: String,
    syscalls: Vec<String>,
    #[serde(default)]
    action: Action,
    /// Alternatives: the rule applies to a call matching any one of them.
    #[serde(default)]
    args_any: Vec<ArgMatch>,
    #[serde(default)]
    when: When,
}

/// A documented list of calls that no rule may allow.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    comment: String,
    syscalls: Vec<String>,
}

/// When a rule applies; every condition given must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct When {
    /// The container has at least one of these capabilities.
    #[serde(default)]
    any_cap: Vec<String>,
    /// The container has none of these capabilities.
    #[serde(default)]
    no_cap: Vec<String>,
    /// The host architecture is one of these.
    #[serde(default)]
    arch: Vec<String>,
    /// The host architecture is none of these.
    #[serde(default)]
    not_arch: Vec<String>,
    /// The host kernel is at least this version ("4.8").
    min_kernel: Option<Kernel>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Action {
    #[default]
    Allow,
    Errno(Errno),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
struct Errno(u32);

/// Checks of one alternative, ANDed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
struct ArgMatch(Vec<Check>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Check {
    index: usize,
    op: Op,
    value: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `(arg & mask) == value`
    MaskedEq(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
struct Kernel {
    major: u32,
    minor: u32,
}

/// Our architecture names, and the seccomp ABI each stands for.
const ARCHES: &[(&str, Arch)] = &[
    ("x86_64", Arch::ScmpArchX86_64),
    ("x86", Arch::ScmpArchX86),
    ("x32", Arch::ScmpArchX32),
    ("aarch64", Arch::ScmpArchAarch64),
    ("arm", Arch::ScmpArchArm),
    ("mips", Arch::ScmpArchMips),
    ("mipsel", Arch::ScmpArchMipsel),
    ("mips64", Arch::ScmpArchMips64),
    ("mips64n32", Arch::ScmpArchMips64n32),
    ("mipsel64", Arch::ScmpArchMipsel64),
    ("mipsel64n32", Arch::ScmpArchMipsel64n32),
    ("ppc", Arch::ScmpArchPpc),
    ("ppc64", Arch::ScmpArchPpc64),
    ("ppc64le", Arch::ScmpArchPpc64le),
    ("s390", Arch::ScmpArchS390),
    ("s390x", Arch::ScmpArchS390x),
    ("riscv64", Arch::ScmpArchRiscv64),
    ("loongarch64", Arch::ScmpArchLoongarch64),
];

/// Names the argument checks may use. Kernel ABI values, the same on
/// every architecture (a unit test compares them with libc's).
const CONSTANTS: &[(&str, u64)] = &[
    ("AF_ALG", 38),
    ("AF_NFC", 39),
    ("AF_VSOCK", 40),
    ("CLONE_NEWNS", 0x0002_0000),
    ("CLONE_NEWCGROUP", 0x0200_0000),
    ("CLONE_NEWUTS", 0x0400_0000),
    ("CLONE_NEWIPC", 0x0800_0000),
    ("CLONE_NEWUSER", 0x1000_0000),
    ("CLONE_NEWPID", 0x2000_0000),
    ("CLONE_NEWNET", 0x4000_0000),
    ("PER_LINUX", 0),
    ("PER_LINUX32", 0x0008),
    ("UNAME26", 0x0002_0000),
];

const ERRNOS: &[(&str, i32)] = &[
    ("EPERM", libc::EPERM),
    ("EACCES", libc::EACCES),
    ("EINVAL", libc::EINVAL),
    ("ENOSYS", libc::ENOSYS),
    ("EOPNOTSUPP", libc::EOPNOTSUPP),
];

impl Profile {
    fn parse(json: &str) -> std::result::Result<Profile, String> {
        let de = &mut serde_json::Deserializer::from_str(json);
        let p: Profile = serde_path_to_error::deserialize(de).map_err(|e| e.to_string())?;
        p.check()?;
        Ok(p)
    }

    /// What serde cannot see: names that must be known, comments that
    /// must be there, and the `never` list kept.
    fn check(&self) -> std::result::Result<(), String> {
        if self.comment.is_empty() {
            return Err("the profile has no comment".into());
        }
        for (host, abis) in &self.architectures {
            arch(host)?;
            abis.iter().try_for_each(|a| arch(a).map(drop))?;
        }
        let never: HashSet<&str> = self.never.iter().flat_map(|g| &g.syscalls).map(String::as_str).collect();
        if let Some(g) = self.never.iter().find(|g| g.comment.is_empty() || g.syscalls.is_empty()) {
            return Err(format!("a `never` group needs a comment and syscalls: {g:?}"));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            rule.check(&never).map_err(|e| format!("rules[{i}]: {e}"))?;
        }
        Ok(())
    }

    fn evaluate(&self, t: &Target) -> Result<LinuxSeccomp> {
        arch(t.arch).map_err(Error::Evaluate)?;
        let mut out = LinuxSeccomp::default();
        let (default, errno) = self.default.to_oci();
        out.set_default_action(default);
        out.set_default_errno_ret(errno);
        // A host without an entry gets a filter for its native ABI only.
        let abis = self.architectures.get(t.arch).map(|abis| abis.iter().filter_map(|a| arch(a).ok()).collect());
        out.set_architectures(abis);
        out.set_syscalls(Some(self.syscalls(t)?));
        Ok(out)
    }

    /// The applicable rules as linux.seccomp rules, one per alternative.
    /// A call some earlier rule already gave the same action and checks is
    /// left out, so overlapping groups (ptrace by kernel version and by
    /// capability) do not repeat it.
    fn syscalls(&self, t: &Target) -> Result<Vec<LinuxSyscall>> {
        let mut seen: HashSet<(&str, Action, Option<&ArgMatch>)> = HashSet::new();
        let mut out = Vec::new();
        for rule in self.rules.iter().filter(|r| r.when.holds(t)) {
            let alternatives: Vec<Option<&ArgMatch>> =
                if rule.args_any.is_empty() { vec![None] } else { rule.args_any.iter().map(Some).collect() };
            for args in alternatives {
                let names: Vec<String> =
                    rule.syscalls.iter().filter(|n| seen.insert((n.as_str(), rule.action, args))).cloned().collect();
                if !names.is_empty() {
                    out.push(syscall(names, rule.action, args)?);
                }
            }
        }
        Ok(out)
    }
}

impl Rule {
    fn check(&self, never: &HashSet<&str>) -> std::result::Result<(), String> {
        if self.comment.is_empty() || self.syscalls.is_empty() {
            return Err("a rule needs a comment and syscalls".into());
        }
        if let Some(n) = self.syscalls.iter().find(|n| never.contains(n.as_str())) {
            return Err(format!("{n:?} is listed under `never`"));
        }
        let w = &self.when;
        w.arch.iter().chain(&w.not_arch).try_for_each(|a| arch(a).map(drop))?;
        match w.any_cap.iter().chain(&w.no_cap).find(|c| normalize_cap(c) != **c) {
            Some(c) => Err(format!("capability {c:?} is not spelled CAP_NAME")),
            None => Ok(()),
        }
    }
}

impl When {
    fn holds(&self, t: &Target) -> bool {
        let has = |c: &String| t.caps.contains(c);
        (self.any_cap.is_empty() || self.any_cap.iter().any(has))
            && !self.no_cap.iter().any(has)
            && (self.arch.is_empty() || self.arch.iter().any(|a| a == t.arch))
            && !self.not_arch.iter().any(|a| a == t.arch)
            && self.min_kernel.is_none_or(|k| t.kernel >= k)
    }
}

impl Action {
    fn to_oci(self) -> (LinuxSeccompAction, Option<u32>) {
        match self {
            Action::Allow => (LinuxSeccompAction::ScmpActAllow, None),
            Action::Errno(Errno(e)) => (LinuxSeccompAction::ScmpActErrno, Some(e)),
        }
    }
}

fn syscall(names: Vec<String>, action: Action, args: Option<&ArgMatch>) -> Result<LinuxSyscall> {
    let mut s = LinuxSyscall::default();
    let (action, errno) = action.to_oci();
    s.set_names(names);
    s.set_action(action);
    s.set_errno_ret(errno);
    s.set_args(args.map(|m| m.0.iter().copied().map(Check::to_oci).collect::<Result<_>>()).transpose()?);
    Ok(s)
}

impl Check {
    fn to_oci(self) -> Result<LinuxSeccompArg> {
        // linux.seccomp's masked form: (arg & value) == valueTwo.
        let (op, value, value_two) = match self.op {
            Op::Eq => (LinuxSeccompOperator::ScmpCmpEq, self.value, None),
            Op::Ne => (LinuxSeccompOperator::ScmpCmpNe, self.value, None),
            Op::Lt => (LinuxSeccompOperator::ScmpCmpLt, self.value, None),
            Op::Le => (LinuxSeccompOperator::ScmpCmpLe, self.value, None),
            Op::Gt => (LinuxSeccompOperator::ScmpCmpGt, self.value, None),
            Op::Ge => (LinuxSeccompOperator::ScmpCmpGe, self.value, None),
            Op::MaskedEq(mask) => (LinuxSeccompOperator::ScmpCmpMaskedEq, mask, Some(self.value)),
        };
        let b = LinuxSeccompArgBuilder::default().index(self.index).op(op).value(value);
        let b = match value_two {
            Some(v) => b.value_two(v),
            None => b,
        };
        // Every field has a default, so building cannot fail.
        b.build().map_err(|e| Error::Evaluate(e.to_string()))
    }
}

impl TryFrom<String> for ArgMatch {
    type Error = String;

    /// `"arg0 == 8"`, `"arg0 & CLONE_NEWNS|CLONE_NEWPID == 0"`, several
    /// joined by `&&`.
    fn try_from(s: String) -> std::result::Result<Self, String> {
        let checks: Vec<Check> = s.split("&&").map(|c| parse_check(c.trim())).collect::<std::result::Result<_, _>>()?;
        // libseccomp cannot AND two checks of one argument; runtimes turn
        // them into alternatives (OR), which would change the meaning.
        let mut indexes = HashSet::new();
        if checks.iter().any(|c| !indexes.insert(c.index)) {
            return Err(format!("{s:?} checks one argument twice"));
        }
        Ok(ArgMatch(checks))
    }
}

fn parse_check(s: &str) -> std::result::Result<Check, String> {
    let words: Vec<&str> = s.split_whitespace().collect();
    let (arg, op, value) = match words[..] {
        [arg, op, value] => (arg, op, value),
        [arg, "&", mask, "==", value] => (arg, mask, value),
        _ => return Err(format!("{s:?} is not `argN OP VALUE` or `argN & MASK == VALUE`")),
    };
    let index = arg
        .strip_prefix("arg")
        .and_then(|n| n.parse().ok())
        .filter(|i| *i < 6)
        .ok_or_else(|| format!("{s:?}: {arg:?} is not arg0..arg5"))?;
    let op = match op {
        "==" => Op::Eq,
        "!=" => Op::Ne,
        "<" => Op::Lt,
        "<=" => Op::Le,
        ">" => Op::Gt,
        ">=" => Op::Ge,
        mask => Op::MaskedEq(parse_value(mask).map_err(|e| format!("{s:?}: {e}"))?),
    };
    Ok(Check { index, op, value: parse_value(value).map_err(|e| format!("{s:?}: {e}"))? })
}

/// A number (decimal or 0x hex), a name from [`CONSTANTS`], or several
/// ORed with `|`.
fn parse_value(s: &str) -> std::result::Result<u64, String> {
    s.split('|').try_fold(0, |acc, word| {
        let v = match word.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => word.parse().ok().or_else(|| CONSTANTS.iter().find(|(n, _)| *n == word).map(|(_, v)| *v)),
        };
        v.map(|v| acc | v).ok_or_else(|| format!("{word:?} is neither a number nor a known constant"))
    })
}

impl TryFrom<String> for Errno {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        match ERRNOS.iter().find(|(n, _)| *n == s) {
            Some((_, e)) => Ok(Errno(*e as u32)),
            None => Err(format!("unknown errno {s:?}")),
        }
    }
}

impl TryFrom<String> for Kernel {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        Kernel::parse(&s).ok_or_else(|| format!("kernel version {s:?} is not MAJOR.MINOR"))
    }
}

impl Kernel {
    /// The major and minor numbers of "6.8", "6.8.0-45-generic" or
    /// "3.12-1-amd64"; the rest is ignored, as Docker does.
    fn parse(release: &str) -> Option<Kernel> {
        let mut parts = release.splitn(3, '.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?;
        let digits = minor.find(|c: char| !c.is_ascii_digit()).unwrap_or(minor.len());
        Some(Kernel { major, minor: minor[..digits].parse().ok()? })
    }
}

/// The running kernel's version (uname's release; /proc keeps this crate
/// free of another unsafe call).
fn host_kernel() -> Result<Kernel> {
    const RELEASE: &str = "/proc/sys/kernel/osrelease";
    let release = std::fs::read_to_string(RELEASE).map_err(|source| Error::Io { path: RELEASE, source })?;
    Kernel::parse(release.trim()).ok_or_else(|| Error::Evaluate(format!("unknown kernel version {release:?}")))
}

fn arch(name: &str) -> std::result::Result<Arch, String> {
    match ARCHES.iter().find(|(n, _)| *n == name) {
        Some((_, a)) => Ok(*a),
        None => Err(format!("unknown architecture {name:?}")),
    }
}

/// This host's architecture, in the profile's names.
fn host_arch() -> &'static str {
    let little = cfg!(target_endian = "little");
    let wide = cfg!(target_pointer_width = "64");
    match std::env::consts::ARCH {
        "powerpc64" if little => "ppc64le",
        "powerpc64" => "ppc64",
        "powerpc" => "ppc",
        "mips64" if !wide && little => "mipsel64n32",
        "mips64" if !wide => "mips64n32",
        "mips64" if little => "mipsel64",
        "mips" if little => "mipsel",
        other => other,
    }
}

/// "sys_admin" and "CAP_SYS_ADMIN" alike, as the engine's users write both.
fn normalize_caps(caps: &[String]) -> HashSet<String> {
    caps.iter().map(|c| normalize_cap(c)).collect()
}

fn normalize_cap(cap: &str) -> String {
    let upper = cap.to_ascii_uppercase();
    if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER_CAPS: &[&str] = &DOCKER_DEFAULT_CAPS;

    const NEW_KERNEL: Kernel = Kernel { major: 6, minor: 1 };

    fn with(extra: &[&str]) -> Vec<String> {
        DOCKER_CAPS.iter().chain(extra).map(|c| c.to_string()).collect()
    }

    fn all_caps() -> Vec<String> {
        caps::all().iter().map(|c| c.to_string()).collect()
    }

    fn eval(caps: &[String], arch: &str, kernel: Kernel) -> LinuxSeccomp {
        let t = Target { arch, caps: normalize_caps(caps), kernel };
        profile().unwrap().evaluate(&t).unwrap()
    }

    fn x86(caps: &[String]) -> LinuxSeccomp {
        eval(caps, "x86_64", NEW_KERNEL)
    }

    fn rules_for<'a>(s: &'a LinuxSeccomp, call: &str) -> Vec<&'a LinuxSyscall> {
        s.syscalls().iter().flatten().filter(|r| r.names().iter().any(|n| n == call)).collect()
    }

    /// Allowed whatever the arguments.
    fn allowed(s: &LinuxSeccomp, call: &str) -> bool {
        rules_for(s, call).iter().any(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.args().is_none())
    }

    /// No rule: the default action (EPERM).
    fn denied(s: &LinuxSeccomp, call: &str) -> bool {
        rules_for(s, call).is_empty()
    }

    /// Whether a call with first (or `index`th) argument `v` is allowed,
    /// evaluating the rules' checks as the kernel would.
    fn allows_arg(s: &LinuxSeccomp, call: &str, index: usize, v: u64) -> bool {
        let holds = |a: &LinuxSeccompArg| {
            a.index() != index
                || match a.op() {
                    LinuxSeccompOperator::ScmpCmpEq => v == a.value(),
                    LinuxSeccompOperator::ScmpCmpNe => v != a.value(),
                    LinuxSeccompOperator::ScmpCmpLt => v < a.value(),
                    LinuxSeccompOperator::ScmpCmpLe => v <= a.value(),
                    LinuxSeccompOperator::ScmpCmpGt => v > a.value(),
                    LinuxSeccompOperator::ScmpCmpGe => v >= a.value(),
                    LinuxSeccompOperator::ScmpCmpMaskedEq => v & a.value() == a.value_two().unwrap_or(0),
                }
        };
        rules_for(s, call)
            .iter()
            .any(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.args().iter().flatten().all(holds))
    }

    #[test]
    fn the_embedded_profile_parses_and_keeps_its_own_rules() {
        let p = Profile::parse(PROFILE_JSON).unwrap();
        assert!(p.rules.len() > 20);
        assert_eq!(p.default, Action::Errno(Errno(libc::EPERM as u32)));
        assert!(p.rules.iter().all(|r| !r.comment.is_empty()));
    }

    #[test]
    fn a_rule_allowing_a_never_call_or_a_typo_is_refused() {
        let bad = |rule: &str| {
            let json = format!(
                r#"{{"comment":"t","default":{{"errno":"EPERM"}},"architectures":{{}},"rules":[{rule}],
                    "never":[{{"comment":"no","syscalls":["kexec_load"]}}]}}"#
            );
            Profile::parse(&json).err().unwrap()
        };
        assert!(bad(r#"{"comment":"c","syscalls":["read","kexec_load"]}"#).contains("never"));
        assert!(bad(r#"{"comment":"c","syscalls":["read"],"when":{"arch":["amd64"]}}"#).contains("amd64"));
        assert!(bad(r#"{"comment":"c","syscalls":["read"],"when":{"any_cap":["SYS_ADMIN"]}}"#).contains("CAP_NAME"));
        assert!(bad(r#"{"comment":"","syscalls":["read"]}"#).contains("comment"));
        assert!(bad(r#"{"comment":"c","syscalls":["read"],"action":{"errno":"EWHAT"}}"#).contains("EWHAT"));
        assert!(bad(r#"{"comment":"c","syscalls":["read"],"whne":{}}"#).contains("whne"));
    }

    #[test]
    fn argument_checks_parse_from_their_short_form() {
        let m = |s: &str| ArgMatch::try_from(s.to_string());
        let c = |index, op, value| Check { index, op, value };
        assert_eq!(m("arg0 == 8").unwrap().0, [c(0, Op::Eq, 8)]);
        assert_eq!(m("arg0 < AF_ALG").unwrap().0, [c(0, Op::Lt, 38)]);
        assert_eq!(m("arg2 >= 0x10 && arg0 != 1").unwrap().0, [c(2, Op::Ge, 16), c(0, Op::Ne, 1)]);
        assert_eq!(m("arg1 & CLONE_NEWNS|0x1 == 0").unwrap().0, [c(1, Op::MaskedEq(0x20001), 0)]);
        assert_eq!(m("arg0 == PER_LINUX32|UNAME26").unwrap().0, [c(0, Op::Eq, 0x20008)]);
        for bad in ["arg6 == 1", "argv == 1", "arg0 ~ 1", "arg0 == FOO", "arg0 == 1 && arg0 == 2", "arg0 & 1 != 0"] {
            assert!(m(bad).is_err(), "{bad}");
        }
    }

    #[test]
    #[cfg(target_env = "gnu")]
    fn constants_are_the_kernel_abi() {
        let libc: &[(&str, i32)] = &[
            ("AF_ALG", libc::AF_ALG),
            ("AF_NFC", libc::AF_NFC),
            ("AF_VSOCK", libc::AF_VSOCK),
            ("CLONE_NEWNS", libc::CLONE_NEWNS),
            ("CLONE_NEWCGROUP", libc::CLONE_NEWCGROUP),
            ("CLONE_NEWUTS", libc::CLONE_NEWUTS),
            ("CLONE_NEWIPC", libc::CLONE_NEWIPC),
            ("CLONE_NEWUSER", libc::CLONE_NEWUSER),
            ("CLONE_NEWPID", libc::CLONE_NEWPID),
            ("CLONE_NEWNET", libc::CLONE_NEWNET),
            ("UNAME26", libc::UNAME26),
        ];
        for (name, v) in libc {
            assert_eq!(parse_value(name), Ok(*v as u64), "{name}");
        }
    }

    #[test]
    fn kernel_versions_parse_like_dockers() {
        let k = |major, minor| Some(Kernel { major, minor });
        assert_eq!(Kernel::parse("6.8.0-45-generic"), k(6, 8));
        assert_eq!(Kernel::parse("3.12-1-amd64"), k(3, 12));
        assert_eq!(Kernel::parse("4.8"), k(4, 8));
        assert_eq!(Kernel::parse("6.18.44-fc-v669"), k(6, 18));
        assert_eq!(Kernel::parse("6"), None);
        assert!(k(4, 10) > k(4, 8) && k(5, 0) > k(4, 20));
    }

    #[test]
    fn default_caps_allow_ordinary_programs() {
        let s = x86(&with(&[]));
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(s.default_errno_ret(), Some(libc::EPERM as u32));
        for call in [
            "read",
            "write",
            "openat",
            "execve",
            "exit_group",
            "mmap",
            "futex",
            "rt_sigaction",
            "wait4",
            "pipe2",
            "socketpair",
            "setuid",
            "chroot",
            "arch_prctl",
            "modify_ldt",
            "ioctl",
            "prctl",
            "getrandom",
            "statx",
        ] {
            assert!(allowed(&s, call), "{call}");
        }
    }

    #[test]
    fn default_caps_deny_what_could_reach_the_host() {
        let s = x86(&with(&[]));
        for call in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "pivot_root",
            "kexec_load",
            "init_module",
            "finit_module",
            "delete_module",
            "add_key",
            "keyctl",
            "request_key",
            "bpf",
            "perf_event_open",
            "reboot",
            "swapon",
            "clock_settime",
            "settimeofday",
            "acct",
            "syslog",
            "open_by_handle_at",
            "io_uring_setup",
            "userfaultfd",
            "kcmp",
            "pidfd_getfd",
            "iopl",
            "mbind",
            "vhangup",
            "fsopen",
            "move_mount",
            "lsm_list_modules",
        ] {
            assert!(denied(&s, call), "{call}");
        }
    }

    #[test]
    fn ptrace_needs_linux_4_8_or_cap_sys_ptrace() {
        let new = x86(&with(&[]));
        assert!(allowed(&new, "ptrace") && allowed(&new, "process_vm_readv"));
        let old = eval(&with(&[]), "x86_64", Kernel { major: 4, minor: 4 });
        assert!(denied(&old, "ptrace") && denied(&old, "process_vm_writev"));
        let traced = eval(&with(&["CAP_SYS_PTRACE"]), "x86_64", Kernel { major: 4, minor: 4 });
        assert!(allowed(&traced, "ptrace") && allowed(&traced, "kcmp"));
    }

    #[test]
    fn personality_only_takes_the_listed_values() {
        let s = x86(&with(&[]));
        assert!(!allowed(&s, "personality"));
        for ok in [0, 8, 0x20000, 0x20008, 0xffff_ffff] {
            assert!(allows_arg(&s, "personality", 0, ok), "{ok:#x}");
        }
        // ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, PER_BSD
        for refused in [0x0040000, 0x0400000, 0x0040008, 6] {
            assert!(!allows_arg(&s, "personality", 0, refused), "{refused:#x}");
        }
        assert_eq!(rules_for(&s, "personality").len(), 5);
    }

    #[test]
    fn sockets_of_every_family_but_af_alg_and_af_vsock() {
        for caps in [with(&[]), all_caps()] {
            let s = x86(&caps);
            assert!(!allowed(&s, "socket"));
            for family in 0..64 {
                let expected = family != libc::AF_ALG as u64 && family != 40;
                assert_eq!(allows_arg(&s, "socket", 0, family), expected, "family {family}");
            }
        }
    }

    #[test]
    fn clone_without_cap_sys_admin_makes_no_namespaces() {
        const NEW_NS: u64 = 0x7e02_0000;
        let s = x86(&with(&[]));
        assert!(!allowed(&s, "clone"));
        let thread =
            (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_SIGHAND | libc::CLONE_THREAD) as u64;
        assert!(allows_arg(&s, "clone", 0, thread));
        assert!(allows_arg(&s, "clone", 0, libc::SIGCHLD as u64));
        for ns in [libc::CLONE_NEWNS, libc::CLONE_NEWUSER, libc::CLONE_NEWPID, libc::CLONE_NEWNET] {
            assert!(!allows_arg(&s, "clone", 0, ns as u64 | libc::SIGCHLD as u64), "{ns:#x}");
        }
        let rule = rules_for(&s, "clone")[0].args().clone().unwrap();
        assert_eq!((rule[0].value(), rule[0].value_two()), (NEW_NS, Some(0)));
        // clone3 fails with ENOSYS, so callers fall back to clone.
        let clone3 = rules_for(&s, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!((clone3[0].action(), clone3[0].errno_ret()), (LinuxSeccompAction::ScmpActErrno, Some(38)));
        // s390 passes the flags second.
        let s390 = eval(&with(&[]), "s390x", NEW_KERNEL);
        assert!(allows_arg(&s390, "clone", 0, NEW_NS) && !allows_arg(&s390, "clone", 1, NEW_NS));
    }

    #[test]
    fn cap_sys_admin_allows_namespaces_and_mounts() {
        let s = x86(&with(&["CAP_SYS_ADMIN"]));
        for call in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "clone",
            "clone3",
            "fsopen",
            "open_tree",
            "sethostname",
            "bpf",
            "perf_event_open",
            "syslog",
            "quotactl",
            "lsm_get_self_attr",
        ] {
            assert!(allowed(&s, call), "{call}");
        }
        assert_eq!(rules_for(&s, "clone").len(), 1, "no leftover argument rule");
        assert_eq!(rules_for(&s, "clone3").len(), 1, "no leftover ENOSYS rule");
        for call in ["pivot_root", "kexec_load", "swapon", "init_module", "reboot", "keyctl"] {
            assert!(denied(&s, call), "{call}");
        }
    }

    #[test]
    fn each_capability_opens_its_own_calls() {
        let table: &[(&str, &[&str])] = &[
            ("CAP_SYS_BOOT", &["reboot"]),
            ("CAP_SYS_MODULE", &["init_module", "finit_module", "delete_module"]),
            ("CAP_SYS_TIME", &["clock_settime", "settimeofday"]),
            ("CAP_SYS_PTRACE", &["kcmp", "pidfd_getfd", "process_madvise"]),
            ("CAP_SYSLOG", &["syslog"]),
            ("CAP_SYS_NICE", &["mbind", "set_mempolicy", "get_mempolicy"]),
            ("CAP_BPF", &["bpf"]),
            ("CAP_PERFMON", &["perf_event_open"]),
            ("CAP_SYS_PACCT", &["acct"]),
            ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
            ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
            ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
        ];
        let base = x86(&with(&[]));
        for (cap, calls) in table {
            let s = x86(&with(&[cap]));
            for call in *calls {
                assert!(denied(&base, call) && allowed(&s, call), "{cap} {call}");
            }
            // Nothing else changes: the rules differ by exactly those calls.
            let extra = s.syscalls().as_ref().unwrap().len() - base.syscalls().as_ref().unwrap().len();
            assert_eq!(extra, 1, "{cap}");
            assert!(denied(&s, "mount"), "{cap}");
        }
        // Without CAP_SYS_CHROOT (which Docker grants), no chroot.
        let no_chroot: Vec<String> = with(&[]).into_iter().filter(|c| c != "CAP_SYS_CHROOT").collect();
        assert!(denied(&x86(&no_chroot), "chroot"));
    }

    #[test]
    fn never_calls_stay_denied_with_every_capability() {
        let p = profile().unwrap();
        for arch in ["x86_64", "aarch64"] {
            let s = eval(&all_caps(), arch, NEW_KERNEL);
            for call in p.never.iter().flat_map(|g| &g.syscalls) {
                assert!(denied(&s, call), "{arch} {call}");
            }
        }
    }

    #[test]
    fn capability_names_are_normalized() {
        let short = x86(&["sys_admin".to_string()]);
        assert_eq!(short, x86(&["CAP_SYS_ADMIN".to_string()]));
        assert!(allowed(&short, "mount"));
    }

    #[test]
    fn architectures_cover_the_compat_abis() {
        let x = x86(&with(&[]));
        let abis = [Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32];
        assert_eq!(x.architectures().as_deref(), Some(&abis[..]));
        let a = eval(&with(&[]), "aarch64", NEW_KERNEL);
        assert_eq!(a.architectures().as_deref(), Some(&[Arch::ScmpArchAarch64, Arch::ScmpArchArm][..]));
        // Architecture-specific calls follow the host.
        assert!(allowed(&x, "arch_prctl") && denied(&x, "set_tls") && denied(&x, "cacheflush"));
        assert!(denied(&a, "arch_prctl") && allowed(&a, "set_tls") && allowed(&a, "cacheflush"));
        assert!(denied(&a, "modify_ldt"));
        // A host without an entry filters its native ABI only.
        assert_eq!(eval(&with(&[]), "ppc64le", NEW_KERNEL).architectures(), &None);
        assert!(default_profile_for(&with(&[]), "amd64").is_err());
    }

    #[test]
    fn no_call_is_listed_twice_with_the_same_checks() {
        let s = x86(&all_caps());
        let mut seen = HashSet::new();
        for r in s.syscalls().iter().flatten() {
            for n in r.names() {
                assert!(seen.insert((n.clone(), format!("{:?}", r.args()))), "{n} twice");
            }
        }
        assert!(allowed(&s, "ptrace"));
    }

    #[test]
    fn the_host_profile_matches_the_host() {
        let s = default_profile(&with(&[])).unwrap();
        assert_eq!(s, default_profile_for(&with(&[]), host_arch()).unwrap());
        if cfg!(target_arch = "x86_64") {
            assert!(allowed(&s, "arch_prctl"));
        }
    }
}
