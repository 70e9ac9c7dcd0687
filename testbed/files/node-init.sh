#!/bin/sh
# node-init.sh ROOT NODE — pid 1 of one testbed node.
# Started by `up` as: unshare -m -u -i -n -p -f --kill-child node-init.sh ROOT NODE
# ROOT is already prepared in the host mount namespace (overlayfs + per-node binds), so the
# host keeps seeing the node's files at $TESTBED_STATE/nodes/NODE/root.
set -eu
root=$1 node=$2
mount --make-rprivate /                    # nothing we mount here leaks back to the host
mount -t proc proc "$root/proc"            # this pid namespace's /proc
# The kubelet tunes global kernel settings (overcommit, panic, keys): it writes to files
# standing in for them, so the host keeps its own values.
mkdir -p "$root/run/testbed-sysctl"
for k in vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops \
  kernel/keys/root_maxkeys kernel/keys/root_maxbytes; do
  f=$root/run/testbed-sysctl/$(echo "$k" | tr / .)
  cat "$root/proc/sys/$k" >"$f"
  mount --bind "$f" "$root/proc/sys/$k"
done
mount -t sysfs sysfs "$root/sys"           # fresh sysfs: shows this network namespace
mount --rbind /sys/fs/cgroup "$root/sys/fs/cgroup"   # host cgroup v1 hierarchies for runc
# The kernel lists a hugetlb controller that is not mounted: hidden hugepages make the
# kubelet send no hugepage limits, which runc could not set.
mount -t tmpfs -o mode=755 tmpfs "$root/sys/kernel/mm/hugepages"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
# pivot_root, not chroot: CRIU refuses chroot ("No parent found for mountpoint").
cd "$root"
mkdir -p .oldroot
pivot_root . .oldroot
cd /
umount -l /.oldroot                        # the host's tree (and other nodes) is now unreachable
rmdir /.oldroot
# Shared, as systemd makes every mount of a real node: the kubelet's mounts (memory-backed
# emptyDirs) propagate into containers that ask for it, as noded does, and a runtime binds a
# parent of its storage (the node setup's /) only from a shared or slave mount.
mount --make-rshared /
echo "$node" > /proc/sys/kernel/hostname
ip link set lo up
touch /run/testbed-node.ready
# pid 1 must never exit (the kernel would kill the whole node). It also reaps orphans
# (containerd shims re-parent to it): dash's `wait` reaps any child.
exec /bin/sh -c 'trap "" TERM INT HUP; while :; do sleep infinity & wait; done'
