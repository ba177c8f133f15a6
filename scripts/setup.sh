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
  docker-registry  # the image tests serve their images from a local registry
  skopeo           # ... pushed there by the anchor tool, not by berth itself
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup" >&2; exit 1; }
