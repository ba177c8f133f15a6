//! Device access rules (linux.resources.devices), shared by the v1 devices
//! controller and the v2 eBPF device filter.
//!
//! Semantics: the last rule that matches an access decides it. An allow
//! matches only if it grants every access asked for (read and write, for
//! an O_RDWR open), as the kernel's v1 controller checks; a deny matches if
//! it takes away any of them, so a later "deny r" also stops O_RDWR. An
//! access no rule matches is denied once the list starts with a deny-all,
//! as runc's default spec does, and allowed otherwise.
//!
//! The devices every container needs (null, zero, full, random, urandom,
//! tty, console, ptmx, /dev/pts/*, and mknod of anything) are allowed by
//! default. runc and crun append those allows *after* the user's rules, so
//! a user can never deny, say, /dev/urandom. berth inserts them right after
//! the leading deny-all instead: the result is the same for every spec
//! Docker, podman or Kubernetes generate (deny-all, then allows), and a
//! later rule can still take a default away.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

/// What kind of device a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// 'a': every device, char and block.
    All,
    Char,
    Block,
}

/// One rule: allow or deny `access` (a subset of "rwm") to matching devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: DeviceKind,
    /// None: any major (`*`).
    pub major: Option<i64>,
    /// None: any minor (`*`).
    pub minor: Option<i64>,
    /// Some of 'r' (read), 'w' (write), 'm' (mknod), in that order.
    pub access: String,
}

impl DeviceRule {
    pub fn allow(kind: DeviceKind, major: Option<i64>, minor: Option<i64>, access: &str) -> DeviceRule {
        DeviceRule { allow: true, kind, major, minor, access: normalize_access(access) }
    }

    /// True for a rule that matches every device with every access.
    pub fn is_all(&self) -> bool {
        self.kind == DeviceKind::All && self.major.is_none() && self.minor.is_none() && self.access == "rwm"
    }

    /// The rule in the v1 devices.allow / devices.deny syntax: "c 1:3 rwm".
    pub fn to_v1(&self) -> String {
        let kind = match self.kind {
            DeviceKind::All => 'a',
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
        };
        let num = |n: Option<i64>| n.map(|v| v.to_string()).unwrap_or_else(|| "*".into());
        format!("{kind} {}:{} {}", num(self.major), num(self.minor), self.access)
    }

    /// True if this rule decides an access of `kind` to `major:minor` with
    /// `access` (one or more of r, w, m): see the module docs.
    pub fn matches(&self, kind: DeviceKind, major: i64, minor: i64, access: &str) -> bool {
        let device = (self.kind == DeviceKind::All || self.kind == kind)
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor);
        let covers = if self.allow {
            access.chars().all(|c| self.access.contains(c))
        } else {
            access.chars().any(|c| self.access.contains(c))
        };
        device && covers
    }
}

/// "mwr" -> "rwm"; unknown letters dropped; empty means all.
fn normalize_access(a: &str) -> String {
    if a.is_empty() {
        return "rwm".into();
    }
    "rwm".chars().filter(|c| a.contains(*c)).collect()
}

/// The rules from config.json.
pub fn from_spec(rules: &[LinuxDeviceCgroup]) -> Vec<DeviceRule> {
    rules
        .iter()
        .map(|r| DeviceRule {
            allow: r.allow(),
            kind: match r.typ() {
                Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => DeviceKind::Char,
                Some(LinuxDeviceType::B) => DeviceKind::Block,
                _ => DeviceKind::All,
            },
            major: r.major().filter(|m| *m >= 0),
            minor: r.minor().filter(|m| *m >= 0),
            access: normalize_access(r.access().as_deref().unwrap_or("rwm")),
        })
        .collect()
}

/// The devices every container may use (runc's and crun's list).
pub fn default_allowed() -> Vec<DeviceRule> {
    use DeviceKind::*;
    vec![
        DeviceRule::allow(Char, None, None, "m"),
        DeviceRule::allow(Block, None, None, "m"),
        DeviceRule::allow(Char, Some(1), Some(3), "rwm"),    // null
        DeviceRule::allow(Char, Some(1), Some(8), "rwm"),    // random
        DeviceRule::allow(Char, Some(1), Some(7), "rwm"),    // full
        DeviceRule::allow(Char, Some(5), Some(0), "rwm"),    // tty
        DeviceRule::allow(Char, Some(1), Some(5), "rwm"),    // zero
        DeviceRule::allow(Char, Some(1), Some(9), "rwm"),    // urandom
        DeviceRule::allow(Char, Some(5), Some(1), "rwm"),    // console
        DeviceRule::allow(Char, Some(136), None, "rwm"),     // /dev/pts/*
        DeviceRule::allow(Char, Some(5), Some(2), "rwm"),    // ptmx
        DeviceRule::allow(Char, Some(10), Some(200), "rwm"), // net/tun
    ]
}

/// The full rule list for a container: config.json's rules with the
/// default allows after its leading deny-all (see module docs).
/// An empty list means "no device restrictions": nothing is added.
///
/// The order written is: the leading deny-all, the user's rules, the
/// defaults, then the user's rules again. Decisions are those of
/// "deny-all, defaults, user's rules" (the last pass of the user's rules
/// comes after the defaults), but v1's devices.list, which lists entries
/// in the order they were first added, starts with the user's rules in
/// their order, as runtime-tools' validation (and youki) expect, not with
/// berth's defaults.
pub fn effective_rules(spec_rules: &[DeviceRule]) -> Vec<DeviceRule> {
    if spec_rules.is_empty() {
        return Vec::new();
    }
    let lead = spec_rules.iter().take_while(|r| !r.allow && r.is_all()).count();
    let user = &spec_rules[lead..];
    let mut out = spec_rules[..lead].to_vec();
    out.extend_from_slice(user);
    out.extend(default_allowed());
    out.extend_from_slice(user);
    out
}

/// Whether the rules allow an access (last matching rule wins; no match:
/// denied if the list starts with a deny-all, allowed otherwise). The
/// reference both backends are tested against.
pub fn allowed(rules: &[DeviceRule], kind: DeviceKind, major: i64, minor: i64, access: &str) -> bool {
    match rules.iter().rev().find(|r| r.matches(kind, major, minor, access)) {
        Some(r) => r.allow,
        None => !rules.first().is_some_and(|r| !r.allow && r.is_all()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeviceKind::*;

    fn deny_all() -> DeviceRule {
        DeviceRule { allow: false, kind: All, major: None, minor: None, access: "rwm".into() }
    }

    #[test]
    fn defaults_follow_the_leading_deny_all_so_later_rules_win() {
        let deny_urandom_read =
            DeviceRule { allow: false, kind: Char, major: Some(1), minor: Some(9), access: "r".into() };
        let rules = effective_rules(&[deny_all(), deny_urandom_read]);
        assert!(!rules[0].allow && rules[0].is_all());
        assert!(allowed(&rules, Char, 1, 3, "rw"), "null is allowed by default");
        assert!(allowed(&rules, Char, 136, 4, "rw"), "any pty slave");
        assert!(!allowed(&rules, Char, 1, 9, "r"), "the user's later deny wins");
        assert!(allowed(&rules, Char, 1, 9, "w"), "only read was denied");
        assert!(!allowed(&rules, Char, 1, 9, "rw"), "an O_RDWR open needs read too");
        assert!(!allowed(&rules, Block, 8, 0, "r"), "everything else is denied");
        assert!(allowed(&rules, Block, 8, 0, "m"), "mknod is allowed, as with runc");
    }

    #[test]
    fn the_users_rules_come_first_and_still_decide_over_the_defaults() {
        let fuse = DeviceRule::allow(Char, Some(10), Some(229), "rwm");
        let deny_null = DeviceRule { allow: false, kind: Char, major: Some(1), minor: Some(3), access: "rwm".into() };
        let rules = effective_rules(&[deny_all(), fuse.clone(), deny_null.clone()]);
        assert_eq!(rules[1..3], [fuse, deny_null], "the user's rules right after the deny-all");
        assert!(allowed(&rules, Char, 10, 229, "rw"));
        assert!(!allowed(&rules, Char, 1, 3, "r"), "a user's deny still takes a default away");
        assert!(allowed(&rules, Char, 1, 5, "rw"), "zero is still allowed");
    }

    #[test]
    fn no_rules_means_no_restrictions() {
        assert!(effective_rules(&[]).is_empty());
        assert!(allowed(&[], Block, 8, 0, "rwm"));
    }

    #[test]
    fn v1_syntax() {
        assert_eq!(deny_all().to_v1(), "a *:* rwm");
        assert_eq!(DeviceRule::allow(Char, Some(136), None, "wr").to_v1(), "c 136:* rw");
    }

    #[test]
    fn spec_rules_convert() {
        let spec: Vec<LinuxDeviceCgroup> = serde_json::from_str(
            r#"[{"allow":false,"access":"rwm"},{"allow":true,"type":"b","major":8,"minor":-1,"access":"mr"}]"#,
        )
        .unwrap();
        let rules = from_spec(&spec);
        assert!(rules[0].is_all() && !rules[0].allow);
        assert_eq!(rules[1], DeviceRule::allow(Block, Some(8), None, "rm"));
    }
}
