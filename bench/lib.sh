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
