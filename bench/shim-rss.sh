#!/usr/bin/env bash
# shim-rss.sh: memory of the per-container supervisor, side by side:
# berth-shim (over berth-runtime), conmon (podman, over crun) and
# containerd-shim-runc-v2 (ctr, over runc), each supervising the same
# busybox `sleep` container. Prints the median VmRSS and PSS
# (/proc/PID/smaps_rollup: shared pages split among their users) over
# N containers each, all of them running at once.
#
#   sudo bench/shim-rss.sh            # 5 containers per supervisor
#   sudo N=10 bench/shim-rss.sh
#
# Everything lives in a temporary directory: podman and containerd get
# their own configuration, storage and sockets there (containerd is
# started by this script and stopped by PID); nothing system-wide is used.
# Needs: podman, conmon, containerd (ctr), runc, crun, busybox-static.
set -euo pipefail
N=${N:-5}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=$(mktemp -d /tmp/berth-shim-rss.XXXXXX)
CTRD_PID=
say() { printf 'shim-rss: %s\n' "$*" >&2; }
# shellcheck source=bench/lib.sh
. "$repo/bench/lib.sh"

cleanup() {
	set +e
	for s in "$W"/berth/*/state; do
		[[ -d $s ]] || continue
		touch "$s/stopped"
		pid=$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p' "$s/../sync" 2>/dev/null)
		[[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null
	done
	sleep 1
	if [[ -n ${PODMAN_READY:-} ]]; then
		pm rm --all --force --time 0 >/dev/null 2>&1
	fi
	if [[ -n $CTRD_PID ]]; then
		for i in $(seq "$N"); do
			ct task kill -s KILL "rss$i" >/dev/null 2>&1
		done
		sleep 1
		for i in $(seq "$N"); do
			ct task rm "rss$i" >/dev/null 2>&1
			ct container rm "rss$i" >/dev/null 2>&1
		done
		kill "$CTRD_PID" 2>/dev/null
		wait "$CTRD_PID" 2>/dev/null
	fi
	while read -r m; do umount -l "$m" 2>/dev/null; done < <(awk -v w="$W/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
	for d in /sys/fs/cgroup/*/berth-shim-rss-$$; do
		[[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
	done
	rm -rf "$W"
}
trap cleanup EXIT

# rss PID -> "VmRSS_kB Pss_kB"
rss() {
	local v p
	v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$1/status")
	p=$(awk '/^Pss:/ { print $2 }' "/proc/$1/smaps_rollup")
	echo "$v $p"
}
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

say "building berth-shim and berth-runtime (release)"
(cd "$repo" && cargo build --release -q -p berth-shim -p berth-runtime)
SHIM=$repo/target/release/berth-shim
RUNTIME=$repo/target/release/berth-runtime

# One busybox rootfs for everyone.
ROOTFS=$W/rootfs
mkdir -p "$ROOTFS"/{bin,proc,sys,dev,tmp,etc}
cp /bin/busybox "$ROOTFS/bin/busybox"
for a in $(/bin/busybox --list); do [[ $a == busybox ]] || ln -sf busybox "$ROOTFS/bin/$a"; done

declare -A RSS PSS

# ------------------------------------------------------------ berth-shim
mkdir -p "$W/berth"
vals=()
for i in $(seq "$N"); do
	d=$W/berth/$i
	mkdir -p "$d/bundle"
	(cd "$d/bundle" && "$RUNTIME" spec)
	jq --arg cg "/berth-shim-rss-$$/b$i" --arg root "$ROOTFS" \
		'.process.args = ["/bin/sleep", "600"] | .process.terminal = false | .root = {path: $root, readonly: true} | .linux.cgroupsPath = $cg' \
		"$d/bundle/config.json" >"$d/c.json" && mv "$d/c.json" "$d/bundle/config.json"
	"$SHIM" --id "rss$i-$$" --bundle "$d/bundle" --state-dir "$d/state" --runtime "$RUNTIME" \
		--runtime-root "$W/berth-root" --log-path "$d/log" --sync-fd 7 7>"$d/sync"
	for _ in $(seq 100); do [[ -s $d/sync ]] && break; sleep 0.05; done
	grep -q shimPid "$d/sync" || { say "berth-shim did not start: $(cat "$d/sync" "$d/state/shim.log" 2>/dev/null)"; exit 1; }
done
sleep 1
for i in $(seq "$N"); do
	vals+=("$(rss "$(sed -n 's/.*"shimPid":\([0-9]*\).*/\1/p' "$W/berth/$i/sync")")")
done
RSS[berth-shim]=$(printf '%s\n' "${vals[@]}" | awk '{ print $1 }' | median)
PSS[berth-shim]=$(printf '%s\n' "${vals[@]}" | awk '{ print $2 }' | median)

# ------------------------------------------------------------ conmon (podman)
pm() {
	CONTAINERS_CONF=$W/podman/containers.conf CONTAINERS_STORAGE_CONF=$W/podman/storage.conf \
		CONTAINERS_REGISTRIES_CONF=$W/podman/registries.conf podman "$@"
}
if command -v podman >/dev/null && command -v crun >/dev/null; then
	podman_config "$W/podman"
	PODMAN_READY=1
	tar -C "$ROOTFS" -c . | pm import --quiet - localhost/rss-busybox >/dev/null
	vals=()
	for i in $(seq "$N"); do
		pm --runtime crun run -d --name "rss$i" --cgroup-parent "/berth-shim-rss-$$" localhost/rss-busybox sleep 600 >/dev/null
	done
	sleep 1
	for i in $(seq "$N"); do
		vals+=("$(rss "$(pm inspect --format '{{.State.ConmonPid}}' "rss$i")")")
	done
	RSS[conmon]=$(printf '%s\n' "${vals[@]}" | awk '{ print $1 }' | median)
	PSS[conmon]=$(printf '%s\n' "${vals[@]}" | awk '{ print $2 }' | median)
else
	say "podman or crun missing: no conmon figure"
fi

# ------------------------------------------------------------ containerd-shim-runc-v2
ct() { ctr -a "$W/containerd/ctrd.sock" -n rss "$@"; }
if command -v containerd >/dev/null && [[ -n ${PODMAN_READY:-} ]]; then
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
	for _ in $(seq 100); do [[ -S $W/containerd/ctrd.sock ]] && break; sleep 0.1; done
	pm save --quiet --format oci-archive -o "$W/image.tar" localhost/rss-busybox
	ct image import --base-name localhost/rss-busybox "$W/image.tar" >/dev/null
	img=$(ct image ls -q | head -n1)
	vals=()
	for i in $(seq "$N"); do
		ct run -d --cgroup "/berth-shim-rss-$$/c$i" "$img" "rss$i" sleep 600 >/dev/null
	done
	sleep 1
	for i in $(seq "$N"); do
		# The shim serving this namespace and container (finding a pid,
		# not signalling by name).
		pid=$(pgrep -f "containerd-shim-runc-v2 -namespace rss -id rss$i " | head -n1)
		vals+=("$(rss "$pid")")
	done
	RSS[containerd-shim-runc-v2]=$(printf '%s\n' "${vals[@]}" | awk '{ print $1 }' | median)
	PSS[containerd-shim-runc-v2]=$(printf '%s\n' "${vals[@]}" | awk '{ print $2 }' | median)
else
	say "containerd (or podman, for the image) missing: no containerd-shim figure"
fi

printf '\nper-container supervisor memory, median of %s running containers each (KiB)\n' "$N"
printf '%-26s %10s %10s %14s\n' supervisor VmRSS PSS "RSS vs berth"
for s in berth-shim conmon containerd-shim-runc-v2; do
	[[ -n ${RSS[$s]:-} ]] || continue
	printf '%-26s %10s %10s %13.1fx\n' "$s" "${RSS[$s]}" "${PSS[$s]}" "$(echo "${RSS[$s]} / ${RSS[berth-shim]}" | bc -l)"
done
