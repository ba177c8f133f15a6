#!/usr/bin/env python3
"""Writes crates/berth-runtime/hot-text.txt: the functions berth-runtime runs
on its common paths, in the order the linker should place them.

Why: a `berth-runtime run` executes ~1 MiB of a ~4.5 MiB text segment,
spread over all of it. The kernel maps file pages around every fault
(fault-around, and whole large folios), so the process ended up with ~3 MiB
of the binary mapped: most of its peak RSS. Placed together (a linker
script section that crates/berth-runtime/build.rs makes of this list), the
same code maps ~1 MiB. The list holds mangled (v0) names; build.rs matches
them with the build's hashes left out, so feature unification and
Cargo.lock changes do not break it, but new code paths and toolchain
updates make it stale: regenerate it then (bench/runtime-lifecycle.sh says
how much of the list the binary it measures still matches). A name that no
longer exists matches nothing: a stale list costs memory, never
correctness.

How: one uprobe per function of a release build (tracefs), then the paths
containerd, podman and the benchmarks drive: `run`; `create`, `start`,
`state`, `exec`, `kill`, `delete` with a JSON log. Functions the runtime's
own process runs come first (the process whose peak RSS counts), those
only its children run (the container's init before exec, exec's child)
after them; each group in the order first run.

Different package selections build berth-runtime with different features
of its dependencies (cargo unifies them over what is selected), and so with
slightly different code: the list is the union over the builds people
run, `cargo build --release` (the whole workspace, as README says) and
`-p berth-runtime` (bench/runtime-lifecycle.sh); --merge adds one build's
functions to the list there is.

Run as root, from anywhere: scripts/hot-text.py [--no-build] [--merge] [--out FILE]
(about five minutes: the kernel takes ~50 ms to add each of ~4,500 probes)
Needs: tracefs with uprobes (mounted here if it is not), nm and readelf
(binutils), /bin/busybox (busybox-static).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRACING = "/sys/kernel/tracing"
GROUP = "berth_hot"


def sh(*args, **kw):
    return subprocess.run(args, check=True, text=True, **kw)


def text_symbols(binary):
    """(file offset, name) of every sized function symbol, by offset."""
    segs = sh("readelf", "-lW", binary, capture_output=True).stdout
    load = next(line.split() for line in segs.splitlines() if line.split()[:1] == ["LOAD"] and " E " in line)
    offset, vaddr = int(load[1], 16), int(load[2], 16)
    out = {}
    for line in sh("nm", "-S", "--defined-only", binary, capture_output=True).stdout.splitlines():
        f = line.split()
        if len(f) == 4 and f[2] in "tTwW" and int(f[1], 16) > 0:
            out.setdefault(int(f[0], 16) - vaddr + offset, f[3])
    if not out:
        sys.exit(f"{binary} has no symbols: the release profile must keep them (strip = \"debuginfo\")")
    return sorted(out.items())


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


class Probes:
    """One uprobe per function, in group GROUP; removed on exit."""

    def __init__(self, binary, syms):
        self.mounted = False
        if not os.path.exists(f"{TRACING}/uprobe_events"):
            sh("mount", "-t", "tracefs", "nodev", TRACING)
            self.mounted = True
        with open(f"{TRACING}/buffer_size_kb") as f:
            self.buffer_kb = f.read().strip()
        self.clear()
        write(f"{TRACING}/buffer_size_kb", "65536")
        # One write per probe: the kernel takes or refuses each definition.
        fd = os.open(f"{TRACING}/uprobe_events", os.O_WRONLY | os.O_APPEND)
        refused = []
        try:
            for i, (off, name) in enumerate(syms):
                try:
                    os.write(fd, f"p:{GROUP}/f{i} {binary}:{off:#x}\n".encode())
                except OSError:
                    refused.append(name)
        finally:
            os.close(fd)
        if refused:
            print(f"uprobes refused at {len(refused)} functions (not in the list): {refused[:5]}...", file=sys.stderr)
        write(f"{TRACING}/trace", "")
        write(f"{TRACING}/events/{GROUP}/enable", "1")

    def clear(self):
        if os.path.isdir(f"{TRACING}/events/{GROUP}"):
            write(f"{TRACING}/events/{GROUP}/enable", "0")
            with open(f"{TRACING}/uprobe_events") as f:
                ours = [line.split()[0].split(":", 1)[1] for line in f if line.startswith(f"p:{GROUP}/")]
            fd = os.open(f"{TRACING}/uprobe_events", os.O_WRONLY | os.O_APPEND)
            try:
                for name in ours:
                    os.write(fd, f"-:{name}\n".encode())
            finally:
                os.close(fd)

    def hits(self):
        """(pid, probe index) in the order they fired."""
        write(f"{TRACING}/events/{GROUP}/enable", "0")
        pat = re.compile(r"-(\d+)\s+\[\d+\].*?\s(f\d+):")
        with open(f"{TRACING}/trace") as f:
            for line in f:
                m = pat.search(line)
                if m:
                    yield int(m.group(1)), int(m.group(2)[1:])

    def close(self):
        self.clear()
        write(f"{TRACING}/trace", "")
        write(f"{TRACING}/buffer_size_kb", self.buffer_kb)
        if self.mounted:
            sh("umount", TRACING)


def bundle(dir, binary, args):
    rootfs = os.path.join(dir, "rootfs", "bin")
    os.makedirs(rootfs)
    shutil.copy("/bin/busybox", rootfs)
    for applet in ("true", "sleep", "sh"):
        os.symlink("busybox", os.path.join(rootfs, applet))
    sh(binary, "spec", cwd=dir)
    path = os.path.join(dir, "config.json")
    with open(path) as f:
        spec = json.load(f)
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    write(path, json.dumps(spec))
    return dir


def workload(binary, tmp, short, long):
    """The paths the list is for. Returns when every container is gone."""
    root = os.path.join(tmp, "root")
    plain = [binary, "--root", root]
    logged = plain + ["--log", os.path.join(tmp, "log.json"), "--log-format", "json"]
    try:
        sh(*plain, "run", "--bundle", short, "hot-run", stdin=subprocess.DEVNULL)
        sh(*logged, "create", "--bundle", long, "hot-c", stdin=subprocess.DEVNULL)
        sh(*logged, "start", "hot-c")
        sh(*logged, "state", "hot-c", stdout=subprocess.DEVNULL)
        sh(*logged, "exec", "hot-c", "true", stdin=subprocess.DEVNULL)
        sh(*logged, "kill", "hot-c", "KILL")
        for _ in range(100):
            state = json.loads(sh(*plain, "state", "hot-c", capture_output=True).stdout)
            if state["status"] == "stopped":
                break
            time.sleep(0.05)
        sh(*logged, "delete", "hot-c")
    finally:
        for id in ("hot-run", "hot-c"):
            subprocess.run(plain + ["delete", "--force", id], stderr=subprocess.DEVNULL)


def order(syms, hits):
    """Names: those the runtime's own processes ran, then the rest."""
    main = next((i for i, (_, name) in enumerate(syms) if name == "main"), None)
    runtime_pids, first = set(), {}
    for pid, i in hits:
        if i == main:
            runtime_pids.add(pid)
        first.setdefault(i, (pid in runtime_pids, len(first)))
    # A function first run by a child may also run in the runtime later.
    for pid, i in hits:
        if pid in runtime_pids and not first[i][0]:
            first[i] = (True, first[i][1])
    ranked = sorted(first, key=lambda i: (not first[i][0], first[i][1]))
    return [syms[i][1] for i in ranked], sum(1 for v in first.values() if v[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-build", action="store_true", help="use target/release/berth-runtime as it is")
    ap.add_argument("--merge", action="store_true", help="add to the list in --out instead of replacing it")
    ap.add_argument("--out", default=os.path.join(REPO, "crates/berth-runtime/hot-text.txt"))
    opts = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: uprobes and containers need it")
    if not opts.no_build:
        sh("cargo", "build", "--release", cwd=REPO)
    binary = os.path.join(REPO, "target/release/berth-runtime")
    syms = text_symbols(binary)
    tmp = tempfile.mkdtemp(prefix="berth-hot-")
    # The probes see the binary by inode: a copy keeps cargo from replacing
    # it underneath them.
    probed = os.path.join(tmp, "berth-runtime")
    shutil.copy2(binary, probed)
    # Made before the probes: `spec` is not a path to optimise for.
    short = bundle(os.path.join(tmp, "short"), binary, ["true"])
    long = bundle(os.path.join(tmp, "long"), binary, ["sleep", "30"])
    probes = Probes(probed, syms)
    try:
        workload(probed, tmp, short, long)
        names, own = order(syms, list(probes.hits()))
    finally:
        probes.close()
        shutil.rmtree(tmp, ignore_errors=True)
    own_names, child_names = names[:own], names[own:]
    if opts.merge and os.path.exists(opts.out):
        old_own, old_child = read_list(opts.out)
        own_names = merged(old_own, own_names)
        own_bare = {bare(n) for n in own_names}
        child_names = [n for n in merged(old_child, child_names) if bare(n) not in own_bare]
    rustc = sh("rustc", "--version", capture_output=True).stdout.strip()
    head = [
        "# berth-runtime's hot functions, placed together by the linker (see build.rs).",
        "# Generated by scripts/hot-text.py; regenerate after new code paths or a toolchain",
        f"# update. {rustc}.",
        OWN,
    ]
    write(opts.out, "\n".join(head + own_names + [CHILDREN] + child_names) + "\n")
    print(f"{opts.out}: {len(own_names)} functions the runtime's own process runs, {len(child_names)} only its children")


OWN = "# The runtime's own process runs:"
CHILDREN = "# Only its children (the init before exec, exec's child) run:"


def read_list(path):
    own, child, group = [], [], None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line in (OWN, CHILDREN):
                group = own if line == OWN else child
            elif line and not line.startswith("#") and group is not None:
                group.append(line)
    return own, child


def merged(first, then):
    """`first`, then the functions of `then` it lacks (hashes aside)."""
    seen = {bare(n) for n in first}
    return first + [n for n in then if not (bare(n) in seen or seen.add(bare(n)))]


def bare(name):
    """The name as build.rs matches it: v0 crate hashes, the legacy hash
    and LLVM's numbering of local functions left out."""
    name = re.sub(r"Cs[0-9A-Za-z]+_(?=[0-9])", "Cs*_", name)
    name = re.sub(r"17h[0-9a-f]{16}E$", "17h*E", name)
    return re.sub(r"\.[0-9]+$", "", name)


if __name__ == "__main__":
    main()
