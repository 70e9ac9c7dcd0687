#!/bin/sh
# node-init.sh ROOT NODE — pid 1 of one testbed node.
# Started by `up` as: unshare -m -u -i -n -p -f --kill-child node-init.sh ROOT NODE
# ROOT is already prepared in the host mount namespace (overlayfs + per-node binds), so the
# host keeps seeing the node's files at $TESTBED_STATE/nodes/NODE/root.
set -eu
root=$1 node=$2
mount --make-rprivate /                    # nothing we mount here leaks back to the host
mount -t proc proc "$root/proc"            # this pid namespace's /proc
mount -t sysfs sysfs "$root/sys"           # fresh sysfs: shows this network namespace
mount --rbind /sys/fs/cgroup "$root/sys/fs/cgroup"   # host cgroup v1 hierarchies for runc
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
# pivot_root, not chroot: CRIU refuses chroot ("No parent found for mountpoint").
cd "$root"
mkdir -p .oldroot
pivot_root . .oldroot
cd /
umount -l /.oldroot                        # the host's tree (and other nodes) is now unreachable
rmdir /.oldroot
echo "$node" > /proc/sys/kernel/hostname
ip link set lo up
touch /run/testbed-node.ready
# pid 1 must never exit (the kernel would kill the whole node). It also reaps orphans
# (containerd shims re-parent to it): dash's `wait` reaps any child.
exec /bin/sh -c 'trap "" TERM INT HUP; while :; do sleep infinity & wait; done'
