#!/bin/sh
# docker2vm test fixture: initramfs /init following Gondolin's initramfs
# contract (docs/gondolin-contract.md). Written for docker2vm; busybox only.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

# Gondolin 0.12 takes the kernel's console= from the host's architecture:
# an arm64 guest started from an x86_64 host gets console=ttyS0, which the
# arm64 virt machine lacks, so the kernel cannot open /dev/console for init
# and fds 0-2 start closed. Reopen each closed one before anything writes:
# stdin on /dev/null, stdout and stderr on the console if it opens, else on
# the kernel log, else on /dev/null. (A subshell tries each redirection: a
# failed redirection of exec would end this shell. The fd 2 probe must not
# redirect stderr itself.)
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

msg() { echo "initramfs: $*"; }
die() {
	msg "FATAL: $*"
	# Power off so the host notices at once instead of waiting for its
	# start timeout.
	sync
	poweroff -f
	echo o > /proc/sysrq-trigger
	sleep 1000000
}

mkdir -p /proc /sys /dev /run /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
mkdir -p /dev/pts
mount -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run

root=/dev/vda
rootfstype=ext4
rootflags=
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	root=*) root="${arg#root=}" ;;
	rootfstype=*) rootfstype="${arg#rootfstype=}" ;;
	rootflags=*) rootflags="${arg#rootflags=}" ;;
	esac
done

# Modules (dependencies come from modules.dep). Built-in ones (ext4 in the
# cloud kernel) simply fail to load, which is fine.
for m in virtio_pci virtio_blk virtio_console virtio_rng virtio_net fuse ext4; do
	modprobe -q "$m" 2>/dev/null || true
done

ip link set lo up 2>/dev/null || true

# /dev/virtio-ports/<name> nodes, as udev would create them. Port names
# arrive asynchronously: wait (up to ~5 s) for the control port.
mkports() {
	mkdir -p /dev/virtio-ports
	for p in /sys/class/virtio-ports/vport*; do
		[ -r "$p/name" ] && [ -r "$p/dev" ] || continue
		name=$(cat "$p/name")
		[ -n "$name" ] || continue
		[ -e "/dev/virtio-ports/$name" ] && continue
		dev=$(cat "$p/dev")
		mknod "/dev/virtio-ports/$name" c "${dev%%:*}" "${dev##*:}" 2>/dev/null || true
	done
}
i=0
while :; do
	mkports
	[ -e /dev/virtio-ports/virtio-port ] && break
	i=$((i + 1))
	[ "$i" -ge 500 ] && { msg "warning: no virtio-port control port"; break; }
	sleep 0.01
done

i=0
while [ ! -b "$root" ]; do
	i=$((i + 1))
	[ "$i" -ge 1000 ] && die "root device $root did not appear"
	sleep 0.01
done

opts=rw
[ -n "$rootflags" ] && opts="$opts,$rootflags"
if ! mount -t "$rootfstype" -o "$opts" "$root" /newroot 2>/dev/null; then
	# read-only disk (Gondolin rootfs mode "readonly")
	mount -t "$rootfstype" -o "ro${rootflags:+,$rootflags}" "$root" /newroot || die "cannot mount $root ($rootfstype)"
fi

for d in proc sys dev run; do
	[ -d "/newroot/$d" ] || mkdir -p "/newroot/$d" 2>/dev/null || die "/$d missing on a read-only root"
done
if [ -f /etc/resolv.conf ] && [ -w /newroot/etc ]; then
	cp /etc/resolv.conf /newroot/etc/resolv.conf 2>/dev/null || true
fi
[ -x /newroot/init ] || die "no executable /init on $root"

mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount --move /dev /newroot/dev
mount --move /run /newroot/run
exec switch_root /newroot /init
