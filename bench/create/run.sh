#!/usr/bin/env bash
# Create benchmark: how long `davit create` takes with a warm cache, against
# `lxc-create -t download` with a warm LXC cache, and how long the FIRST
# start of a new container takes, in one run, interleaved, medians of N.
#
#   sudo bench/create/run.sh [RUNS]          # or: sudo RUNS=20 bench/create/run.sh
#
# RUNS (default 10) fresh containers of each kind. Per iteration, in order:
#   1. davit create NAME debian bookworm amd64 --storage overlay  (warm cache,
#      existing base: an earlier create of the same image made the base; that
#      first, cold-base create is timed once for reference), then the
#      container's first `davit start NAME -- /bin/true`, then destroy;
#   2. the same with --storage dir (warm cache: the whole rootfs is unpacked);
#   3. lxc-create -n NAME -t download -- --dist debian --release bookworm
#      --arch amd64 (warm LXC cache: "Using image from local cache"), then
#      its first `lxc-execute -n NAME -- /bin/true`, then lxc-destroy;
#   4. for reference, one more fresh LXC container whose first lxc-execute
#      clears lxc.hook.post-stop: the stock config includes lxcfs's
#      /usr/share/lxcfs/lxc.reboot.hook, which is `sleep 0.5s`.
#   5. snapshot clones of a stopped container kept for the run (issue 19's
#      anchor for a warm overlay create): `davit copy -s bsrc NEW` (shares
#      the base, copies the upper) and `lxc-copy -n bsrc -N NEW -s -B
#      overlay` (checked to be an overlay clone), each destroyed after.
# `sync` runs (untimed) before every timed command, so no tool pays for the
# previous one's writeback. The clock is bash's $EPOCHREALTIME around each
# command. It prints a table with the medians and the ratios
# overlay create / lxc-create (target <= 0.05, and the create under 150 ms),
# overlay first start / dir first start (target <= 1.0), and warm overlay
# create and copy -s / lxc-copy -s (issue 19: <= 0.5).
#
# The image: the Debian bookworm rootfs tarball that images/debian/build.sh
# keeps in $DAVIT_DEBIAN_CACHE (default $DAVIT_TEST_CACHE/debian, i.e.
# /var/cache/davit-test/debian; DEBIAN_TARBALL=path overrides),
# published with `davit publish` and a throwaway GnuPG key into a temporary
# tree and served by `davit serve` over HTTPS on 127.0.0.1 (LXC's download
# template only speaks https; a throwaway CA is trusted through WGETRC for
# LXC and --ca-cert for davit). No other network traffic.
#
# Both tools make unprivileged containers with the same map, 0 -> 1000000
# (65536): davit through DAVIT_SUBUID/DAVIT_SUBGID, LXC through lxc.idmap.
# LXC (as root, with newuidmap installed) wants root's range in /etc/subuid,
# so everything runs in a private mount namespace (`unshare -m
# --propagation private`) where a file with `root:1000000:65536` is
# bind-mounted over /etc/subuid and /etc/subgid. Nothing changes on the host.
#
# Isolation: every davit directory (containers, runtime state, bases, cache)
# and LXC's lxcpath (-P) and cache (LXC_CACHE_PATH) live in one temporary
# directory; davit's cgroups use their own prefix. On exit, even on failure,
# the script destroys the containers, prunes the bases and the cache
# (`davit cache prune` in its own directories), stops the server and the
# GnuPG agent it started (by pid / by its GNUPGHOME) and removes the
# temporary directory.
#
# DAVIT is the davit binary (default: target/release/davit of this repo;
# davit-monitor must be beside it): `cargo build --release --workspace --bins`.
# Needs root, lxc (lxc-create, lxc-execute), gpg, openssl, wget, unshare.

# Functions below run through traps and the t/q wrappers.
# shellcheck disable=SC2317
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

# ---------------------------------------------------------------- inner ----
if [ "${1:-}" = --inner ]; then
  work=$2 n=$3
  # shellcheck source=../lib/env.sh
  . "$repo/bench/lib/env.sh"
  bench_env "$work"
  davit=$DAVIT_BIN
  lxcpath=$BENCH_DISK/lxcpath
  cache=$BENCH_DISK/davit/cache
  mkdir -p "$DAVIT_CONTAINERS_DIR" "$DAVIT_RUNTIME_DIR" "$DAVIT_BASES_DIR" "$cache" "$lxcpath" "$BENCH_DISK/lxc-cache"

  inner_cleanup() {
    set +e
    # Containers first (they reference the bases), then the bases and cache.
    local d name
    for d in "$DAVIT_CONTAINERS_DIR"/*/; do
      [ -d "$d" ] || continue
      name=$(basename "$d")
      "$davit" destroy -f -q "$name" >/dev/null 2>&1 || echo "cleanup: davit destroy $name failed" >&2
    done
    "$davit" cache prune -q --cache-dir "$cache" >/dev/null 2>&1 || echo "cleanup: davit cache prune failed" >&2
    for d in "$lxcpath"/*/; do
      [ -d "$d" ] || continue
      name=$(basename "$d")
      lxc-destroy -P "$lxcpath" -n "$name" -f >/dev/null 2>&1 || echo "cleanup: lxc-destroy $name failed" >&2
    done
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

  say() { echo "run.sh: $*" >&2; }

  # --- the image: publish, serve ---
  # shellcheck source=../lib/serve.sh
  . "$repo/bench/lib/serve.sh"
  bench_serve "$davit" "$DEBIAN_TARBALL" "$work"

  src=(--server "$url" --keyring "$work/key.asc" --ca-cert "$work/ca.pem" --cache-dir "$cache")
  d_create() { "$davit" create "$1" debian bookworm amd64 --storage "$2" --network none -q "${src[@]}"; }
  d_start() { "$davit" start -q "$1" -- /bin/true; }
  d_destroy() { "$davit" destroy -q "$1"; }
  cat >"$work/lxc.conf" <<EOF
lxc.idmap = u 0 1000000 65536
lxc.idmap = g 0 1000000 65536
lxc.net.0.type = empty
lxc.apparmor.profile = unconfined
EOF
  l_create() {
    env LXC_CACHE_PATH="$BENCH_DISK/lxc-cache" WGETRC="$work/wgetrc" \
      lxc-create -P "$lxcpath" -f "$work/lxc.conf" -n "$1" -t download -- \
      --server "$hostport" --dist debian --release bookworm --arch amd64 </dev/null
  }
  l_start() { lxc-execute -P "$lxcpath" -n "$1" -- /bin/true; }
  l_start_nohook() { lxc-execute -P "$lxcpath" -n "$1" -s lxc.hook.post-stop= -- /bin/true; }
  l_destroy() { lxc-destroy -P "$lxcpath" -n "$1" -f; }
  # Snapshot clones of a kept container: davit copy -s (shares the base,
  # copies the upper) and lxc-copy -s -B overlay (an overlay of the source
  # container's rootfs).
  d_copy() { "$davit" copy -q -s "$1" "$2"; }
  l_copy() { lxc-copy -P "$lxcpath" -n "$1" -N "$2" -s -B overlay; }

  # One timed run in microseconds (after an untimed sync); output to a log.
  t() {
    local s e
    sync
    s=$EPOCHREALTIME
    "$@" >"$work/last.out" 2>&1 || { say "failed: $* ($(tail -20 "$work/last.out"))"; return 1; }
    e=$EPOCHREALTIME
    echo $(( ${e/./} - ${s/./} ))
  }
  q() { "$@" >"$work/last.out" 2>&1 || { say "failed: $* ($(tail -20 "$work/last.out"))"; return 1; }; }

  # --- warm the caches (untimed) ---
  say "warming davit's cache and LXC's cache"
  q "$davit" fetch debian bookworm amd64 -q "${src[@]}"
  q l_create bwarm
  grep -q "Using image from local cache\|The image cache is now ready" "$work/last.out" || { say "lxc-create: $(cat "$work/last.out")"; exit 1; }
  q l_destroy bwarm
  # LXC's cache is now warm: the next create must not download.
  q l_create bwarm2
  grep -q "Using image from local cache" "$work/last.out" || { say "LXC's cache is not warm: $(cat "$work/last.out")"; exit 1; }
  q l_destroy bwarm2
  q d_create bwarmd dir
  q d_destroy bwarmd

  # --- the first (cold-base) overlay create, once ---
  t d_create bo0 overlay >"$work/overlay-cold.us"
  t d_start bo0 >/dev/null # not a sample; warms davit-monitor like any run before
  q d_destroy bo0
  [ -n "$(ls -A "$DAVIT_BASES_DIR")" ] || { say "no base in $DAVIT_BASES_DIR after an overlay create"; exit 1; }

  # The sources of the snapshot clones, kept for the whole run.
  q d_create bsrc overlay
  q l_create bsrc

  for k in $KINDS; do : >"$work/$k.us"; done
  before=$(wc -l <"$work/access.log")
  for i in $(seq "$n"); do
    say "round $i/$n"
    t d_copy bsrc "bc$i" >>"$work/davit-copy.us"
    q d_destroy "bc$i"
    t l_copy bsrc "bx$i" >>"$work/lxc-copy.us"
    [ -d "$lxcpath/bx$i" ] || { say "lxc-copy made no bx$i: $(cat "$work/last.out")"; exit 1; }
    grep -q '^lxc.rootfs.path = overlay' "$lxcpath/bx$i/config" || { say "lxc-copy bx$i is not an overlay clone: $(grep rootfs "$lxcpath/bx$i/config")"; exit 1; }
    q l_destroy "bx$i"
    t d_create "bo$i" overlay >>"$work/overlay-create.us"
    t d_start "bo$i" >>"$work/overlay-start.us"
    q d_destroy "bo$i"
    t d_create "bd$i" dir >>"$work/dir-create.us"
    t d_start "bd$i" >>"$work/dir-start.us"
    q d_destroy "bd$i"
    t l_create "bl$i" >>"$work/lxc-create.us"
    grep -q "Using image from local cache" "$work/last.out" || { say "lxc-create bl$i did not use its cache: $(cat "$work/last.out")"; exit 1; }
    t l_start "bl$i" >>"$work/lxc-start.us"
    q l_destroy "bl$i"
    # Reference: a second fresh LXC container whose first start skips
    # lxcfs's post-stop hook (lxc.reboot.hook is `sleep 0.5s`).
    t l_create "bn$i" >>"$work/lxc-create-2.us"
    t l_start_nohook "bn$i" >>"$work/lxc-start-nohook.us"
    q l_destroy "bn$i"
  done
  # Requests to the server during the timed rounds (a warm cache needs none).
  echo $(( $(wc -l <"$work/access.log") - before )) >"$work/requests"
  exit 0
fi

# ---------------------------------------------------------------- outer ----
n=${1:-${RUNS:-10}}
case "$n" in '' | *[!0-9]* | 0) echo "usage: run.sh [RUNS] (RUNS >= 1)" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "run.sh: run as root (sudo bench/create/run.sh)" >&2; exit 1; }
for tool in lxc-create lxc-execute lxc-destroy gpg gpgconf openssl wget unshare xz; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is missing (apt-get install lxc gnupg openssl wget xz-utils)" >&2; exit 1; }
done
DAVIT_BIN=$(readlink -f "${DAVIT:-$repo/target/release/davit}")
[ -x "$DAVIT_BIN" ] || { echo "run.sh: no davit at $DAVIT_BIN (cargo build --release --workspace --bins, or DAVIT=path)" >&2; exit 1; }
[ -x "$(dirname "$DAVIT_BIN")/davit-monitor" ] || { echo "run.sh: no davit-monitor beside $DAVIT_BIN" >&2; exit 1; }
debian_cache=${DAVIT_DEBIAN_CACHE:-${DAVIT_TEST_CACHE:-/var/cache/davit-test}/debian}
if [ -z "${DEBIAN_TARBALL:-}" ]; then
  # shellcheck disable=SC2012 # the newest; the names are ours
  DEBIAN_TARBALL=$(ls -t "$debian_cache"/debian-bookworm-amd64-*.tar 2>/dev/null | head -1 || true)
fi
[ -s "${DEBIAN_TARBALL:-}" ] || {
  echo "run.sh: no Debian tarball; make one with images/debian/build.sh --cache $debian_cache --tarball-only /dev/null (or set DEBIAN_TARBALL)" >&2
  exit 1
}
KINDS="overlay-create dir-create lxc-create lxc-create-2 overlay-start dir-start lxc-start lxc-start-nohook davit-copy lxc-copy"
export DAVIT_BIN DEBIAN_TARBALL KINDS

work=$(mktemp -d /tmp/davit-createbench.XXXXXX)
chmod 755 "$work" # LXC's mapped root must reach its lxcpath
export CGROUP_PREFIX=davit-createbench-$$
cleanup() {
  set +e
  # The inner shell cleans up after itself; this is the fallback for a
  # killed inner: the server by its pid, the agent by its home.
  if [ -s "$work/serve.pid" ]; then kill "$(cat "$work/serve.pid")" 2>/dev/null; fi
  [ -d "$work/gnupg" ] && GNUPGHOME=$work/gnupg gpgconf --kill all >/dev/null 2>&1
  # LXC's monitor may leave an empty lxc.pivot cgroup in each hierarchy, and
  # davit's prefix directories may stay: remove them if empty.
  rmdir /sys/fs/cgroup/*/"$CGROUP_PREFIX" 2>/dev/null
  rmdir /sys/fs/cgroup/*/lxc.pivot 2>/dev/null
  if grep -q " $work" /proc/self/mountinfo; then
    echo "run.sh: mounts left under $work:" >&2
    grep " $work" /proc/self/mountinfo >&2
  else
    rm -rf --one-file-system "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
printf 'root:1000000:65536\n' >"$work/subid"

started=$(date -u +%Y-%m-%dT%H:%MZ)
unshare -m --propagation private bash "$0" --inner "$work" "$n"

median() { sort -n "$1" | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
minmax() { sort -n "$1" | awk 'NR==1 {lo=$1} {hi=$1} END {printf "%.1f–%.1f", lo/1000, hi/1000}'; }
ms() { awk -v u="$1" 'BEGIN {printf "%.1f", u/1000}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a/b}'; }
verdict() { awk -v v="$1" -v lim="$2" 'BEGIN {print (v <= lim) ? "yes" : "NO"}'; }
m_overlay_create=$(median "$work/overlay-create.us") m_dir_create=$(median "$work/dir-create.us")
m_lxc_create=$(median "$work/lxc-create.us") m_overlay_start=$(median "$work/overlay-start.us")
m_dir_start=$(median "$work/dir-start.us") m_lxc_start=$(median "$work/lxc-start.us")
m_lxc_start_nohook=$(median "$work/lxc-start-nohook.us")
m_davit_copy=$(median "$work/davit-copy.us") m_lxc_copy=$(median "$work/lxc-copy.us")
cold=$(cat "$work/overlay-cold.us")
row() { echo "| $1 | $(ms "$2") | ${3:-} | ${4:-} |"; }

echo "davit create benchmark, $started, $(nproc) CPUs, kernel $(uname -r), lxc $(lxc-create --version), RUNS=$n, interleaved, sync before each timed command"
echo "davit: $DAVIT_BIN; image: $(basename "$DEBIAN_TARBALL") ($(du -m "$DEBIAN_TARBALL" | cut -f1) MiB tar), published with davit publish, served by davit serve over https on 127.0.0.1"
echo
echo "| what | median ms | min–max ms | samples |"
echo "|---|---|---|---|"
row "davit create --storage overlay (warm cache, existing base)" "$m_overlay_create" "$(minmax "$work/overlay-create.us")" "$n"
row "davit create --storage overlay (warm cache, first create: makes the base)" "$cold" "" 1
row "davit create --storage dir (warm cache)" "$m_dir_create" "$(minmax "$work/dir-create.us")" "$n"
row "lxc-create -t download (warm LXC cache)" "$m_lxc_create" "$(minmax "$work/lxc-create.us")" "$n"
row "davit start -- /bin/true, overlay container, first start" "$m_overlay_start" "$(minmax "$work/overlay-start.us")" "$n"
row "davit start -- /bin/true, dir container, first start" "$m_dir_start" "$(minmax "$work/dir-start.us")" "$n"
row "lxc-execute -- /bin/true, fresh lxc-create'd container, first start" "$m_lxc_start" "$(minmax "$work/lxc-start.us")" "$n"
row "(reference) the same, first start with -s lxc.hook.post-stop= (no lxcfs sleep 0.5s hook)" "$m_lxc_start_nohook" "$(minmax "$work/lxc-start-nohook.us")" "$n"
row "davit copy -s (snapshot clone of a stopped overlay container)" "$m_davit_copy" "$(minmax "$work/davit-copy.us")" "$n"
row "lxc-copy -s -B overlay (snapshot clone of a stopped container)" "$m_lxc_copy" "$(minmax "$work/lxc-copy.us")" "$n"
echo
r1=$(ratio "$m_overlay_create" "$m_lxc_create")
r2=$(ratio "$m_overlay_start" "$m_dir_start")
echo "| ratio | value | target | met |"
echo "|---|---|---|---|"
echo "| davit overlay create / lxc-create | $r1 | <= 0.05 | $(verdict "$r1" 0.05) |"
echo "| davit overlay create, median ms | $(ms "$m_overlay_create") | < 150 | $(verdict "$m_overlay_create" 149999) |"
echo "| overlay first start / dir first start | $r2 | <= 1.0 | $(verdict "$r2" 1.0) |"
r3=$(ratio "$m_overlay_create" "$m_lxc_copy") r4=$(ratio "$m_davit_copy" "$m_lxc_copy")
echo "| davit overlay create (warm) / lxc-copy -s (issue 19) | $r3 | <= 0.5 | $(verdict "$r3" 0.5) |"
echo "| davit copy -s / lxc-copy -s | $r4 | <= 0.5 | $(verdict "$r4" 0.5) |"
# shellcheck source=../lib/summary.sh
. "$here/../lib/summary.sh"
summary_row "warm overlay \`create\` (base exists)" "\`lxc-copy -s\` $(ms "$m_lxc_copy") ms" "$(ms "$m_overlay_create") ms" "$r3" "<= 0.5"
summary_row "\`copy -s\` of a stopped container" "same" "$(ms "$m_davit_copy") ms" "$r4" "<= 0.5"
echo "| (reference) davit dir create / lxc-create | $(ratio "$m_dir_create" "$m_lxc_create") | | |"
echo "| (reference) davit overlay first start / lxc-execute first start | $(ratio "$m_overlay_start" "$m_lxc_start") | | |"
echo "| (reference) davit overlay first start / lxc-execute first start without the lxcfs hook | $(ratio "$m_overlay_start" "$m_lxc_start_nohook") | | |"
echo
echo "requests to the image server during the timed rounds: $(cat "$work/requests")"
echo
echo "raw samples (µs):"
for k in $KINDS; do
  echo "  $k: $(tr '\n' ' ' <"$work/$k.us")"
done
