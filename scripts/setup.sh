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
command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup" >&2; exit 1; }
