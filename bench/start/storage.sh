#!/usr/bin/env bash
# Start benchmark by storage and network: `davit start NAME -- /bin/true` of
# containers made by `davit create` as root (overlay, the default storage;
# overlay on the default bridge, the default for root; dir for reference)
# against `crun run` of the same image (no network), in one run,
# interleaved, medians of N (default 30), with ratios to crun.
#
#   sudo bench/start/storage.sh [N]
#
# The image: the Debian bookworm tarball of images/debian/build.sh (in
# $DAVIT_DEBIAN_CACHE, default $DAVIT_TEST_CACHE/debian, i.e.
# /var/cache/davit-test/debian; DEBIAN_TARBALL=path overrides), published by
# `davit publish` with a throwaway key and served by `davit serve` over
# HTTPS (bench/lib/serve.sh). The three containers come from
# `davit create NAME debian bookworm amd64` with the map 0 -> 1000000
# (65536): `--network none` (overlay), no --network (overlay, bridge:
# what create gives root), `--storage dir --network none`. crun runs the dir
# container's rootfs with the same map and a user namespace.
#
# Isolation: everything runs in a new mount AND network namespace
# (`unshare -m -n`), which stands in for the host: the server listens on
# its loopback, the bridge, its nft table, forwarding and dnsmasq are made
# there (the host config is the script's own, DAVIT_NET_CONFIG; upstream
# DNS 192.0.2.1, which has no route there), and all of it goes with the
# namespace. Nothing changes in the real host's namespace. davit's runtime
# state and leases are on a tmpfs, as /run is on a normal host. Debian's
# crun 1.8 refuses this hybrid host's v2 hierarchy, so an empty file is
# bound over /sys/fs/cgroup/unified/cgroup.controllers inside (as
# bench/start/run.sh does). On exit, even on failure, the containers are
# destroyed, the server, GnuPG agent and any dnsmasq left in the namespace
# are ended by pid, the cgroup prefix is removed and the work directory too.
#
# DAVIT: the davit binary (default target/release/davit; davit-monitor
# beside it). Needs root, crun, gpg, openssl, unshare, ip, dnsmasq, nft.

# Functions below run through traps and the t/q wrappers.
# shellcheck disable=SC2317
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

# ---------------------------------------------------------------- inner ----
if [ "${1:-}" = --inner ]; then
  work=$2 n=$3
  ip link set lo up
  mount --bind "$work/empty" /sys/fs/cgroup/unified/cgroup.controllers
  # shellcheck source=../lib/env.sh
  . "$repo/bench/lib/env.sh"
  bench_env "$work"
  davit=$DAVIT_BIN
  mkdir -p "$DAVIT_CONTAINERS_DIR" "$DAVIT_RUNTIME_DIR" "$DAVIT_BASES_DIR" "$work/davit/cache"
  mount -t tmpfs -o mode=0755 tmpfs "$DAVIT_RUNTIME_DIR"
  leases=$DAVIT_RUNTIME_DIR/net
  cat >"$work/net.toml" <<EOF
[network]
bridge = "dvsb$$"
subnet = "10.99.7.0/24"
lease_dir = "$leases"
nameservers = ["192.0.2.1"]
EOF
  export DAVIT_NET_CONFIG=$work/net.toml
  name=sbc$$

  inner_cleanup() {
    set +e
    local d c f pid
    crun delete -f "$name" >/dev/null 2>&1
    for d in "$DAVIT_CONTAINERS_DIR"/*/; do
      [ -d "$d" ] || continue
      c=$(basename "$d")
      "$davit" destroy -f -q "$c" >/dev/null 2>&1 || echo "cleanup: davit destroy $c failed" >&2
    done
    # davit stops dnsmasq with the last container; end one left by pid.
    for f in "$leases"/*.dnsmasq/running.json; do
      [ -e "$f" ] || continue
      pid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["process"]["pid"])' "$f")
      [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dnsmasq ] && echo "cleanup: dnsmasq $pid was left running" >&2 && kill "$pid"
    done
    "$davit" cache prune -q --cache-dir "$work/davit/cache" >/dev/null 2>&1
    if [ -s "$work/serve.pid" ]; then
      kill "$(cat "$work/serve.pid")" 2>/dev/null
      wait "$(cat "$work/serve.pid")" 2>/dev/null
      : >"$work/serve.pid"
    fi
    [ -d "$GNUPGHOME" ] && gpgconf --kill all >/dev/null 2>&1
    return 0
  }
  trap inner_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  say() { echo "storage.sh: $*" >&2; }

  # shellcheck source=../lib/serve.sh
  . "$repo/bench/lib/serve.sh"
  bench_serve "$davit" "$DEBIAN_TARBALL" "$work"
  src=(--server "$url" --keyring "$work/key.asc" --ca-cert "$work/ca.pem" --cache-dir "$work/davit/cache")
  q() { "$@" >"$work/last.out" 2>&1 || { say "failed: $* ($(tail -20 "$work/last.out"))"; return 1; }; }
  say "creating the containers"
  q "$davit" create so debian bookworm amd64 -q --network none "${src[@]}"
  q "$davit" create sb debian bookworm amd64 -q "${src[@]}"
  q "$davit" create sd debian bookworm amd64 -q --storage dir --network none "${src[@]}"
  # Each is what its row says, from its own config.
  for c in so:overlay:none sb:overlay:bridge sd:dir:none; do
    IFS=: read -r cname backend mode <<<"$c"
    cfg=$DAVIT_CONTAINERS_DIR/$cname/config.toml
    got=dir
    grep -q '^backend = "overlay"' "$cfg" && got=overlay
    [ "$got" = "$backend" ] || { say "$cname has $got storage, not $backend: $(cat "$cfg")"; exit 1; }
    grep -A3 '^\[network\]' "$cfg" | grep -q "^mode = \"$mode\"" || { say "$cname's network is not $mode: $(cat "$cfg")"; exit 1; }
  done
  rootfs=$(awk -F'"' '/^rootfs = / {print $2; exit}' "$DAVIT_CONTAINERS_DIR/sd/config.toml")
  [ -x "$rootfs/bin/true" ] || { say "no /bin/true in the dir container's rootfs $rootfs"; exit 1; }
  # crun's mapped root must reach its rootfs, and davit keeps a container's
  # directory private to root: a bind of it on a path crun can walk.
  mkdir "$work/crun-rootfs"
  mount --bind "$rootfs" "$work/crun-rootfs"
  rootfs=$work/crun-rootfs

  # crun: the default spec, on the dir container's rootfs, with a user
  # namespace and the same map.
  # shellcheck source=../lib/config.sh
  . "$repo/bench/lib/config.sh"
  bench_crun_bundle "$work/bundle" "$rootfs" 1000000

  # One timed run in microseconds, from bash's clock.
  t() {
    local s=$EPOCHREALTIME e
    "$@" >/dev/null 2>"$work/last.err" || { say "failed: $* ($(cat "$work/last.err"))"; return 1; }
    e=$EPOCHREALTIME
    echo $(( ${e/./} - ${s/./} ))
  }
  kinds="overlay bridge dir crun"
  run_overlay() { "$davit" start -q so -- /bin/true; }
  run_bridge() { "$davit" start -q sb -- /bin/true; }
  run_dir() { "$davit" start -q sd -- /bin/true; }
  run_crun() { crun run --bundle "$work/bundle" "$name"; }
  for k in $kinds; do : >"$work/$k.us"; t "run_$k" >/dev/null; done
  # The bridged start really had eth0 on the bridge: one untimed check.
  q "$davit" start -q sb -- /bin/sh -c 'ip -o -4 addr show eth0 2>/dev/null || cat /sys/class/net/eth0/address'
  grep -q . "$work/last.out" || { say "the bridged container had no eth0"; exit 1; }
  for i in $(seq "$n"); do
    for k in $kinds; do t "run_$k" >>"$work/$k.us"; done
    [ $((i % 10)) = 0 ] && say "round $i/$n"
  done
  exit 0
fi

# ---------------------------------------------------------------- outer ----
n=${1:-30}
case "$n" in '' | *[!0-9]* | 0) echo "usage: storage.sh [N] (N >= 1)" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "storage.sh: run as root" >&2; exit 1; }
for tool in crun gpg gpgconf openssl unshare ip dnsmasq nft python3; do
  command -v "$tool" >/dev/null || { echo "storage.sh: $tool is missing (apt-get install crun gnupg openssl iproute2 dnsmasq-base nftables)" >&2; exit 1; }
done
DAVIT_BIN=$(readlink -f "${DAVIT:-$repo/target/release/davit}")
[ -x "$DAVIT_BIN" ] || { echo "storage.sh: no davit at $DAVIT_BIN (cargo build --release --workspace --bins, or DAVIT=path)" >&2; exit 1; }
[ -x "$(dirname "$DAVIT_BIN")/davit-monitor" ] || { echo "storage.sh: no davit-monitor beside $DAVIT_BIN" >&2; exit 1; }
debian_cache=${DAVIT_DEBIAN_CACHE:-${DAVIT_TEST_CACHE:-/var/cache/davit-test}/debian}
if [ -z "${DEBIAN_TARBALL:-}" ]; then
  # shellcheck disable=SC2012 # the newest; the names are ours
  DEBIAN_TARBALL=$(ls -t "$debian_cache"/debian-bookworm-amd64-*.tar 2>/dev/null | head -1 || true)
fi
[ -s "${DEBIAN_TARBALL:-}" ] || {
  echo "storage.sh: no Debian tarball; make one with images/debian/build.sh --cache $debian_cache --tarball-only /dev/null (or set DEBIAN_TARBALL)" >&2
  exit 1
}
export DAVIT_BIN DEBIAN_TARBALL

work=$(mktemp -d /tmp/davit-storagebench.XXXXXX)
chmod 755 "$work" # crun's mapped root must reach its bundle
export CGROUP_PREFIX=davit-storagebench-$$
inner=
cleanup() {
  set +e
  # The inner shell cleans up after itself; this is the fallback for a
  # killed inner: the server by its pid, the agent by its home, and any
  # process still in the namespace the inner made (only ours can be there).
  if [ -s "$work/serve.pid" ]; then kill "$(cat "$work/serve.pid")" 2>/dev/null; fi
  [ -d "$work/gnupg" ] && GNUPGHOME=$work/gnupg gpgconf --kill all >/dev/null 2>&1
  if [ -s "$work/netns" ]; then
    local p
    for p in /proc/[0-9]*; do
      [ "$(readlink "$p/ns/net" 2>/dev/null)" = "$(cat "$work/netns")" ] || continue
      echo "storage.sh: ending ${p#/proc/} ($(cat "$p/comm" 2>/dev/null)), left in the bench's namespace" >&2
      kill "${p#/proc/}" 2>/dev/null
    done
  fi
  rmdir /sys/fs/cgroup/*/"$CGROUP_PREFIX" 2>/dev/null
  if grep -q " $work" /proc/self/mountinfo; then
    echo "storage.sh: mounts left under $work:" >&2
    grep " $work" /proc/self/mountinfo >&2
  else
    rm -rf --one-file-system "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
printf 'root:1000000:65536\n' >"$work/subid"
: >"$work/empty"

started=$(date -u +%Y-%m-%dT%H:%MZ)
unshare -m -n --propagation private bash "$0" --inner "$work" "$n" &
inner=$!
# Recorded for the fallback above: the namespace's identity, read while
# the inner runs.
for _ in $(seq 50); do
  ns=$(readlink "/proc/$inner/ns/net" 2>/dev/null || true)
  [ -n "$ns" ] && [ "$ns" != "$(readlink /proc/self/ns/net)" ] && { echo "$ns" >"$work/netns"; break; }
  sleep 0.1
done
wait "$inner"

median() { sort -n "$1" | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
ms() { awk -v u="$1" 'BEGIN {printf "%.1f ms", u/1000}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
verdict() { awk -v v="$1" -v lim="$2" 'BEGIN {print (v <= lim) ? "yes" : "no"}'; }
mo=$(median "$work/overlay.us") mb=$(median "$work/bridge.us") md=$(median "$work/dir.us") mc=$(median "$work/crun.us")
echo "$(uname -r), $(nproc) CPUs, $started, medians of $n, interleaved; image $(basename "$DEBIAN_TARBALL")"
echo
echo "| davit start NAME -- /bin/true | median | crun run | ratio | goal | holds |"
echo "|---|---|---|---|---|---|"
r=$(ratio "$mo" "$mc")
echo "| overlay (the default storage), no network | $(ms "$mo") | $(ms "$mc") | $r | <= 1.0 | $(verdict "$r" 1.0) |"
r=$(ratio "$mb" "$mc")
echo "| overlay + bridge (the default for root) | $(ms "$mb") | $(ms "$mc") | $r | <= 1.5 | $(verdict "$r" 1.5) |"
r=$(ratio "$md" "$mc")
echo "| dir, no network (reference) | $(ms "$md") | $(ms "$mc") | $r | <= 1.0 | $(verdict "$r" 1.0) |"
. "$here/../lib/summary.sh"
summary_row "same, overlay (davit create's default storage)" "crun run $(ms "$mc")" "$(ms "$mo")" "$(ratio "$mo" "$mc")" "<= 1.0"
summary_row "same, overlay + bridge (the default for root)" "crun run (no network) $(ms "$mc")" "$(ms "$mb")" "$(ratio "$mb" "$mc")" "<= 1.5"
echo
echo "raw samples (µs):"
for k in overlay bridge dir crun; do echo "  $k: $(tr '\n' ' ' <"$work/$k.us")"; done
