//! berth-runtime: runc's command line over the berth-runtime library.
//! Errors go to the log (and to stderr) and exit 1, as runc's do; `run`
//! and `exec` in the foreground exit with the container process's code.
//!
//! The binary has its own C `main` instead of std's start-up (`lang_start`),
//! which would also install a stack-overflow handler: on glibc that finds
//! the main thread's stack with pthread_getattr_np, which reads
//! /proc/self/maps through stdio and scanf. That cost ~470 KiB of libc
//! mapped (most of the runtime's peak RSS beyond crun's) and a few hundred
//! microseconds, in a binary that runs once or more per container start,
//! for one diagnostic message. The rest of std's start-up is done in
//! [`start_up`]; a stack overflow still kills the process (the kernel's
//! guard gap), only without std's message.
#![cfg_attr(not(test), no_main)]

mod cli;

/// The process's entry point, called by the C library's start-up code.
// SAFETY: the one `main` symbol of the binary (std's is not generated under
// `no_main`), with the C signature crt1.o calls.
#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(_argc: std::ffi::c_int, _argv: *const *const std::ffi::c_char) -> std::ffi::c_int {
    // std reads the arguments itself (glibc passes them to its init_array
    // hook), so std::env::args works as under std's own main.
    start_up();
    run()
}

/// What std's start-up does that the runtime relies on: a closed standard
/// fd is reopened on /dev/null (so no file the runtime opens becomes
/// fd 0-2, which it would then hand a container as stdio), and SIGPIPE is
/// ignored (a write to a closed pipe is an EPIPE error, not death; the
/// container's init restores it, see `sys::reset_signals`).
#[cfg(not(test))]
fn start_up() {
    for fd in 0..3 {
        // SAFETY: F_GETFD on a descriptor number only asks whether it is
        // open; nothing is borrowed or owned.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            // SAFETY: open(2) of a constant path; the lowest free number is
            // this fd, which the process then keeps open for good.
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        }
    }
    // SAFETY: SIG_IGN runs no code of ours; no other thread exists yet.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

#[cfg_attr(test, allow(dead_code))]
fn run() -> ! {
    // Before the runtime opens anything of its own (--preserve-fds).
    berth_runtime::launch::note_inherited_fds();
    // Seal before anything else, so the re-executed runtime is the only one
    // that pays for parsing (a failure here is reported, with logging set
    // up, by the same call in dispatch).
    if cli::enters_container(std::env::args_os().skip(1)) {
        let _ = berth_runtime::seal::seal();
    }
    let args = cli::Cli::parse_args();
    let logging = match cli::logging::init(&args.top.global) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("berth-runtime: {e:#}");
            std::process::exit(1);
        }
    };
    let code = match cli::dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            let msg = render(&e);
            match exec_errno(&e) {
                Some(errno) => tracing::error!(errno = i64::from(errno), "{msg}"),
                None => tracing::error!("{msg}"),
            }
            if !logging.to_stderr {
                eprintln!("{msg}");
            }
            1
        }
    };
    std::process::exit(code);
}

/// The errno of a failed exec of the container's program, for the log
/// line's `errno` field.
fn exec_errno(e: &anyhow::Error) -> Option<i32> {
    e.chain().find_map(|c| match c.downcast_ref::<berth_runtime::Error>() {
        Some(berth_runtime::Error::Exec { errno, .. }) => Some(*errno),
        _ => None,
    })
}

/// The error and its causes, "outer: inner", without repeating a cause
/// whose text an outer message already carries.
fn render(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}
