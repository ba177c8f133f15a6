//! berth-shim: see the library's documentation. Started by the engine
//! (through `berth_shim::client::spawn`); detaches at once.

use berth_shim::config::Config;

fn main() {
    let cfg = match Config::parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth-shim: {e}");
            std::process::exit(2);
        }
    };
    // Detach: the caller reaps this process at once; the shim goes on in
    // a session of its own, reparented away from the caller.
    // SAFETY: the shim is single-threaded here; the child only continues
    // this program.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => std::process::exit(0),
        Ok(nix::unistd::ForkResult::Child) => {}
        Err(e) => {
            eprintln!("berth-shim: fork: {e}");
            std::process::exit(1);
        }
    }
    let _ = nix::unistd::setsid();
    let code = match berth_shim::supervisor::run(&cfg) {
        Ok(_) => 0,
        Err(e) => {
            let _ = std::fs::write(cfg.state_dir.join("shim.log"), format!("{e}\n"));
            1
        }
    };
    std::process::exit(code);
}
