//! runtime-spec 1.2's recursive mount options (`rro`, `rnosuid`, ...):
//! applied with mount_setattr(AT_RECURSIVE) to the bind mount and every
//! mount under it, where a plain `ro` reaches the top mount only. Checked
//! from inside the container, and side by side with runc (1.1 has them).

use std::path::{Path, PathBuf};

use berth_testkit::{Bundle, Runtime, leaks, require_root, unique_id};
use serde_json::json;

fn runtime() -> Runtime {
    require_root();
    Runtime::new(env!("CARGO_BIN_EXE_berth-runtime"))
}

fn runc() -> Option<Runtime> {
    ["/usr/sbin/runc", "/usr/bin/runc"].iter().map(PathBuf::from).find(|p| p.is_file()).map(Runtime::new)
}

/// A host directory with a tmpfs mounted on its `sub` (critest's RRO
/// layout); unmounted and removed on drop, even when the test fails.
struct HostTree {
    dir: tempfile::TempDir,
}

impl HostTree {
    fn new() -> HostTree {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        nix::mount::mount(Some("tmpfs"), &sub, Some("tmpfs"), nix::mount::MsFlags::empty(), Some("size=1m")).unwrap();
        HostTree { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for HostTree {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir.path().join("sub"), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Runs a script that tries to write the top of /mnt and its submount,
/// and to run a program from the submount; returns its lines.
fn writes_under(rt: &Runtime, tree: &HostTree, options: &[&str]) -> String {
    let mut b = Bundle::busybox();
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/mnt", "type": "bind", "source": tree.path(), "options": options,
        }))
    });
    b.sh("for f in /mnt/top /mnt/sub/below; do if touch $f 2>/dev/null; then echo $f writable; else echo $f read-only; fi; done");
    let id = unique_id("rro");
    let (code, out, err) = rt.run(&b, &id);
    leaks::assert_none(&id, b.path(), rt.root(), None);
    assert_eq!(code, 0, "{} {options:?}: stdout {out}\nstderr {err}", rt.bin().display());
    out
}

#[test]
fn rro_makes_the_submounts_read_only_too_where_ro_does_not() {
    let rt = runtime();
    let tree = HostTree::new();
    assert_eq!(
        writes_under(&rt, &tree, &["rbind", "ro", "rprivate"]),
        "/mnt/top read-only\n/mnt/sub/below writable\n",
        "plain ro reaches the top mount only"
    );
    assert_eq!(
        writes_under(&rt, &tree, &["rbind", "rro", "rprivate"]),
        "/mnt/top read-only\n/mnt/sub/below read-only\n",
        "rro reaches every mount under the bind"
    );
    // The host's tree is untouched: the attribute is on the container's copies.
    assert!(std::fs::write(tree.path().join("sub/host"), b"x").is_ok(), "the host's submount stays writable");
    if let Some(runc) = runc() {
        assert_eq!(
            writes_under(&runc, &tree, &["rbind", "rro", "rprivate"]),
            "/mnt/top read-only\n/mnt/sub/below read-only\n",
            "runc agrees"
        );
    }
}

#[test]
fn rrw_after_rro_leaves_the_tree_writable() {
    let rt = runtime();
    let tree = HostTree::new();
    assert_eq!(
        writes_under(&rt, &tree, &["rbind", "rro", "rrw"]),
        "/mnt/top writable\n/mnt/sub/below writable\n",
        "the later option wins, as with runc"
    );
}

#[test]
fn features_lists_the_recursive_options() {
    let rt = runtime();
    let out = std::process::Command::new(rt.bin()).arg("features").output().unwrap();
    let f: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let opts: Vec<&str> = f["mountOptions"].as_array().unwrap().iter().filter_map(|o| o.as_str()).collect();
    for o in ["rro", "rrw", "rnosuid", "rsuid", "rnodev", "rdev", "rnoexec", "rexec", "rrelatime", "rnoatime"] {
        assert!(opts.contains(&o), "features lists {o}: {opts:?}");
    }
}
