#!/bin/sh
# /bin/as-user in the VM: run "$@" as the plain user (uid 1000) from the
# leaf of its delegated cgroup subtree, with its subordinate id range.
# util-linux's setpriv by path: busybox-static's ash prefers its applets.
# --in DIR: start in /sys/fs/cgroup/DIR instead of user-1000/session.
cg=user-1000/session
if [ "$1" = --in ]; then
    cg=$2
    shift 2
fi
echo $$ >"/sys/fs/cgroup/$cg/cgroup.procs" || exit 126
exec /usr/bin/setpriv --reuid=1000 --regid=1000 --clear-groups \
    env HOME=/home/user USER=user LOGNAME=user \
    DAVIT_VM_ROOTFS=/vm/rootfs-user DAVIT_VM_IDBASE=200000 \
    DAVIT_VM_DELEGATED=user-1000 DAVIT_VM_FLAT=user-1000-flat "$@"
