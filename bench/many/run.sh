#!/usr/bin/env bash
# Many containers (issue 19), davit against LXC in one run:
#   1. `start -d` of N containers at once (default 50), each running
#      `/bin/sleep 1000` as init: davit's default (`start -d` returns once
#      the container is quiet, every process in it asleep at two looks
#      10 ms apart, at most its 200 ms settle window) against `lxc-start -d`
#      (returns once LXC's monitor says RUNNING), and davit's `--settle 0`
#      (returns once init runs); the rate is N divided by
#      the wall time from the first start to the last one returning;
#      repeated R times (default 3), davit and LXC alternating;
#   2. the memory of one running container's monitor: RSS and PSS of
#      `davit-monitor` against LXC's `[lxc monitor]`, medians over the N;
#   3. `attach NAME -- /bin/true` against `lxc-attach -n NAME -- /bin/true`,
#      interleaved, medians of A (default 30), into running containers.
#
#   sudo bench/many/run.sh ROOTFS [N] [R] [A]
#
# ROOTFS is the shifted Debian rootfs of bench/start/prepare-rootfs.sh (ids
# 100000-165535), shared read-mostly by every container of both tools, no
# network, the map 0 -> 100000. Everything runs in a private mount namespace
# where /etc/subuid and /etc/subgid give root that range (LXC wants it) and
# davit's runtime state is on a tmpfs, as /run is on a normal host. The
# containers, their cgroups and the temporary directory are removed on exit.
# Needs root and lxc.
# shellcheck disable=SC2317
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

if [ "${1:-}" = --inner ]; then
  work=$2 n=$3 r=$4 a=$5 rootfs=$6
  mount --bind "$work/subid" /etc/subuid
  mount --bind "$work/subid" /etc/subgid
  mount -t tmpfs -o mode=0755 tmpfs "$work/run"
  davit=$DAVIT_BIN
  export DAVIT_CONTAINERS_DIR=$work/containers DAVIT_RUNTIME_DIR=$work/run/davit
  export DAVIT_CGROUP_PREFIX=$CGROUP_PREFIX
  lxcpath=$work/lxc
  # shellcheck source=../lib/config.sh
  . "$repo/bench/lib/config.sh"
  names() { local i; for i in $(seq "$n"); do echo "$1$i"; done; }
  inner_cleanup() {
    set +e
    local c
    for c in $(names d); do "$davit" stop -k -q "$c" >/dev/null 2>&1; done
    for c in $(names l); do lxc-stop -P "$lxcpath" -k -n "$c" >/dev/null 2>&1; done
    umount "$work/run"
    return 0
  }
  trap inner_cleanup EXIT
  for c in $(names d); do
    mkdir -p "$DAVIT_CONTAINERS_DIR/$c"
    bench_config "$c" "$rootfs" >"$DAVIT_CONTAINERS_DIR/$c/config.toml"
  done
  for c in $(names l); do
    mkdir -p "$lxcpath/$c"
    cat >"$lxcpath/$c/config" <<CONF
lxc.uts.name = $c
lxc.rootfs.path = dir:$rootfs
lxc.idmap = u 0 100000 65536
lxc.idmap = g 0 100000 65536
lxc.net.0.type = empty
lxc.apparmor.profile = unconfined
lxc.init.cmd = /bin/sleep 1000
lxc.mount.auto = cgroup:mixed proc:mixed sys:mixed
lxc.seccomp.profile = /usr/share/lxc/config/common.seccomp
CONF
  done
  d_up() { "$davit" start -d -q "$1" -- /bin/sleep 1000; }
  # Returning as soon as init runs, as lxc-start -d does.
  d0_up() { "$davit" start -d -q --settle 0 "$1" -- /bin/sleep 1000; }
  l_up() { lxc-start -P "$lxcpath" -d -n "$1"; }
  d_down() { "$davit" stop -k -q "$1"; }
  l_down() { lxc-stop -P "$lxcpath" -k -n "$1"; }
  # All N at once; prints the wall time in µs.
  burst() {
    local up=$1 pfx=$2 s e c fail=0
    s=$EPOCHREALTIME
    for c in $(names "$pfx"); do "$up" "$c" >"$work/$c.out" 2>&1 & done
    for c in $(names "$pfx"); do wait -n || fail=1; done
    e=$EPOCHREALTIME
    [ "$fail" = 0 ] || { echo "many: a start failed: $(cat "$work/$pfx"*.out)" >&2; return 1; }
    echo $(( ${e/./} - ${s/./} ))
  }
  down_all() { local c; for c in $(names "$2"); do "$1" "$c" >/dev/null 2>&1 & done; wait; }
  : >"$work/d.burst"; : >"$work/d0.burst"; : >"$work/l.burst"
  for i in $(seq "$r"); do
    echo "many: burst $i/$r" >&2
    burst d0_up d >>"$work/d0.burst"
    down_all d_down d
    burst d_up d >>"$work/d.burst"
    if [ "$i" -lt "$r" ]; then down_all d_down d; fi
    burst l_up l >>"$work/l.burst"
    if [ "$i" -lt "$r" ]; then down_all l_down l; fi
  done
  # Monitor memory, all N of each running now.
  for c in $(names d); do
    # The monitor is the parent of init (the pid `info` reports).
    p=$("$davit" info --json "$c" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
    p=$(awk '/^PPid:/ {print $2}' "/proc/$p/status")
    grep -q davit-monitor "/proc/$p/cmdline" || { echo "many: $p is not $c's monitor" >&2; exit 1; }
    [ -n "$p" ] && awk '/^Rss:/ {r=$2} /^Pss:/ {s=$2} END {print r, s}' "/proc/$p/smaps_rollup" >>"$work/d.mem"
  done
  for p in $(pgrep -f "^\[lxc monitor\] $lxcpath "); do
    awk '/^Rss:/ {r=$2} /^Pss:/ {s=$2} END {print r, s}' "/proc/$p/smaps_rollup" >>"$work/l.mem"
  done
  # attach, interleaved.
  t() { local s e; s=$EPOCHREALTIME; "$@" >/dev/null 2>"$work/last.err" || { echo "many: failed: $* ($(cat "$work/last.err"))" >&2; return 1; }; e=$EPOCHREALTIME; echo $(( ${e/./} - ${s/./} )); }
  : >"$work/d.attach"; : >"$work/l.attach"
  t "$davit" attach d1 -- /bin/true >/dev/null; t lxc-attach -P "$lxcpath" -n l1 -- /bin/true >/dev/null
  for _ in $(seq "$a"); do
    t "$davit" attach d1 -- /bin/true >>"$work/d.attach"
    t lxc-attach -P "$lxcpath" -n l1 -- /bin/true >>"$work/l.attach"
  done
  exit 0
fi

rootfs=$(readlink -f "${1:?usage: many/run.sh ROOTFS [N] [R] [A]}")
n=${2:-50} r=${3:-3} a=${4:-30}
[ "$(id -u)" = 0 ] || { echo "many/run.sh: run as root" >&2; exit 1; }
command -v lxc-start >/dev/null || { echo "many/run.sh: lxc is missing (apt-get install lxc)" >&2; exit 1; }
[ -e "$rootfs/bin/sleep" ] || { echo "many/run.sh: $rootfs has no /bin/sleep (bench/start/prepare-rootfs.sh DIR)" >&2; exit 1; }
DAVIT_BIN=$(readlink -f "${DAVIT:-$repo/target/release/davit}")
[ -x "$DAVIT_BIN" ] || { echo "many/run.sh: no davit at $DAVIT_BIN (cargo build --release --workspace --bins)" >&2; exit 1; }
export DAVIT_BIN CGROUP_PREFIX=davit-manybench-$$
work=$(mktemp -d /var/tmp/davit-manybench.XXXXXX)
chmod 755 "$work"
mkdir "$work/run"
cleanup() {
  set +e
  rmdir /sys/fs/cgroup/*/"$CGROUP_PREFIX" /sys/fs/cgroup/*/lxc.pivot 2>/dev/null
  if grep -q " $work" /proc/self/mountinfo; then echo "many/run.sh: mounts left under $work" >&2; else rm -rf --one-file-system "$work"; fi
}
trap cleanup EXIT
printf 'root:100000:65536\n' >"$work/subid"
started=$(date -u +%Y-%m-%dT%H:%MZ)
unshare -m --propagation private bash "$0" --inner "$work" "$n" "$r" "$a" "$rootfs"

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
rate() { awk -v n="$n" -v u="$1" 'BEGIN {printf "%.1f", n / (u / 1e6)}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
db=$(median <"$work/d.burst") lb=$(median <"$work/l.burst") d0b=$(median <"$work/d0.burst")
dr=$(rate "$db") lr=$(rate "$lb") d0r=$(rate "$d0b")
drss=$(cut -d' ' -f1 "$work/d.mem" | median) dpss=$(cut -d' ' -f2 "$work/d.mem" | median)
lrss=$(cut -d' ' -f1 "$work/l.mem" | median) lpss=$(cut -d' ' -f2 "$work/l.mem" | median)
da=$(median <"$work/d.attach") la=$(median <"$work/l.attach")
echo "many benchmark, $started, $(nproc) CPUs, $(uname -r), lxc $(lxc-start --version), N=$n at once, R=$r bursts, A=$a attaches"
echo
echo "| work | anchor | davit | ratio |"
echo "|---|---|---|---|"
echo "| \`start -d\` of $n at once (starts/s, median of $r) | lxc-start -d: $lr/s | $dr/s | $(ratio "$dr" "$lr") (higher is better) |"
echo "| same, \`--settle 0\` (returns once init runs, as lxc-start -d) | lxc-start -d: $lr/s | $d0r/s | $(ratio "$d0r" "$lr") |"
echo "| one monitor's RSS (median of $n) | LXC monitor $(ratio "$lrss" 1024) MiB | $(ratio "$drss" 1024) MiB | $(ratio "$drss" "$lrss") |"
echo "| one monitor's PSS | $(ratio "$lpss" 1024) MiB | $(ratio "$dpss" 1024) MiB | $(ratio "$dpss" "$lpss") |"
echo "| \`attach -- /bin/true\` (median of $a) | lxc-attach $(ratio "$la" 1000) ms | $(ratio "$da" 1000) ms | $(ratio "$da" "$la") |"
# shellcheck source=../lib/summary.sh
. "$(dirname "$0")/../lib/summary.sh"
summary_row "\`start -d\` of $n at once, default settle (starts/s)" "lxc-start -d $lr/s" "$dr/s" "$(ratio "$dr" "$lr")" ">= 1.0"
summary_row "same, \`--settle 0\`" "lxc-start -d $lr/s" "$d0r/s" "$(ratio "$d0r" "$lr")" ">= 1.0"
summary_row "one running container's monitor, PSS" "LXC monitor $(ratio "$lpss" 1024) MiB" "$(ratio "$dpss" 1024) MiB" "$(ratio "$dpss" "$lpss")" "<= 1.0"
summary_row "same, RSS" "LXC monitor $(ratio "$lrss" 1024) MiB" "$(ratio "$drss" 1024) MiB" "$(ratio "$drss" "$lrss")" "<= 1.0"
summary_row "\`attach -- /bin/true\`" "lxc-attach $(ratio "$la" 1000) ms" "$(ratio "$da" 1000) ms" "$(ratio "$da" "$la")" "<= 1.0"
echo "raw bursts (µs): davit $(tr '\n' ' ' <"$work/d.burst"); --settle 0 $(tr '\n' ' ' <"$work/d0.burst"); lxc $(tr '\n' ' ' <"$work/l.burst")"
