//! A throwaway unprivileged user, for rootless tests: made with useradd,
//! removed (with its /etc/subuid and /etc/subgid ranges) when dropped.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl TestUser {
    /// A new system user with no home, and, if `subids` is given, that
    /// many subordinate uids and gids starting at `subid_start`.
    pub fn create(subids: Option<(u32, u32)>) -> TestUser {
        let name = format!("berth-t{}", std::process::id() % 100_000);
        let mut add = Command::new("useradd");
        add.args(["--system", "--no-create-home", "--shell", "/bin/sh", &name]);
        let out = add.output().expect("run useradd (package passwd)");
        assert!(out.status.success(), "useradd {name}: {}", String::from_utf8_lossy(&out.stderr));
        let user = TestUser { uid: id(&name, "-u"), gid: id(&name, "-g"), name };
        if let Some((start, count)) = subids {
            let range = format!("{start}-{}", start + count - 1);
            let out = Command::new("usermod")
                .args(["--add-subuids", &range, "--add-subgids", &range, &user.name])
                .output()
                .expect("run usermod");
            assert!(out.status.success(), "usermod: {}", String::from_utf8_lossy(&out.stderr));
        }
        user
    }

    /// A command that runs as this user (its uid and gid only).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        // (std drops supplementary groups when switching away from root.)
        c.uid(self.uid).gid(self.gid);
        c
    }

    /// Gives this user a directory tree (recursive chown).
    pub fn own(&self, path: &Path) {
        let out = Command::new("chown").arg("-R").arg(format!("{}:{}", self.uid, self.gid)).arg(path).output().unwrap();
        assert!(out.status.success(), "chown: {}", String::from_utf8_lossy(&out.stderr));
    }
}

fn id(name: &str, flag: &str) -> u32 {
    let out = Command::new("id").args([flag, name]).output().expect("run id");
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("a numeric id")
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}
