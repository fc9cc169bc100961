#!/usr/bin/env bash
# Start benchmark: `start -- /bin/true` with davit against `crun run` (the
# same rootfs as an OCI bundle) and `lxc-execute`, in one run, interleaved,
# medians of N (default 30), with ratios to crun.
#
#   bench/start/run.sh ROOTFS [N]
#
# ROOTFS: the Debian rootfs from images/debian/build.sh, owned by the shifted
# ids 100000-165535; every runtime uses it with the map 0 -> 100000 (65536)
# and new user, mount, pid, uts, ipc and net namespaces.
#
# davit is `davit start NAME -- /bin/true` with the release build of the CLI
# (`cargo build --release`; DAVIT=path overrides it); DAVIT_CMD replaces the
# whole command line (it gets `-- /bin/true` appended).
#
# Debian's crun 1.8 refuses this hybrid host ("cgroups in hybrid mode not
# supported") because the v2 hierarchy lists hugetlb, so everything runs in a
# private mount namespace (`unshare -m --propagation private`) where an empty
# file is bind-mounted over /sys/fs/cgroup/unified/cgroup.controllers, and
# where /etc/subuid and /etc/subgid give root the range LXC's newuidmap needs.
# Nothing changes on the host. Needs root, crun and lxc (apt-get install crun lxc).
set -euo pipefail

if [ "${1:-}" = --inner ]; then
  work=$2 n=$3
  mount --bind "$work/empty" /sys/fs/cgroup/unified/cgroup.controllers
  mount --bind "$work/subid" /etc/subuid
  mount --bind "$work/subid" /etc/subgid
  # davit's runtime state on a tmpfs, as /run is on a normal host (on this
  # VM /run is ext4).
  mount -t tmpfs -o mode=0755 tmpfs "$work/run"
  # shellcheck disable=SC1091
  . "$work/cmds"
  # One timed run in microseconds, from bash's clock (no fork for timing).
  t() {
    local s=$EPOCHREALTIME e
    "$@" >/dev/null 2>"$work/last.err" || { echo "failed: $* ($(cat "$work/last.err"))" >&2; return 1; }
    e=$EPOCHREALTIME
    echo $(( ${e/./} - ${s/./} ))
  }
  for tool in davit crun lxc; do : >"$work/$tool.us"; done
  # One warm-up each, then interleave so drift hits every tool alike.
  t davit_true >/dev/null; t crun_true >/dev/null; t lxc_true >/dev/null
  for _ in $(seq "$n"); do
    t davit_true >>"$work/davit.us"
    t crun_true >>"$work/crun.us"
    t lxc_true >>"$work/lxc.us"
  done
  exit 0
fi

rootfs=$(readlink -f "${1:?usage: run.sh ROOTFS [N]}")
n=${2:-30}
[ "$(id -u)" = 0 ] || { echo "run.sh: run as root" >&2; exit 1; }
for tool in crun lxc-execute unshare python3; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is missing (apt-get install crun lxc)" >&2; exit 1; }
done
[ -x /bin/true ] && [ -e "$rootfs/bin/true" ] || { echo "run.sh: $rootfs has no /bin/true" >&2; exit 1; }

work=$(mktemp -d /tmp/davit-startbench.XXXXXX)
chmod 755 "$work" # LXC's mapped root must reach its lxcpath
name=sb$$
prefix=davit-bench-$$
cleanup() {
  crun delete -f "$name" >/dev/null 2>&1 || true
  # LXC's monitor leaves an empty lxc.pivot cgroup in each hierarchy.
  rmdir /sys/fs/cgroup/*/lxc.pivot 2>/dev/null || true
  rmdir /sys/fs/cgroup/*/"$prefix" 2>/dev/null || true
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
: >"$work/empty"
printf 'root:100000:65536\n' >"$work/subid"

# davit
# shellcheck source=../lib/config.sh
. "$(dirname "$0")/../lib/config.sh"
bench_config "$name" "$rootfs" >"$work/config.toml"
# `davit start NAME` with the CLI (DAVIT=path, default the release build),
# or the run crate's ctl example with DAVIT_CMD.
mkdir -p "$work/containers/$name"
cp "$work/config.toml" "$work/containers/$name/config.toml"
davit_bin=${DAVIT:-$(cd "$(dirname "$0")/../.." && pwd)/target/release/davit}
# Runtime state on a tmpfs the inner shell mounts, as /run is on a normal host.
rundir=$work/run
mkdir -p "$rundir"
davit_cmd=${DAVIT_CMD:-"env DAVIT_CONTAINERS_DIR=$work/containers DAVIT_RUNTIME_DIR=$rundir DAVIT_CGROUP_PREFIX=$prefix $davit_bin start $name"}

# crun: the default spec, on our rootfs, with a user namespace and the map.
bench_crun_bundle "$work/bundle" "$rootfs" 100000

# lxc-execute: LXC's common.conf minus the lxcfs hooks, unprivileged, no network.
mkdir -p "$work/lxc/$name"
cat >"$work/lxc/$name/config" <<EOF
lxc.uts.name = $name
lxc.rootfs.path = dir:$rootfs
lxc.idmap = u 0 100000 65536
lxc.idmap = g 0 100000 65536
lxc.net.0.type = empty
lxc.apparmor.profile = unconfined
lxc.cap.drop = mac_admin mac_override sys_time sys_module sys_rawio
lxc.mount.auto = cgroup:mixed proc:mixed sys:mixed
lxc.seccomp.profile = /usr/share/lxc/config/common.seccomp
EOF

cat >"$work/cmds" <<EOF
davit_true() { $davit_cmd -- /bin/true; }
crun_true() { crun run --bundle "$work/bundle" "$name"; }
lxc_true() { lxc-execute -P "$work/lxc" -n "$name" -- /bin/true; }
EOF

unshare -m --propagation private bash "$0" --inner "$work" "$n"

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
d=$(median <"$work/davit.us") c=$(median <"$work/crun.us") l=$(median <"$work/lxc.us")
ms() { awk -v u="$1" 'BEGIN {printf "%.1f ms", u/1000}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
echo "$(uname -r), $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ), medians of $n, interleaved"
echo
echo "| tool | median | vs crun |"
echo "|---|---|---|"
echo "| davit (\`davit start NAME -- /bin/true\`) | $(ms "$d") | $(ratio "$d" "$c") |"
echo "| crun $(crun --version | awk 'NR==1 {print $3}') run | $(ms "$c") | 1.00 |"
echo "| lxc-execute $(lxc-execute --version) | $(ms "$l") | $(ratio "$l" "$c") |"
# shellcheck source=../lib/summary.sh
. "$(dirname "$0")/../lib/summary.sh"
summary_row "\`start NAME -- /bin/true\`, dir, no network" "crun run $(ms "$c")" "$(ms "$d")" "$(ratio "$d" "$c")" "<= 1.0"
summary_row "same" "lxc-execute $(ms "$l")" "$(ms "$d")" "$(ratio "$d" "$l")" "<= 0.7"
