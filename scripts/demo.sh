#!/usr/bin/env bash
# From a fresh machine to a running container, offline: installs what is
# needed (Debian packages), builds berth, imports busybox-static as the
# image `busybox:local` (no registry needed) and runs it with `berth run`.
#   sudo scripts/demo.sh                 # runs `echo hello from a berth container`
#   sudo scripts/demo.sh sh              # an interactive shell (needs a terminal)
#   sudo scripts/demo.sh busybox:local ls -l /   # any command (the image name is optional)
# Images and containers go to berth's defaults (/var/lib/berth, /run/berth);
# the binaries stay in target/release (berth finds berth-shim and
# berth-runtime beside itself).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p berth -p berth-shim -p berth-runtime
berth="$PWD/target/release/berth"
if ! "$berth" image inspect busybox:local >/dev/null 2>&1; then
  rootfs=$(mktemp -d /tmp/berth-demo.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp"
  cp /bin/busybox "$rootfs/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
  echo 'root:x:0:' >"$rootfs/etc/group"
  tar -C "$rootfs" -c . | "$berth" import --change 'CMD ["sh"]' --change 'ENV PATH=/bin' - busybox:local
fi
[ "${1:-}" = busybox:local ] && shift
if [ "$#" -eq 0 ]; then
  set -- sh -c 'echo hello from a berth container: $(hostname), pid $$'
fi
if [ -t 0 ] && [ "$*" = sh ]; then
  exec "$berth" run --rm -it busybox:local "$@"
fi
exec "$berth" run --rm busybox:local "$@"
