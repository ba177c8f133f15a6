#!/usr/bin/env bash
# From a fresh machine to a running container, offline: installs what is
# needed, builds berth-runtime, makes a busybox bundle and runs it.
#   sudo scripts/demo.sh                 # runs `echo hello from a berth container`
#   sudo scripts/demo.sh sh              # an interactive shell (needs a terminal)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p berth-runtime
bin="$PWD/target/release/berth-runtime"
bundle=$(mktemp -d /tmp/berth-demo.XXXXXX)
trap 'rm -rf "$bundle"' EXIT
mkdir -p "$bundle/rootfs/bin"
cp /bin/busybox "$bundle/rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$bundle/rootfs/bin/$applet"
done
cd "$bundle"
"$bin" spec
if [ "$#" -gt 0 ]; then
  args=$(printf '%s\n' "$@" | jq -R . | jq -s .)
  jq --argjson a "$args" '.process.args = $a | .process.terminal = ($a == ["sh"])' config.json > c && mv c config.json
else
  jq '.process.args = ["sh", "-c", "echo hello from a berth container: $(hostname), pid $$"] | .process.terminal = false' \
    config.json > c && mv c config.json
fi
exec "$bin" --root "$bundle/state" run "demo-$$"
