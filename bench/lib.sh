# Sourced by the bench scripts: stopping the daemons and shims they start,
# by PID (never by name).

# PIDs of the containerd shims serving the containerd at socket $1.
shims_of() {
	local p
	for p in /proc/[0-9]*; do
		[[ $(cat "$p/comm" 2>/dev/null) == containerd-shim* ]] || continue
		[[ "$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)" == *"-address $1 "* ]] && echo "${p#/proc/}"
	done
	return 0
}

# Waits up to ~10 s for the shims of containerd socket $1 to exit on their
# own (they do once their tasks are deleted), then SIGKILLs the leftovers.
reap_shims() {
	local pids p
	for _ in $(seq 100); do
		pids=$(shims_of "$1")
		[[ -z $pids ]] && return 0
		sleep 0.1
	done
	for p in $pids; do
		say "killing leftover shim $p ($(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null))"
		kill -KILL "$p" 2>/dev/null
	done
	sleep 0.2
}

# Stops a daemon of ours by PID: SIGTERM, up to ~20 s, then SIGKILL.
stop_pid() {
	kill "$1" 2>/dev/null || return 0
	for _ in $(seq 200); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$1" 2>/dev/null
	wait "$1" 2>/dev/null
}

# Writes the config of a private podman under $1 (containers.conf,
# registries.conf, storage.conf; `pm` in the scripts points podman at
# them): no network, cgroupfs, file events, its own storage, the hard
# ulimits as defaults.
podman_config() {
	mkdir -p "$1"
	cat >"$1/containers.conf" <<CONF
[containers]
netns = "none"
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$1/events.log"
tmp_dir = "$1/tmp"
CONF
	echo 'unqualified-search-registries = []' >"$1/registries.conf"
	printf '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n' "$1/storage" "$1/run" >"$1/storage.conf"
}

# Stops the private dockerd $1 (a PID) whose exec-root is $2, the
# containerd it started and that containerd's shims, by PID.
stop_dockerd() {
	local p
	stop_pid "$1"
	# dockerd stops the containerd it started; make sure.
	p=$(cat "$2/containerd/containerd.pid" 2>/dev/null)
	[[ -n $p ]] && kill -0 "$p" 2>/dev/null && [[ $(cat "/proc/$p/comm") == containerd ]] && stop_pid "$p"
	reap_shims "$2/containerd/containerd.sock"
	return 0
}

# Makes the OCI layout $1 holding busybox:latest (Debian's busybox-static
# with a link per applet, CMD sh, PATH=/bin); $2 is scratch space.
busybox_oci() {
	local a
	mkdir -p "$2/rootfs/bin"
	cp /bin/busybox "$2/rootfs/bin/"
	for a in $(/bin/busybox --list); do [[ $a == busybox ]] || ln -sf busybox "$2/rootfs/bin/$a"; done
	umoci init --layout "$1" && umoci new --image "$1:busybox"
	umoci unpack --image "$1:busybox" "$2/bundle" >/dev/null
	cp -a "$2/rootfs/." "$2/bundle/rootfs/"
	umoci repack --image "$1:busybox" "$2/bundle"
	umoci config --image "$1:busybox" --config.cmd sh --config.env PATH=/bin
	rm -rf "$2/bundle"
}

# Removes a script's work dir $1 and cgroup parent $2 (in every
# hierarchy): unmounts what is left under the dir (deepest first), removes
# the empty cgroups, then the dir.
remove_workdir() {
	local m d
	while read -r m; do umount -l "$m" 2>/dev/null; done < <(awk -v w="$1/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
	for d in /sys/fs/cgroup/$2 /sys/fs/cgroup/*/$2; do
		[[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
	done
	rm -rf "$1"
	return 0
}
