#!/usr/bin/env bash
# Builds the test binaries of the cgroup-dependent crates and runs them inside one
# pure cgroup v2 guest (run.sh), so the same tests that run on this v1
# hybrid host also prove berth on cgroup v2. Exits non-zero if any fails.
#   tests/v2-guest/all-tests.sh            # as root
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
cargo build -p berth-runtime
# The crates whose behaviour depends on the cgroup layout. The image crates
# (berth-image, berth) never touch cgroups, and their tests need a registry,
# skopeo and user xattrs on the guest's tmpfs root (Linux 6.6+), none of which
# the guest has.
mapfile -t bins < <(cargo test -p berth-runtime -p berth-cgroups -p berth-testkit --no-run --message-format=json 2>/dev/null |
	jq -r 'select(.reason == "compiler-artifact" and .executable != null and .profile.test) | .executable' |
	sort -u)
((${#bins[@]} > 0)) || { echo "no test binaries found" >&2; exit 1; }
runtime=$repo/target/debug/berth-runtime
# One guest, every binary in turn; a failing binary does not stop the rest.
# shellcheck disable=SC2016 # expanded by the guest's shell, not here
script='fail=0; for t in "$@"; do echo "=== $t"; "$t" --test-threads=2 || fail=1; done; exit $fail'
exec "$repo/tests/v2-guest/run.sh" --timeout 900 "$runtime" "${bins[@]}" -- /bin/sh -c "$script" sh "${bins[@]}"
