//! A process named by its pid and its start time, as runc names a
//! container's init: a pid alone may have been reused by the time anyone
//! looks again (a shim killed an hour ago, its pid now someone else's).

/// A process as it was when recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    pub pid: i32,
    /// /proc/PID/stat field 22: clock ticks after boot when it started.
    pub start: u64,
}

impl ProcessId {
    /// The process `pid` as it is now (None if there is none).
    pub fn of(pid: i32) -> Option<ProcessId> {
        Some(ProcessId { pid, start: stat(pid)?.start })
    }

    /// This process.
    pub fn current() -> Option<ProcessId> {
        ProcessId::of(std::process::id() as i32)
    }

    /// Whether this very process still runs: same pid, same start time,
    /// and not a zombie (a zombie has ended; only its status is left).
    pub fn is_alive(&self) -> bool {
        stat(self.pid).is_some_and(|s| s.start == self.start && s.state != 'Z')
    }
}

/// What berth reads of /proc/PID/stat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub state: char,
    pub ppid: i32,
    pub start: u64,
}

pub fn stat(pid: i32) -> Option<Stat> {
    if pid <= 0 {
        return None;
    }
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Fields after the command name, which may itself hold spaces and ')'.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    // rest[0] is field 3 (state), so field N is rest[N - 3].
    Some(Stat {
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        start: rest.get(19)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_last_paren() {
        let line = "42 (a) b) c) S 7 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 200 18446744073709551615";
        assert_eq!(parse_stat(line), Some(Stat { state: 'S', ppid: 7, start: 98765 }));
        assert_eq!(parse_stat("1 (x) S 0"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessId::current().unwrap();
        assert!(me.is_alive());
        assert!(!ProcessId { start: me.start + 1, ..me }.is_alive(), "a reused pid is another process");
        assert!(!ProcessId { pid: 0, start: 0 }.is_alive());
    }
}
