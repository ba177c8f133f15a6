#!/usr/bin/env bash
# runtime-lifecycle.sh: container lifecycle latency of berth-runtime, side by
# side with runc and crun, on one and the same bundle.
#
# What it measures (wall clock, per runtime, per iteration):
#   run     `RT run --bundle B ID` of `true` in the foreground: create, start,
#           wait for the exit, remove the container
#   create  `RT create --bundle B ID`
#   start   `RT start ID` (the process is `true`, so it then exits)
#   delete  `RT delete ID`, once `RT state ID` reports "stopped" (that wait
#           is polled between the measurements and is not part of any time)
#   rss     peak RSS (KiB) of `RT run` of `true`: GNU time's %M, the
#           largest of the runtime's processes (its re-executions and the
#           container's init before it execs included: the kernel keeps a
#           process's peak across exec); medians are of KiB, not ms
#   podman  `podman --runtime RT run --rm IMG true`: a real client's whole
#           start-up and teardown (conmon, storage, cleanup process), with
#           the runtime swapped; shows the runtime's share of it. Measured
#           when podman is installed (see "podman" below).
# Runtimes alternate within every iteration (berth, runc, crun, berth, ...)
# so drift hits all of them alike. After a few uncounted warm-up iterations
# it prints the MEDIAN per runtime and operation, the p10-p90 spread, and
# the ratios berth/runc and berth/crun. Nothing is asserted about timings.
#
# Run it as root:
#   sudo bench/runtime-lifecycle.sh                 # 30 iterations
#   sudo RUNS=100 WARMUP=5 bench/runtime-lifecycle.sh
#   sudo bench/runtime-lifecycle.sh --runs 100 --csv /tmp/samples.csv
#
# Environment (each also a flag, see --help):
#   RUNS=30        counted iterations             WARMUP=3  uncounted ones
#   CSV=PATH       also write every raw sample (iteration,runtime,op,usec)
#   OPS="run lifecycle podman"  what to measure; "lifecycle" =
#                  create+start+delete; "podman" is left out by default
#                  when podman is not installed
#   RUNTIMES="berth runc crun"   which runtimes, in this order
#   SETTLE=0.05    seconds of (untimed) quiet before every timed operation;
#                  0 runs them back to back (see "Settling" below)
#   KEEP_GOING=1   when an operation fails, report that runtime/op as FAILED,
#                  keep measuring the rest, and exit non-zero at the end
#                  (default: stop at the first failure)
#   BERTH=PATH     berth-runtime binary (default target/release/berth-runtime
#                  of this workspace; built with `cargo build --release -p
#                  berth-runtime` when missing)
#   BUNDLE=DIR     reuse an existing bundle instead of building a temporary one
#   WARM_RCU=1     keep the kernel's cgroup fast path armed for the whole run
#                  (see "Settling"), to measure the runtimes' own work
#
# The bundle: rootfs from Debian's busybox-static (/bin/busybox plus one
# symlink per applet), config.json from `berth-runtime spec` with
# process.terminal=false and args ["true"]. ociVersion is set to 1.0.2
# because crun 1.8.1 rejects anything but 1.0.x ("unknown version
# specified"); runc and berth-runtime accept either.
#
# Each runtime gets its own temporary --root. Any operation that fails stops
# the script with its output (no failure is ever timed). On exit, every
# container the script made is force-deleted by id in its runtime's root and
# the temporary directories are removed.
#
# crun 1.8.1 refuses a cgroup v1 "hybrid" host whose cgroup2 mount still
# holds a controller ("cgroups in hybrid mode not supported, drop all
# controllers from cgroupv2"). When crun fails that way and
# /sys/fs/cgroup/hugetlb is not a mount point yet, the script mounts hugetlb
# as its own v1 hierarchy there (the only cgroup mount change it makes, said
# so loudly, and left in place), before any measurement, so all runtimes are
# measured in the same layout. If crun still cannot run, it is left out.
#
# Settling: on cgroup v1 the first write to cgroup.procs after a quiet spell
# waits for an RCU grace period (the kernel's cgroup_threadgroup_rwsem);
# writes soon after another migration skip that wait. Back to back, a
# runtime's `create` would then be ~10 ms faster or slower depending on what
# the previous runtime just did, which is noise that depends on the order.
# Every timed operation therefore starts after the same short pause, so
# every runtime pays the wait alike, as a container started on a quiet host
# does ("cold"). With WARM_RCU=1 a keeper process instead moves a sleeping
# process between two cgroups of its own every 2 ms for the whole run, so no
# runtime waits at all ("warm"): that isolates the runtimes' own work.
#
# podman: the same busybox rootfs is imported as an image (`podman import`,
# no registry) into a podman configured entirely under the temporary dir
# (storage, tmp dir, events log; cgroupfs; no network namespace setup;
# default ulimits at the shell's own hard limits, since podman's default of
# 1048576 open files needs CAP_SYS_RESOURCE), with `runtime_supports_json`
# listing berth-runtime as podman's built-in list does runc and crun, so all
# three get `--log-format=json`. Containers go under the cgroup parent
# /bench-PID-podman, removed at the end. Each runtime keeps its state in its
# own default root (podman does not pass a custom root on to its cleanup
# process).
#
# Needs: bash 5 (for $EPOCHREALTIME), jq (installed with apt-get if missing),
# /bin/busybox (package busybox-static), runc and/or crun; podman and conmon
# for the podman op.

set -euo pipefail

usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; }

RUNS=${RUNS:-30}
WARMUP=${WARMUP:-3}
CSV=${CSV:-}
if command -v podman >/dev/null; then OPS=${OPS:-run lifecycle rss podman}; else OPS=${OPS:-run lifecycle rss}; fi
RUNTIMES=${RUNTIMES:-berth runc crun}
KEEP_GOING=${KEEP_GOING:-0}
SETTLE=${SETTLE:-0.05}
WARM_RCU=${WARM_RCU:-0}
BUNDLE=${BUNDLE:-}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BERTH=${BERTH:-$REPO/target/release/berth-runtime}

while (($#)); do
    case $1 in
        -n | --runs) RUNS=$2; shift 2 ;;
        -w | --warmup) WARMUP=$2; shift 2 ;;
        --csv) CSV=$2; shift 2 ;;
        --ops) OPS=$2; shift 2 ;;
        --runtimes) RUNTIMES=$2; shift 2 ;;
        --keep-going) KEEP_GOING=1; shift ;;
        --settle) SETTLE=$2; shift 2 ;;
        --warm-rcu) WARM_RCU=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

say() { printf '%s\n' "$*"; }
die() { printf 'runtime-lifecycle: error: %s\n' "$*" >&2; exit 1; }

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer, not '$RUNS'"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a non-negative integer, not '$WARMUP'"
[[ $SETTLE =~ ^[0-9]*\.?[0-9]+$ ]] || die "SETTLE must be a number of seconds, not '$SETTLE'"
for op in $OPS; do
    [[ $op == run || $op == lifecycle || $op == rss || $op == podman ]] ||
        die "OPS may hold 'run', 'lifecycle', 'rss' and 'podman', not '$op'"
done
((EUID == 0)) || die "run me as root (sudo $0)"
((BASH_VERSINFO[0] >= 5)) || die "bash 5 is needed (for \$EPOCHREALTIME)"

# ---------------------------------------------------------------- tools

if ! command -v jq >/dev/null; then
    say "jq is missing: apt-get install -y jq"
    apt-get install -y jq >/dev/null || die "could not install jq"
fi
if [[ " $OPS " == *" rss "* && ! -x /usr/bin/time ]]; then
    say "GNU time is missing: apt-get install -y time"
    apt-get install -y time >/dev/null || die "could not install time"
fi
[[ -x /bin/busybox ]] || die "/bin/busybox is missing (apt-get install busybox-static)"
if [[ ! -x $BERTH ]]; then
    [[ $BERTH == "$REPO/target/release/berth-runtime" ]] || die "BERTH=$BERTH is not executable"
    command -v cargo >/dev/null || die "$BERTH is missing and cargo is not installed to build it"
    say "building berth-runtime: cargo build --release -p berth-runtime"
    (cd "$REPO" && cargo build --release -p berth-runtime) || die "cargo build failed"
fi

declare -A BIN=()
declare -a RTS=()
for rt in $RUNTIMES; do
    case $rt in
        berth) BIN[berth]=$BERTH ;;
        runc | crun)
            if ! BIN[$rt]=$(command -v "$rt"); then
                say "note: $rt is not installed; leaving it out"
                continue
            fi
            ;;
        *) die "unknown runtime '$rt' (berth, runc, crun)" ;;
    esac
    RTS+=("$rt")
done
((${#RTS[@]} > 0)) || die "no runtime to measure"

# ---------------------------------------------------------------- state, cleanup

WORK=$(mktemp -d /tmp/berth-bench.XXXXXX)
LOG=$WORK/last.log      # output of the last runtime command
SAMPLES=$WORK/samples.csv
: >"$SAMPLES"
PREFIX=bench-$$         # every container id starts with this
declare -A ROOT=()      # runtime -> its --root
declare -A MADE=()      # "runtime id" -> 1 for every container not yet deleted
declare -A FAILED=()    # "runtime/op" -> first error (KEEP_GOING=1)
for rt in "${RTS[@]}"; do
    ROOT[$rt]=$WORK/root-$rt
    mkdir "${ROOT[$rt]}"
done

# rt ARGS...: the runtime with its own --root
rtcmd() {
    local rt=$1
    shift
    "${BIN[$rt]}" --root "${ROOT[$rt]}" "$@"
}

cleanup() {
    local rc=$? rt id key left
    local -A ids
    trap - EXIT INT TERM
    for rt in "${!ROOT[@]}"; do
        [[ -d ${ROOT[$rt]} ]] || continue
        # The ids this script made, plus whatever the runtime still lists.
        ids=()
        for key in "${!MADE[@]}"; do
            [[ $key == "$rt "* ]] && ids[${key#* }]=1
        done
        while read -r id; do
            [[ -n $id ]] && ids[$id]=1
        done < <(rtcmd "$rt" list -q 2>/dev/null || true)
        for id in "${!ids[@]}"; do
            rtcmd "$rt" state "$id" >/dev/null 2>&1 || continue
            say "cleanup: $rt delete --force $id"
            rtcmd "$rt" delete --force "$id" >/dev/null 2>&1 || say "cleanup: WARNING: $rt could not delete $id"
        done
    done
    stop_keeper
    podman_teardown
    rm -rf "$WORK"
    left=$(find /sys/fs/cgroup -name "$PREFIX-*" 2>/dev/null || true)
    [[ -z $left ]] || printf 'cleanup: WARNING: cgroups left behind:\n%s\n' "$left" >&2
    left=$(grep -e "$PREFIX-" -e "$WORK" /proc/self/mountinfo || true)
    [[ -z $left ]] || printf 'cleanup: WARNING: mounts left behind:\n%s\n' "$left" >&2
    exit "$rc"
}
# ---------------------------------------------------------------- warm RCU keeper

KEEPER='' KEEP_SLEEPER='' KEEP_DIR=''
start_keeper() {
    local hier
    for hier in /sys/fs/cgroup/pids /sys/fs/cgroup/unified /sys/fs/cgroup; do
        [[ -f $hier/cgroup.procs ]] && break
    done
    KEEP_DIR=$hier/$PREFIX-keeper
    mkdir -p "$KEEP_DIR/a" "$KEEP_DIR/b"
    sleep 1000000 &
    KEEP_SLEEPER=$!
    cat >"$WORK/keeper.py" <<'PY'
import sys, time
d, pid = sys.argv[1], sys.argv[2]
while True:
    for sub in ("a", "b"):
        with open(f"{d}/{sub}/cgroup.procs", "w") as f:
            f.write(pid)
        time.sleep(0.002)
PY
    python3 "$WORK/keeper.py" "$KEEP_DIR" "$KEEP_SLEEPER" &
    KEEPER=$!
}
stop_keeper() {
    local pid
    for pid in $KEEPER $KEEP_SLEEPER; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    [[ -n $KEEP_DIR ]] && rmdir "$KEEP_DIR/a" "$KEEP_DIR/b" "$KEEP_DIR" 2>/dev/null
    KEEPER='' KEEP_SLEEPER='' KEEP_DIR=''
    return 0
}

# ---------------------------------------------------------------- podman

PODMAN_CG=/$PREFIX-podman
PODMAN_IMAGE=localhost/berth-bench-busybox:latest
PODMAN_READY=0
podman_cmd() {
    CONTAINERS_CONF=$WORK/podman/containers.conf CONTAINERS_STORAGE_CONF=$WORK/podman/storage.conf \
        CONTAINERS_REGISTRIES_CONF=$WORK/podman/registries.conf podman "$@"
}
podman_setup() {
    local nofile nproc d=$WORK/podman
    nofile=$(ulimit -Hn)
    nproc=$(ulimit -Hu)
    [[ $nproc == unlimited ]] || ((nproc > 32768)) && nproc=32768
    mkdir -p "$d"
    {
        echo '[containers]'
        echo 'netns = "none"'
        echo "default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]"
        echo '[engine]'
        echo 'cgroup_manager = "cgroupfs"'
        echo 'events_logger = "file"'
        echo "events_logfile_path = \"$d/events.log\""
        echo "tmp_dir = \"$d/tmp\""
        echo "volume_path = \"$d/volumes\""
        echo 'runtime_supports_json = ["berth-runtime", "runc", "crun"]'
        echo '[network]'
        echo "network_config_dir = \"$d/net\""
    } >"$d/containers.conf"
    echo 'unqualified-search-registries = []' >"$d/registries.conf"
    printf '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n' "$d/storage" "$d/run" >"$d/storage.conf"
    PODMAN_READY=1
    tar -C "$BUNDLE/rootfs" -c . | podman_cmd import --quiet - "$PODMAN_IMAGE" >"$LOG" 2>&1 ||
        die "podman import failed: $(cat "$LOG")"
}
podman_teardown() {
    ((PODMAN_READY)) || return 0
    PODMAN_READY=0
    podman_cmd rm --all --force --time 0 >/dev/null 2>&1 || true
    local m d
    # containers/storage keeps its overlay dir as a private bind mount.
    while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done < <(awk -v w="$WORK/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
    for d in /sys/fs/cgroup/*/"${PODMAN_CG#/}"; do
        [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    return 0
}

measure_podman() {
    local iter=$1 rt=$2 t0 t1 rc=0
    [[ -z ${FAILED[$rt/podman]:-} ]] || return 0
    sleep "$SETTLE"
    t0=$EPOCHREALTIME
    podman_cmd --runtime "${BIN[$rt]}" run --rm --cgroup-parent "$PODMAN_CG" "$PODMAN_IMAGE" true \
        </dev/null >"$LOG" 2>&1 || rc=$?
    t1=$EPOCHREALTIME
    if ((rc != 0)); then
        printf 'runtime-lifecycle: %s podman FAILED: podman run exited with status %s\n' "$rt" "$rc" >&2
        sed 's/^/    | /' "$LOG" >&2
        ((KEEP_GOING)) || exit 1
        FAILED[$rt/podman]="podman run exited with status $rc"
        return 0
    fi
    USEC=$((10#${t1//[!0-9]/} - 10#${t0//[!0-9]/}))
    record "$iter" "$rt" podman
}

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- bundle

if [[ -n $BUNDLE ]]; then
    [[ -f $BUNDLE/config.json && -d $BUNDLE/rootfs ]] || die "BUNDLE=$BUNDLE has no config.json and rootfs"
    BUNDLE=$(cd "$BUNDLE" && pwd)
else
    BUNDLE=$WORK/bundle
    mkdir -p "$BUNDLE/rootfs/bin"
    cp /bin/busybox "$BUNDLE/rootfs/bin/busybox"
    for applet in $(/bin/busybox --list); do
        # A symlink named busybox would replace the binary itself.
        [[ $applet == busybox ]] || ln -s busybox "$BUNDLE/rootfs/bin/$applet"
    done
    (cd "$BUNDLE" && "$BERTH" spec) || die "berth-runtime spec failed"
    jq '.ociVersion = "1.0.2" | .process.terminal = false | .process.args = ["true"]' \
        "$BUNDLE/config.json" >"$WORK/config.json"
    mv "$WORK/config.json" "$BUNDLE/config.json"
fi

# ---------------------------------------------------------------- measuring

N=0 # container counter, for unique ids
new_id() {
    N=$((N + 1))
    ID=$PREFIX-$1-$N
}

# fail RT OP MESSAGE: stop (or, with KEEP_GOING=1, record the failure and
# remove what the failed container left).
fail() {
    local rt=$1 op=$2 msg=$3
    printf 'runtime-lifecycle: %s %s FAILED: %s\n' "$rt" "$op" "$msg" >&2
    sed 's/^/    | /' "$LOG" >&2
    ((KEEP_GOING)) || exit 1
    FAILED[$rt/$op]=${FAILED[$rt/$op]:-$msg}
    if rtcmd "$rt" state "$ID" >/dev/null 2>&1; then
        rtcmd "$rt" delete --force "$ID" >/dev/null 2>&1 && unset "MADE[$rt $ID]"
    else
        unset "MADE[$rt $ID]"
    fi
}

# timed RT OP ARGS...: runs `RT ARGS...` once with its output in $LOG and
# puts the wall-clock time in $USEC; returns 1 (after fail) if it failed.
timed() {
    local rt=$1 op=$2 t0 t1 rc=0
    shift 2
    sleep "$SETTLE"
    t0=$EPOCHREALTIME
    rtcmd "$rt" "$@" </dev/null >"$LOG" 2>&1 || rc=$?
    t1=$EPOCHREALTIME
    if ((rc != 0)); then
        fail "$rt" "$op" "\`${BIN[$rt]##*/} $*\` exited with status $rc"
        return 1
    fi
    # $EPOCHREALTIME is seconds with 6 decimals (the separator depends on
    # the locale); digits only, that is microseconds.
    USEC=$((10#${t1//[!0-9]/} - 10#${t0//[!0-9]/}))
}

# record ITERATION RT OP: keeps $USEC unless this is a warm-up.
record() {
    (($1 > 0)) && printf '%s,%s,%s,%s\n' "$1" "$2" "$3" "$USEC" >>"$SAMPLES"
    return 0
}

# wait_stopped RT ID: polls `state` until it says "stopped" (not timed).
wait_stopped() {
    local rt=$1 id=$2 status i
    for ((i = 0; i < 2000; i++)); do
        rtcmd "$rt" state "$id" >"$LOG" 2>&1 || { fail "$rt" start "\`state $id\` failed"; return 1; }
        status=$(jq -r .status "$LOG")
        [[ $status == stopped ]] && return 0
        sleep 0.005
    done
    fail "$rt" start "$id is still '$status' 10s after start (expected it to stop)"
    return 1
}

measure_run() {
    local iter=$1 rt=$2
    [[ -z ${FAILED[$rt/run]:-} ]] || return 0
    new_id "$rt"
    MADE[$rt $ID]=1
    timed "$rt" run run --bundle "$BUNDLE" "$ID" || return 0
    record "$iter" "$rt" run
    # run removes the container; check it really did.
    if rtcmd "$rt" state "$ID" >"$LOG" 2>&1; then
        fail "$rt" run "container $ID still exists after \`run\` returned"
        return 0
    fi
    unset "MADE[$rt $ID]"
}

measure_rss() {
    local iter=$1 rt=$2 rc=0
    [[ -z ${FAILED[$rt/rss]:-} ]] || return 0
    new_id "$rt"
    MADE[$rt $ID]=1
    sleep "$SETTLE"
    /usr/bin/time -f %M -o "$LOG.rss" "${BIN[$rt]}" --root "${ROOT[$rt]}" run --bundle "$BUNDLE" "$ID" \
        </dev/null >"$LOG" 2>&1 || rc=$?
    if ((rc != 0)); then
        fail "$rt" rss "\`${BIN[$rt]##*/} run\` exited with status $rc"
        return 0
    fi
    USEC=$(tail -n1 "$LOG.rss")
    record "$iter" "$rt" rss
    unset "MADE[$rt $ID]"
}

measure_lifecycle() {
    local iter=$1 rt=$2
    [[ -z ${FAILED[$rt/create]:-}${FAILED[$rt/start]:-}${FAILED[$rt/delete]:-} ]] || return 0
    new_id "$rt"
    MADE[$rt $ID]=1
    timed "$rt" create create --bundle "$BUNDLE" "$ID" || return 0
    record "$iter" "$rt" create
    timed "$rt" start start "$ID" || return 0
    record "$iter" "$rt" start
    wait_stopped "$rt" "$ID" || return 0
    timed "$rt" delete delete "$ID" || return 0
    record "$iter" "$rt" delete
    unset "MADE[$rt $ID]"
}

iteration() {
    local iter=$1 op rt
    for op in $OPS; do
        for rt in "${RTS[@]}"; do
            "measure_$op" "$iter" "$rt"
        done
    done
}

# ---------------------------------------------------------------- crun and cgroups

is_mountpoint() { awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo; }

cgroup_layout() {
    local v1 v2
    v1=$(awk '$9 == "cgroup" { n++ } END { print n + 0 }' /proc/self/mountinfo)
    v2=$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)
    if ((v1 > 0)) && [[ -n $v2 ]]; then
        local ctrls
        ctrls=$(cat "$v2/cgroup.controllers" 2>/dev/null || true)
        echo "hybrid: $v1 v1 hierarchies + cgroup2 at $v2 (controllers: ${ctrls:-none})"
    elif ((v1 > 0)); then
        echo "v1: $v1 hierarchies"
    else
        echo "v2 (unified) at $v2"
    fi
}

# probe RT: one untimed `run`, to see that the runtime works at all.
probe() {
    local rt=$1 rc=0
    new_id "$rt-probe"
    MADE[$rt $ID]=1
    rtcmd "$rt" run --bundle "$BUNDLE" "$ID" </dev/null >"$LOG" 2>&1 || rc=$?
    if rtcmd "$rt" state "$ID" >/dev/null 2>&1; then
        rtcmd "$rt" delete --force "$ID" >/dev/null 2>&1 || true
    fi
    rtcmd "$rt" state "$ID" >/dev/null 2>&1 || unset "MADE[$rt $ID]"
    return "$rc"
}

drop_runtime() {
    local keep=() rt
    for rt in "${RTS[@]}"; do
        [[ $rt == "$1" ]] || keep+=("$rt")
    done
    RTS=("${keep[@]}")
}

if [[ -n ${BIN[crun]:-} ]] && ! probe crun; then
    if grep -q 'hybrid mode not supported' "$LOG" && ! is_mountpoint /sys/fs/cgroup/hugetlb; then
        say "crun: $(head -n1 "$LOG")"
        say ">>> CHANGING THE HOST'S CGROUP MOUNTS: mounting hugetlb as its own v1 hierarchy"
        say ">>>   mkdir -p /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb"
        say ">>> (left mounted; no other cgroup hierarchy is touched)"
        mkdir -p /sys/fs/cgroup/hugetlb || die "cannot create /sys/fs/cgroup/hugetlb"
        mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb || die "mounting the hugetlb hierarchy failed"
    fi
    if ! probe crun; then
        say "crun cannot run containers here, leaving it out: $(head -n1 "$LOG")"
        drop_runtime crun
        ((${#RTS[@]} > 0)) || die "no runtime left to measure"
    fi
fi

if [[ " $OPS " == *" podman "* ]]; then
    command -v podman >/dev/null || die "OPS has podman but podman is not installed (apt-get install podman)"
    podman_setup
fi

# ---------------------------------------------------------------- go

version() { "${BIN[$1]}" --version 2>/dev/null | head -n1 || true; }

say "runtime lifecycle benchmark: $RUNS iterations (+$WARMUP warm-up), ops: $OPS, ${SETTLE}s pause before each"
if ((WARM_RCU)); then
    start_keeper
    say "warm mode: a keeper moves a sleeper between $KEEP_DIR/{a,b} every 2 ms (no RCU waits on cgroup attach)"
fi
say "kernel $(uname -r), $(nproc) CPUs, cgroups $(cgroup_layout)"
for rt in "${RTS[@]}"; do
    printf '  %-6s %s (%s)\n' "$rt" "${BIN[$rt]}" "$(version "$rt")"
done
say "  bundle $BUNDLE"
# The hot-function order (crates/berth-runtime/hot-text.txt) only helps a
# binary whose functions it still names (hashes aside, as build.rs matches
# them); say how many (needs nm).
hot_list=$REPO/crates/berth-runtime/hot-text.txt
if [[ -f $hot_list ]] && command -v nm >/dev/null; then
    listed=$(grep -vc '^#' "$hot_list")
    found=$(nm --defined-only "$BERTH" 2>/dev/null | awk '
        function bare(s) { gsub(/Cs[0-9A-Za-z]+_/, "Cs*_", s); sub(/17h[0-9a-f]+E$/, "17h*E", s); sub(/\.[0-9]+$/, "", s); return s }
        NR == FNR { if ($0 !~ /^#/) want[bare($0)] = 1; next }
        (bare($3) in want) { seen[bare($3)] = 1 }
        END { n = 0; for (k in seen) n++; print n }' "$hot_list" -)
    say "  hot-text.txt: $found of $listed functions found in $BERTH"
    if ((found * 10 < listed * 9)); then
        say "  (stale for this build: its RSS and start-up suffer; regenerate with scripts/hot-text.py)"
    fi
fi

for ((i = 1; i <= WARMUP; i++)); do
    iteration 0
done
for ((i = 1; i <= RUNS; i++)); do
    iteration "$i"
    if ((i % 10 == 0 || i == RUNS)); then
        say "  ... $i/$RUNS"
    fi
done

# ---------------------------------------------------------------- report

# summary RT OP: "median p10 p90" in microseconds, or nothing without samples.
summary() {
    awk -F, -v r="$1" -v o="$2" '$2 == r && $3 == o { print $4 }' "$SAMPLES" | sort -n |
        awk '{ v[NR] = $1 }
             END {
                 if (NR == 0) exit
                 m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
                 lo = v[int(0.1 * (NR - 1)) + 1]; hi = v[NR - int(0.1 * (NR - 1))]
                 print m, lo, hi
             }'
}

ms() { awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2fx", a / b; else printf "-" }'; }

declare -A MED=() SPREAD=()
ops=()
for op in $OPS; do
    case $op in
        run | podman) ops+=("$op") ;;
        rss) ;;
        *) ops+=(create start delete) ;;
    esac
done
for rt in "${RTS[@]}"; do
    for op in "${ops[@]}"; do
        read -r m lo hi < <(summary "$rt" "$op") || true
        if [[ -n ${m:-} ]]; then
            MED[$rt/$op]=$m
            SPREAD[$rt/$op]="$(ms "$lo")-$(ms "$hi")"
        fi
        unset m lo hi
    done
done

cell() {
    if [[ -n ${MED[$1/$2]:-} ]]; then ms "${MED[$1/$2]}"
    elif [[ -n ${FAILED[$1/$2]:-} ]]; then printf 'FAILED'
    elif [[ $2 != run && $2 != podman && -n ${FAILED[$1/create]:-}${FAILED[$1/start]:-}${FAILED[$1/delete]:-} ]]; then printf 'n/a'
    else printf -- '-'
    fi
}

others=()
for rt in "${RTS[@]}"; do
    [[ $rt == berth ]] || others+=("$rt")
done

echo
say "median wall-clock time per operation, ms ($RUNS runs)"
header=$(printf '%-8s' op; for rt in "${RTS[@]}"; do printf ' %10s' "$rt"; done)
if [[ " ${RTS[*]} " == *" berth "* ]]; then
    for rt in "${others[@]}"; do header+=$(printf ' %12s' "berth/$rt"); done
fi
say "$header"
say "$(printf '%s' "$header" | tr -c '\n' '-')"
for op in "${ops[@]}"; do
    line=$(printf '%-8s' "$op"; for rt in "${RTS[@]}"; do printf ' %10s' "$(cell "$rt" "$op")"; done)
    if [[ " ${RTS[*]} " == *" berth "* ]]; then
        for rt in "${others[@]}"; do
            line+=$(printf ' %12s' "$(ratio "${MED[berth/$op]:-0}" "${MED[$rt/$op]:-0}")")
        done
    fi
    say "$line"
done
echo
say "p10-p90 spread, ms"
line=$(printf '%-8s' op; for rt in "${RTS[@]}"; do printf ' %14s' "$rt"; done)
say "$line"
say "$(printf '%s' "$line" | tr -c '\n' '-')"
for op in "${ops[@]}"; do
    say "$(printf '%-8s' "$op"; for rt in "${RTS[@]}"; do printf ' %14s' "${SPREAD[$rt/$op]:--}"; done)"
done

if [[ " $OPS " == *" rss "* ]]; then
    echo
    say "peak RSS of \`run\` of true, KiB (median of $RUNS)"
    line=$(printf '%-8s' ""; for rt in "${RTS[@]}"; do printf ' %10s' "$rt"; done)
    for rt in "${others[@]}"; do line+=$(printf ' %12s' "berth/$rt"); done
    say "$line"
    line=$(printf '%-8s' rss; for rt in "${RTS[@]}"; do
        read -r m _ < <(summary "$rt" rss) || true
        printf ' %10s' "${m:--}"
    done)
    read -r b _ < <(summary berth rss) || true
    for rt in "${others[@]}"; do
        read -r o _ < <(summary "$rt" rss) || true
        line+=$(printf ' %12s' "$(ratio "${b:-0}" "${o:-0}")")
    done
    say "$line"
fi

if [[ -n $CSV ]]; then
    { echo "iteration,runtime,op,usec"; cat "$SAMPLES"; } >"$CSV"
    say "raw samples: $CSV"
fi

if ((${#FAILED[@]})); then
    echo
    for key in "${!FAILED[@]}"; do
        say "FAILED: $key: ${FAILED[$key]}"
    done
    exit 1
fi
