#!/bin/sh
# /init of the VM lane's systemd guest (ci/vm/systemd-guest.sh). The
# kernel's initial root cannot be pivot_root'ed away from, which every
# container start does: bind it onto /newroot, make that the root, and
# start systemd there (switch_root would delete the files it is made of).
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
mount -t proc proc /proc
echo "DAVIT-VM-BOOT $(uname -r) systemd-guest"
mkdir -p /newroot
mount --bind / /newroot
umount /proc
cd /newroot || exit 1
mount --move . /
exec chroot . /lib/systemd/systemd systemd.unit=multi-user.target
