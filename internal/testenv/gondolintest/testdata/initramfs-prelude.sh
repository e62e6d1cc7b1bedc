#!/bin/sh
# docker2vm test fixture: the initramfs /init. It makes up for two ways the
# fixture differs from Gondolin's Alpine-based guests, then runs Gondolin's
# own initramfs init (/gondolin-init, from the installed npm package's
# dist/src/alpine/init-scripts.js) unchanged.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

# Gondolin 0.12 takes the kernel's console= from the host's architecture:
# an arm64 guest started from an x86_64 host gets console=ttyS0, which the
# arm64 virt machine lacks, so the kernel cannot open /dev/console for init
# and fds 0-2 start closed; Gondolin's `set -eu` inits then die on their
# first message. Reopen each closed one: stdin on /dev/null, stdout and
# stderr on the console if it opens, else on the kernel log, else on
# /dev/null (the archive holds those nodes). The rootfs init inherits them.
# (A subshell tries each redirection: a failed redirection of exec would
# end this shell. The fd 2 probe must not redirect stderr itself.)
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

# Without a console, opening /dev/console fails, and Gondolin's rootfs init
# starts sandboxfs, sandboxssh and sandboxingress with their output sent
# there: dash (a Debian image's /bin/sh) then runs none of them. Make
# devtmpfs's /dev/console the kernel log instead (devtmpfs is one
# filesystem for the initramfs and the root's /dev alike).
mkdir -p /dev
if mount -t devtmpfs devtmpfs /dev 2>/dev/null; then
	if ! (exec 3>/dev/console) 2>/dev/null; then
		rm -f /dev/console && mknod -m 600 /dev/console c 1 11
	fi
	umount /dev
fi

# Alpine's linux-virt builds the virtio PCI transport in; Debian's cloud
# kernel has it as a module, which Gondolin's init does not load (without
# it the guest has no virtio devices).
mkdir -p /proc /sys
mount -t proc proc /proc
mount -t sysfs sysfs /sys
modprobe -q virtio_pci 2>/dev/null || :
umount /sys /proc

exec /bin/sh /gondolin-init
