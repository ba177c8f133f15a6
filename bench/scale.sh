#!/usr/bin/env bash
# scale.sh: does a start slow down as the node fills up? Starts N detached
# containers (`berth run -d --network none IMG sleep 100000`, one after the
# other) and reports the time per start in buckets (1-100, 101-500,
# 501-N: median and p90), then, with all N running: `berth run --rm
# --network none IMG true` (median of 20, also measured before the first
# start), `berth ps` and `berth inspect`
# (medians of 5), memory (the shims' PSS summed from /proc/PID/smaps_rollup,
# the container processes' PSS, and the "used" column of `free` before and
# after), the time to remove them all (`berth rm -f` in batches of 50), and
# whether anything was left behind (mounts under the temporary root, cgroups
# under the bench's parent, shims). Then the same for podman (crun, its own
# --root/--runroot, --network none, --cgroup-manager cgroupfs) for as many
# containers as it starts in the same time budget: the time berth took for
# its N, or --budget SECS. Nothing is asserted about timings.
#
#   sudo bench/scale.sh                 # N = 1000
#   sudo bench/scale.sh 200 --budget 60
#   sudo PROFILE=debug BUILD=0 bench/scale.sh 200   # binaries already built
#   sudo PODMAN=0 bench/scale.sh 200                # berth only
#
# Everything lives in one temporary directory ($W): berth's --root and
# --runroot, podman's storage, run root and configuration. The containers'
# cgroups go under /$CG/berth and /$CG/podman (CG is per run) in every
# hierarchy. An EXIT trap (also on Ctrl-C) removes every container, kills
# any shim or conmon left (by PID, found by $W in its command line),
# unmounts what is under $W, removes the cgroups and $W.
#
# Debug binaries (PROFILE=debug) are slower throughout, and redb built with
# debug assertions walks every page of a database each time it is opened (a
# cost per command that grows with N, absent from release builds): build
# them with --config 'profile.dev.package.redb.debug-assertions=false'.
#
# PERF_DIR=DIR (berth only): also records `perf record -a -g` over 10
# `berth run --rm` idle and at N, into DIR/idle.data and DIR/at-n.data
# (compare with `perf report --no-children --sort sym -i ...`): where the
# time a full node adds goes (the kernel's share included).
#
# Needs: busybox-static, podman and crun for the podman side. The bench
# raises its own `ulimit -n` to the hard limit: 1000 shims hold ~10 fds
# each in this shell's children, and podman's conmons more.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=1000
BUDGET=
while (($#)); do
	case $1 in
	--budget) BUDGET=${2:?--budget needs SECS}; shift 2 ;;
	--budget=*) BUDGET=${1#--budget=}; shift ;;
	-h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	[0-9]*) N=$1; shift ;;
	*) echo "scale.sh: unknown argument '$1' (usage: scale.sh [N] [--budget SECS])" >&2; exit 2 ;;
	esac
done
[[ $N =~ ^[1-9][0-9]*$ ]] || { echo "scale.sh: N must be a positive number, not '$N'" >&2; exit 2; }
[[ -z $BUDGET || $BUDGET =~ ^[1-9][0-9]*$ ]] || { echo "scale.sh: --budget must be whole seconds, not '$BUDGET'" >&2; exit 2; }
PROFILE=${PROFILE:-release}
BIN=$repo/target/$PROFILE
PODMAN=${PODMAN:-1}
W=$(mktemp -d /tmp/berth-scale.XXXXXX)
CG=berth-scale-$$
PODMAN_READY= BERTH=
say() { printf 'scale: %s\n' "$*" >&2; }

# reap_shims/stop_pid are for containerd; only the conventions are shared.
. "$repo/bench/lib.sh"

ulimit -n "$(ulimit -Hn)"

# pids_of COMM: our processes named COMM (their command line names $W).
pids_of() {
	local p c
	for p in /proc/[0-9]*; do
		{ read -r c <"$p/comm"; } 2>/dev/null || continue
		[[ $c == "$1" ]] || continue
		[[ "$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)" == *"$W/"* ]] && echo "${p#/proc/}"
	done
	return 0
}
# cg_procs SUB: the processes in the containers' cgroups under /$CG/SUB
# (pids hierarchy), not podman's conmon cgroup there.
cg_procs() {
	local d
	for d in /sys/fs/cgroup/pids/$CG/"$1"/*/; do
		[[ $(basename "$d") == conmon ]] || cat "$d/cgroup.procs" 2>/dev/null
	done
	return 0
}
# cg_left SUB: cgroup directories left under /$CG/SUB, in any hierarchy.
cg_left() {
	local d
	for d in /sys/fs/cgroup/*/$CG/"$1"; do
		[[ -d $d ]] && find "$d" -mindepth 1 -type d
	done
	return 0
}
mounts_left() { awk -v w="$W/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo; }
# What podman keeps for itself, not per container: its overlay driver's
# home mount (until the storage is shut down) and the cgroup its conmons
# run in.
own_left() { grep -v -e "^$W/podman/storage/overlay\$" -e "/$CG/podman/conmon\$" || true; }

cleanup() {
	set +eu
	trap - INT TERM
	if [[ -n $BERTH ]]; then
		$BERTH ps -aq 2>/dev/null | xargs -r -n 50 $BERTH rm -f >/dev/null 2>&1
	fi
	[[ -n $PODMAN_READY ]] && pm rm --all --force --time 0 >/dev/null 2>&1
	local p
	for p in $(pids_of berth-shim) $(pids_of conmon) $(cg_procs berth) $(cg_procs podman); do
		kill -KILL "$p" 2>/dev/null
	done
	sleep 0.5
	while read -r m; do umount -l "$m" 2>/dev/null; done < <(mounts_left | sort -r)
	for d in /sys/fs/cgroup/$CG /sys/fs/cgroup/*/$CG; do
		[[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
	done
	rm -rf "$W"
}
trap cleanup EXIT
trap 'say interrupted; exit 130' INT TERM

pm() {
	CONTAINERS_CONF=$W/podman/containers.conf CONTAINERS_STORAGE_CONF=$W/podman/storage.conf \
		CONTAINERS_REGISTRIES_CONF=$W/podman/registries.conf \
		podman --root "$W/podman/storage" --runroot "$W/podman/run" --cgroup-manager cgroupfs "$@"
}

# Statistics over microsecond samples on stdin, printed in milliseconds.
median() { sort -n | awk '{ a[NR] = $1 } END { if (!NR) { print "-"; exit } printf "%.1f\n", ((NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) / 1000 }'; }
p90() { sort -n | awk '{ a[NR] = $1 } END { if (!NR) { print "-"; exit } i = int(NR * 0.9); if (i < NR * 0.9) i++; printf "%.1f\n", a[i] / 1000 }'; }
# us CMD...: runs CMD, prints its wall-clock time in microseconds; on
# failure leaves its output in $W/cmd.log and returns 1.
us() {
	local s=${EPOCHREALTIME/./} e rc=0
	"$@" >"$W/cmd.log" 2>&1 || rc=$?
	e=${EPOCHREALTIME/./}
	((rc == 0)) || { echo "(exit status $rc)" >>"$W/cmd.log"; return 1; }
	echo $((e - s))
}
# repeat K CMD...: K timings of CMD, one a line.
repeat() {
	local k=$1 i
	shift
	for i in $(seq "$k"); do us "$@" || { say "failed: $* : $(cat "$W/cmd.log")"; return 1; }; done
}
# pss PID...: the sum of their PSS in KiB.
pss() {
	local files=() p
	for p in "$@"; do [[ -r /proc/$p/smaps_rollup ]] && files+=("/proc/$p/smaps_rollup"); done
	((${#files[@]})) || { echo 0; return; }
	awk '/^Pss:/ { s += $2 } END { print s + 0 }' "${files[@]}" 2>/dev/null
}
free_used() { free -k | awk '/^Mem:/ { print $3 }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f\n", k / 1024 }'; }

if [[ ${BUILD:-1} == 1 ]]; then
	say "building berth ($PROFILE)"
	flag=()
	[[ $PROFILE == release ]] && flag=(--release)
	(cd "$repo" && cargo build "${flag[@]}" -q -p berth -p berth-shim -p berth-runtime)
fi
for b in berth berth-shim berth-runtime; do
	[[ -x $BIN/$b ]] || { say "$BIN/$b is missing (PROFILE=$PROFILE; build it or leave BUILD unset)"; exit 1; }
done
BERTH="$BIN/berth --root $W/berth --runroot $W/berth-run --cgroup-parent /$CG/berth"

# A busybox image, imported from a tarball (no registry needed).
mkdir -p "$W/rootfs/bin"
cp /bin/busybox "$W/rootfs/bin/"
for a in $(/bin/busybox --list); do [[ $a == busybox ]] || ln -sf busybox "$W/rootfs/bin/$a"; done
tar -C "$W/rootfs" -c . | $BERTH import - bench-busybox >/dev/null
IMG=bench-busybox
$BERTH run --rm --network none "$IMG" true >"$W/cmd.log" 2>&1 || { say "berth run failed: $(cat "$W/cmd.log")"; exit 1; }

declare -A R # results, keyed "tool/what"

# fill TOOL RUNCMD BUDGET_US: starts up to N containers s1..sN, each timed
# (microseconds into $W/TOOL.starts); stops early once BUDGET_US is spent.
fill() {
	local tool=$1 budget=$3 i t t0=${EPOCHREALTIME/./}
	: >"$W/$tool.starts"
	for i in $(seq "$N"); do
		t=$(us $2 --name "s$i" "$RUNIMG" sleep 100000) || { say "$tool: start $i failed: $(cat "$W/cmd.log")"; break; }
		echo "$t" >>"$W/$tool.starts"
		((i % 100 == 0)) && say "$tool: $i started (load $(cut -d' ' -f1 /proc/loadavg))"
		((${EPOCHREALTIME/./} - t0 < budget)) || { say "$tool: time budget spent after $i"; break; }
	done
	R[$tool/n]=$(wc -l <"$W/$tool.starts")
	R[$tool/fill]=$(awk '{ s += $1 } END { printf "%.1f", s / 1e6 }' "$W/$tool.starts")
	local lo hi b
	for b in 1:100 101:500 501:$N; do
		lo=${b%:*} hi=${b#*:}
		R[$tool/$b]="$(sed -n "${lo},${hi}p" "$W/$tool.starts" | median) $(sed -n "${lo},${hi}p" "$W/$tool.starts" | p90)"
	done
}

# profile NAME: with PERF_DIR, a system-wide profile of 10 `run --rm`.
profile() {
	[[ -n ${PERF_DIR:-} ]] || return 0
	mkdir -p "$PERF_DIR"
	perf record -q -a -g -F 4000 -o "$PERF_DIR/$1.data" -- \
		bash -c "for i in 1 2 3 4 5 6 7 8 9 10; do $BERTH run --rm --network none $IMG true; done" \
		>/dev/null 2>&1 || say "perf record failed (PERF_DIR=$PERF_DIR)"
}

# at_n TOOL: what a full node costs: run --rm, ps, inspect, memory.
at_n() {
	local tool=$1 n=${R[$1/n]} k=20 shims procs
	[[ $tool == podman ]] && k=10
	case $tool in
	berth)
		R[$tool/rm1]=$(repeat $k $BERTH run --rm --network none "$IMG" true | median || true)
		R[$tool/ps]=$(repeat 5 $BERTH ps | median || true)
		R[$tool/inspect]=$(repeat 5 $BERTH inspect "s$((n / 2 + 1))" | median || true)
		shims=$(pids_of berth-shim)
		;;
	podman)
		R[$tool/rm1]=$(repeat $k pm run --rm --network none --cgroup-parent "/$CG/podman" localhost/bench-busybox true | median || true)
		R[$tool/ps]=$(repeat 5 pm ps | median || true)
		R[$tool/inspect]=$(repeat 5 pm inspect "s$((n / 2 + 1))" | median || true)
		shims=$(pids_of conmon)
		;;
	esac
	procs=$(cg_procs "$tool")
	R[$tool/shims]="$(echo $shims | wc -w) $(pss $shims)"
	R[$tool/procs]="$(echo $procs | wc -w) $(pss $procs)"
	R[$tool/free]=$(($(free_used) - ${R[$tool/free0]}))
}

# drain TOOL: removes all, `rm -f` 50 at a time; then what is left.
drain() {
	local tool=$1 n=${R[$1/n]} s=${EPOCHREALTIME/./} i names
	for ((i = 1; i <= n; i += 50)); do
		names=$(seq -f 's%g' "$i" $((i + 49 < n ? i + 49 : n)))
		case $tool in
		berth) $BERTH rm -f $names >"$W/cmd.log" 2>&1 || say "berth rm -f failed: $(tail -n 3 "$W/cmd.log")" ;;
		podman) pm rm -f -t 0 $names >"$W/cmd.log" 2>&1 || say "podman rm -f failed: $(tail -n 3 "$W/cmd.log")" ;;
		esac
	done
	R[$tool/drain]=$(awk -v u=$((${EPOCHREALTIME/./} - s)) 'BEGIN { printf "%.1f", u / 1e6 }')
	sleep 1 # shims exit on their own once their container is removed
	local comm=berth-shim
	[[ $tool == podman ]] && comm=conmon
	local m c p
	m=$(mounts_left | own_left | grep -c . || true)
	c=$(cg_left "$tool" | own_left | grep -c . || true)
	p=$(pids_of $comm | grep -c . || true)
	R[$tool/left]="mounts $m, cgroups $c, ${comm}s $p"
	((m + c + p == 0)) || {
		say "$tool left behind:"
		mounts_left | own_left | sed -n 1,5p >&2
		cg_left "$tool" | own_left | sed -n 1,5p >&2
	}
}

say "load average before: $(cut -d' ' -f1-3 /proc/loadavg); nproc $(nproc)"
# Warm-up first (page cache, the first cgroups): the idle figure is the
# denominator of the at-N ratio.
repeat 5 $BERTH run --rm --network none "$IMG" true >/dev/null || true
R[berth/rm0]=$(repeat 20 $BERTH run --rm --network none "$IMG" true | median || true)
profile idle
R[berth/free0]=$(free_used)
RUNIMG=$IMG fill berth "$BERTH run -d --network none" $((N * 3600 * 1000000))
at_n berth
profile at-n
drain berth
BUDGET=${BUDGET:-$(awk -v s="${R[berth/fill]}" 'BEGIN { printf "%d", s + 0.999 }')}

if [[ $PODMAN == 1 ]] && command -v podman >/dev/null; then
	podman_config "$W/podman"
	PODMAN_READY=1
	tar -C "$W/rootfs" -c . | pm import --quiet - localhost/bench-busybox >/dev/null
	if pm run --rm --network none --cgroup-parent "/$CG/podman" localhost/bench-busybox true >"$W/cmd.log" 2>&1; then
		say "podman: budget ${BUDGET}s"
		repeat 3 pm run --rm --network none --cgroup-parent "/$CG/podman" localhost/bench-busybox true >/dev/null || true
		R[podman/rm0]=$(repeat 10 pm run --rm --network none --cgroup-parent "/$CG/podman" localhost/bench-busybox true | median || true)
		R[podman/free0]=$(free_used)
		RUNIMG=localhost/bench-busybox fill podman "pm run -d --network none --cgroup-parent /$CG/podman" $((BUDGET * 1000000))
		at_n podman
		drain podman
	else
		say "podman run failed, no podman column: $(cat "$W/cmd.log")"
	fi
else
	say "no podman column (PODMAN=0 or podman not installed)"
fi

# ------------------------------------------------------------ the table
TOOLS=(berth)
[[ -n ${R[podman/n]:-} ]] && TOOLS+=(podman)
row() { printf '%-44s' "$1"; shift; printf ' %22s' "$@"; echo; }
cell() { local v=${R[$1/$2]:-}; [[ -n $v ]] && printf "$3\n" $v || echo -; }
echo
echo "scale: $N containers asked; $(nproc) cores; load average now $(cut -d' ' -f1-3 /proc/loadavg); binaries: $PROFILE"
row "" "${TOOLS[@]}"
row "containers started (in s)" $(for t in "${TOOLS[@]}"; do echo "${R[$t/n]}(${R[$t/fill]}s)"; done)
for b in 1:100 101:500 501:$N; do
	((${b%:*} <= N)) || continue
	row "run -d, containers ${b/:/-}: median/p90 ms" $(for t in "${TOOLS[@]}"; do cell $t $b '%s/%s'; done)
done
row "idle: run --rm true, median ms" $(for t in "${TOOLS[@]}"; do cell $t rm0 '%s'; done)
row "at N: run --rm true, median ms" $(for t in "${TOOLS[@]}"; do cell $t rm1 '%s'; done)
row "at N: ps, median ms" $(for t in "${TOOLS[@]}"; do cell $t ps '%s'; done)
row "at N: inspect, median ms" $(for t in "${TOOLS[@]}"; do cell $t inspect '%s'; done)
row "shims (berth-shim/conmon): count, PSS MiB" $(for t in "${TOOLS[@]}"; do read -r c k <<<"${R[$t/shims]}"; echo "$c,$(mib "$k")"; done)
row "container processes: count, PSS MiB" $(for t in "${TOOLS[@]}"; do read -r c k <<<"${R[$t/procs]}"; echo "$c,$(mib "$k")"; done)
row "free 'used' growth MiB (noisy: shared host)" $(for t in "${TOOLS[@]}"; do mib "${R[$t/free]}"; done)
row "rm -f all (batches of 50), s" $(for t in "${TOOLS[@]}"; do echo "${R[$t/drain]}"; done)
for t in "${TOOLS[@]}"; do printf '%-8s left after rm: %s\n' "$t" "${R[$t/left]}"; done
