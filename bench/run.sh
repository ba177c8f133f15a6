#!/usr/bin/env bash
# run.sh: `berth run --rm IMG true` side by side with `podman run --rm`
# (crun, podman's default here) on the same busybox image, pre-pulled,
# network none for both (the network layers differ: CNI plugins here,
# netavark/CNI there; see README). Medians of N runs, alternating.
#
#   sudo bench/run.sh          # 20 runs each
#   sudo N=50 bench/run.sh
#
# A registry (docker-registry) is started on a free loopback port with its
# storage, berth's root and podman's storage all in one temporary
# directory, removed at the end. Needs: docker-registry, umoci, skopeo,
# podman, crun, busybox-static.
set -euo pipefail
N=${N:-20}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=$(mktemp -d /tmp/berth-run-bench.XXXXXX)
REG_PID=
say() { printf 'run-bench: %s\n' "$*" >&2; }
cleanup() {
	set +e
	[[ -n $REG_PID ]] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null
	pm rm --all --force --time 0 >/dev/null 2>&1
	while read -r m; do umount -l "$m" 2>/dev/null; done < <(awk -v w="$W/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
	rm -rf "$W"
}
trap cleanup EXIT
pm() {
	CONTAINERS_CONF=$W/podman/containers.conf CONTAINERS_STORAGE_CONF=$W/podman/storage.conf \
		CONTAINERS_REGISTRIES_CONF=$W/podman/registries.conf podman "$@"
}
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ms() { local s=$EPOCHREALTIME; "$@" >/dev/null 2>&1 || return 1; echo "$(((${EPOCHREALTIME/./} - ${s/./}) / 10))" | awk '{ printf "%.2f\n", $1 / 100 }'; }

say "building berth (release)"
(cd "$repo" && cargo build --release -q -p berth -p berth-shim -p berth-runtime)
BERTH="$repo/target/release/berth --root $W/berth --runroot $W/berth-run"

# A registry with busybox in it.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' "$W/registry" "$port" >"$W/registry.yml"
docker-registry serve "$W/registry.yml" >"$W/registry.log" 2>&1 &
REG_PID=$!
mkdir -p "$W/rootfs/bin"
cp /bin/busybox "$W/rootfs/bin/"
for a in $(/bin/busybox --list); do [[ $a == busybox ]] || ln -sf busybox "$W/rootfs/bin/$a"; done
umoci init --layout "$W/oci" && umoci new --image "$W/oci:busybox"
umoci unpack --image "$W/oci:busybox" "$W/bundle" >/dev/null
cp -a "$W/rootfs/." "$W/bundle/rootfs/"
umoci repack --image "$W/oci:busybox" "$W/bundle"
umoci config --image "$W/oci:busybox" --config.cmd sh --config.env PATH=/bin
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
skopeo copy -q --dest-tls-verify=false "oci:$W/oci:busybox" "docker://127.0.0.1:$port/busybox:latest"
IMG=127.0.0.1:$port/busybox:latest
$BERTH pull "$IMG" >/dev/null

mkdir -p "$W/podman"
cat >"$W/podman/containers.conf" <<EOF
[containers]
netns = "none"
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$W/podman/events.log"
tmp_dir = "$W/podman/tmp"
EOF
echo 'unqualified-search-registries = []' >"$W/podman/registries.conf"
printf '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n' "$W/podman/storage" "$W/podman/run" >"$W/podman/storage.conf"
tar -C "$W/rootfs" -c . | pm import --quiet - localhost/bench-busybox >/dev/null

declare -a B P
for i in $(seq $((N + 2))); do
	b=$(ms $BERTH run --rm --network none "$IMG" true) || { say "berth run failed"; exit 1; }
	p=$(ms pm run --rm --network none localhost/bench-busybox true) || { say "podman run failed"; exit 1; }
	((i > 2)) && B+=("$b") && P+=("$p")
done
mb=$(printf '%s\n' "${B[@]}" | median)
mp=$(printf '%s\n' "${P[@]}" | median)
printf '\nrun --rm IMG true, median of %s (ms)\n' "$N"
printf '%-28s %8s\n' "berth (berth-runtime)" "$mb" "podman (crun)" "$mp"
printf 'berth / podman: %.2fx\n' "$(echo "$mb / $mp" | bc -l)"
