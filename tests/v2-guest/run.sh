#!/usr/bin/env bash
# Runs a command as root in a throwaway qemu guest (software emulation, no
# KVM) whose only cgroup hierarchy is cgroup v2, with every controller
# enabled: the pure-v2 layout this host (cgroup v1 hybrid) cannot switch to.
#
#   tests/v2-guest/run.sh [OPTIONS] [FILE...] -- COMMAND [ARG...]
#
# Each FILE (absolute path; a directory is copied whole) is put into the
# guest at the same path, with the shared libraries its ELF files need (by
# ldd), so test binaries with compiled-in paths run as they are. The guest
# is Debian's kernel (downloaded with apt-get, cached) and an initramfs of
# busybox-static, init.sh and the FILEs; nothing else of the host is in it.
# The console streams to stdout and to the log; the exit code is COMMAND's.
# See README.md beside this file.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
prog=tests/v2-guest/run.sh

usage() {
	cat <<EOF
usage: $prog [OPTIONS] [FILE...] -- COMMAND [ARG...]

Runs COMMAND as root in a qemu guest (no KVM) whose only cgroup hierarchy is
cgroup v2 at /sys/fs/cgroup, all controllers enabled. Each FILE (absolute
path, file or directory) is copied into the guest at the same path, with the
shared libraries it needs. Exits with COMMAND's exit code; 124 if the guest
timed out, 125 if it ended without reporting one (e.g. a kernel panic).

options:
  --timeout SECS    kill the guest after SECS seconds (default 600)
  --mem MB          guest memory (default 2048; the FILEs live in it twice
                    while the guest boots)
  --smp N           guest CPUs (default 2)
  --env NAME=VALUE  set in COMMAND's environment (repeatable)
  --cwd DIR         COMMAND's working directory (default /; created)
  --cgroup PATH     run COMMAND in this child cgroup of the root, as a
                    service on a systemd host (default: the root cgroup)
  --module NAME     load this module of the guest kernel's package, with
                    its dependencies (repeatable; e.g. veth, overlay)
  --append ARGS     more kernel command line
  --log FILE        the console log (default \${TMPDIR:-/tmp}/berth-v2-guest.log)
  --refresh-kernel  look up Debian's current kernel again (default: the
                    cached one)
  -h, --help        this text

environment: BERTH_V2_GUEST_CACHE (default
\${XDG_CACHE_HOME:-/var/cache}/berth-v2-guest) holds the kernel.
EOF
}

say() { printf 'berth-v2-guest: %s\n' "$*" >&2; }
die() {
	say "$*"
	exit 2
}

# ---------------------------------------------------------------- arguments
timeout=600
mem=2048
smp=2
cwd=/
cgroup=
append=
log=
refresh_kernel=0
envs=()
modules=()
files=()
while (($#)); do
	case "$1" in
	--timeout) timeout=${2:?--timeout needs SECS}; shift 2 ;;
	--mem) mem=${2:?--mem needs MB}; shift 2 ;;
	--smp) smp=${2:?--smp needs N}; shift 2 ;;
	--env) envs+=("${2:?--env needs NAME=VALUE}"); shift 2 ;;
	--cwd) cwd=${2:?--cwd needs DIR}; shift 2 ;;
	--cgroup) cgroup=${2:?--cgroup needs PATH}; shift 2 ;;
	--module) modules+=("${2:?--module needs NAME}"); shift 2 ;;
	--append) append=${2:?--append needs ARGS}; shift 2 ;;
	--log) log=${2:?--log needs FILE}; shift 2 ;;
	--refresh-kernel) refresh_kernel=1; shift ;;
	-h | --help) usage; exit 0 ;;
	--) shift; break ;;
	-*) usage >&2; die "unknown option $1" ;;
	*) files+=("$1"); shift ;;
	esac
done
(($#)) || { usage >&2; die "no COMMAND: put it after --"; }
command=("$@")
[[ $timeout =~ ^[0-9]+$ && $timeout -gt 0 ]] || die "--timeout wants a number of seconds, not $timeout"
[[ $mem =~ ^[0-9]+$ ]] || die "--mem wants megabytes, not $mem"
[[ $smp =~ ^[0-9]+$ ]] || die "--smp wants a number, not $smp"
[[ $cwd == /* ]] || die "--cwd wants an absolute path, not $cwd"
for e in "${envs[@]}"; do
	[[ $e =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env wants NAME=VALUE, not $e"
done
log=${log:-${TMPDIR:-/tmp}/berth-v2-guest.log}
cache=${BERTH_V2_GUEST_CACHE:-${XDG_CACHE_HOME:-/var/cache}/berth-v2-guest}
t_start=$EPOCHREALTIME

# ------------------------------------------------------------ clean up always
tmp=
tmp_dl=
qemu_pid=
tail_pid=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	local pid
	for pid in "$qemu_pid" "$tail_pid"; do
		[[ -n $pid ]] || continue
		if kill -0 "$pid" 2>/dev/null; then
			kill "$pid" 2>/dev/null || true
			for _ in 1 2 3 4 5 6 7 8 9 10; do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.2
			done
			kill -KILL "$pid" 2>/dev/null || true
		fi
		wait "$pid" 2>/dev/null || true
	done
	[[ -z $tmp ]] || rm -rf "$tmp"
	[[ -z $tmp_dl ]] || rm -rf "$tmp_dl"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# ------------------------------------------------------------ host packages
apt_updated=0
apt_update_once() {
	((apt_updated)) && return 1
	apt_updated=1
	say "apt-get update"
	apt-get update -qq >&2
}

# apt-get with a private sources list that adds $codename-backports to the
# machine's own sources (same mirror), and private package lists, so the
# machine's apt configuration is left as it is.
backports_apt() {
	local d=$cache/apt-backports codename uri keyring=/usr/share/keyrings/debian-archive-keyring.gpg
	codename=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)
	# shellcheck disable=SC2016 # apt's format, not the shell's
	uri=$(apt-get indextargets --format '$(RELEASE) $(REPO_URI)' 2>/dev/null \
		| awk -v r="$codename" '$1 == r { print $2; exit }')
	[[ -n $codename && -n $uri ]] || return 1
	mkdir -p "$d/lists/partial" "$d/archives/partial"
	if [[ -r $keyring ]]; then
		echo "deb [signed-by=$keyring] $uri $codename-backports main" >"$d/sources.list"
	else
		echo "deb $uri $codename-backports main" >"$d/sources.list"
	fi
	apt-get -o Dir::Etc::sourcelist="$d/sources.list" -o Dir::State::lists="$d/lists" \
		-o Dir::Cache::archives="$d/archives" -o APT::Sandbox::User=root \
		-o APT::Default-Release="$codename-backports" "$@"
}

# Installs packages, never removing one: the machine may carry newer
# packages from backports (this project's machine image has qemu-utils 10
# from bookworm-backports, which Breaks bookworm's qemu-system 7.2), and then
# the package comes from backports too.
apt_install() {
	local opts=(-y -qq --no-install-recommends --no-remove)
	say "installing $*"
	((EUID == 0)) || die "$* missing, and installing needs root"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get -s "${opts[@]}" install "$@" >/dev/null 2>&1; then
		apt_update_once || true
	fi
	if apt-get -s "${opts[@]}" install "$@" >/dev/null 2>&1; then
		apt-get "${opts[@]}" install "$@" >&2 || die "cannot install $*"
		return 0
	fi
	say "$* cannot be installed without removing other packages: trying backports"
	if ! { backports_apt update -qq >&2 && backports_apt "${opts[@]}" install "$@" >&2; }; then
		die "cannot install $* without removing other packages: install them by hand"
	fi
}

busybox=
static_busybox() {
	local b
	for b in /bin/busybox /usr/bin/busybox; do
		if [[ -x $b ]] && ! ldd "$b" >/dev/null 2>&1; then
			busybox=$b
			return 0
		fi
	done
	return 1
}

missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v cpio >/dev/null || missing+=(cpio)
static_busybox || missing+=(busybox-static)
((${#missing[@]} == 0)) || apt_install "${missing[@]}"
static_busybox || die "no static busybox at /bin/busybox after installing busybox-static"

# ------------------------------------------------------------ guest kernel
# Downloads PACKAGE[=VERSION] into DIR.
apt_download() {
	local dir=$1 pkg=$2 rc=0 back=$PWD
	cd "$dir"
	apt-get -qq -o APT::Sandbox::User=root download "$pkg" >&2 \
		|| { apt_update_once && apt-get -qq -o APT::Sandbox::User=root download "$pkg" >&2; } \
		|| rc=1
	cd "$back"
	return "$rc"
}

# Debian's linux-image-amd64 is a metapackage; its Depends names the real
# image (linux-image-<abi>-amd64) and its exact version.
resolve_kernel() {
	local dl dep name version
	mkdir -p "$cache"
	dl=$(mktemp -d "$cache/download.XXXXXX")
	tmp_dl=$dl
	apt_download "$dl" linux-image-amd64 || die "cannot download linux-image-amd64"
	dep=$(dpkg-deb -f "$dl"/linux-image-amd64_*.deb Depends)
	dep=${dep%%,*}
	dep=${dep%%|*}
	name=$(awk '{print $1}' <<<"$dep")
	version=$(sed -n 's/.*(= *\([^)]*\)).*/\1/p' <<<"$dep")
	[[ $name == linux-image-* ]] || die "unexpected dependency of linux-image-amd64: $dep"
	if [[ ! -e $cache/$name/.complete ]]; then
		say "downloading $name${version:+ $version}"
		apt_download "$dl" "$name${version:+=$version}" || die "cannot download $name"
		rm -rf "${cache:?}/${name:?}"
		mkdir -p "$cache/$name"
		dpkg-deb -x "$dl/${name}"_*.deb "$cache/$name"
		touch "$cache/$name/.complete"
	fi
	ln -sfn "$name" "$cache/current"
	rm -rf "$dl"
	tmp_dl=
}

if ((refresh_kernel)) || [[ ! -e $cache/current/.complete ]]; then
	resolve_kernel
fi
kroot=$(cd "$cache/current" && pwd -P)
vmlinuz=$(find "$kroot/boot" -maxdepth 1 -name 'vmlinuz-*' | head -n1)
[[ -n $vmlinuz ]] || die "no /boot/vmlinuz-* in $kroot"
kver=${vmlinuz##*/vmlinuz-}

# ------------------------------------------------------------ initramfs
tmp=$(mktemp -d "${TMPDIR:-/tmp}/berth-v2-guest.XXXXXX")
root=$tmp/root
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,run,etc,root,berth,newroot,usr/bin,usr/sbin}

cp "$busybox" "$root/bin/busybox"
while read -r applet; do
	[[ -n $applet && $applet != busybox ]] || continue
	ln -s busybox "$root/bin/$applet"
done < <("$busybox" --list)
cp "$here/init.sh" "$root/init"
chmod 0755 "$root/init"
if ((EUID == 0)); then
	# The kernel hands /init the console only if the archive has it.
	mknod -m 0600 "$root/dev/console" c 5 1
	mknod -m 0666 "$root/dev/null" c 1 3
fi

cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
tty:x:5:
nogroup:x:65534:
EOF
printf '127.0.0.1\tlocalhost berth-v2-guest\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
echo berth-v2-guest >"$root/etc/hostname"
printf 'passwd: files\ngroup: files\nhosts: files\n' >"$root/etc/nsswitch.conf"
ln -s /proc/self/mounts "$root/etc/mtab"

declare -A libs=()
# Whether FILE starts with ELF's magic (binary blobs are FILEs too: `od`
# keeps their NUL bytes out of the shell's strings).
is_elf() {
	[[ $(od -An -tx1 -N4 "$1" 2>/dev/null | tr -d ' \n') == 7f454c46 ]]
}
# Notes the shared libraries (and the dynamic loader) an ELF file needs.
note_libs() {
	local f=$1 out line
	is_elf "$f" || return 0
	out=$(ldd "$f" 2>/dev/null) || return 0 # static, or not a program
	while read -r line; do
		if [[ $line == *"not found"* ]]; then
			die "$f needs a library the host lacks: $line"
		elif [[ $line =~ =\>\ (/[^ ]+) ]]; then
			libs[${BASH_REMATCH[1]}]=1
		elif [[ $line =~ ^(/[^ ]+) ]]; then
			libs[${BASH_REMATCH[1]}]=1
		fi
	done <<<"$out"
}

# Copies a host file (its content, symlinks followed) to the same path in
# the guest, replacing whatever is there (e.g. a busybox applet's link).
put() {
	local src=$1 dst=$root$1
	mkdir -p "${dst%/*}"
	rm -f "$dst"
	cp -L --preserve=mode,timestamps "$src" "$dst"
	strip_debug "$dst"
}

# Debug builds of test binaries are mostly DWARF (50-80 MB each); the guest
# holds every FILE in memory twice while it boots, so their copies lose it
# (symbols stay, so panics still name functions). The host's files are
# untouched.
strip_debug() {
	[[ ! -u $1 && ! -g $1 ]] || return 0 # strip would drop setuid (newuidmap)
	is_elf "$1" || return 0
	command -v strip >/dev/null || return 0
	strip --strip-debug "$1" 2>/dev/null || true
}

for f in "${files[@]}"; do
	[[ $f == /* ]] || die "FILE must be an absolute path: $f"
	[[ -e $f ]] || die "no such file: $f"
	if [[ -d $f ]]; then
		mkdir -p "$root$f"
		cp -a "$f/." "$root$f/"
		while IFS= read -r -d '' g; do
			note_libs "$g"
			strip_debug "$root$g"
		done < <(find "$f" -type f -perm -u+x -print0)
	else
		put "$f"
		note_libs "$f"
	fi
done
for l in "${!libs[@]}"; do
	[[ -e $root$l ]] || put "$l"
done

# Kernel modules: each with the modules it needs (Debian's package has no
# modules.dep, depmod makes it at install time: busybox's depmod makes it
# here) and modules.dep, for the guest's modprobe.
guest_modules=()
if ((${#modules[@]})); then
	mdir=$kroot/lib/modules/$kver
	[[ -s $mdir/modules.dep ]] || "$busybox" depmod -b "$kroot" "$kver" \
		|| die "depmod failed for $kver"
	mkdir -p "$root/lib/modules/$kver"
	cp "$mdir/modules.dep" "$mdir/modules.builtin" "$root/lib/modules/$kver/"
	for m in "${modules[@]}"; do
		m=${m//-/_}
		if sed 's/-/_/g' "$mdir/modules.builtin" | grep -q "/$m\.ko$"; then
			say "module $m is built into $kver"
			continue
		fi
		line=$(sed 's/-/_/g' "$mdir/modules.dep" | grep -n "/$m\.ko:" | head -n1) \
			|| die "no module $m in $kver"
		line=$(sed -n "${line%%:*}p" "$mdir/modules.dep")
		read -r -a deps <<<"${line#*:}"
		for k in "${line%%:*}" "${deps[@]}"; do
			mkdir -p "$root/lib/modules/$kver/${k%/*}"
			cp "$mdir/$k" "$root/lib/modules/$kver/$k"
		done
		guest_modules+=("$m")
	done
fi

# Single-quoted for the guest's sh.
sq() {
	local s=${1//\'/\'\\\'\'}
	printf "'%s'" "$s"
}

{
	printf 'BERTH_GUEST_HOSTNAME=berth-v2-guest\n'
	printf 'BERTH_GUEST_CGROUP=%s\n' "$(sq "$cgroup")"
	printf 'BERTH_GUEST_MODULES=%s\n' "$(sq "${guest_modules[*]}")"
} >"$root/berth/settings.sh"
{
	printf 'export HOME=/root USER=root LOGNAME=root TERM=dumb\n'
	for e in "${envs[@]}"; do printf 'export %s\n' "$(sq "$e")"; done
	printf 'mkdir -p %s && cd %s || exit 126\n' "$(sq "$cwd")" "$(sq "$cwd")"
	printf 'exec'
	for a in "${command[@]}"; do printf ' %s' "$(sq "$a")"; done
	printf '\n'
} >"$root/berth/command.sh"

initrd=$tmp/initramfs.cpio
(cd "$root" && find . -mindepth 1 -print0 | cpio --null -o -H newc -R 0:0 --quiet) >"$initrd"
rm -rf "$root"
initrd_mb=$(($(stat -c %s "$initrd") / 1048576))
t_built=$EPOCHREALTIME

# ------------------------------------------------------------ boot
mkdir -p "$(dirname "$log")"
: >"$log"
say "booting $kver (no KVM), ${mem} MB, $smp cpus, initramfs ${initrd_mb} MB; console log: $log"
qemu-system-x86_64 \
	-machine q35,accel=tcg -cpu max -m "$mem" -smp "$smp" \
	-nodefaults -no-user-config -display none -monitor none \
	-chardev "file,id=console,path=$log" -serial chardev:console \
	-no-reboot \
	-kernel "$vmlinuz" -initrd "$initrd" \
	-append "console=ttyS0 quiet panic=-1 rdinit=/init $append" \
	</dev/null >"$tmp/qemu.out" 2>&1 &
qemu_pid=$!
tail -n +1 -s 0.2 -f --pid="$qemu_pid" "$log" &
tail_pid=$!

# Seconds from $1 to $2 (two $EPOCHREALTIMEs), to a tenth.
secs() {
	local d=$(((${2/./} - ${1/./}) / 100000))
	printf '%d.%d' $((d / 10)) $((d % 10))
}

timed_out=0
t_ready=
deadline=$((${t_built/./} + timeout * 1000000))
while kill -0 "$qemu_pid" 2>/dev/null; do
	if [[ -z $t_ready ]] && grep -aq BERTH-GUEST-READY "$log"; then
		t_ready=$EPOCHREALTIME
	fi
	if ((${EPOCHREALTIME/./} >= deadline)); then
		timed_out=1
		break
	fi
	sleep 0.2
done
t_end=$EPOCHREALTIME
qemu_rc=0
if ((timed_out)); then
	kill "$qemu_pid" 2>/dev/null || true
fi
wait "$qemu_pid" || qemu_rc=$?
qemu_pid=
wait "$tail_pid" || true
tail_pid=

# ------------------------------------------------------------ verdict
timing="setup $(secs "$t_start" "$t_built")s"
ready_uptime=$(grep -ao 'BERTH-GUEST-READY uptime=[0-9.]*' "$log" | head -n1 || true)
if [[ -n $ready_uptime ]]; then
	timing+=", boot to command ${ready_uptime#*=}s of guest uptime"
	[[ -z $t_ready ]] || timing+=" ($(secs "$t_built" "$t_ready")s wall, command $(secs "$t_ready" "$t_end")s)"
fi
timing+=", guest $(secs "$t_built" "$t_end")s, total $(secs "$t_start" "$t_end")s"
marker=$(grep -ao 'BERTH-GUEST-EXIT=[0-9]*' "$log" | tail -n1 || true)
if ((timed_out)); then
	say "TIMEOUT: the guest ran longer than ${timeout}s and was killed ($timing)"
	exit 124
elif [[ -z $marker ]]; then
	say "FAILED: the guest ended without reporting an exit code (kernel panic? out of memory? see $log); qemu exited $qemu_rc"
	[[ ! -s $tmp/qemu.out ]] || sed 's/^/qemu: /' "$tmp/qemu.out" >&2
	say "$timing"
	exit 125
fi
rc=${marker#BERTH-GUEST-EXIT=}
say "COMMAND exited $rc ($timing)"
exit "$rc"
