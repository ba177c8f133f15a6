//! The bpf(2) layer: load a device program, attach it to a cgroup, list
//! and detach what is attached. Its unsafe is the syscall and the fds it
//! returns.
//!
//! libc has the syscall number but not `union bpf_attr`, so
//! each command's member is declared below with exactly the fields we set,
//! padding spelled out: the kernel reads only `size` bytes and requires
//! whatever lies past the command's last field to be zero.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use super::program::Insn;
use crate::error::{Error, Result, io_err};

const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_DETACH: libc::c_int = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const BPF_PROG_QUERY: libc::c_int = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;
pub(super) const BPF_OBJ_NAME_LEN: usize = 16;

/// No helper is called, so the license does not matter to the verifier
/// (it only gates GPL-only helpers); this is the crate's own.
const LICENSE: &std::ffi::CStr = c"Apache-2.0";
/// Room for the verifier's log when a load fails; it ends with the reason.
const LOG_SIZE: usize = 1 << 20;
/// How much of that log the error keeps (its tail).
const LOG_KEEP: usize = 4096;

// What EPERM means for each call.
const LOAD_EPERM: &str = "; loading a device filter needs CAP_SYS_ADMIN (or CAP_BPF), and kernels before 5.11 \
     charge it to RLIMIT_MEMLOCK, which may be too low";
const ATTACH_EPERM: &str = "; attaching needs CAP_NET_ADMIN (or CAP_SYS_ADMIN), and is refused when this cgroup or an ancestor has a \
     device program attached that allows no others (without BPF_F_ALLOW_MULTI)";
const OTHER_EPERM: &str = "; managing device filters needs CAP_SYS_ADMIN";

#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; BPF_OBJ_NAME_LEN],
}

/// Also BPF_PROG_DETACH's.
#[repr(C)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

#[repr(C)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

#[repr(C)]
struct GetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The head of `struct bpf_prog_info`, up to the name; the kernel fills in
/// as much as we pass room for.
#[repr(C)]
#[derive(Default)]
struct ProgInfo {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; BPF_OBJ_NAME_LEN],
}

/// Calls bpf(cmd, attr, sizeof attr).
///
/// # Safety
/// `T` must be the `union bpf_attr` member for `cmd`, fully initialized,
/// and every address in it must point to memory valid for what the kernel
/// does with it (read the instructions, write the log or the ids) until
/// this returns.
unsafe fn sys_bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    let size = std::mem::size_of::<T>() as libc::c_uint; // our attrs are < 100 bytes
    // SAFETY: the caller guarantees attr is the right, initialized layout
    // with valid addresses in it; `attr` itself is a live exclusive borrow
    // of `size` bytes, so the kernel may write results into it.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// Wraps the new file descriptor a successful bpf(2) call returned.
fn owned_fd(r: libc::c_long) -> OwnedFd {
    // SAFETY: PROG_LOAD and PROG_GET_FD_BY_ID return a new descriptor that
    // nothing else owns; the kernel's fds fit an int.
    unsafe { OwnedFd::from_raw_fd(r as RawFd) }
}

fn bpf_err(op: &'static str, dir: &Path, source: io::Error) -> Error {
    let hint = match (source.raw_os_error(), op) {
        // The cgroup calls' answer for a directory outside cgroupfs.
        (Some(libc::EBADF), "BPF_PROG_QUERY" | "BPF_PROG_ATTACH") => "; not a cgroup v2 directory",
        (Some(libc::EPERM), "BPF_PROG_LOAD") => LOAD_EPERM,
        (Some(libc::EPERM), "BPF_PROG_ATTACH") => ATTACH_EPERM,
        (Some(libc::EPERM), _) => OTHER_EPERM,
        _ => "",
    };
    Error::Bpf { op, path: dir.to_path_buf(), source, detail: hint.to_string() }
}

pub(super) fn open_cgroup(dir: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
        .map_err(io_err("open cgroup directory", dir))
}

fn fd_u32(fd: &impl AsRawFd) -> u32 {
    // Open descriptors are never negative.
    fd.as_raw_fd() as u32
}

/// Loads `insns` as a device program called `name` (at most 15 bytes
/// are kept); when the verifier refuses them, loads them again with a log
/// buffer, only to put its explanation in the error (as libbpf does: a log
/// costs time on every successful load, and a full one fails it). `dir`
/// names the cgroup in errors.
pub(super) fn load(insns: &[Insn], name: &str, dir: &Path) -> Result<OwnedFd> {
    let first = match load_with_log(insns, name, &mut []) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    let detail = match first.raw_os_error() {
        Some(libc::EPERM) => return Err(bpf_err("BPF_PROG_LOAD", dir, first)),
        Some(libc::E2BIG) => format!("; the filter has {} instructions, more than the kernel accepts", insns.len()),
        _ => {
            let mut log = vec![0u8; LOG_SIZE];
            if let Ok(fd) = load_with_log(insns, name, &mut log) {
                return Ok(fd); // the first failure was transient
            }
            verifier_log(&log)
        }
    };
    Err(Error::Bpf { op: "BPF_PROG_LOAD", path: dir.to_path_buf(), source: first, detail })
}

/// One BPF_PROG_LOAD, retried while the verifier was interrupted by a
/// signal (EAGAIN) or the call was (EINTR). An empty `log` asks for none.
fn load_with_log(insns: &[Insn], name: &str, log: &mut [u8]) -> io::Result<OwnedFd> {
    let insn_cnt = u32::try_from(insns.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
    let mut prog_name = [0u8; BPF_OBJ_NAME_LEN];
    // The kernel wants a NUL within the 16 bytes.
    let kept = name.len().min(BPF_OBJ_NAME_LEN - 1);
    prog_name[..kept].copy_from_slice(&name.as_bytes()[..kept]);
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt,
        insns: insns.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        log_level: u32::from(!log.is_empty()),
        log_size: log.len() as u32, // LOG_SIZE or 0
        log_buf: if log.is_empty() { 0 } else { log.as_mut_ptr() as u64 },
        kern_version: 0,
        prog_flags: 0,
        prog_name,
    };
    let mut attempts = 0;
    loop {
        // SAFETY: attr is BPF_PROG_LOAD's layout, fully initialized; insns
        // (insn_cnt `struct bpf_insn`s), the license (NUL-terminated) and the
        // log (log_size writable bytes, or none) all outlive the call.
        match unsafe { sys_bpf(BPF_PROG_LOAD, &mut attr) } {
            Ok(fd) => return Ok(owned_fd(fd)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) && attempts < 5 => attempts += 1,
            Err(e) => return Err(e),
        }
    }
}

/// The end of the verifier's log, where its reason is, as "; verifier
/// log: ...", or nothing if it wrote none.
fn verifier_log(log: &[u8]) -> String {
    let len = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..len]);
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let start = text.char_indices().rev().nth(LOG_KEEP).map_or(0, |(i, _)| i);
    let cut = if start > 0 { "...\n" } else { "" };
    format!("; verifier log:\n{cut}{}", &text[start..])
}

pub(super) fn attach(cgroup: &File, prog: &OwnedFd, dir: &Path) -> Result<()> {
    let mut attr = AttachAttr {
        target_fd: fd_u32(cgroup),
        attach_bpf_fd: fd_u32(prog),
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    // SAFETY: attr is BPF_PROG_ATTACH's layout (its head), fully
    // initialized, with no addresses in it.
    unsafe { sys_bpf(BPF_PROG_ATTACH, &mut attr) }.map(drop).map_err(|e| bpf_err("BPF_PROG_ATTACH", dir, e))
}

/// Detaches `prog`; one already gone (someone else detached it) is fine.
pub(super) fn detach(cgroup: &File, prog: &OwnedFd, dir: &Path) -> Result<()> {
    let mut attr = AttachAttr {
        target_fd: fd_u32(cgroup),
        attach_bpf_fd: fd_u32(prog),
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: 0,
    };
    // SAFETY: attr is BPF_PROG_DETACH's layout (its head), fully
    // initialized, with no addresses in it.
    match unsafe { sys_bpf(BPF_PROG_DETACH, &mut attr) } {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(bpf_err("BPF_PROG_DETACH", dir, e)),
    }
}

/// An attached program, held open so that it can be detached by fd.
pub(super) struct Program {
    pub(super) id: u32,
    pub(super) name: String,
    pub(super) fd: OwnedFd,
}

/// The device programs attached directly to `cgroup`, each opened.
/// Programs detached (and freed) while we look are left out.
pub(super) fn attached_programs(cgroup: &File, dir: &Path) -> Result<Vec<Program>> {
    let mut programs = Vec::new();
    for id in query(cgroup, dir)? {
        let Some(fd) = prog_fd_by_id(id).map_err(|e| bpf_err("BPF_PROG_GET_FD_BY_ID", dir, e))? else {
            continue;
        };
        let name = prog_name(&fd).map_err(|e| bpf_err("BPF_OBJ_GET_INFO_BY_FD", dir, e))?;
        programs.push(Program { id, name, fd });
    }
    Ok(programs)
}

/// The ids of the device programs attached directly to `cgroup`.
fn query(cgroup: &File, dir: &Path) -> Result<Vec<u32>> {
    let mut ids = vec![0u32; 8];
    loop {
        let mut attr = QueryAttr {
            target_fd: fd_u32(cgroup),
            attach_type: BPF_CGROUP_DEVICE,
            query_flags: 0,
            attach_flags: 0,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: ids.len() as u32, // small: grown to the kernel's count
            _pad: 0,
        };
        // SAFETY: attr is BPF_PROG_QUERY's layout (its head), fully
        // initialized; prog_ids has room for prog_cnt u32s and outlives the
        // call.
        match unsafe { sys_bpf(BPF_PROG_QUERY, &mut attr) } {
            Ok(_) => {
                ids.truncate(attr.prog_cnt as usize);
                return Ok(ids);
            }
            // More programs than room: prog_cnt now says how many.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                let more = (attr.prog_cnt as usize).max(ids.len() * 2);
                ids.resize(more, 0);
            }
            Err(e) => return Err(bpf_err("BPF_PROG_QUERY", dir, e)),
        }
    }
}

/// Opens a program by id; None if it no longer exists.
fn prog_fd_by_id(id: u32) -> io::Result<Option<OwnedFd>> {
    let mut attr = GetFdByIdAttr { prog_id: id, next_id: 0, open_flags: 0 };
    // SAFETY: attr is BPF_PROG_GET_FD_BY_ID's layout, fully initialized,
    // with no addresses in it.
    match unsafe { sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) } {
        Ok(fd) => Ok(Some(owned_fd(fd))),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

fn prog_name(prog: &OwnedFd) -> io::Result<String> {
    let mut info = ProgInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: fd_u32(prog),
        info_len: std::mem::size_of::<ProgInfo>() as u32, // 80 bytes
        info: &mut info as *mut ProgInfo as u64,
    };
    // SAFETY: attr is BPF_OBJ_GET_INFO_BY_FD's layout, fully initialized;
    // info points to info_len writable bytes that outlive the call, and all
    // its pointer/length pairs are zero, so the kernel dumps nothing else.
    unsafe { sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    let len = info.name.iter().position(|&b| b == 0).unwrap_or(BPF_OBJ_NAME_LEN);
    Ok(String::from_utf8_lossy(&info.name[..len]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A program the verifier refuses (r0 never set) fails with its log in
    /// the error. Needs root, as every load does.
    #[test]
    fn a_refused_program_reports_the_verifier_log() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: loading BPF programs needs root");
            return;
        }
        let err = load(&[super::super::program::exit()], "berth_test", Path::new("/test"))
            .expect_err("r0 is never set")
            .to_string();
        assert!(err.starts_with("bpf(BPF_PROG_LOAD) for the device filter of /test: "), "{err}");
        assert!(err.contains("verifier log:") && err.contains("R0 !read_ok"), "{err}");
    }

    #[test]
    fn verifier_log_keeps_the_end() {
        assert_eq!(verifier_log(&[0; 16]), "");
        assert_eq!(
            verifier_log(b"0: (61) r2 = *(u32 *)(r1 +0)\nR0 !read_ok\n\0\0"),
            "; verifier log:\n0: (61) r2 = *(u32 *)(r1 +0)\nR0 !read_ok"
        );
        let long = "x".repeat(LOG_KEEP * 2) + "the reason";
        let kept = verifier_log(long.as_bytes());
        assert!(kept.ends_with("the reason") && kept.contains("...\n") && kept.len() < LOG_KEEP + 64);
    }
}
