//! The default seccomp profile in real containers: ordinary programs run,
//! what it refuses fails with EPERM even where the container's capabilities
//! would allow it, it follows the capabilities it is evaluated for, and it
//! covers 32-bit x86 tasks too.
//!
//! To tell the filter's refusals from the kernel's capability checks, the
//! container is granted CAP_SYS_ADMIN while the profile is evaluated
//! without it: then only the filter can say no.

use berth_runtime::seccomp::profile::{DOCKER_DEFAULT_CAPS, default_profile};
use berth_testkit::{Bundle, Runtime, leaks, require_root, unique_id};
use serde_json::json;

const DOCKER_CAPS: &[&str] = &DOCKER_DEFAULT_CAPS;

fn runtime() -> Runtime {
    require_root();
    Runtime::new(env!("CARGO_BIN_EXE_berth-runtime"))
}

/// Docker's capabilities plus `extra`.
fn caps(extra: &[&str]) -> Vec<String> {
    DOCKER_CAPS.iter().chain(extra).map(|c| c.to_string()).collect()
}

/// A busybox bundle whose process holds `granted` and whose filter is the
/// default profile evaluated for `filtered`; /scratch is a tmpfs, /mnt an
/// empty directory.
fn bundle(granted: &[String], filtered: &[String]) -> Bundle {
    let profile = serde_json::to_value(default_profile(filtered).unwrap()).unwrap();
    let mut b = Bundle::busybox();
    std::fs::create_dir(b.rootfs().join("mnt")).unwrap();
    b.edit(|c| {
        c["process"]["capabilities"] = json!({ "bounding": granted, "effective": granted, "permitted": granted });
        c["linux"]["seccomp"] = profile;
    });
    b.mount(json!({ "destination": "/scratch", "type": "tmpfs", "source": "tmpfs" }));
    b
}

fn run(rt: &Runtime, b: &mut Bundle, script: &str) -> (i32, String, String) {
    b.sh(script);
    let id = unique_id("secprof");
    let r = rt.run(b, &id);
    leaks::assert_none(&id, b.path(), rt.root(), None);
    r
}

#[test]
fn ordinary_programs_run_under_the_default_profile() {
    let rt = runtime();
    let mut b = bundle(&caps(&[]), &caps(&[]));
    let script = "set -e
        grep Seccomp: /proc/self/status
        ls / | grep -q proc && echo ls-ok
        ps -o pid,comm | grep -q ps && echo ps-ok
        cat /proc/self/stat /proc/meminfo /proc/self/mountinfo > /dev/null && echo proc-ok
        sleep 0.1 && date +%Y > /dev/null && echo time-ok
        mkdir -p /scratch/d/e && touch /scratch/d/f && echo hello > /scratch/d/f
        wc -c < /scratch/d/f
        echo one two three | tr ' ' '\\n' | grep -c o
        (sleep 0.2; echo background-done > /scratch/bg) & wait $!
        cat /scratch/bg
        ln -s f /scratch/d/l && chmod 600 /scratch/d/f && chown 65534 /scratch/d/f && stat -c %a:%u /scratch/d/l -L
        id -u; hostname; uname -s";
    let (code, out, err) = run(&rt, &mut b, script);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Seccomp:\t2"), "the filter is on: {out}");
    let lines =
        ["ls-ok", "ps-ok", "proc-ok", "time-ok", "6", "2", "background-done", "600:65534", "0", "berth", "Linux"];
    for want in lines {
        assert!(out.lines().any(|l| l == want), "{want:?} missing: {out}{err}");
    }
}

/// Runs `unshare -m` and a tmpfs mount with CAP_SYS_ADMIN granted and the
/// profile evaluated for `filtered`.
fn namespace_and_mount(filtered: &[String]) -> String {
    let rt = runtime();
    let mut b = bundle(&caps(&["CAP_SYS_ADMIN"]), filtered);
    let script = "unshare -m true 2>&1; echo unshare=$?
        mount -t tmpfs none /mnt 2>&1; echo mount=$?
        grep -c ' /mnt ' /proc/self/mounts
        grep Seccomp: /proc/self/status";
    let (code, out, err) = run(&rt, &mut b, script);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    out
}

#[test]
fn the_filter_refuses_namespaces_and_mounts_that_the_capability_would_allow() {
    let out = namespace_and_mount(&caps(&[]));
    assert!(out.contains("unshare(0x20000): Operation not permitted"), "{out}");
    assert!(!out.contains("unshare=0"), "{out}");
    // busybox words EPERM from mount(2) as "permission denied".
    assert!(out.contains("mount: permission denied"), "{out}");
    assert!(!out.contains("mount=0"), "{out}");
    assert!(out.contains("\n0\n"), "nothing mounted on /mnt: {out}");
}

#[test]
fn evaluated_with_cap_sys_admin_the_profile_allows_them() {
    let out = namespace_and_mount(&caps(&["CAP_SYS_ADMIN"]));
    assert!(out.contains("unshare=0"), "{out}");
    assert!(out.contains("mount=0"), "{out}");
    assert!(out.contains("\n1\n"), "tmpfs on /mnt: {out}");
}

#[test]
fn personality_takes_only_the_listed_personas() {
    let rt = runtime();
    let mut b = bundle(&caps(&[]), &caps(&[]));
    // linux32 -R adds ADDR_NO_RANDOMIZE, which would turn ASLR off.
    let (code, out, err) = run(&rt, &mut b, "linux32 uname -m; linux64 uname -m; linux32 -R true 2>&1; echo r=$?");
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    if cfg!(target_arch = "x86_64") {
        assert_eq!(lines[..2], ["i686", "x86_64"], "{out}");
    }
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(!out.contains("r=0"), "{out}");
}

/// System calls with exact arguments, which no busybox applet makes: tiny
/// static programs that make one call and exit with its errno (0 on
/// success).
#[cfg(target_arch = "x86_64")]
mod probes {
    use super::*;

    /// A static ELF executable for x86-64 (`wide`) or i386: one system call
    /// `nr` with three arguments, then exit(errno), or exit(0) on success.
    fn probe(wide: bool, nr: u32, args: [u32; 3]) -> Vec<u8> {
        let mut code = Vec::new();
        // mov eax, nr; then the first three argument registers
        // (rdi, rsi, rdx on x86-64; ebx, ecx, edx on i386).
        code.push(0xb8);
        code.extend(nr.to_le_bytes());
        let regs = if wide { [0xbf, 0xbe, 0xba] } else { [0xbb, 0xb9, 0xba] };
        for (op, arg) in regs.into_iter().zip(args) {
            code.push(op);
            code.extend(arg.to_le_bytes());
        }
        if wide {
            // syscall; mov edi,eax; neg edi; test eax,eax; jns +2; jmp +2;
            // xor edi,edi; mov eax,60 (exit); syscall
            code.extend([0x0f, 0x05, 0x89, 0xc7, 0xf7, 0xdf, 0x85, 0xc0, 0x79, 0x02, 0xeb, 0x02, 0x31, 0xff]);
            code.extend([0xb8, 60, 0, 0, 0, 0x0f, 0x05]);
        } else {
            // int 0x80; mov ebx,eax; neg ebx; test eax,eax; jns +2; jmp +2;
            // xor ebx,ebx; mov eax,1 (exit); int 0x80
            code.extend([0xcd, 0x80, 0x89, 0xc3, 0xf7, 0xdb, 0x85, 0xc0, 0x79, 0x02, 0xeb, 0x02, 0x31, 0xdb]);
            code.extend([0xb8, 1, 0, 0, 0, 0xcd, 0x80]);
        }
        elf(wide, &code)
    }

    /// An ELF header and one loadable segment holding the whole file.
    fn elf(wide: bool, code: &[u8]) -> Vec<u8> {
        let word = |e: &mut Vec<u8>, v: u64| {
            if wide { e.extend(v.to_le_bytes()) } else { e.extend((v as u32).to_le_bytes()) }
        };
        let (ehsize, phsize, base): (u64, u64, u64) = if wide { (64, 56, 0x40_0000) } else { (52, 32, 0x0804_8000) };
        let size = ehsize + phsize + code.len() as u64;
        let mut e = vec![0x7f, b'E', b'L', b'F', if wide { 2 } else { 1 }, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        e.extend(2u16.to_le_bytes()); // ET_EXEC
        e.extend(if wide { 62u16 } else { 3 }.to_le_bytes()); // EM_X86_64, EM_386
        e.extend(1u32.to_le_bytes());
        word(&mut e, base + ehsize + phsize); // entry: the code
        word(&mut e, ehsize); // program headers right after this header
        word(&mut e, 0); // no section headers
        e.extend(0u32.to_le_bytes());
        for half in [ehsize, phsize, 1, 0, 0, 0] {
            e.extend((half as u16).to_le_bytes());
        }
        e.extend(1u32.to_le_bytes()); // PT_LOAD
        if wide {
            e.extend(5u32.to_le_bytes()); // R+X; on i386 p_flags comes later
        }
        for v in [0, base, base, size, size] {
            word(&mut e, v);
        }
        if !wide {
            e.extend(5u32.to_le_bytes());
        }
        word(&mut e, 0x1000);
        e.extend(code);
        e
    }

    /// Runs each named probe in a container granted CAP_SYS_ADMIN, filtered
    /// for `filtered`; returns "name=errno" lines.
    fn run_probes(filtered: &[String], probes: &[(&str, Vec<u8>)]) -> String {
        use std::os::unix::fs::PermissionsExt;
        let rt = runtime();
        let mut b = bundle(&caps(&["CAP_SYS_ADMIN"]), filtered);
        let mut script = String::new();
        for (name, bytes) in probes {
            let path = b.rootfs().join("bin").join(name);
            std::fs::write(&path, bytes).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            script.push_str(&format!("{name}; echo {name}=$?\n"));
        }
        let (code, out, err) = run(&rt, &mut b, &script);
        assert_eq!(code, 0, "{out}{err}");
        out
    }

    // x86-64 and i386 system call numbers and arguments.
    const CLONE_NEWNS: u32 = 0x0002_0000;
    const SIGCHLD: u32 = 17;

    fn all_probes() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            // socket(AF_UNIX, SOCK_STREAM, 0)
            ("unix64", probe(true, 41, [1, 1, 0])),
            // socket(AF_VSOCK, SOCK_STREAM, 0), socket(AF_ALG, SOCK_SEQPACKET, 0):
            // the kernel would say ENOTSUP/EAFNOSUPPORT or succeed, never EPERM.
            ("vsock64", probe(true, 41, [40, 1, 0])),
            ("alg64", probe(true, 41, [38, 5, 0])),
            // clone(CLONE_NEWNS | SIGCHLD): parent and child both exit 0 on success.
            ("clonens64", probe(true, 56, [CLONE_NEWNS | SIGCHLD, 0, 0])),
            // clone(SIGCHLD): a plain fork.
            ("fork64", probe(true, 56, [SIGCHLD, 0, 0])),
            // clone3(NULL, 0): the kernel says EINVAL.
            ("clone3_64", probe(true, 435, [0, 0, 0])),
            // The same from a 32-bit task: unshare(CLONE_NEWNS), socket(AF_VSOCK).
            ("unshare32", probe(false, 310, [CLONE_NEWNS, 0, 0])),
            ("vsock32", probe(false, 359, [40, 1, 0])),
            ("unix32", probe(false, 359, [1, 1, 0])),
        ]
    }

    #[test]
    fn exact_arguments_are_checked_for_64_and_32_bit_tasks() {
        let out = run_probes(&caps(&[]), &all_probes());
        // A 32-bit task outside the filter's architectures would be killed
        // (SIGSYS, 159): errno values prove the x86 ABI is covered.
        for want in [
            "unix64=0",
            "vsock64=1",
            "alg64=1",
            "clonens64=1",
            "fork64=0",
            "clone3_64=38",
            "unshare32=1",
            "vsock32=1",
            "unix32=0",
        ] {
            assert!(out.lines().any(|l| l == want), "{want} missing: {out}");
        }
    }

    #[test]
    fn with_cap_sys_admin_namespaces_are_allowed_for_both_abis() {
        let out = run_probes(&caps(&["CAP_SYS_ADMIN"]), &all_probes());
        for want in ["clonens64=0", "fork64=0", "clone3_64=22", "unshare32=0", "vsock64=1", "vsock32=1"] {
            assert!(out.lines().any(|l| l == want), "{want} missing: {out}");
        }
    }

    #[test]
    fn the_profile_covers_the_x86_compat_abis() {
        let s = default_profile(&caps(&[])).unwrap();
        let abis = serde_json::to_value(s.architectures()).unwrap();
        assert_eq!(abis, json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]));
    }
}
