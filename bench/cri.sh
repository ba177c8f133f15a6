#!/usr/bin/env bash
# cri.sh: berthd's CRI beside containerd 1.6's CRI plugin, driven by the same
# clients the same way: cri-tools' crictl
#   pod      crictl runp POD.json                      (RunPodSandbox)
#   ctr      crictl create POD CTR.json POD.json + start (CreateContainer + StartContainer)
#   teardown crictl stopp POD + rmp POD                 (StopPodSandbox + RemovePodSandbox)
# and the same three steps again through one kept gRPC connection, as the
# kubelet calls a runtime (crates/berthd/examples/cri-bench.rs: crictl
# starts a Go process and dials anew for every call, a fixed cost both
# daemons pay that the kubelet does not).
# Medians (min, max) of N iterations per daemon; each iteration runs one
# full pod lifecycle on each daemon, the order alternating; 2 uncounted
# warm-up iterations first. Then the idle RSS of each daemon (VmRSS of the
# daemon process alone, its shims not counted, after the runs and a pause),
# the ratios berthd/containerd and whether the issue's goal holds (berthd at
# most half containerd's time for pod + container start, idle RSS at most
# half). Nothing is asserted.
#
#   sudo bench/cri.sh            # N=20
#   sudo N=50 bench/cri.sh
#
# Both daemons pull the same offline stand-in images (shared/critest-images:
# pause:3.10 as the sandbox image, e2e busybox for the container) from a
# docker-registry on a free loopback port, through containerd-style
# certs.d/HOST/hosts.toml mirrors (both read that format), before any
# timing. Both use one CNI conflist shape (bridge + host-local + portmap)
# with their own bridge, subnet and IPAM dir, runc-compatible runtimes
# (containerd: runc through containerd-shim-runc-v2; berthd: berth-runtime
# through berth-shim), the cgroupfs driver, and pods under a cgroup parent
# of this script's own, removed at the end. Everything lives in one temp
# directory; the daemons are stopped by PID; containerd's leftover shims
# (they carry its socket path) are stopped by PID too.
#
# Needs: docker-registry, skopeo, containerd (1.6, with its CRI plugin),
# runc, containernetworking-plugins; crictl from shared/tools (or CRICTL).
set -euo pipefail
N=${N:-20}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { printf 'cri-bench: %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { say "needs root"; exit 1; }

find_shared() {
	local d=$repo
	while [ "$d" != / ]; do
		d=$(dirname "$d")
		[ -d "$d/shared/tools" ] && { echo "$d/shared"; return; }
	done
	return 1
}
SHARED=${BERTH_SHARED_DIR:-$(find_shared)} || { say "no shared/ found; set BERTH_SHARED_DIR"; exit 1; }
CRICTL=${CRICTL:-$SHARED/tools/crictl}
command -v containerd >/dev/null || { say "containerd is not installed (apt-get install containerd)"; exit 1; }

(cd "$repo" && cargo build -q --release -p berthd -p berth-runtime -p berth-shim && cargo build -q --release -p berthd --example cri-bench)
bin=${CARGO_TARGET_DIR:-$repo/target}/release

W=$(mktemp -d /tmp/berth-cri-bench.XXXXXX)
CG=berth-cri-bench-$$
REG_PID= CTRD_PID= BERTHD_PID=
CTRD_SOCK=$W/containerd/containerd.sock
BERTHD_SOCK=$W/berthd/berthd.sock

# PIDs of the containerd shims serving the containerd at socket $1.
shims_of() {
	local p
	for p in /proc/[0-9]*; do
		[[ $(cat "$p/comm" 2>/dev/null) == containerd-shim* ]] || continue
		tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "$1" && echo "${p#/proc/}"
	done
	return 0
}

cleanup() {
	local rc=$?
	set +e
	# Pods first, while the daemons can still tear down their networks.
	for d in "$CTRD_SOCK" "$BERTHD_SOCK"; do
		[ -S "$d" ] || continue
		for p in $(cri "$d" pods -q 2>/dev/null); do
			cri "$d" stopp "$p" >/dev/null 2>&1
			cri "$d" rmp -f "$p" >/dev/null 2>&1
		done
	done
	local shims
	shims=$(shims_of "$CTRD_SOCK")
	for p in $BERTHD_PID $CTRD_PID $REG_PID; do
		kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null
	done
	for p in $shims; do kill -KILL "$p" 2>/dev/null; done
	for c in $(ls -A "$W/containerd/runc/k8s.io" 2>/dev/null); do
		runc --root "$W/containerd/runc/k8s.io" delete -f "$c" >/dev/null 2>&1
	done
	grep -F " $W/" /proc/self/mountinfo | awk '{print $5}' | sort -r | while read -r m; do umount -l "$m"; done
	for h in /sys/fs/cgroup/*/; do
		[ -d "$h$CG" ] && find "$h$CG" -depth -type d -exec rmdir {} + 2>/dev/null
	done
	for br in bcri-b0 bcri-c0; do ip link del "$br" 2>/dev/null; done
	rm -rf "$W"
	exit "$rc"
}
trap cleanup EXIT INT TERM

cri() { local s=$1; shift; "$CRICTL" --config /dev/null --timeout 60s -r "unix://$s" -i "unix://$s" "$@"; }

free_port() {
	local p
	for p in $(seq 36000 36999); do
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
	return 1
}

# --- registry with the stand-ins, and mirrors to it
port=$(free_port) || { say "no free port"; exit 1; }
reg=127.0.0.1:$port
mkdir -p "$W/registry"
cat >"$W/registry/config.yml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $W/registry/data}}
http: {addr: $reg}
EOF
docker-registry serve "$W/registry/config.yml" >"$W/registry/log" 2>&1 &
REG_PID=$!
for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
"$SHARED/critest-images/push.sh" "$reg" >"$W/push.log"
for host in registry.k8s.io docker.io; do
	mkdir -p "$W/certs.d/$host"
	printf 'server = "https://%s"\n\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' "$host" "$reg" \
		>"$W/certs.d/$host/hosts.toml"
done

conflist() { # DIR NAME BRIDGE SUBNET
	mkdir -p "$1"
	cat >"$1/10-$2.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "$2", "plugins": [
  {"type": "bridge", "bridge": "$3", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$4"}]], "dataDir": "$W/ipam-$2"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
}

# --- containerd 1.6 with its CRI plugin
mkdir -p "$W"/containerd/{root,state,opt,runc}
conflist "$W/containerd/net.d" bench-ctrd bcri-c0 10.231.0.0/16
cat >"$W/containerd/config.toml" <<EOF
version = 2
root = "$W/containerd/root"
state = "$W/containerd/state"
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$CTRD_SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$W/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$W/containerd/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$W/containerd/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$W/certs.d"
EOF
containerd --config "$W/containerd/config.toml" >"$W/containerd/log" 2>&1 &
CTRD_PID=$!

# --- berthd
mkdir -p "$W/berthd"
conflist "$W/berthd/net.d" bench-berthd bcri-b0 10.232.0.0/16
cat >"$W/berthd/berthd.toml" <<EOF
sandbox_image = "registry.k8s.io/pause:3.10"
[cni]
conf_dir = "$W/berthd/net.d"
[registry]
config_path = "$W/certs.d"
EOF
"$bin/berthd" --root "$W/berthd/root" --runroot "$W/berthd/run" --listen "$BERTHD_SOCK" \
	--config "$W/berthd/berthd.toml" --cgroup-parent "/$CG/berthd" --runtime "$bin/berth-runtime" \
	--log-file "$W/berthd/log" &
BERTHD_PID=$!

for s in "$CTRD_SOCK" "$BERTHD_SOCK"; do
	for _ in $(seq 300); do [ -S "$s" ] && cri "$s" version >/dev/null 2>&1 && break; sleep 0.1; done
	cri "$s" version >/dev/null || { say "no daemon on $s; logs in $W"; cat "$W"/*/log >&2; exit 1; }
done

IMG=registry.k8s.io/e2e-test-images/busybox:1.29-2
for s in "$CTRD_SOCK" "$BERTHD_SOCK"; do
	cri "$s" pull registry.k8s.io/pause:3.10 >/dev/null
	cri "$s" pull "$IMG" >/dev/null
done

pod_json() { # NAME DAEMON
	cat <<EOF
{"metadata": {"name": "$1", "namespace": "bench", "uid": "$1-uid", "attempt": 0},
 "log_directory": "$W/logs/$2/$1",
 "linux": {"cgroup_parent": "/$CG/$2-pods/$1"}}
EOF
}
cat >"$W/ctr.json" <<EOF
{"metadata": {"name": "sleeper"}, "image": {"image": "$IMG"},
 "command": ["sleep", "3600"], "log_path": "sleeper.log", "linux": {}}
EOF

ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# One pod lifecycle on daemon $1 (label $2, iteration $3) with crictl:
# appends "pod ctr teardown" milliseconds to $W/times-crictl-$2.
lifecycle() {
	local s=$1 name=$2-$3 t pod pod_ms ctr_ms cid
	pod_json "$name" "$2" >"$W/pod-$name.json"
	t=$(date +%s%N)
	pod=$(cri "$s" runp "$W/pod-$name.json")
	pod_ms=$(ms "$t")
	t=$(date +%s%N)
	cid=$(cri "$s" create "$pod" "$W/ctr.json" "$W/pod-$name.json")
	cri "$s" start "$cid" >/dev/null
	ctr_ms=$(ms "$t")
	t=$(date +%s%N)
	cri "$s" stopp "$pod" >/dev/null
	cri "$s" rmp "$pod" >/dev/null
	echo "$pod_ms $ctr_ms $(ms "$t")" >>"$W/times-crictl-$2"
	rm -f "$W/pod-$name.json"
}

# The same through one kept gRPC connection: $W/times-grpc-$2.
lifecycle_grpc() {
	local name=$2-g$3
	"$bin/examples/cri-bench" "unix://$1" "$name" "$W/logs/$2/$name" "/$CG/$2-pods/$name" "$IMG" >>"$W/times-grpc-$2"
}

say "N=$N (2 warm-up iterations first); containerd $(containerd --version | awk '{print $3}'), berthd $("$bin/berthd" --version 2>/dev/null | awk '{print $2}')"
for i in $(seq -1 "$N"); do
	if [ $((i % 2)) = 0 ]; then order="ctrd berthd"; else order="berthd ctrd"; fi
	for d in $order; do
		if [ "$d" = ctrd ]; then sock=$CTRD_SOCK; else sock=$BERTHD_SOCK; fi
		lifecycle "$sock" "$d" "$i"
		lifecycle_grpc "$sock" "$d" "$i"
	done
	if [ "$i" = 0 ]; then rm -f "$W"/times-*; fi
done

# median min max of column $2 of file $1
stats() { awk -v c="$2" '{print $c}' "$1" | sort -n | awk '{a[NR]=$1} END {m = NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2; printf "%g %d %d", m, a[1], a[NR]}'; }
# pod + container start per iteration, as one column
for f in "$W"/times-*; do awk '{print $1 + $2}' "$f" >"${f/times-/start-}"; done

sleep 2
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
rss_c=$(rss "$CTRD_PID") rss_b=$(rss "$BERTHD_PID")

row() { # LABEL FILE-PREFIX COLUMN
	local cm cmin cmax bm bmin bmax
	read -r cm cmin cmax <<<"$(stats "$W/$2ctrd" "$3")"
	read -r bm bmin bmax <<<"$(stats "$W/$2berthd" "$3")"
	printf '%-34s %22s %22s %8.2f\n' "$1" "$cm ($cmin-$cmax)" "$bm ($bmin-$bmax)" "$(echo "$bm / $cm" | bc -l)"
}
goal() { # CLIENT
	local cstart bstart
	read -r cstart _ <<<"$(stats "$W/start-$1-ctrd" 1)"
	read -r bstart _ <<<"$(stats "$W/start-$1-berthd" 1)"
	[ "$(echo "$bstart * 2 <= $cstart" | bc)" = 1 ] && echo yes || echo no
}
for client in crictl grpc; do
	case $client in
	crictl) title="crictl, a process per call" ;;
	grpc) title="one kept gRPC connection" ;;
	esac
	printf '\n%s: medians of %s (min-max), ms\n' "$title" "$N"
	printf '%-34s %22s %22s %8s\n' "" "containerd 1.6 CRI" "berthd" "ratio"
	row "RunPodSandbox" "times-$client-" 1
	row "CreateContainer + StartContainer" "times-$client-" 2
	row "pod + container start" "start-$client-" 1
	row "StopPodSandbox + RemovePodSandbox" "times-$client-" 3
done
echo
printf '%-34s %22s %22s %8.2f\n' "idle daemon RSS, KiB" "$rss_c" "$rss_b" "$(echo "$rss_b / $rss_c" | bc -l)"
echo
echo "goal: pod + container start at most half of containerd's: crictl $(goal crictl), one connection $(goal grpc)"
echo "goal: idle RSS at most half of containerd's: $([ "$(echo "$rss_b * 2 <= $rss_c" | bc)" = 1 ] && echo yes || echo no)"
