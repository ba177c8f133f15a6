#!/usr/bin/env bash
# pull.sh: pull + unpack of a realistic multi-layer image from a local
# registry: berth side by side with `skopeo copy` + `umoci unpack`,
# containerd (`ctr image pull --plain-http`, which unpacks into overlayfs
# snapshots) and `podman pull`. Prints medians, spreads and ratios; asserts
# nothing about timings.
#
# The image: a Debian bookworm minbase rootfs (debootstrap; apt caches and
# lists removed, ~125 MB) split into four gzip layers (usr/lib, usr/share,
# the other usr dirs, the rest), built once and cached in
# $BERTH_BENCH_CACHE (default /var/cache/berth-bench), served by Debian's
# docker-registry on 127.0.0.1 at a free port with storage in a temp dir.
#
# Every tool starts each run from an empty store (its previous store is
# removed untimed, then `sync` and a short pause, so no run pays for the
# previous one's deletions), pulls over plain HTTP from the same registry,
# and ends with the rootfs unpacked on disk. containerd is restarted with a
# fresh root before each of its runs (untimed).
#
#   sudo bench/pull.sh                  # 5 runs each
#   sudo RUNS=9 TOOLS="berth ctr" bench/pull.sh
#
# Environment: RUNS (5), TOOLS ("berth berth-nosync skopeo+umoci ctr podman"),
# BERTH (default target/release/berth, built when missing), SETTLE (1 s),
# FLUSH (1: sync after removing the previous store; 0: don't).
# berth-nosync is berth with `durable_unpack = false` (no syncfs per layer,
# as containerd, podman and umoci do not sync either).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-5}
TOOLS=${TOOLS:-"berth berth-nosync skopeo+umoci ctr podman"}
SETTLE=${SETTLE:-1}
cache=${BERTH_BENCH_CACHE:-/var/cache/berth-bench}
((EUID == 0)) || { echo "run as root" >&2; exit 2; }

say() { printf 'bench: %s\n' "$*" >&2; }

need=()
for p in debootstrap:debootstrap docker-registry:docker-registry skopeo:skopeo umoci:umoci ctr:containerd podman:podman; do
	command -v "${p%%:*}" >/dev/null || need+=("${p#*:}")
done
if ((${#need[@]})); then
	say "installing ${need[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi

BERTH=${BERTH:-$repo/target/release/berth}
if [[ ! -x $BERTH ]]; then
	say "building berth (release)"
	(cd "$repo" && cargo build --release -q -p berth)
fi

tmp=$(mktemp -d /var/tmp/berth-bench.XXXXXX)
registry_pid=
containerd_pid=
cleanup() {
	for pid in "$containerd_pid" "$registry_pid"; do
		[[ -n $pid ]] || continue
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	# containerd leaves its snapshots' mounts only while containers run; none do.
	rm -rf "$tmp"
}
trap cleanup EXIT

# ------------------------------------------------------------ the image
layout=$cache/layout
mkdir -p "$cache" # a fresh machine has none yet (debootstrap's log goes there)
if [[ ! -f $layout/index.json ]]; then
	rootfs=$cache/rootfs
	if [[ ! -d $rootfs/usr ]]; then
		say "debootstrap --variant=minbase bookworm (once)"
		rm -rf "$rootfs.tmp"
		debootstrap --variant=minbase bookworm "$rootfs.tmp" http://deb.debian.org/debian >"$cache/debootstrap.log"
		rm -rf "$rootfs.tmp"/var/cache/apt/archives/*.deb "$rootfs.tmp"/var/lib/apt/lists/*
		mv "$rootfs.tmp" "$rootfs"
	fi
	say "building the layered image (once)"
	rm -rf "$layout" && mkdir -p "$layout/blobs/sha256"
	layer() { # NAME PATH... -> writes the gzip layer, prints "digest diffid size"
		local name=$1
		shift
		tar --numeric-owner --xattrs --sort=name -C "$rootfs" -cf "$cache/$name.tar" "$@"
		gzip -6 -n -c "$cache/$name.tar" >"$cache/$name.tar.gz"
		local d diff size
		d=$(sha256sum "$cache/$name.tar.gz" | cut -d' ' -f1)
		diff=$(sha256sum "$cache/$name.tar" | cut -d' ' -f1)
		size=$(stat -c %s "$cache/$name.tar.gz")
		mv "$cache/$name.tar.gz" "$layout/blobs/sha256/$d"
		rm -f "$cache/$name.tar"
		echo "$d $diff $size"
	}
	others=$(cd "$rootfs" && ls -A | grep -vx usr)
	usr_rest=$(cd "$rootfs" && ls -A usr | grep -vx -e lib -e share | sed 's|^|usr/|')
	# shellcheck disable=SC2086 # word lists on purpose
	{
		layer l1 usr/lib
		layer l2 usr/share
		layer l3 $usr_rest
		layer l4 $others
	} >"$cache/layers.txt"
	python3 - "$layout" "$cache/layers.txt" <<'PY'
import hashlib, json, os, sys
layout, listing = sys.argv[1], sys.argv[2]
layers = [l.split() for l in open(listing)]
def blob(data):
    d = hashlib.sha256(data).hexdigest()
    open(os.path.join(layout, "blobs/sha256", d), "wb").write(data)
    return "sha256:" + d, len(data)
cfg = json.dumps({"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
    "config": {"Cmd": ["bash"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + l[1] for l in layers]}}).encode()
cd, cs = blob(cfg)
man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + l[0], "size": int(l[2])} for l in layers]}).encode()
md, ms = blob(man)
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": md, "size": ms, "annotations": {"org.opencontainers.image.ref.name": "bench"}}]},
    open(os.path.join(layout, "index.json"), "w"))
open(os.path.join(layout, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
PY
fi

# ------------------------------------------------------------ the registry
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$tmp/registry.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $tmp/registry
http:
  addr: 127.0.0.1:$port
YML
docker-registry serve "$tmp/registry.yml" >"$tmp/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
ref=127.0.0.1:$port/debian:bench
skopeo copy --quiet --dest-tls-verify=false "oci:$layout:bench" "docker://$ref"
unpacked=$(du -sb --apparent-size "$cache/rootfs" 2>/dev/null | cut -f1 || echo 0)
compressed=$(awk '{s+=$3} END {print s}' "$cache/layers.txt")
say "image $ref: 4 gzip layers, $((compressed / 1000000)) MB compressed, ~$((unpacked / 1000000)) MB unpacked"

# ------------------------------------------------------------ the tools
cat >"$tmp/berth-nosync.toml" <<'TOML'
[images]
durable_unpack = false
TOML
mkdir -p "$tmp/containers"
cat >"$tmp/containers/storage.conf" <<TOML
[storage]
driver = "overlay"
graphroot = "$tmp/podman/root"
runroot = "$tmp/podman/run"
TOML
cat >"$tmp/containers/registries.conf" <<TOML
[[registry]]
location = "127.0.0.1:$port"
insecure = true
TOML
cat >"$tmp/containers/containers.conf" <<'TOML'
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
TOML
cat >"$tmp/containerd.toml" <<TOML
version = 2
root = "$tmp/containerd/root"
state = "$tmp/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$tmp/containerd/sock"
[ttrpc]
  address = "$tmp/containerd/ttrpc.sock"
TOML

start_containerd() {
	if [[ -n $containerd_pid ]]; then
		kill "$containerd_pid" 2>/dev/null || true
		wait "$containerd_pid" 2>/dev/null || true
		containerd_pid=
	fi
	rm -rf "$tmp/containerd"
	mkdir -p "$tmp/containerd"
	containerd -c "$tmp/containerd.toml" >"$tmp/containerd.log" 2>&1 &
	containerd_pid=$!
	for _ in $(seq 200); do [[ -S $tmp/containerd/sock ]] && break; sleep 0.05; done
}

prepare() { # TOOL: untimed reset
	case $1 in
	berth | berth-nosync) rm -rf "$tmp/berth" ;;
	skopeo+umoci) rm -rf "$tmp/oci" "$tmp/bundle" ;;
	ctr) start_containerd ;;
	podman) rm -rf "$tmp/podman" ;;
	esac
	# FLUSH=0 skips the sync, so a run may pay for writing back the
	# previous run's deletions (disk-bound; see shared/anchors.md).
	[[ ${FLUSH:-1} == 0 ]] || sync
	sleep "$SETTLE"
}

pull() { # TOOL
	case $1 in
	berth) "$BERTH" --root "$tmp/berth" --runroot "$tmp/berth-run" --config /dev/null pull -q "$ref" >/dev/null ;;
	berth-nosync) "$BERTH" --root "$tmp/berth" --runroot "$tmp/berth-run" --config "$tmp/berth-nosync.toml" pull -q "$ref" >/dev/null ;;
	skopeo+umoci)
		skopeo copy --quiet --src-tls-verify=false "docker://$ref" "oci:$tmp/oci:bench" &&
			umoci unpack --image "$tmp/oci:bench" "$tmp/bundle" >/dev/null 2>&1
		;;
	ctr) ctr -a "$tmp/containerd/sock" -n bench image pull --plain-http "$ref" >/dev/null ;;
	podman)
		CONTAINERS_CONF=$tmp/containers/containers.conf CONTAINERS_REGISTRIES_CONF=$tmp/containers/registries.conf \
			CONTAINERS_STORAGE_CONF=$tmp/containers/storage.conf podman pull -q "$ref" >/dev/null 2>"$tmp/podman.err"
		;;
	esac
}

declare -A samples
for ((i = 0; i < RUNS; i++)); do
	for tool in $TOOLS; do
		prepare "$tool"
		t0=$EPOCHREALTIME
		if ! pull "$tool"; then
			say "$tool failed"
			samples[$tool]+="FAILED "
			continue
		fi
		t1=$EPOCHREALTIME
		samples[$tool]+="$(echo "$t0 $t1" | awk '{printf "%.3f", $2 - $1}') "
	done
done
[[ -z $containerd_pid ]] || { kill "$containerd_pid"; wait "$containerd_pid" 2>/dev/null || true; containerd_pid=; }

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
printf '\n%-14s %9s   %-s\n' tool "median s" "samples (s)"
declare -A med
for tool in $TOOLS; do
	if [[ ${samples[$tool]} == *FAILED* ]]; then
		printf '%-14s %9s   %s\n' "$tool" FAILED "${samples[$tool]}"
		continue
	fi
	med[$tool]=$(echo "${samples[$tool]}" | median)
	printf '%-14s %9s   %s\n' "$tool" "${med[$tool]}" "${samples[$tool]}"
done
echo
for b in berth berth-nosync; do
	[[ -n ${med[$b]:-} ]] || continue
	for other in $TOOLS; do
		[[ $other == berth* || -z ${med[$other]:-} ]] && continue
		awk -v a="${med[$b]}" -v o="${med[$other]}" -v n="$b" -v m="$other" \
			'BEGIN {printf "%s / %s = %.2f  (%s is %.2fx as fast)\n", n, m, a / o, n, o / a}'
	done
done
