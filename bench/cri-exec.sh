#!/usr/bin/env bash
# cri-exec.sh: the round trip of `crictl exec CONTAINER true` (the Exec RPC,
# the SPDY upgrade of the streaming URL, the exec in the container, the exit
# status back) against berthd and against containerd 1.6's CRI plugin, on the
# same machine, both with their default OCI runtime (berth-runtime; runc).
# Medians of N runs each (with min and max), 2 uncounted warm-up runs first;
# the two alternate run by run. Nothing is asserted about timings.
#
#   sudo bench/cri-exec.sh                 # N=50, release build of berth
#   sudo N=20 PROFILE=debug bench/cri-exec.sh
#
# berthd's container is made by the `berth` CLI on berthd's root (one
# engine, one store); containerd's is a CRI pod on the host network (no CNI
# needed) with a busybox container, from critest's stand-in images
# (shared/critest-images/layout, imported with skopeo + ctr: no network).
# Everything (roots, state, sockets, logs) is in one temporary directory
# ($W), removed at the end; the daemons are stopped by PID, containers and
# pods removed first, containerd's shims reaped; the containers' cgroups are
# under /$CG in every hierarchy, removed at the end.
#
# Needs: crictl (shared/tools/crictl, or CRICTL=...), busybox-static,
# skopeo, containerd + ctr + runc.
set -euo pipefail
N=${N:-50}
PROFILE=${PROFILE:-release}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=${BERTH_SHARED_DIR:-}
if [[ -z $shared ]]; then
	d=$repo
	while [[ $d != / ]]; do
		[[ -d $d/shared/tools ]] && { shared=$d/shared; break; }
		d=$(dirname "$d")
	done
fi
CRICTL=${CRICTL:-$shared/tools/crictl}
LAYOUT=$shared/critest-images/layout
W=$(mktemp -d /tmp/berth-cri-exec.XXXXXX)
CG=berth-cri-exec-$$
BERTHD_PID= CTRD_PID=
say() { printf 'cri-exec: %s\n' "$*" >&2; }

# shims_of, stop_pid
. "$repo/bench/lib.sh"
cleanup() {
	set +e
	if [[ -n $CTRD_PID ]]; then
		for p in $(cc pods -q 2>/dev/null); do
			cc stopp "$p" >/dev/null 2>&1
			cc rmp -f "$p" >/dev/null 2>&1
		done
		for _ in $(seq 100); do
			[[ -z $(shims_of "$W/c/c.sock") ]] && break
			sleep 0.1
		done
		for p in $(shims_of "$W/c/c.sock"); do kill -KILL "$p" 2>/dev/null; done
		stop_pid "$CTRD_PID"
	fi
	if [[ -n $BERTHD_PID ]]; then
		for c in $(berth ps -aq 2>/dev/null); do berth rm -f "$c" >/dev/null 2>&1; done
		stop_pid "$BERTHD_PID"
	fi
	remove_workdir "$W" "$CG"
}
trap cleanup EXIT
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# ms CMD...: wall-clock milliseconds of CMD, which must succeed.
ms() {
	local s=$EPOCHREALTIME e
	"$@" >"$W/cmd.log" 2>&1 || { say "failed: $* : $(cat "$W/cmd.log")"; return 1; }
	e=$EPOCHREALTIME
	echo "$(((${e/./} - ${s/./}) / 10))" | awk '{ printf "%.2f\n", $1 / 100 }'
}
wait_socket() {
	for _ in $(seq 300); do
		[[ -S $1 ]] && return 0
		sleep 0.1
	done
	say "no socket $1 after 30 s"
	return 1
}

flag=()
[[ $PROFILE == release ]] && flag=(--release)
say "building berth ($PROFILE)"
(cd "$repo" && cargo build -q "${flag[@]}" -p berthd -p berth -p berth-shim -p berth-runtime)
BIN=$repo/target/$PROFILE

# ------------------------------------------------------------ berthd
mkdir -p "$W/b/net.d" "$W/rootfs/bin"
printf '[cni]\nconf_dir = "%s"\n' "$W/b/net.d" >"$W/b/berthd.toml"
"$BIN/berthd" --root "$W/b/root" --runroot "$W/b/run" --listen "$W/b/berthd.sock" --config "$W/b/berthd.toml" \
	--cgroup-parent "/$CG/berthd" --runtime "$BIN/berth-runtime" --log-file "$W/b/berthd.log" &
BERTHD_PID=$!
berth() { BERTH_SHIM=$BIN/berth-shim "$BIN/berth" --root "$W/b/root" --runroot "$W/b/run" --runtime "$BIN/berth-runtime" --cgroup-parent "/$CG/berthd" "$@"; }
cb() { "$CRICTL" --config /dev/null -r "unix://$W/b/berthd.sock" -i "unix://$W/b/berthd.sock" --timeout 20s "$@"; }
wait_socket "$W/b/berthd.sock"
cp /bin/busybox "$W/rootfs/bin/"
for a in $(/bin/busybox --list); do [[ $a == busybox ]] || ln -sf busybox "$W/rootfs/bin/$a"; done
tar -C "$W/rootfs" -cf "$W/rootfs.tar" .
berth import --change "ENV PATH=/bin" "$W/rootfs.tar" bench-busybox:1 >/dev/null
BID=$(berth run -d --network none bench-busybox:1 sleep 1000000)

# ------------------------------------------------------------ containerd (CRI)
mkdir -p "$W/c/net.d"
cat >"$W/c/config.toml" <<EOF
version = 2
root = "$W/c/root"
state = "$W/c/state"
[grpc]
  address = "$W/c/c.sock"
[ttrpc]
  address = "$W/c/c.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    conf_dir = "$W/c/net.d"
EOF
containerd --config "$W/c/config.toml" >"$W/c/containerd.log" 2>&1 &
CTRD_PID=$!
cc() { "$CRICTL" --config /dev/null -r "unix://$W/c/c.sock" -i "unix://$W/c/c.sock" --timeout 20s "$@"; }
wait_socket "$W/c/c.sock"
for ref in registry.k8s.io/pause:3.9 docker.io/library/busybox:latest; do
	skopeo copy -q "oci:$LAYOUT:$ref" "docker-archive:$W/c/image.tar:$ref"
	ctr -a "$W/c/c.sock" -n k8s.io images import "$W/c/image.tar" >/dev/null
	rm -f "$W/c/image.tar"
done
cat >"$W/c/pod.json" <<EOF
{"metadata": {"name": "bench", "namespace": "default", "uid": "bench-$$"},
 "linux": {"cgroup_parent": "/$CG/containerd",
           "security_context": {"namespace_options": {"network": 2}}}}
EOF
cat >"$W/c/ctr.json" <<EOF
{"metadata": {"name": "sleeper"}, "image": {"image": "docker.io/library/busybox:latest"},
 "command": ["sleep", "1000000"], "linux": {}}
EOF
POD=$(cc runp "$W/c/pod.json")
CID=$(cc create "$POD" "$W/c/ctr.json" "$W/c/pod.json")
cc start "$CID" >/dev/null

# ------------------------------------------------------------ timing
: >"$W/berthd.ms"
: >"$W/containerd.ms"
for i in $(seq $((N + 2))); do
	b=$(ms cb exec "$BID" true)
	c=$(ms cc exec "$CID" true)
	if ((i > 2)); then
		echo "$b" >>"$W/berthd.ms"
		echo "$c" >>"$W/containerd.ms"
	fi
done
report() {
	printf '%-28s median %7.2f ms   min %7.2f   max %7.2f   (N=%s)\n' "$1" "$(median <"$2")" \
		"$(sort -n "$2" | head -1)" "$(sort -n "$2" | tail -1)" "$N"
}
echo "crictl exec CONTAINER true, wall clock of crictl ($PROFILE build of berth):"
report "berthd (berth-runtime)" "$W/berthd.ms"
report "containerd 1.6 CRI (runc)" "$W/containerd.ms"
