//! /proc/PID/stat, read in one place for the runtime, the shim and the
//! engine, and a process named by its pid and its start time, as runc
//! names a container's init: a pid alone may have been reused by the time
//! anyone looks again (a shim killed an hour ago, its pid now someone
//! else's).
//!
//! A small crate of its own (its one dependency is chrono, for [`time`]):
//! the runtime uses it and must not link the shim; the shim re-exports it
//! as `berth_shim::process`. [`time`] formats the timestamps berth records
//! for processes (started, exited, created), in RFC 3339.

pub mod time;

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
        stat(self.pid).is_some_and(|s| s.start == self.start && s.running())
    }
}

/// What berth reads of /proc/PID/stat (fields numbered as in proc(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Field 2, without its parentheses.
    pub comm: String,
    /// Field 3: R, S, D, Z, X, ...
    pub state: char,
    /// Field 4.
    pub ppid: i32,
    /// Field 7: the controlling terminal's device number (0: none).
    pub tty_nr: u64,
    /// Fields 14 and 15: CPU time in user and kernel mode, clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// Field 20.
    pub num_threads: u64,
    /// Field 22: clock ticks after boot when it started.
    pub start: u64,
}

impl Stat {
    /// Not a zombie, nor dead: it can still run.
    pub fn running(&self) -> bool {
        self.state != 'Z' && self.state != 'X'
    }
}

/// /proc/PID/stat of `pid` (None if there is no such process).
pub fn stat(pid: i32) -> Option<Stat> {
    if pid <= 0 {
        return None;
    }
    parse_stat(&read_stat(&format!("/proc/{pid}/stat"))?)
}

/// This process's /proc/self/stat (right inside a pid namespace whose
/// /proc is not ours, where our pid means another process).
pub fn own_stat() -> Option<Stat> {
    parse_stat(&read_stat("/proc/self/stat")?)
}

/// A stat file in one read(): the line is a few hundred bytes, and procfs
/// gives it whole to a buffer that holds it. read_to_string, for a file
/// whose size says 0, probes and grows its buffer instead (six reads a
/// line), and `ps`, `refresh` and the shim read one per container. A
/// line that fills the buffer is read again whole.
fn read_stat(path: &str) -> Option<String> {
    use std::io::Read;
    let mut buf = [0u8; 1024];
    let n = std::fs::File::open(path).ok()?.read(&mut buf).ok()?;
    if n == buf.len() {
        return std::fs::read_to_string(path).ok();
    }
    String::from_utf8(buf[..n].to_vec()).ok()
}

/// The fields of one stat line. The command name may itself hold spaces
/// and ')': the fields resume after the last ')'.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let (head, tail) = text.rsplit_once(')')?;
    let rest: Vec<&str> = tail.split_whitespace().collect();
    // rest[0] is field 3 (state), so field N is rest[N - 3].
    let field = |n: usize| rest.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        comm: head.split_once('(')?.1.to_owned(),
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        tty_nr: field(7)?,
        utime: field(14)?,
        stime: field(15)?,
        num_threads: field(20)?,
        start: field(22)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_is_read_whole_and_an_absent_one_is_none() {
        let me = ProcessId::current().unwrap();
        let own = own_stat().unwrap();
        assert_eq!(me.start, own.start);
        assert!(me.is_alive());
        let text = read_stat(&format!("/proc/{}/stat", me.pid)).unwrap();
        assert!(text.ends_with('\n'), "the whole line: {text:?}");
        assert_eq!(stat(me.pid).unwrap().comm, own.comm);
        assert!(stat(i32::MAX).is_none());
        assert!(!ProcessId { pid: me.pid, start: me.start + 1 }.is_alive());
    }

    #[test]
    fn stat_fields_are_read_after_the_last_paren() {
        let line = "42 (a) b) c) S 7 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 200 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!((s.comm.as_str(), s.state, s.ppid, s.start), ("a) b) c", 'S', 7, 98765));
        assert_eq!((s.tty_nr, s.utime, s.stime, s.num_threads), (0, 1, 2, 1));
        assert_eq!(parse_stat("1 (x) S 0"), None);
    }

    #[test]
    fn zombies_and_dead_processes_do_not_run() {
        let line = |state: char| format!("9 (x) {state} 1 9 9 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0");
        assert!(parse_stat(&line('S')).unwrap().running());
        assert!(!parse_stat(&line('Z')).unwrap().running());
        assert!(!parse_stat(&line('X')).unwrap().running());
        assert_eq!(own_stat().unwrap().start, stat(std::process::id() as i32).unwrap().start);
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessId::current().unwrap();
        assert!(me.is_alive());
        assert!(!ProcessId { start: me.start + 1, ..me }.is_alive(), "a reused pid is another process");
        assert!(!ProcessId { pid: 0, start: 0 }.is_alive());
    }
}
