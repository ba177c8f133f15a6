#!/bin/sh
# /init of the berth v2 guest (busybox sh; see run.sh, which builds the
# initramfs around it).
#
# Stage 1 (the kernel's initramfs): pivot_root(2) refuses to move away from
# the initramfs root (it has no parent mount), so a container runtime cannot
# run there. Copy everything into a tmpfs and switch_root into it, as a real
# system's initramfs hands over to its root file system.
#
# Stage 2 (pid 1 on the tmpfs root): mount the API file systems, cgroup2
# alone at /sys/fs/cgroup with every controller enabled, run the command
# from /berth/command.sh and report its exit code on the console as
# BERTH-GUEST-EXIT=<code>, then power off.

PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

say() { echo "berth-guest: $*"; }

# Never return: pid 1 exiting panics the kernel (panic=-1 then reboots and
# qemu, run with -no-reboot, exits; run.sh reports the missing marker).
halt_guest() {
	sync
	poweroff -f
	sleep 5
	echo o > /proc/sysrq-trigger 2>/dev/null
	exit 1
}

if [ "${1:-}" != "--berth-stage2" ]; then
	# The kernel gives /init the console only if the archive has
	# /dev/console; devtmpfs makes sure of it.
	if [ ! -c /dev/console ]; then
		mount -t devtmpfs devtmpfs /dev 2>/dev/null
		exec </dev/console >/dev/console 2>&1
	fi
	mkdir -p /newroot
	mount -t tmpfs -o mode=0755 tmpfs /newroot || { say "cannot mount the tmpfs root"; halt_guest; }
	for f in /* /.[!.]*; do
		[ -e "$f" ] || [ -L "$f" ] || continue
		case "$f" in /newroot | /proc | /sys | /dev) continue ;; esac
		cp -a "$f" /newroot/ || { say "copying $f into the tmpfs root failed (too little --mem?)"; halt_guest; }
	done
	mkdir -p /newroot/proc /newroot/sys /newroot/dev
	# switch_root empties the initramfs (freeing its memory) and execs us
	# again as pid 1 on the new root. (Should it fail, pid 1 exits, the
	# kernel panics and run.sh reports the missing exit marker.)
	exec switch_root /newroot /init --berth-stage2
fi

mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o nosuid,noexec,gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /dev/shm
mount -t mqueue -o nosuid,nodev,noexec mqueue /dev/mqueue 2>/dev/null
[ -e /dev/ptmx ] || ln -s pts/ptmx /dev/ptmx
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
# A tmpfs of its own on DIR, keeping what the initramfs had there (a FILE
# given to run.sh may live under /tmp).
own_tmpfs() {
	mkdir -p /.berth-tmpfs
	mount -t tmpfs -o "nosuid,nodev,mode=$2" tmpfs /.berth-tmpfs
	cp -a "$1/." /.berth-tmpfs/ && rm -rf "$1" && mkdir -p "$1"
	mount --move /.berth-tmpfs "$1"
	rmdir /.berth-tmpfs
}
own_tmpfs /tmp 1777
own_tmpfs /run 0755
# As systemd leaves it: every mount shared, so tests of mount propagation
# see what they would on a real host.
mount --make-rshared /

# cgroup v2 only: no v1 hierarchy is mounted anywhere.
mount -t cgroup2 -o nosuid,nodev,noexec,relatime,nsdelegate cgroup2 /sys/fs/cgroup \
	|| { say "cannot mount cgroup2"; echo "BERTH-GUEST-EXIT=125"; halt_guest; }
read -r controllers </sys/fs/cgroup/cgroup.controllers
for c in $controllers; do
	echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control || say "cannot enable the $c controller"
done
# The console's tty would turn every \n into \r\n in the log.
stty -onlcr 2>/dev/null

# shellcheck source=/dev/null
. /berth/settings.sh
hostname "${BERTH_GUEST_HOSTNAME:-berth-v2-guest}"
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
for m in ${BERTH_GUEST_MODULES:-}; do
	modprobe "$m" || say "modprobe $m failed"
done
cd /

say "kernel $(uname -r), $(nproc) cpus, cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
echo "BERTH-GUEST-READY uptime=$(cut -d' ' -f1 /proc/uptime)"
# pid 1 stays this shell: while it waits for the command it also reaps
# orphans (a container's init whose runtime exited), as a real init does.
if [ -n "${BERTH_GUEST_CGROUP:-}" ]; then
	# In a child cgroup, as a service on a systemd host.
	mkdir -p "/sys/fs/cgroup/$BERTH_GUEST_CGROUP"
	sh -c 'echo $$ > "$1/cgroup.procs" && exec sh /berth/command.sh' sh \
		"/sys/fs/cgroup/$BERTH_GUEST_CGROUP" </dev/null
else
	sh /berth/command.sh </dev/null
fi
rc=$?
echo "BERTH-GUEST-EXIT=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
halt_guest
