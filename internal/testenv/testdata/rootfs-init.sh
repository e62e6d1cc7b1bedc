#!/bin/sh
# docker2vm test fixture: rootfs /init following Gondolin's rootfs contract
# (docs/gondolin-contract.md). Written for docker2vm; needs only busybox.
set -eu
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

mounted() { grep -q "^[^ ]* $1 " /proc/mounts 2>/dev/null; }

mounted /proc || mount -t proc proc /proc
mounted /sys || mount -t sysfs sysfs /sys
mounted /dev || mount -t devtmpfs devtmpfs /dev

# Reopen fds 0-2 if they are closed (an arm64 guest started from an x86_64
# Gondolin host has no console: see the initramfs /init), before anything
# writes: a write to a closed fd fails and set -e would end init.
stdfds() {
	(exec 3<&0) 2>/dev/null || exec 0</dev/null
	for out in /dev/console /dev/kmsg /dev/null; do
		if (exec 3>"$out") 2>/dev/null; then break; fi
	done
	(exec 3>&1) 2>/dev/null || exec 1>"$out"
	(exec 3>&2) || exec 2>"$out"
	return 0
}
stdfds

mkdir -p /dev/pts
mounted /dev/pts || mount -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts
mounted /run || mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run

mkdir -p /tmp /var/tmp /var/cache /var/log /root /home
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp
mount -t tmpfs -o mode=0755 tmpfs /var/cache
mount -t tmpfs -o mode=0755 tmpfs /var/log
mount -t tmpfs -o mode=0700 tmpfs /root

export HOME=/root
export TMPDIR=/tmp
export XDG_CACHE_HOME=/tmp/.cache
export XDG_CONFIG_HOME=/tmp/.config
export XDG_DATA_HOME=/tmp/.local/share
export XDG_STATE_HOME=/tmp/.local/state
export XDG_RUNTIME_DIR=/tmp/.run

for m in virtio_pci virtio_blk virtio_console virtio_rng virtio_net fuse; do
	modprobe -q "$m" 2>/dev/null || true
done
ip link set lo up 2>/dev/null || true

mkdir -p /dev/virtio-ports
for p in /sys/class/virtio-ports/vport*; do
	[ -r "$p/name" ] || continue
	name=$(cat "$p/name")
	[ -n "$name" ] && [ ! -e "/dev/virtio-ports/$name" ] || continue
	dev=$(cat "$p/dev")
	mknod "/dev/virtio-ports/$name" c "${dev%%:*}" "${dev##*:}" 2>/dev/null || true
done

# Host VFS (sandboxfs) when the image ships it; the test base does not.
fsmount=/data
fsbinds=
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	sandboxfs.mount=*) fsmount="${arg#sandboxfs.mount=}" ;;
	sandboxfs.bind=*) fsbinds="${arg#sandboxfs.bind=}" ;;
	esac
done
if [ -x /usr/bin/sandboxfs ] && [ -e /dev/virtio-ports/virtio-fs ]; then
	mkdir -p "$fsmount"
	/usr/bin/sandboxfs --mount "$fsmount" --rpc-path /dev/virtio-ports/virtio-fs &
	i=0
	while ! grep -q " $fsmount fuse.sandboxfs " /proc/mounts; do
		i=$((i + 1))
		[ "$i" -ge 500 ] && break
		sleep 0.01
	done
	if grep -q " $fsmount fuse.sandboxfs " /proc/mounts; then
		for b in $(echo "$fsbinds" | tr ',' ' '); do
			mkdir -p "$b" "$fsmount$b" 2>/dev/null || true
			mount --bind "$fsmount$b" "$b" || true
		done
		: > /run/sandboxfs.ready
	else
		: > /run/sandboxfs.failed
	fi
fi

[ -x /usr/bin/sandboxssh ] && /usr/bin/sandboxssh &
[ -x /usr/bin/sandboxingress ] && /usr/bin/sandboxingress &

if [ -f /etc/profile.d/gondolin-image-env.sh ]; then
	. /etc/profile.d/gondolin-image-env.sh
fi

exec /usr/bin/sandboxd
