//! The container database under several berth processes at once, as a
//! daemonless CLI uses it: this test binary re-runs itself as the workers.

use std::path::PathBuf;
use std::process::Command;

use berth_engine::store::{ContainerLock, ContainerRecord, ContainerStore, StoreError, new_id};

const ROLE: &str = "BERTH_STORE_TEST_ROLE";
const DB: &str = "BERTH_STORE_TEST_DB";

fn record(name: &str) -> ContainerRecord {
    ContainerRecord::new(&new_id(), name, "busybox", "sha256:00", "/b".into())
}

/// The worker's part: not a test of its own unless run by the one below.
#[test]
fn worker() {
    let Ok(role) = std::env::var(ROLE) else { return };
    let db = PathBuf::from(std::env::var(DB).unwrap());
    let store = ContainerStore::open(&db).unwrap();
    match role.split_once(':') {
        Some(("insert", n)) => {
            for i in 0..5 {
                store.insert(&record(&format!("w{n}-{i}"))).unwrap();
            }
            // Everyone also wants the same name: exactly one may get it.
            match store.insert(&record("shared")) {
                Ok(()) => println!("RESULT=won"),
                Err(StoreError::NameInUse { .. }) => println!("RESULT=lost"),
                Err(e) => panic!("{e}"),
            }
        }
        Some(("lock", id)) => {
            let _held = ContainerLock::acquire(&db.with_extension("locks"), id).unwrap();
            std::fs::write(db.with_extension("holding"), "").unwrap();
            while !db.with_extension("release").exists() {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        _ => panic!("unknown role {role}"),
    }
}

fn spawn(db: &std::path::Path, role: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "worker", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(DB, db)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn many_processes_insert_at_once_and_a_name_goes_to_exactly_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("containers.redb");
    ContainerStore::open(&db).unwrap();
    let workers: Vec<_> = (0..8).map(|n| spawn(&db, &format!("insert:{n}"))).collect();
    let (mut won, mut lost) = (0, 0);
    for w in workers {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success(), "a worker failed");
        let out = String::from_utf8_lossy(&out.stdout);
        won += out.matches("RESULT=won").count();
        lost += out.matches("RESULT=lost").count();
    }
    assert_eq!((won, lost), (1, 7), "the name went to {won} containers");
    let store = ContainerStore::open(&db).unwrap();
    let all = store.list().unwrap();
    assert_eq!(all.len(), 8 * 5 + 1, "every insert is there");
    assert!(store.get("shared").is_ok());
}

#[test]
fn a_container_lock_excludes_other_processes_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.redb");
    let id = new_id();
    let mut holder = spawn(&db, &format!("lock:{id}"));
    while !db.with_extension("holding").exists() {
        assert!(holder.try_wait().unwrap().is_none(), "the holder died");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let file =
        std::fs::OpenOptions::new().write(true).open(db.with_extension("locks").join(format!("{id}.lock"))).unwrap();
    let busy = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock);
    assert!(busy.is_err(), "the lock was free while another process held it");
    std::fs::write(db.with_extension("release"), "").unwrap();
    assert!(holder.wait().unwrap().success());
    // Free again once the holder is gone.
    let _mine = ContainerLock::acquire(&db.with_extension("locks"), &id).unwrap();
}
