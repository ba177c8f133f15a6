#!/usr/bin/env bash
# Builds the workspace's test binaries and runs them all inside one
# pure cgroup v2 guest (run.sh), so the same tests that run on this v1
# hybrid host also prove berth on cgroup v2. Exits non-zero if any fails.
# Left out: tests/interop (the guest has no podman, containerd or dockerd)
# and the image crates, berth-image and the berth CLI, and berth-fs, which
# never touch cgroups and whose tests need a registry, skopeo and user xattrs on the
# guest's tmpfs root (Linux 6.6+). Of berthd's tests, cgroups.rs (pods'
# limits, updates, stats and OOM kills in their cgroups) runs here, with
# what its node needs: crictl, the stand-in registry (docker-registry,
# skopeo and critest's image layout from shared/) and the CNI plugins.
#   tests/v2-guest/all-tests.sh            # as root
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
cargo build -p berth-runtime -p berth-shim -p berthd
mapfile -t bins < <(cargo test --workspace --no-run --message-format=json 2>/dev/null |
	jq -r 'select(.reason == "compiler-artifact" and .executable != null and .profile.test)
		| select((.package_id | test("berth-interop|berth-image|berth-fs|/crates/berth#|/crates/berthd#") | not)
			or (.package_id | test("/crates/berthd#")) and .target.name == "cgroups") | .executable' |
	sort -u)
((${#bins[@]} > 0)) || { echo "no test binaries found" >&2; exit 1; }
runtime=$repo/target/debug/berth-runtime
shim=$repo/target/debug/berth-shim
berthd=$repo/target/debug/berthd
shared=$(cd "$repo/.." && pwd)/shared
node=("$berthd" "$shared/tools/crictl" /usr/bin/docker-registry "$(command -v skopeo)" /etc/containers/policy.json
	/usr/sbin/ip /usr/lib/cni/bridge /usr/lib/cni/host-local /usr/lib/cni/portmap /usr/lib/cni/loopback)
mapfile -t -O "${#node[@]}" node < <(find "$shared/critest-images/layout" -type f)
# The rootless tests make a throwaway user with the host's shadow tools and
# map ids through its setuid newuidmap/newgidmap: the guest gets them, and
# the account files they edit (the guest's copies; the host's stay as they are).
tools=()
for f in /usr/sbin/useradd /usr/sbin/usermod /usr/sbin/userdel /usr/bin/newuidmap /usr/bin/newgidmap \
	/etc/passwd /etc/group /etc/shadow /etc/gshadow /etc/subuid /etc/subgid /etc/login.defs /etc/default/useradd; do
	[[ -e $f ]] && tools+=("$f")
done
# One guest, every binary in turn; a failing binary does not stop the rest.
# shellcheck disable=SC2016 # expanded by the guest's shell, not here
script='fail=0; for t in "$@"; do echo "=== $t"; "$t" --test-threads=2 || fail=1; done; exit $fail'
exec "$repo/tests/v2-guest/run.sh" --timeout 900 --mem 3072 --module overlay --module veth --module bridge \
	"$runtime" "$shim" "${node[@]}" "${tools[@]}" "${bins[@]}" -- /bin/sh -c "$script" sh "${bins[@]}"
