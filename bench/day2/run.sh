#!/usr/bin/env bash
# Day-two benchmark (issue 18): the cost a detached start pays for the
# console it now keeps (the monitor holds /dev/console and /dev/tty1..4,
# logs the console and serves console.sock), against the davit before it,
# interleaved, medians of N; and the time of `set`, `snapshot`, `snapshot
# restore` and `rename` on a busybox container.
#
#   bench/day2/run.sh OLD_BIN_DIR NEW_BIN_DIR SERVER_URL KEYRING [N]
#
# OLD_BIN_DIR and NEW_BIN_DIR hold a release `davit` and `davit-monitor`
# each (cargo build --release --workspace --bins of the two commits);
# SERVER_URL serves a busybox image signed by KEYRING (scripts/setup makes
# one: file:///var/lib/davit/demo/tree and /var/lib/davit/demo/demo-key.asc).
# Needs root. Everything lives in a temporary directory, removed at the end.
set -euo pipefail
old=$1 new=$2 server=$3 key=$4 n=${5:-30}
w=$(mktemp -d /var/tmp/davit-day2.XXXXXX)
trap 'for b in old new; do DAVIT_CONTAINERS_DIR=$w/$b/c DAVIT_RUNTIME_DIR=$w/$b/r "${!b}/davit" stop -k b1 >/dev/null 2>&1 || true; done; rm -rf "$w"' EXIT
printf 'root:1300000:65536\n' >"$w/subid"
d() { # which args...
  local b=$1; shift
  DAVIT_CONTAINERS_DIR=$w/$b/c DAVIT_BASES_DIR=$w/$b/bases DAVIT_RUNTIME_DIR=$w/$b/r \
    DAVIT_CACHE_DIR=$w/cache DAVIT_CGROUP_PREFIX=davit-day2-$b \
    DAVIT_SUBUID=$w/subid DAVIT_SUBGID=$w/subid "${!b}/davit" "$@"
}
for b in old new; do
  d $b create b1 busybox 1.36 amd64 --storage dir --network none --server "$server" --keyring "$key" >/dev/null 2>&1
done
us() { local s=$EPOCHREALTIME; "$@" >/dev/null 2>&1; local e=$EPOCHREALTIME; echo $(( ${e/./} - ${s/./} )); }
med() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f", m/1000}'; }
: >"$w/old.start"; : >"$w/new.start"; : >"$w/old.stop"; : >"$w/new.stop"
for b in old new; do d $b start -d b1 >/dev/null; d $b stop -k b1 >/dev/null; done
for i in $(seq "$n"); do
  for b in old new; do
    us d $b start -d b1 >>"$w/$b.start"
    us d $b stop -k b1 >>"$w/$b.stop"
  done
done
so=$(med <"$w/old.start") sn=$(med <"$w/new.start") to=$(med <"$w/old.stop") tn=$(med <"$w/new.stop")
echo "start -d (ms, median of $n): old $so, new $sn, ratio $(awk "BEGIN {printf \"%.2f\", $sn/$so}")"
echo "stop -k  (ms, median of $n): old $to, new $tn, ratio $(awk "BEGIN {printf \"%.2f\", $tn/$to}")"
# Memory of the monitor while the container runs (it now holds 5 ptys and
# a 64 KiB replay buffer per terminal).
for b in old new; do
  d $b start -d b1 >/dev/null
  m=$(pgrep -f "davit-day2-$b " -o 2>/dev/null || pgrep -f "$w/$b/c/b1/config.toml" -o)
  echo "monitor RSS, $b: $(awk '/VmRSS/ {print $2, $3}' "/proc/$m/status")"
  d $b stop -k b1 >/dev/null
done
t1() { local s=$EPOCHREALTIME; "$@" >/dev/null; local e=$EPOCHREALTIME; printf '%.1f' "$(( ${e/./} - ${s/./} ))e-3"; }
echo "new: snapshot $(t1 d new snapshot b1 s1) ms, restore $(t1 d new snapshot restore b1 s1) ms, delete $(t1 d new snapshot delete b1 s1) ms"
d new start -d b1 >/dev/null
echo "new: set --memory on the running container $(t1 d new set b1 --memory 64M) ms"
d new stop -k b1 >/dev/null
echo "new: rename $(t1 d new rename b1 b2) ms, back $(t1 d new rename b2 b1) ms"
