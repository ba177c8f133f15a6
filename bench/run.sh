#!/usr/bin/env bash
# run.sh: `berth run --rm IMG true` side by side with `podman run --rm`
# (crun, podman's default here), `ctr run --rm` (containerd 1.6 with its
# default runc) and `docker run --rm` (dockerd 20.10, runc through its own
# containerd) on the same busybox image, pulled (or, for podman, imported)
# before any timing. Network none for berth, podman and docker (the network
# layers differ: CNI plugins here, netavark/CNI/libnetwork there; see
# README); ctr adds no network namespace by default (host network, nothing
# to set up), which is the cheapest case for it. Medians of N runs per tool;
# every iteration runs each tool once, the order rotated from one
# iteration to the next so no tool always follows the same one; 2 uncounted
# warm-up iterations first. Prints the medians (with min and max), the
# ratios berth/podman, berth/ctr, berth/docker, and whether the goal
# "berth under a quarter of podman's time and below ctr's" holds. Nothing
# is asserted about timings.
#
#   sudo bench/run.sh          # 20 runs each
#   sudo N=50 bench/run.sh
#
# A registry (docker-registry) is started on a free loopback port with its
# storage, berth's root, podman's storage, containerd's root/state/sockets
# and dockerd's data-root/exec-root/socket all in one temporary directory
# ($W), removed at the end. containerd and dockerd are started by this
# script with their own configuration (containerd: CRI plugin disabled;
# dockerd: --bridge none, no iptables, no ip forwarding, no masquerading)
# and stopped by PID. The ctr row is left out (with a note) when containerd
# is not installed, the docker row when dockerd is not installed or does
# not answer within ~20 s. containerd's shims put their sockets in
# /run/containerd/s whatever the configuration; each shim removes its own
# when it exits.
#
# crun 1.8.1 refuses a cgroup v1 "hybrid" host whose cgroup2 mount still
# holds a controller. When podman's first run fails that way and
# /sys/fs/cgroup/hugetlb is not a mount point, hugetlb is mounted as its own
# v1 hierarchy there (the only cgroup mount change; said so, and left in
# place, as bench/runtime-lifecycle.sh does) before any timing, so every
# tool runs in the same layout.
#
# Needs: docker-registry, umoci, skopeo, podman, crun, busybox-static; for
# the other rows containerd (ctr, runc) and docker.io (dockerd) plus a
# docker CLI.
set -euo pipefail
N=${N:-20}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=$(mktemp -d /tmp/berth-run-bench.XXXXXX)
REG_PID= CTRD_PID= DOCKERD_PID=
PODMAN_READY=
say() { printf 'run-bench: %s\n' "$*" >&2; }

# berth, podman, ctr and dockerd put their containers' cgroups under one
# parent of this script's own, /$CG (depth 2, as their defaults /berth/ID,
# /libpod_parent/ID, /NAMESPACE/ID, /docker/ID), removed at the end in
# every hierarchy.
CG=berth-run-bench-$$

# reap_shims, stop_pid, stop_dockerd, busybox_oci
. "$repo/bench/lib.sh"

cleanup() {
	set +e
	if [[ -n $DOCKERD_PID ]]; then
		ids=$(dk ps -aq 2>/dev/null)
		[[ -n $ids ]] && dk rm -f $ids >/dev/null 2>&1
		stop_dockerd "$DOCKERD_PID" "$W/docker/exec"
	fi
	if [[ -n $CTRD_PID ]]; then
		for c in $(ct container ls -q 2>/dev/null); do
			ct task kill -s KILL "$c" >/dev/null 2>&1
			ct task rm -f "$c" >/dev/null 2>&1
			ct container rm "$c" >/dev/null 2>&1
		done
		reap_shims "$W/containerd/ctrd.sock"
		stop_pid "$CTRD_PID"
	fi
	[[ -n $PODMAN_READY ]] && pm rm --all --force --time 0 >/dev/null 2>&1
	[[ -n $REG_PID ]] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null
	remove_workdir "$W" "$CG"
}
trap cleanup EXIT
pm() {
	CONTAINERS_CONF=$W/podman/containers.conf CONTAINERS_STORAGE_CONF=$W/podman/storage.conf \
		CONTAINERS_REGISTRIES_CONF=$W/podman/registries.conf podman "$@"
}
ct() { ctr -a "$W/containerd/ctrd.sock" -n bench "$@"; }
dk() { DOCKER_CONFIG=$W/docker/cli docker -H "unix://$W/docker/sock" "$@"; }
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# ms CMD...: wall-clock milliseconds of CMD (its output in $W/cmd.log, and
# its exit status there too when it fails).
ms() {
	local s=$EPOCHREALTIME e rc=0
	"$@" >"$W/cmd.log" 2>&1 || rc=$?
	e=$EPOCHREALTIME
	((rc == 0)) || { echo "(exit status $rc)" >>"$W/cmd.log"; return 1; }
	echo "$(((${e/./} - ${s/./}) / 10))" | awk '{ printf "%.2f\n", $1 / 100 }'
}
is_mountpoint() { awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo; }

say "building berth (release)"
(cd "$repo" && cargo build --release -q -p berth -p berth-shim -p berth-runtime)
BERTH="$repo/target/release/berth --root $W/berth --runroot $W/berth-run --cgroup-parent /$CG"

# A registry with busybox in it.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' "$W/registry" "$port" >"$W/registry.yml"
docker-registry serve "$W/registry.yml" >"$W/registry.log" 2>&1 &
REG_PID=$!
busybox_oci "$W/oci" "$W"
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
skopeo copy -q --dest-tls-verify=false "oci:$W/oci:busybox" "docker://127.0.0.1:$port/busybox:latest"
IMG=127.0.0.1:$port/busybox:latest
$BERTH pull "$IMG" >/dev/null

# ------------------------------------------------------------ podman
podman_config "$W/podman"
PODMAN_READY=1
tar -C "$W/rootfs" -c . | pm import --quiet - localhost/bench-busybox >/dev/null
if ! pm run --rm --network none --cgroup-parent "/$CG" localhost/bench-busybox true >"$W/cmd.log" 2>&1; then
	if grep -q 'hybrid mode not supported' "$W/cmd.log" && ! is_mountpoint /sys/fs/cgroup/hugetlb; then
		say "crun: $(grep -m1 'hybrid mode' "$W/cmd.log")"
		say ">>> CHANGING THE HOST'S CGROUP MOUNTS: mounting hugetlb as its own v1 hierarchy"
		say ">>>   mkdir -p /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb"
		say ">>> (left mounted; no other cgroup hierarchy is touched)"
		mkdir -p /sys/fs/cgroup/hugetlb
		mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb
	fi
	pm run --rm --network none --cgroup-parent "/$CG" localhost/bench-busybox true >"$W/cmd.log" 2>&1 ||
		{ say "podman run failed: $(cat "$W/cmd.log")"; exit 1; }
fi

TOOLS=(berth podman)
LABEL[0]="berth (berth-runtime)"
LABEL[1]="podman (crun)"

# ------------------------------------------------------------ containerd + ctr
if command -v containerd >/dev/null && command -v ctr >/dev/null; then
	mkdir -p "$W/containerd"
	cat >"$W/containerd/config.toml" <<EOF
version = 2
root = "$W/containerd/root"
state = "$W/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$W/containerd/ctrd.sock"
[ttrpc]
  address = "$W/containerd/ctrd.sock.ttrpc"
EOF
	containerd --config "$W/containerd/config.toml" >"$W/containerd/log" 2>&1 &
	CTRD_PID=$!
	for _ in $(seq 200); do ct version >/dev/null 2>&1 && break; sleep 0.1; done
	ct version >/dev/null 2>&1 || { say "containerd did not start: $(tail -n 5 "$W/containerd/log")"; exit 1; }
	ct image pull --plain-http "$IMG" >/dev/null
	TOOLS+=(ctr)
	LABEL[${#TOOLS[@]} - 1]="ctr (containerd $(containerd --version | awk '{ print $3 }'), runc)"
else
	say "containerd/ctr not installed: no ctr row (apt-get install containerd)"
fi

# ------------------------------------------------------------ dockerd
if command -v dockerd >/dev/null && command -v docker >/dev/null; then
	mkdir -p "$W/docker/cli"
	echo '{}' >"$W/docker/daemon.json"
	dockerd --config-file "$W/docker/daemon.json" --data-root "$W/docker/data" --exec-root "$W/docker/exec" \
		-H "unix://$W/docker/sock" --pidfile "$W/docker/pid" --bridge none --iptables=false \
		--ip6tables=false --ip-masq=false --ip-forward=false --insecure-registry "127.0.0.1:$port" --cgroup-parent "/$CG" \
		>"$W/docker/log" 2>&1 &
	DOCKERD_PID=$!
	for _ in $(seq 200); do
		dk version >/dev/null 2>&1 && break
		kill -0 "$DOCKERD_PID" 2>/dev/null || break
		sleep 0.1
	done
	if dk version >/dev/null 2>&1 && dk pull -q "$IMG" >/dev/null 2>"$W/cmd.log"; then
		TOOLS+=(docker)
		LABEL[${#TOOLS[@]} - 1]="docker (dockerd $(dockerd --version | awk '{ print $3 }' | tr -d ,), runc)"
	else
		say "dockerd did not start within 20 s (or could not pull): no docker row"
		say "  $(tail -n 3 "$W/docker/log" "$W/cmd.log" 2>/dev/null | tr '\n' ' ')"
		stop_pid "$DOCKERD_PID"
		DOCKERD_PID=
	fi
else
	say "dockerd or the docker CLI not installed: no docker row (apt-get install docker.io)"
fi

# ------------------------------------------------------------ timing
# run_tool TOOL I: one timed `run --rm IMG true`.
run_tool() {
	case $1 in
	berth) ms $BERTH run --rm --network none "$IMG" true ;;
	podman) ms pm run --rm --network none --cgroup-parent "/$CG" localhost/bench-busybox true ;;
	ctr) ms ct run --rm --cgroup "/$CG/bench-$2" "$IMG" "bench-$2" true ;;
	docker) ms dk run --rm --network none "$IMG" true ;;
	esac
}
say "load average before timing: $(cut -d' ' -f1-3 /proc/loadavg)"
K=${#TOOLS[@]}
declare -A T
for i in $(seq $((N + 2))); do
	for j in $(seq 0 $((K - 1))); do
		t=${TOOLS[(i + j) % K]}
		v=$(run_tool "$t" "$i") || { say "$t run failed: $(cat "$W/cmd.log")"; exit 1; }
		((i > 2)) && T[$t]+="$v "
	done
done

printf '\nrun --rm IMG true, %s runs each, alternating (ms)\n' "$N"
printf '%-36s %9s %9s %9s\n' "" median min max
declare -A M
for k in $(seq 0 $((K - 1))); do
	t=${TOOLS[k]}
	M[$t]=$(printf '%s\n' ${T[$t]} | median)
	printf '%-36s %9.2f %9.2f %9.2f\n' "${LABEL[k]}" "${M[$t]}" \
		"$(printf '%s\n' ${T[$t]} | sort -n | head -n1)" "$(printf '%s\n' ${T[$t]} | sort -n | tail -n1)"
done
echo
for t in "${TOOLS[@]:1}"; do
	printf 'berth / %-7s %6.2fx\n' "$t:" "$(echo "${M[berth]} / ${M[$t]}" | bc -l)"
done
if [[ -n ${M[ctr]:-} ]]; then
	q=$(echo "${M[berth]} < ${M[podman]} / 4" | bc -l)
	c=$(echo "${M[berth]} < ${M[ctr]}" | bc -l)
	printf 'goal (under a quarter of podman and below ctr): %s (quarter of podman: %s; below ctr: %s)\n' \
		"$( ((q && c)) && echo met || echo NOT met)" "$( ((q)) && echo yes || echo no)" "$( ((c)) && echo yes || echo no)"
fi
