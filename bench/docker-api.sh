#!/usr/bin/env bash
# docker-api.sh: berthd's Docker Engine API beside dockerd 20.10, driven by
# the same docker CLI the same way: `docker run --rm --network none IMG
# true` (create, attach, start, wait, remove: the CLI's whole `run`), N
# times each, alternating; medians (min-max) and the ratio berthd/dockerd.
# Then each daemon's idle memory: VmRSS of berthd alone, and of dockerd plus
# the containerd it starts (shims not counted on either side), after the
# runs and a pause. Says whether the issue's goals hold (under a third of
# dockerd's time, under a quarter of its idle memory). Nothing is asserted.
#
#   sudo bench/docker-api.sh          # N=20
#   sudo N=50 bench/docker-api.sh
#   DOCKER=/usr/bin/docker ...        # the CLI (default: the one on PATH)
#
# A registry (docker-registry) on a free loopback port holds busybox
# (busybox-static, every applet linked, made with umoci and pushed with
# skopeo); both daemons pull it before any timing. berthd's and dockerd's
# roots, sockets and state live in one temporary directory; both put their
# containers' cgroups under a parent of this script's own, removed at the
# end; dockerd runs with --bridge none and no iptables. Daemons are stopped
# by PID, dockerd's leftover shims too.
#
# Needs: docker-registry, umoci, skopeo, busybox-static, docker.io (dockerd
# and a docker CLI), curl; berthd is built here (release).
set -euo pipefail
N=${N:-20}
DOCKER=${DOCKER:-docker}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { printf 'docker-api-bench: %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { say "needs root"; exit 1; }
command -v dockerd >/dev/null || { say "dockerd is not installed (apt-get install docker.io)"; exit 1; }

W=$(mktemp -d /tmp/berth-docker-api-bench.XXXXXX)
CG=berth-docker-api-bench-$$
REG_PID= DOCKERD_PID= BERTHD_PID=

dk() { DOCKER_CONFIG=$W/cli "$DOCKER" -H "unix://$W/docker/sock" "$@"; }
bk() { DOCKER_CONFIG=$W/cli "$DOCKER" -H "unix://$W/berthd/docker.sock" "$@"; }

# shims_of, stop_pid
. "$repo/bench/lib.sh"

cleanup() {
	local rc=$? ids p
	set +e
	if [[ -n $BERTHD_PID ]]; then
		ids=$(bk ps -aq 2>/dev/null)
		[[ -n $ids ]] && bk rm -f $ids >/dev/null 2>&1
		stop_pid "$BERTHD_PID"
	fi
	if [[ -n $DOCKERD_PID ]]; then
		ids=$(dk ps -aq 2>/dev/null)
		[[ -n $ids ]] && dk rm -f $ids >/dev/null 2>&1
		stop_dockerd "$DOCKERD_PID" "$W/docker/exec"
	fi
	[[ -n $REG_PID ]] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null
	remove_workdir "$W" "$CG"
	exit "$rc"
}
trap cleanup EXIT INT TERM

say "building berthd, berth, berth-shim, berth-runtime (release)"
(cd "$repo" && cargo build --release -q -p berthd -p berth -p berth-shim -p berth-runtime)
bin=${CARGO_TARGET_DIR:-$repo/target}/release

# --- a registry with busybox in it
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' "$W/registry" "$port" >"$W/registry.yml"
docker-registry serve "$W/registry.yml" >"$W/registry.log" 2>&1 &
REG_PID=$!
mkdir -p "$W/cli"
busybox_oci "$W/oci" "$W"
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
skopeo copy -q --dest-tls-verify=false "oci:$W/oci:busybox" "docker://127.0.0.1:$port/busybox:latest"
IMG=127.0.0.1:$port/busybox:latest

# --- berthd with the Docker API (and its CRI socket, unused here)
mkdir -p "$W/berthd"
"$bin/berthd" --root "$W/berthd/root" --runroot "$W/berthd/run" --listen "$W/berthd/cri.sock" \
	--docker-listen "unix://$W/berthd/docker.sock" --cgroup-parent "/$CG/berthd" \
	--runtime "$bin/berth-runtime" --log-file "$W/berthd/log" &
BERTHD_PID=$!

# --- dockerd 20.10, runc through its own containerd
mkdir -p "$W/docker"
echo '{}' >"$W/docker/daemon.json"
dockerd --config-file "$W/docker/daemon.json" --data-root "$W/docker/data" --exec-root "$W/docker/exec" \
	-H "unix://$W/docker/sock" --pidfile "$W/docker/pid" --bridge none --iptables=false \
	--ip6tables=false --ip-masq=false --ip-forward=false --insecure-registry "127.0.0.1:$port" \
	--cgroup-parent "/$CG/docker" >"$W/docker/log" 2>&1 &
DOCKERD_PID=$!

for c in bk dk; do
	for _ in $(seq 300); do $c version >/dev/null 2>&1 && break; sleep 0.1; done
	$c version >/dev/null || { say "no daemon behind $c; logs in $W"; tail -n 5 "$W"/*/log >&2; exit 1; }
	$c pull -q "$IMG" >/dev/null
done

ms() { # CMD...: wall-clock milliseconds of CMD
	local s=$EPOCHREALTIME e
	"$@" >"$W/cmd.log" 2>&1 || { say "failed: $* ($(tail -n 2 "$W/cmd.log" | tr '\n' ' '))"; return 1; }
	e=$EPOCHREALTIME
	echo "$(((${e/./} - ${s/./}) / 10))" | awk '{ printf "%.2f\n", $1 / 100 }'
}

say "N=$N (2 warm-up runs each first); $("$DOCKER" --version), dockerd $(dockerd --version | awk '{print $3}' | tr -d ,)"
for i in $(seq -1 "$N"); do
	if [ $((i % 2)) = 0 ]; then order="dk bk"; else order="bk dk"; fi
	for c in $order; do
		t=$(ms $c run --rm --network none "$IMG" true)
		[ "$i" -ge 1 ] && echo "$t" >>"$W/times-$c"
	done
done

stats() { sort -n "$1" | awk '{a[NR]=$1} END {m = NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2; printf "%.1f %.1f %.1f", m, a[1], a[NR]}'; }
read -r dm dmin dmax <<<"$(stats "$W/times-dk")"
read -r bm bmin bmax <<<"$(stats "$W/times-bk")"

sleep 2
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
ctrd=$(cat "$W/docker/exec/containerd/containerd.pid" 2>/dev/null || true)
rss_d=$(rss "$DOCKERD_PID")
rss_c=0
[[ -n $ctrd ]] && rss_c=$(rss "$ctrd")
rss_b=$(rss "$BERTHD_PID")

printf '\nmedians of %s (min-max), ms           %22s %22s %8s\n' "$N" "dockerd 20.10" "berthd" "ratio"
printf '%-38s %22s %22s %8.2f\n' "docker run --rm --network none true" "$dm ($dmin-$dmax)" "$bm ($bmin-$bmax)" \
	"$(echo "$bm / $dm" | bc -l)"
printf '%-38s %22s %22s %8.2f\n' "idle RSS, KiB (dockerd + containerd)" "$((rss_d + rss_c)) ($rss_d + $rss_c)" "$rss_b" \
	"$(echo "$rss_b / ($rss_d + $rss_c)" | bc -l)"
echo
echo "goal: under a third of dockerd's time: $([ "$(echo "$bm * 3 < $dm" | bc)" = 1 ] && echo yes || echo no)"
echo "goal: under a quarter of its idle memory: $([ "$(echo "$rss_b * 4 < $rss_d + $rss_c" | bc)" = 1 ] && echo yes || echo no)"
