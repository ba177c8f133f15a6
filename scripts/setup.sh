#!/usr/bin/env bash
# Installs the system packages berth's build, tests and demo need (Debian).
# Idempotent; needs root. Rust itself comes from rustup (cargo on PATH).
set -euo pipefail
packages=(
  busybox-static   # the rootfs of every test container
  jq               # the demo and benchmarks edit config.json with it
  procps           # `ps`, which `berth-runtime ps` runs as runc does
  iproute2         # network namespace checks in tests
  libseccomp-dev pkg-config  # seccomp filters (libseccomp crate)
  uidmap           # newuidmap/newgidmap: rootless containers with id ranges
  passwd           # useradd/userdel: the rootless tests make their own user
  containernetworking-plugins iptables  # container networks (CNI bridge, portmap, firewall)
  tini             # tini-static: `berth run --init`'s pid 1 (docker's docker-init)
  protobuf-compiler  # protoc: the CRI bindings (k8s-cri) are generated from its protos at build time
  g++              # scripts/fuzz.sh: libfuzzer-sys builds libFuzzer (C++)
)
# tests/interop: berth-runtime under the real clients, each started by the
# tests with its own root, state and socket (never a system-wide instance).
# Installed without recommends (no AppArmor, CNI or slirp the tests do not
# use) and without starting the packages' services.
interop=(
  podman conmon    # podman 4.3 and its per-container monitor
  containerd       # containerd 1.6 and ctr
  docker.io        # dockerd 20.10 (and a docker CLI)
  docker-registry  # the registry the tests push their busybox image to
  umoci skopeo     # build the busybox OCI image; push it to the registry
  runc crun        # the anchors bench/runtime-lifecycle.sh compares with
)
missing_of() {
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}
mapfile -t missing < <(missing_of "${packages[@]}")
mapfile -t missing_interop < <(missing_of "${interop[@]}")
export DEBIAN_FRONTEND=noninteractive
if [ "${#missing[@]}" -gt 0 ] || [ "${#missing_interop[@]}" -gt 0 ]; then
  apt-get update -qq
fi
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get install -y -qq "${missing[@]}"
fi
if [ "${#missing_interop[@]}" -gt 0 ]; then
  # A policy-rc.d that says "no" keeps dpkg from starting dockerd and
  # containerd system-wide (where an init system would); ours only for
  # this install, and only if the host has none.
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  rc=0
  apt-get install -y -qq --no-install-recommends "${missing_interop[@]}" || rc=$?
  if [ "$own_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  [ "$rc" = 0 ] || exit "$rc"
fi
# crates/berthd/tests/docker_api.rs drives berthd's Docker API with
# docker-py (PyPI's `docker`, as the brief's clients list it).
if ! python3 -c 'import docker' 2>/dev/null; then
  python3 -m pip --version >/dev/null 2>&1 || apt-get install -y -qq python3-pip
  python3 -m pip install -q docker 2>/dev/null || python3 -m pip install -q --break-system-packages docker
fi
# crates/berthd/tests/compose.rs drives berthd with docker-compose 1.29
# (PyPI), in a venv of its own: it needs docker-py < 7 (7 dropped
# kwargs_from_env's ssl_version) and requests < 2.32 (docker-py 6 breaks
# on 2.32's http+docker), while the other tests use docker-py 7. Its
# PyYAML 5.4.1 has no wheel for Python >= 3.11 and its sdist does not
# build with Cython 3: built first without build isolation, with Cython
# 0.29. BERTH_COMPOSE names another docker-compose for the test.
compose_venv=/opt/berth-compose
if [ ! -x "$compose_venv/bin/docker-compose" ]; then
  python3 -m venv "$compose_venv" 2>/dev/null || { apt-get install -y -qq python3-venv && python3 -m venv "$compose_venv"; }
  "$compose_venv/bin/pip" install -q 'cython<3' wheel 'setuptools<70'
  "$compose_venv/bin/pip" install -q --no-build-isolation 'PyYAML==5.4.1'
  "$compose_venv/bin/pip" install -q 'docker-compose==1.29.*' 'docker<7' 'requests<2.32' 'PyYAML==5.4.1'
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup" >&2; exit 1; }
# scripts/fuzz.sh (the last CI step) drives the fuzz targets with
# cargo-fuzz; it runs on stable too (see the script), so no nightly here.
cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
# crun refuses a hybrid layout whose cgroup2 mount holds a controller
# ("cgroups in hybrid mode not supported"): on the hybrid CI machines that
# is hugetlb, which nothing uses. Mounting it as its own v1 hierarchy (the
# one cgroup mount change allowed there, see shared/anchors.md) lets the
# tests run crun as the engine's runtime. berth works either way.
if [ -f /sys/fs/cgroup/unified/cgroup.controllers ] && grep -qw hugetlb /sys/fs/cgroup/unified/cgroup.controllers \
  && ! mountpoint -q /sys/fs/cgroup/hugetlb; then
  mkdir -p /sys/fs/cgroup/hugetlb
  mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb || echo "setup: could not mount hugetlb as v1; crun will refuse this layout" >&2
fi
