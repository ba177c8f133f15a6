//! Process attributes the kernel keeps across fork and exec, set in the
//! container's process before it execs: process.scheduler
//! (sched_setattr), process.ioPriority (ioprio_set), linux.personality,
//! linux.memoryPolicy (set_mempolicy), and process.execCPUAffinity
//! (sched_setaffinity, from the runtime).
//!
//! Each `check_*` validates a field without touching the process, naming
//! the field, so a bad config.json fails before anything starts.

use oci_spec::runtime::{
    IOPriorityClass, LinuxIOPriority, LinuxMemoryPolicy, LinuxPersonality, LinuxPersonalityDomain, LinuxSchedulerFlag,
    LinuxSchedulerPolicy, MemoryPolicyFlagType, MemoryPolicyModeType, Scheduler,
};

use crate::error::{Error, Result};

type Check = std::result::Result<(), String>;

// sched_setattr(2): policies and flags.
const SCHED_OTHER: u32 = 0;
const SCHED_FIFO: u32 = 1;
const SCHED_RR: u32 = 2;
const SCHED_BATCH: u32 = 3;
const SCHED_ISO: u32 = 4;
const SCHED_IDLE: u32 = 5;
const SCHED_DEADLINE: u32 = 6;

/// struct sched_attr, SCHED_ATTR_SIZE_VER1 (with the utilization clamps).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

fn policy_number(p: LinuxSchedulerPolicy) -> u32 {
    match p {
        LinuxSchedulerPolicy::SchedOther => SCHED_OTHER,
        LinuxSchedulerPolicy::SchedFifo => SCHED_FIFO,
        LinuxSchedulerPolicy::SchedRr => SCHED_RR,
        LinuxSchedulerPolicy::SchedBatch => SCHED_BATCH,
        LinuxSchedulerPolicy::SchedIso => SCHED_ISO,
        LinuxSchedulerPolicy::SchedIdle => SCHED_IDLE,
        LinuxSchedulerPolicy::SchedDeadline => SCHED_DEADLINE,
    }
}

fn sched_flag(f: LinuxSchedulerFlag) -> u64 {
    match f {
        LinuxSchedulerFlag::SchedResetOnFork => 0x01,
        LinuxSchedulerFlag::SchedFlagReclaim => 0x02,
        LinuxSchedulerFlag::SchedFlagDLOverrun => 0x04,
        LinuxSchedulerFlag::SchedFlagKeepPolicy => 0x08,
        LinuxSchedulerFlag::SchedFlagKeepParams => 0x10,
        LinuxSchedulerFlag::SchedFlagUtilClampMin => 0x20,
        LinuxSchedulerFlag::SchedFlagUtilClampMax => 0x40,
    }
}

/// process.scheduler, with runc's rules (and the kernel's ranges).
pub fn check_scheduler(s: &Scheduler) -> Check {
    let policy = *s.policy();
    if let Some(n) = s.nice().filter(|n| !(-20..=19).contains(n)) {
        return Err(format!("process.scheduler.nice: {n} is out of range (-20 to 19)"));
    }
    let realtime = matches!(policy, LinuxSchedulerPolicy::SchedFifo | LinuxSchedulerPolicy::SchedRr);
    match s.priority() {
        Some(p) if realtime && !(1..=99).contains(p) => {
            return Err(format!("process.scheduler.priority: {p} is out of range (1 to 99 for {policy})"));
        }
        Some(p) if !realtime && *p != 0 => {
            return Err(format!("process.scheduler.priority: {p} can only be set for SCHED_FIFO or SCHED_RR"));
        }
        None if realtime => return Err(format!("process.scheduler.priority: {policy} needs a priority (1 to 99)")),
        _ => {}
    }
    let deadline = [s.runtime(), s.deadline(), s.period()];
    if policy != LinuxSchedulerPolicy::SchedDeadline && deadline.iter().any(|v| v.is_some_and(|v| v != 0)) {
        return Err("process.scheduler: runtime, deadline and period are only for SCHED_DEADLINE".into());
    }
    if policy == LinuxSchedulerPolicy::SchedIso {
        return Err("process.scheduler.policy: SCHED_ISO is not implemented by Linux".into());
    }
    Ok(())
}

/// Sets process.scheduler on this process (before the capabilities go: a
/// real-time policy or a negative nice needs CAP_SYS_NICE).
pub fn apply_scheduler(s: &Scheduler) -> Result<()> {
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: policy_number(*s.policy()),
        flags: s.flags().iter().flatten().map(|f| sched_flag(*f)).fold(0, |a, b| a | b),
        nice: s.nice().unwrap_or(0),
        priority: s.priority().unwrap_or(0) as u32,
        runtime: s.runtime().unwrap_or(0),
        deadline: s.deadline().unwrap_or(0),
        period: s.period().unwrap_or(0),
        ..SchedAttr::default()
    };
    // SAFETY: sched_setattr reads `attr.size` bytes of a live, properly
    // laid out struct sched_attr; pid 0 is this thread.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        let realtime = matches!(attr.policy, SCHED_FIFO | SCHED_RR | SCHED_DEADLINE);
        // The kernel's EPERM does not say that a real-time task needs run
        // time in its cpu cgroup (with RT group scheduling): say it.
        let hint = if realtime && e.raw_os_error() == Some(libc::EPERM) {
            " (a real-time policy needs CAP_SYS_NICE and, where the kernel has RT group scheduling, \
             linux.resources.cpu.realtimeRuntime for the container's cgroup)"
        } else {
            ""
        };
        return Err(Error::os(format!("sched_setattr ({}, process.scheduler{hint})", s.policy()), e));
    }
    Ok(())
}

const IOPRIO_WHO_PROCESS: libc::c_int = 1;
const IOPRIO_CLASS_SHIFT: i64 = 13;

pub fn check_io_priority(p: &LinuxIOPriority) -> Check {
    if !(0..=7).contains(&p.priority()) {
        return Err(format!("process.ioPriority.priority: {} is out of range (0 to 7)", p.priority()));
    }
    Ok(())
}

/// process.ioPriority, for this process (and so its children).
pub fn apply_io_priority(p: &LinuxIOPriority) -> Result<()> {
    let class = match p.class() {
        IOPriorityClass::IoprioClassRt => 1,
        IOPriorityClass::IoprioClassBe => 2,
        IOPriorityClass::IoprioClassIdle => 3,
    };
    let value = (class << IOPRIO_CLASS_SHIFT) | p.priority();
    // SAFETY: ioprio_set takes plain integers; who=0 is this process.
    let r = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, value) };
    if r != 0 {
        return Err(Error::os(
            format!("ioprio_set ({}, process.ioPriority)", p.class()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// The personality(2) flags runtime-spec names, by their names.
fn personality_flag(name: &str) -> Option<libc::c_ulong> {
    Some(match name {
        "UNAME26" => 0x0020000,
        "ADDR_NO_RANDOMIZE" => 0x0040000,
        "FDPIC_FUNCPTRS" => 0x0080000,
        "MMAP_PAGE_ZERO" => 0x0100000,
        "ADDR_COMPAT_LAYOUT" => 0x0200000,
        "READ_IMPLIES_EXEC" => 0x0400000,
        "ADDR_LIMIT_32BIT" => 0x0800000,
        "SHORT_INODE" => 0x1000000,
        "WHOLE_SECONDS" => 0x2000000,
        "STICKY_TIMEOUTS" => 0x4000000,
        "ADDR_LIMIT_3GB" => 0x8000000,
        _ => return None,
    })
}

pub fn check_personality(p: &LinuxPersonality) -> Check {
    for (i, f) in p.flags().iter().flatten().enumerate() {
        if personality_flag(f).is_none() {
            return Err(format!("linux.personality.flags[{i}]: unknown personality flag {f:?}"));
        }
    }
    Ok(())
}

/// linux.personality for this process (exec keeps it).
pub fn apply_personality(p: &LinuxPersonality) -> Result<()> {
    let domain: libc::c_ulong = match p.domain() {
        LinuxPersonalityDomain::PerLinux => 0x0000,
        LinuxPersonalityDomain::PerLinux32 => 0x0008,
    };
    let flags = p.flags().iter().flatten().filter_map(|f| personality_flag(f)).fold(0, |a, b| a | b);
    // SAFETY: personality takes a plain integer.
    if unsafe { libc::personality(domain | flags) } == -1 {
        return Err(Error::os(
            format!("personality ({}, linux.personality)", p.domain()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn mempolicy_mode(m: MemoryPolicyModeType) -> libc::c_int {
    match m {
        MemoryPolicyModeType::MpolDefault => 0,
        MemoryPolicyModeType::MpolPreferred => 1,
        MemoryPolicyModeType::MpolBind => 2,
        MemoryPolicyModeType::MpolInterleave => 3,
        MemoryPolicyModeType::MpolLocal => 4,
        MemoryPolicyModeType::MpolPreferredMany => 5,
        MemoryPolicyModeType::MpolWeightedInterleave => 6,
    }
}

fn mempolicy_flag(f: MemoryPolicyFlagType) -> libc::c_int {
    match f {
        MemoryPolicyFlagType::MpolFStaticNodes => 1 << 15,
        MemoryPolicyFlagType::MpolFRelativeNodes => 1 << 14,
        MemoryPolicyFlagType::MpolFNumaBalancing => 1 << 13,
    }
}

/// A list such as "0-3,7" (cpus or NUMA nodes), as numbers.
pub fn parse_list(s: &str) -> std::result::Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |n: &str| n.trim().parse::<usize>().map_err(|_| format!("{part:?} is not a number or a range"));
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b || b >= 1 << 16 {
                    return Err(format!("{part:?} is not a valid range"));
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    Ok(out)
}

/// linux.memoryPolicy, against the host's online NUMA nodes: a node the
/// host lacks is named (the kernel would only say EINVAL).
pub fn check_memory_policy(m: &LinuxMemoryPolicy) -> Check {
    let nodes = m.nodes().as_deref().unwrap_or("");
    let list = parse_list(nodes).map_err(|e| format!("linux.memoryPolicy.nodes: {e}"))?;
    let needs_nodes = !matches!(m.mode(), MemoryPolicyModeType::MpolDefault | MemoryPolicyModeType::MpolLocal);
    if needs_nodes && list.is_empty() {
        return Err(format!("linux.memoryPolicy.nodes: {} needs at least one node", m.mode()));
    }
    if !needs_nodes && !list.is_empty() {
        return Err(format!("linux.memoryPolicy.nodes: {} takes no nodes", m.mode()));
    }
    let relative = m.flags().iter().flatten().any(|f| *f == MemoryPolicyFlagType::MpolFRelativeNodes);
    if relative {
        // Relative node numbers are positions in the allowed set, not nodes.
        return Ok(());
    }
    let online = std::fs::read_to_string("/sys/devices/system/node/online").unwrap_or_else(|_| "0".into());
    let online = parse_list(online.trim()).unwrap_or_else(|_| vec![0]);
    if let Some(n) = list.iter().find(|n| !online.contains(n)) {
        return Err(format!(
            "linux.memoryPolicy.nodes: NUMA node {n} does not exist on this host (online nodes: {})",
            ranges(&online)
        ));
    }
    Ok(())
}

/// "0-3,7" from [0, 1, 2, 3, 7].
fn ranges(v: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        out.push(if i == j { v[i].to_string() } else { format!("{}-{}", v[i], v[j]) });
        i = j + 1;
    }
    out.join(",")
}

/// linux.memoryPolicy for this process (fork and exec keep it).
pub fn apply_memory_policy(m: &LinuxMemoryPolicy) -> Result<()> {
    let list = parse_list(m.nodes().as_deref().unwrap_or(""))
        .map_err(|e| Error::Container(format!("linux.memoryPolicy.nodes: {e}")))?;
    let bits = usize::BITS as usize;
    let maxnode = list.iter().max().map_or(0, |n| n + 1);
    let mut mask = vec![0 as libc::c_ulong; maxnode.div_ceil(bits).max(1)];
    for n in &list {
        mask[n / bits] |= 1 << (n % bits);
    }
    let mode = mempolicy_mode(m.mode()) | m.flags().iter().flatten().map(|f| mempolicy_flag(*f)).fold(0, |a, b| a | b);
    let (ptr, max) = if list.is_empty() { (std::ptr::null(), 0) } else { (mask.as_ptr(), maxnode + 1) };
    // SAFETY: the kernel reads `max - 1` bits of `mask`, which holds at
    // least that many; a null mask with maxnode 0 is "no nodes".
    let r = unsafe { libc::syscall(libc::SYS_set_mempolicy, mode, ptr, max) };
    if r != 0 {
        return Err(Error::os(
            format!("set_mempolicy ({}, linux.memoryPolicy)", m.mode()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// process.execCPUAffinity's lists.
pub fn check_cpu_list(field: &str, s: &str) -> Check {
    let cpus = parse_list(s).map_err(|e| format!("{field}: {e}"))?;
    if cpus.is_empty() {
        return Err(format!("{field}: names no CPU"));
    }
    Ok(())
}

/// Pins `pid` (0: this process) to the CPUs in `list`; `field` names the
/// setting in the error.
pub fn set_affinity(pid: i32, list: &str, field: &str) -> Result<()> {
    let cpus = parse_list(list).map_err(|e| Error::Container(format!("{field}: {e}")))?;
    let mut set = nix::sched::CpuSet::new();
    for c in &cpus {
        set.set(*c).map_err(|_| {
            Error::Container(format!(
                "{field}: CPU {c} is beyond what this runtime can address ({})",
                nix::sched::CpuSet::count()
            ))
        })?;
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(pid), &set).map_err(|e| match e {
        nix::errno::Errno::EINVAL => {
            Error::Container(format!("{field}: none of CPUs {list:?} is online and allowed for the process"))
        }
        e => Error::os(format!("sched_setaffinity {list:?} ({field})"), e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_like_the_kernels() {
        assert_eq!(parse_list("0-3,7").unwrap(), vec![0, 1, 2, 3, 7]);
        assert_eq!(parse_list("").unwrap(), Vec::<usize>::new());
        assert!(parse_list("3-1").is_err());
        assert!(parse_list("a").is_err());
        assert_eq!(ranges(&[0, 1, 2, 3, 7, 9, 10]), "0-3,7,9-10");
    }

    #[test]
    fn scheduler_rules_name_the_field() {
        let s: Scheduler = serde_json::from_str(r#"{"policy":"SCHED_FIFO"}"#).unwrap();
        assert!(check_scheduler(&s).unwrap_err().contains("process.scheduler.priority"));
        let s: Scheduler = serde_json::from_str(r#"{"policy":"SCHED_OTHER","nice":25}"#).unwrap();
        assert!(check_scheduler(&s).unwrap_err().contains("process.scheduler.nice: 25"));
        let s: Scheduler = serde_json::from_str(r#"{"policy":"SCHED_BATCH","runtime":5}"#).unwrap();
        assert!(check_scheduler(&s).unwrap_err().contains("SCHED_DEADLINE"));
        let s: Scheduler = serde_json::from_str(r#"{"policy":"SCHED_RR","priority":5,"nice":-3}"#).unwrap();
        check_scheduler(&s).unwrap();
    }

    #[test]
    fn a_memory_policy_node_the_host_lacks_is_named() {
        let m: LinuxMemoryPolicy = serde_json::from_str(r#"{"mode":"MPOL_BIND","nodes":"0,4095"}"#).unwrap();
        let msg = check_memory_policy(&m).unwrap_err();
        assert!(msg.contains("NUMA node 4095 does not exist on this host"), "{msg}");
        let m: LinuxMemoryPolicy = serde_json::from_str(r#"{"mode":"MPOL_BIND"}"#).unwrap();
        assert!(check_memory_policy(&m).unwrap_err().contains("needs at least one node"));
        let m: LinuxMemoryPolicy = serde_json::from_str(r#"{"mode":"MPOL_LOCAL"}"#).unwrap();
        check_memory_policy(&m).unwrap();
    }
}
