#!/usr/bin/env bash
# Cold benchmark (issue 19): everything from an empty cache, in one run,
# interleaved, medians of N (default 5):
#   1. `davit fetch debian bookworm amd64` into an empty cache (index and
#      its signature, SHA256SUMS and its signature, both tarballs, every
#      check on) against one `wget` of exactly the URLs davit asked for
#      (read from the server's access log; wget keeps one connection);
#   2. `davit create --storage dir` with an empty cache;
#   3. `davit create --storage overlay` with an empty cache and no base;
#   4. `lxc-create -t download` with an empty LXC cache (no GPG: LXC 5's
#      download template checks no signature over https).
# Peak RSS of each davit command (children included) comes from
# /usr/bin/time. `sync` runs, untimed, before every timed command and the
# page cache of the server's files stays warm for all of them alike.
#
#   sudo bench/cold/run.sh [N]
#
# The image, the server, the map and the isolation are those of
# bench/create/run.sh: the Debian tarball of images/debian/build.sh,
# published and served over HTTPS on 127.0.0.1 (bench/lib/serve.sh), map
# 0 -> 1000000 in a private mount namespace, every directory temporary.
# Needs root, lxc, gpg, openssl, wget, xz, GNU time.
# shellcheck disable=SC2317
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

if [ "${1:-}" = --inner ]; then
  work=$2 n=$3
  # shellcheck source=../lib/env.sh
  . "$repo/bench/lib/env.sh"
  bench_env "$work"
  davit=$DAVIT_BIN
  lxcpath=$BENCH_DISK/lxcpath
  mkdir -p "$DAVIT_CONTAINERS_DIR" "$DAVIT_RUNTIME_DIR" "$DAVIT_BASES_DIR" "$lxcpath"
  inner_cleanup() {
    set +e
    local d
    for d in "$DAVIT_CONTAINERS_DIR"/*/; do
      [ -d "$d" ] && "$davit" destroy -f -q "$(basename "$d")" >/dev/null 2>&1
    done
    for d in "$lxcpath"/*/; do
      [ -d "$d" ] && lxc-destroy -P "$lxcpath" -n "$(basename "$d")" -f >/dev/null 2>&1
    done
    if [ -s "$work/serve.pid" ]; then kill "$(cat "$work/serve.pid")" 2>/dev/null; wait 2>/dev/null; fi
    gpgconf --kill all >/dev/null 2>&1
    return 0
  }
  trap inner_cleanup EXIT
  # shellcheck source=../lib/serve.sh
  . "$repo/bench/lib/serve.sh"
  bench_serve "$davit" "$DEBIAN_TARBALL" "$work"
  printf 'lxc.idmap = u 0 1000000 65536\nlxc.idmap = g 0 1000000 65536\nlxc.net.0.type = empty\nlxc.apparmor.profile = unconfined\n' >"$work/lxc.conf"

  d=$BENCH_DISK
  fresh() { rm -rf "$d/cache" "$d/lxc-cache" "$d/get"; rm -rf "${DAVIT_BASES_DIR:?}"/*; mkdir -p "$d/cache" "$d/lxc-cache" "$d/get"; }
  # Each timed command is a script of its own, so /usr/bin/time can run it
  # (and count its children's peak RSS).
  srcs="--server $url --keyring $work/key.asc --ca-cert $work/ca.pem --cache-dir $d/cache"
  printf '%s\n' "exec $davit fetch debian bookworm amd64 -q $srcs" >"$work/fetch.sh"
  printf '%s\n' "cd $d/get && WGETRC=$work/wgetrc exec wget -q -i $work/urls" >"$work/wget.sh"
  printf '%s\n' "exec $davit create \"\$1\" debian bookworm amd64 --storage dir --network none -q $srcs" >"$work/dir.sh"
  printf '%s\n' "exec $davit create \"\$1\" debian bookworm amd64 --storage overlay --network none -q $srcs" >"$work/overlay.sh"
  printf '%s\n' "LXC_CACHE_PATH=$d/lxc-cache WGETRC=$work/wgetrc exec lxc-create -P $lxcpath -f $work/lxc.conf -n \"\$1\" -t download -- --server $hostport --dist debian --release bookworm --arch amd64 </dev/null" >"$work/lxc.sh"
  # One timed run: microseconds to $1.us, peak RSS (KiB) to $1.rss.
  t() {
    local k=$1 s e; shift
    sync
    s=$EPOCHREALTIME
    /usr/bin/time -o "$work/last.time" -f %M bash "$work/$k.sh" "$@" >"$work/last.out" 2>&1 \
      || { echo "cold: failed: $* ($(tail -20 "$work/last.out"))" >&2; return 1; }
    e=$EPOCHREALTIME
    echo $(( ${e/./} - ${s/./} )) >>"$work/$k.us"
    tail -1 "$work/last.time" >>"$work/$k.rss"
  }

  # The URLs davit asks for, from one untimed cold fetch.
  fresh
  before=$(wc -l <"$work/access.log")
  bash "$work/fetch.sh"
  tail -n +"$((before + 1))" "$work/access.log" >"$work/fetch.log"
  awk -v u="$url" '$NF == 200 {print u $2}' "$work/fetch.log" >"$work/urls"
  wc -l <"$work/fetch.log" >"$work/requests"
  awk '$NF == 404' "$work/fetch.log" | wc -l >"$work/404s"
  fresh; bash "$work/wget.sh" # warm-up of wget and the server's page cache

  for i in $(seq "$n"); do
    echo "cold: round $i/$n" >&2
    fresh; t fetch
    fresh; t wget
    fresh; t dir "cd$i"; "$davit" destroy -q "cd$i"
    fresh; t overlay "co$i"; "$davit" destroy -q "co$i"
    fresh; t lxc "cl$i"; lxc-destroy -P "$lxcpath" -n "cl$i" -f >/dev/null
  done
  exit 0
fi

n=${1:-${RUNS:-5}}
[ "$(id -u)" = 0 ] || { echo "cold/run.sh: run as root" >&2; exit 1; }
for tool in lxc-create lxc-destroy gpg openssl wget unshare xz /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "cold/run.sh: $tool is missing (apt-get install lxc gnupg openssl wget xz-utils time)" >&2; exit 1; }
done
DAVIT_BIN=$(readlink -f "${DAVIT:-$repo/target/release/davit}")
[ -x "$DAVIT_BIN" ] || { echo "cold/run.sh: no davit at $DAVIT_BIN (cargo build --release --workspace --bins)" >&2; exit 1; }
debian_cache=${DAVIT_DEBIAN_CACHE:-${DAVIT_TEST_CACHE:-/var/cache/davit-test}/debian}
# shellcheck disable=SC2012
DEBIAN_TARBALL=${DEBIAN_TARBALL:-$(ls -t "$debian_cache"/debian-bookworm-amd64-*.tar 2>/dev/null | head -1 || true)}
[ -s "$DEBIAN_TARBALL" ] || { echo "cold/run.sh: no Debian tarball; images/debian/build.sh --cache $debian_cache --tarball-only /dev/null" >&2; exit 1; }
export DAVIT_BIN DEBIAN_TARBALL
work=$(mktemp -d /var/tmp/davit-coldbench.XXXXXX)
chmod 755 "$work"
export CGROUP_PREFIX=davit-coldbench-$$
cleanup() {
  set +e
  if [ -s "$work/serve.pid" ]; then kill "$(cat "$work/serve.pid")" 2>/dev/null; fi
  [ -d "$work/gnupg" ] && GNUPGHOME=$work/gnupg gpgconf --kill all >/dev/null 2>&1
  rmdir /sys/fs/cgroup/*/"$CGROUP_PREFIX" /sys/fs/cgroup/*/lxc.pivot 2>/dev/null
  if grep -q " $work" /proc/self/mountinfo; then echo "cold/run.sh: mounts left under $work" >&2; else rm -rf --one-file-system "$work"; fi
}
trap cleanup EXIT
printf 'root:1000000:65536\n' >"$work/subid"
started=$(date -u +%Y-%m-%dT%H:%MZ)
unshare -m --propagation private bash "$0" --inner "$work" "$n"

median() { sort -n "$1" | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
ms() { awk -v u="$1" 'BEGIN {printf "%.0f ms", u/1000}'; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB", k/1024}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
f=$(median "$work/fetch.us") w=$(median "$work/wget.us") d=$(median "$work/dir.us")
o=$(median "$work/overlay.us") l=$(median "$work/lxc.us")
echo "cold benchmark, $started, $(nproc) CPUs, $(uname -r), N=$n, interleaved; $(basename "$DEBIAN_TARBALL") ($(du -m "$DEBIAN_TARBALL" | cut -f1) MiB tar, $(du -m "$work"/tree/images/debian/bookworm/amd64/default/*/rootfs.tar.xz 2>/dev/null | cut -f1 | head -1) MiB xz)"
echo "requests of one cold davit fetch: $(cat "$work/requests") ($(cat "$work/404s") answered 404)"
echo
echo "| work | anchor | davit | ratio | davit peak RSS |"
echo "|---|---|---|---|---|"
echo "| cold fetch | wget of the same URLs $(ms "$w") | $(ms "$f") | $(ratio "$f" "$w") | $(mib "$(median "$work/fetch.rss")") |"
echo "| cold create --storage dir | lxc-create -t download, cold $(ms "$l") | $(ms "$d") | $(ratio "$d" "$l") | $(mib "$(median "$work/dir.rss")") |"
echo "| cold create --storage overlay (makes the base) | same | $(ms "$o") | $(ratio "$o" "$l") | $(mib "$(median "$work/overlay.rss")") |"
# shellcheck source=../lib/summary.sh
. "$(dirname "$0")/../lib/summary.sh"
summary_row "cold fetch of Debian (HTTPS, verified)" "wget $(ms "$w")" "$(ms "$f")" "$(ratio "$f" "$w")" "<= 1.5"
summary_row "cold \`create --storage dir\`, GPG on" "lxc-create -t download, cold $(ms "$l")" "$(ms "$d")" "$(ratio "$d" "$l")" "<= 0.5"
summary_row "cold \`create\`, overlay (makes the base)" "same" "$(ms "$o")" "$(ratio "$o" "$l")" "<= 0.5"
peak=$(cat "$work/dir.rss" "$work/overlay.rss" | sort -n | tail -1)
summary_row "peak RSS of a cold create (the larger of both, every run)" "64 MiB (the goal)" "$(mib "$peak")" "$(awk -v k="$peak" 'BEGIN {printf "%.2f", k/1024/64}')" "<= 1.0"
for k in fetch wget dir overlay lxc; do echo "raw $k (µs): $(tr '\n' ' ' <"$work/$k.us")"; done
