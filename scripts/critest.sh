#!/usr/bin/env bash
# critest (cri-tools v1.36, the CRI validation suite) against berthd, offline:
# starts a private docker-registry on a free loopback port, pushes critest's
# stand-in images into it (shared/critest-images/push.sh), writes
# containerd-style certs.d/<host>/hosts.toml mirrors for the registries
# critest pulls from, starts a berthd with its own root, runroot, socket,
# config and cgroup parent pointed at them, runs critest and prints its
# summary. Everything it started is stopped by PID and removed at exit.
#
#   scripts/critest.sh [--focus REGEX] [--skip REGEX] [-- MORE CRITEST FLAGS]
#
# Environment: BERTH_SHARED_DIR (default: the shared/ beside the repository),
# CRITEST, CRICTL (default: $BERTH_SHARED_DIR/tools/…), RESULTS (default:
# ./critest-results: critest.log, junit.xml, berthd.log), KEEP=1 keeps the
# run directory, SUBNET (default 10.N.0.0/16, N from the script's PID, so
# two runs side by side get their own bridge and subnet) for the CNI config written
# for berthd. Needs root. CI runs it (.ci/run) with the skips README lists.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
focus=""
skip=""
extra=()
while [ $# -gt 0 ]; do
	case $1 in
	--focus) focus=$2; shift 2 ;;
	--skip) skip=$2; shift 2 ;;
	--) shift; extra=("$@"); break ;;
	*) echo "usage: $0 [--focus REGEX] [--skip REGEX] [-- CRITEST FLAGS]" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "critest.sh: needs root" >&2; exit 1; }

find_shared() {
	local d=$repo
	while [ "$d" != / ]; do
		d=$(dirname "$d")
		[ -d "$d/shared/tools" ] && { echo "$d/shared"; return; }
	done
	return 1
}
SHARED=${BERTH_SHARED_DIR:-$(find_shared)} || { echo "critest.sh: no shared/ found; set BERTH_SHARED_DIR" >&2; exit 1; }
CRITEST=${CRITEST:-$SHARED/tools/critest}
CRICTL=${CRICTL:-$SHARED/tools/crictl}
RESULTS=${RESULTS:-$PWD/critest-results}
SUBNET=${SUBNET:-10.$((100 + $$ % 150)).0.0/16}
bridge=bcrit$(($$ % 100000))
mkdir -p "$RESULTS"

(cd "$repo" && cargo build -q -p berthd -p berth-runtime -p berth-shim)
target=${CARGO_TARGET_DIR:-$repo/target}/debug

run=$(mktemp -d /tmp/berth-critest.XXXXXX)
# Searchable by others (0711): a pod with its own user namespace reaches
# its rootfs below the runroot as a host uid of its own (berthd makes its
# runroot so, not the directories above it).
chmod 711 "$run"
reg_pid=""
berthd_pid=""
cgroup_parent="/berth-critest-$$"
cleanup() {
	local rc=$?
	# What a failed spec left: every pod (with its containers, network and
	# mounts) goes while berthd still runs; then berthd.
	if [ -n "$berthd_pid" ] && [ -S "${sock:-}" ]; then
		"$CRICTL" --config /dev/null -r "unix://$sock" rmp -a -f >/dev/null 2>&1 || true
	fi
	[ -n "$berthd_pid" ] && kill -TERM "$berthd_pid" 2>/dev/null && wait "$berthd_pid" 2>/dev/null || true
	# Mounts berthd left under the run directory (none when all went well).
	{ grep -F " $run/" /proc/self/mountinfo || true; } | awk '{print $5}' | sort -r | while read -r m; do umount -l "$m"; done
	ip link del "$bridge" 2>/dev/null || true
	[ -n "$reg_pid" ] && kill -TERM "$reg_pid" 2>/dev/null && wait "$reg_pid" 2>/dev/null || true
	[ -f "$run/berthd.log" ] && cp "$run/berthd.log" "$RESULTS/berthd.log"
	# Cgroups berthd may have made for pods: only under our own parent.
	for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
		[ -d "$h${cgroup_parent#/}" ] && find "$h${cgroup_parent#/}" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
	if [ "${KEEP:-0}" = 1 ]; then echo "critest.sh: kept $run" >&2; else rm -rf "$run"; fi
	exit "$rc"
}
trap cleanup EXIT INT TERM

# A free loopback port for the registry.
port=""
for p in $(seq 35000 35999); do
	if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[ -n "$port" ] || { echo "critest.sh: no free port in 35000-35999" >&2; exit 1; }
addr=127.0.0.1:$port

mkdir -p "$run/registry"
cat >"$run/registry/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $run/registry/data
  delete:
    enabled: true
http:
  addr: $addr
EOF
docker-registry serve "$run/registry/config.yml" >"$run/registry/log" 2>&1 &
reg_pid=$!
for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
echo "critest.sh: registry on $addr (pid $reg_pid); pushing the stand-ins"
"$SHARED/critest-images/push.sh" "$addr" >"$run/push.log"
tail -n1 "$run/push.log"

# Mirrors: every registry critest pulls from -> the local registry.
for pair in registry.k8s.io=https://registry.k8s.io k8s.gcr.io=https://k8s.gcr.io gcr.io=https://gcr.io \
	public.ecr.aws=https://public.ecr.aws docker.io=https://registry-1.docker.io; do
	host=${pair%%=*}
	mkdir -p "$run/certs.d/$host"
	printf 'server = "%s"\n\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' "${pair#*=}" "$addr" \
		>"$run/certs.d/$host/hosts.toml"
done

mkdir -p "$run/net.d"
cat >"$run/net.d/10-berth-critest.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "berth-critest", "plugins": [
  {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$SUBNET"}]], "dataDir": "$run/cni-ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
cat >"$run/berthd.toml" <<EOF
sandbox_image = "registry.k8s.io/pause:3.10"
[cni]
conf_dir = "$run/net.d"
[registry]
config_path = "$run/certs.d"
EOF

sock=$run/berthd.sock
"$target/berthd" --root "$run/root" --runroot "$run/run" --listen "$sock" --config "$run/berthd.toml" \
	--cgroup-parent "$cgroup_parent" --runtime "$target/berth-runtime" --log-file "$run/berthd.log" &
berthd_pid=$!
for _ in $(seq 600); do [ -S "$sock" ] && break; kill -0 "$berthd_pid" 2>/dev/null || break; sleep 0.05; done
[ -S "$sock" ] || { echo "critest.sh: berthd did not start:" >&2; cat "$run/berthd.log" >&2; exit 1; }
echo "critest.sh: berthd on $sock (pid $berthd_pid)"
"$CRICTL" --config /dev/null --runtime-endpoint "unix://$sock" --image-endpoint "unix://$sock" version

args=(--runtime-endpoint "unix://$sock" --image-endpoint "unix://$sock" --ginkgo.no-color
	--ginkgo.junit-report "$RESULTS/junit.xml")
[ -n "$focus" ] && args+=(--ginkgo.focus "$focus")
[ -n "$skip" ] && args+=(--ginkgo.skip "$skip")
rc=0
"$CRITEST" "${args[@]}" "${extra[@]}" >"$RESULTS/critest.log" 2>&1 || rc=$?
echo "critest.sh: critest exited $rc; log in $RESULTS/critest.log"
grep -E '^(Ran [0-9]+ of [0-9]+ Specs|SUCCESS!|FAIL!)|Passed \| [0-9]+ Failed' "$RESULTS/critest.log" || tail -n 20 "$RESULTS/critest.log"
if [ "$rc" != 0 ]; then
	# CI keeps only this output: name each failed spec with what it saw.
	echo "critest.sh: failures:"
	sed -n '/^Summarizing [0-9]* Failure/,$p' "$RESULTS/critest.log" | head -n 40
	grep -n -B2 -A25 '\[FAILED\]' "$RESULTS/critest.log" | head -n 120
	echo "critest.sh: berthd log (warnings and errors):"
	grep -E 'WARN|ERROR' "$run/berthd.log" | tail -n 40 || true
fi
exit "$rc"
