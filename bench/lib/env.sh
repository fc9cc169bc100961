# Sourced by the inner shell of the benchmarks that make containers from a
# served image (bench/cold, bench/create), inside their private mount
# namespace: root's subordinate range 0 -> 1000000 from WORK/subid bound
# over /etc/subuid and /etc/subgid (LXC wants it there), and every davit
# directory under WORK, davit's cgroups under CGROUP_PREFIX, no proxy.
#
# Everything both tools write (containers, bases, caches) goes to
# $BENCH_DISK: a fresh ext4 with a journal, as on a normal host, in
# WORK/disk.img, loop-mounted at WORK/disk (in the private namespace, so
# it goes with it). This VM's root filesystem is ext4 without a journal,
# and there ext4's inode allocator skips every inode freed in the last
# 60 s (fs/ext4/ialloc.c, recently_deleted, checked only without a
# journal): a create right after a destroy spent 4 of its 6 s in
# find_inode_bit (perf), davit and LXC alike. BENCH_DISK=host keeps WORK.
#
#   bench_env WORK
# shellcheck shell=bash
bench_env() {
  local work=$1
  mount --bind "$work/subid" /etc/subuid
  mount --bind "$work/subid" /etc/subgid
  if [ "${BENCH_DISK:-}" = host ]; then
    BENCH_DISK=$work
  else
    BENCH_DISK=$work/disk
    mkdir -p "$BENCH_DISK"
    truncate -s 32G "$work/disk.img"
    mkfs.ext4 -q -F -N 800000 -E lazy_itable_init=0,lazy_journal_init=0 "$work/disk.img"
    mount -o loop "$work/disk.img" "$BENCH_DISK"
    chmod 755 "$BENCH_DISK"
  fi
  export BENCH_DISK
  export DAVIT_CONTAINERS_DIR=$BENCH_DISK/davit/containers DAVIT_RUNTIME_DIR=$work/davit/run
  export DAVIT_BASES_DIR=$BENCH_DISK/davit/bases DAVIT_SUBUID=$work/subid DAVIT_SUBGID=$work/subid
  export DAVIT_CGROUP_PREFIX=$CGROUP_PREFIX NO_PROXY=127.0.0.1 no_proxy=127.0.0.1
  unset DAVIT_SERVER DAVIT_CACHE_DIR http_proxy https_proxy HTTP_PROXY HTTPS_PROXY
  export GNUPGHOME=$work/gnupg
}
