#!/usr/bin/env bash
# build.sh: `berth build` beside `buildah bud` and `docker build`, the same
# multi-stage Dockerfile (several RUN steps, a COPY of a few thousand
# generated files, a COPY --from), each built
#   cold: no cache (berth and buildah: a fresh root each time; docker:
#         --no-cache, its results removed between runs), and
#   warm: everything cached (one untimed build first, then the same build
#         again),
# N times each; medians (min-max) and the ratios berth/buildah and
# berth/docker. Says whether the issue's goals hold (cold: at most half of
# buildah's time; warm: under 10% of it). Nothing is asserted.
#
#   sudo bench/build.sh               # N=5
#   sudo N=3 FILES=3000 bench/build.sh
#   BERTH_BIN=DIR ...                 # berth, berth-runtime, berth-shim from DIR
#                                     # (default: target/release, built if missing)
#   BUILDAH_ISOLATION=chroot ...      # default oci (runc, cgroups under ours)
#
# The base image is the busybox the other benches make (busybox-static,
# every applet linked, made with umoci), turned into a docker archive with
# skopeo and loaded into each tool: `berth load`, `docker load`, skopeo
# copy into buildah's storage. All RUN steps run with --network none on all
# three (no bridge to set up, no iptables). dockerd 20.10 is started here
# with its own data and exec roots, --bridge none, no iptables; the docker
# CLI uses its classic builder (DOCKER_BUILDKIT=0: dockerd 20.10 has no
# BuildKit the CLI can reach without the buildx plugin). buildah uses the
# overlay driver (as berth and docker do) with its own root and runroot.
# Every root, socket and the build context live in one temporary directory,
# removed at the end with what is mounted under it; containers' cgroups go
# under a parent of this script's own, removed too; daemons are stopped by
# PID.
#
# Needs: umoci, skopeo, busybox-static, buildah (apt-get install buildah),
# docker.io (dockerd and a docker CLI).
set -euo pipefail
N=${N:-5}
FILES=${FILES:-3000}
DOCKER=${DOCKER:-docker}
BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-oci}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { printf 'build-bench: %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { say "needs root"; exit 1; }
for t in umoci skopeo dockerd buildah; do
	command -v $t >/dev/null || { say "$t is not installed"; exit 1; }
done

W=$(mktemp -d /tmp/berth-build-bench.XXXXXX)
CG=berth-build-bench-$$
DOCKERD_PID=

dk() { DOCKER_CONFIG=$W/cli DOCKER_BUILDKIT=0 "$DOCKER" -H "unix://$W/docker/sock" "$@"; }
bh() { buildah --root "$1/root" --runroot "$1/run" --storage-driver overlay "${@:2}"; }
bt() { BERTH_SHIM=$bin/berth-shim BERTH_CGROUP_PARENT=/$CG/berth "$bin/berth" --root "$1/root" --runroot "$1/run" \
	--runtime "$bin/berth-runtime" "${@:2}"; }

# shims_of, stop_pid
. "$repo/bench/lib.sh"

cleanup() {
	local rc=$? p
	set +e
	if [[ -n $DOCKERD_PID ]]; then
		stop_dockerd "$DOCKERD_PID" "$W/docker/exec"
	fi
	remove_workdir "$W" "$CG"
	exit "$rc"
}
trap cleanup EXIT INT TERM

if [[ -n ${BERTH_BIN:-} ]]; then
	bin=$BERTH_BIN
else
	bin=${CARGO_TARGET_DIR:-$repo/target}/release
	if [[ ! -x $bin/berth || ! -x $bin/berth-runtime || ! -x $bin/berth-shim ]]; then
		say "building berth, berth-shim, berth-runtime (release)"
		(cd "$repo" && cargo build --release -q -p berth -p berth-shim -p berth-runtime)
	fi
fi

# --- the base image: busybox as a docker archive
mkdir -p "$W/cli"
busybox_oci "$W/oci" "$W"
rm -rf "$W/rootfs"
skopeo copy -q "oci:$W/oci:busybox" "docker-archive:$W/busybox.tar:busybox:latest"

# --- the context: FILES small files in 100 directories, and the Dockerfile
ctx=$W/ctx
mkdir -p "$ctx"
for d in $(seq 0 99); do mkdir -p "$ctx/files/d$d"; done
for i in $(seq 1 "$FILES"); do echo "file $i" >"$ctx/files/d$((i % 100))/f$i"; done
cat >"$ctx/Dockerfile" <<'EOF'
FROM busybox:latest AS gen
RUN mkdir -p /out && for i in $(seq 1 500); do echo "$i" > /out/g$i; done
RUN cat /out/* | md5sum > /out.sum

FROM busybox:latest
RUN mkdir -p /app && echo base > /app/base
COPY files/ /app/files/
RUN find /app/files -type f | wc -l > /app/count
COPY --from=gen /out.sum /app/gen.sum
RUN cat /app/count /app/gen.sum /app/base | md5sum > /app/digest
CMD ["cat", "/app/digest"]
EOF

# --- dockerd 20.10
mkdir -p "$W/docker"
echo '{}' >"$W/docker/daemon.json"
dockerd --config-file "$W/docker/daemon.json" --data-root "$W/docker/data" --exec-root "$W/docker/exec" \
	-H "unix://$W/docker/sock" --pidfile "$W/docker/pid" --bridge none --iptables=false \
	--ip6tables=false --ip-masq=false --ip-forward=false --cgroup-parent "/$CG/docker" >"$W/docker/log" 2>&1 &
DOCKERD_PID=$!
for _ in $(seq 300); do dk version >/dev/null 2>&1 && break; sleep 0.1; done
dk version >/dev/null || { say "dockerd did not start; log in $W/docker/log"; tail -n 5 "$W/docker/log" >&2; exit 1; }
dk load -q -i "$W/busybox.tar" >/dev/null

# Fresh roots with the base loaded (untimed).
berth_root() { rm -rf "$1"; mkdir -p "$1"; bt "$1" load -q -i "$W/busybox.tar" >/dev/null; }
buildah_root() {
	rm -rf "$1"
	mkdir -p "$1"
	skopeo copy -q "docker-archive:$W/busybox.tar" \
		"containers-storage:[overlay@$1/root+$1/run]docker.io/library/busybox:latest"
}
drop_root() { # unmounts what a tool left under $1, then removes it
	while read -r m; do umount -l "$m" 2>/dev/null; done < <(awk -v w="$1/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
	rm -rf "$1"
}

build_berth() { bt "$1" build -q --network none -t bench:latest "$ctx"; }
build_buildah() {
	bh "$1" bud --layers --pull=never --network none --isolation "$BUILDAH_ISOLATION" \
		--cgroup-parent "/$CG/buildah" -q -t bench:latest "$ctx"
}
build_docker() { dk build -q --network none "$@" -t bench:latest "$ctx"; }

ms() { # CMD...: wall-clock milliseconds of CMD
	local s=$EPOCHREALTIME e
	"$@" >"$W/cmd.log" 2>&1 || { say "failed: $* ($(tail -n 3 "$W/cmd.log" | tr '\n' ' '))"; return 1; }
	e=$EPOCHREALTIME
	echo "$(((${e/./} - ${s/./}) / 10))" | awk '{ printf "%.2f\n", $1 / 100 }'
}

say "N=$N, $FILES files; $(buildah --version), dockerd $(dockerd --version | awk '{print $3}' | tr -d ,), berth from $bin"
for i in $(seq 1 "$N"); do
	# cold
	berth_root "$W/b-cold"
	ms build_berth "$W/b-cold" >>"$W/cold-berth"
	drop_root "$W/b-cold"
	buildah_root "$W/h-cold"
	ms build_buildah "$W/h-cold" >>"$W/cold-buildah"
	drop_root "$W/h-cold"
	dk rmi -f bench:latest >/dev/null 2>&1 || true
	dk image prune -f >/dev/null 2>&1 || true
	ms build_docker --no-cache >>"$W/cold-docker"
	say "cold run $i: berth $(tail -n1 "$W/cold-berth") ms, buildah $(tail -n1 "$W/cold-buildah") ms, docker $(tail -n1 "$W/cold-docker") ms"
done

# warm: one untimed build in a kept root, then N cached ones
berth_root "$W/b-warm"
build_berth "$W/b-warm" >/dev/null 2>&1
buildah_root "$W/h-warm"
build_buildah "$W/h-warm" >/dev/null 2>&1
build_docker >/dev/null 2>&1
for i in $(seq 1 "$N"); do
	ms build_berth "$W/b-warm" >>"$W/warm-berth"
	ms build_buildah "$W/h-warm" >>"$W/warm-buildah"
	ms build_docker >>"$W/warm-docker"
done

# The three images do the same.
out_b=$(bt "$W/b-warm" run --rm --network none bench:latest)
out_d=$(dk run --rm --network none bench:latest)
say "the image's output: berth $out_b, docker $out_d"

stats() { sort -n "$1" | awk '{a[NR]=$1} END {m = NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2; printf "%.0f %.0f %.0f", m, a[1], a[NR]}'; }
printf '\nmedians of %s (min-max), ms %20s %20s %20s %9s %9s\n' "$N" "berth" "buildah bud" "docker build" "b/buildah" "b/docker"
for k in cold warm; do
	read -r bm bmin bmax <<<"$(stats "$W/$k-berth")"
	read -r hm hmin hmax <<<"$(stats "$W/$k-buildah")"
	read -r dm dmin dmax <<<"$(stats "$W/$k-docker")"
	printf '%-28s %20s %20s %20s %9.3f %9.3f\n' "$k ($FILES files)" "$bm ($bmin-$bmax)" "$hm ($hmin-$hmax)" \
		"$dm ($dmin-$dmax)" "$(echo "$bm / $hm" | bc -l)" "$(echo "$bm / $dm" | bc -l)"
	eval "${k}_b=$bm ${k}_h=$hm"
done
echo
echo "goal: cold at most half of buildah's time: $([ "$(echo "$cold_b * 2 <= $cold_h" | bc)" = 1 ] && echo yes || echo no)"
echo "goal: warm under 10% of buildah's time: $([ "$(echo "$warm_b * 10 < $warm_h" | bc)" = 1 ] && echo yes || echo no)"
echo "load: $(uptime)"
