#!/usr/bin/env bash
# Every benchmark pair of issue 19 against its anchor, in one command, with
# the anchors set up here on a fresh machine: the packages (crun, lxc,
# mmdebstrap, wget, GNU time), the release build, the Debian image
# (images/debian/build.sh, cached in $DAVIT_TEST_CACHE/debian), its shifted
# rootfs, the signed HTTPS server on 127.0.0.1 (bench/lib/serve.sh).
#
#   sudo bench/all.sh [--quick]
#
# It runs, one after the other (each pair interleaved inside its script):
#   bench/start/run.sh        start -- /bin/true vs crun run and lxc-execute
#   bench/start/storage.sh    the same start of `davit create`'s containers:
#                             overlay, overlay + bridge (root's default), dir
#   bench/start/systemd-boot.sh  systemd to `running` and a clean stop vs LXC
#   bench/many/run.sh         50 parallel start -d, monitor memory, attach vs LXC
#   bench/cold/run.sh         cold fetch vs wget, cold create vs lxc-create, peak RSS
#   bench/create/run.sh       warm overlay create and copy -s vs lxc-copy -s,
#                             and vs a warm lxc-create
#   bench/unpack/run.sh       davit unpack vs GNU tar
# and prints each script's table, then writes them all to
# bench/RESULTS-all.md. --quick uses small counts (a smoke run, minutes);
# the default counts are those of docs/PERFORMANCE.md.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
[ "$(id -u)" = 0 ] || { echo "all.sh: run as root (sudo bench/all.sh)" >&2; exit 1; }
quick=0
[ "${1:-}" = --quick ] && quick=1

# The anchors and tools.
need=()
for p in crun:crun lxc-start:lxc mmdebstrap:mmdebstrap wget:wget /usr/bin/time:time xz:xz-utils openssl:openssl gpg:gnupg; do
  command -v "${p%%:*}" >/dev/null || need+=("${p#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "all.sh: installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# shellcheck disable=SC2046
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(grep -v '^#' scripts/packages.txt) >/dev/null 2>&1 || true
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --workspace --bins -q
# systemd-boot.sh drives davit through the run crate's ctl example.
cargo build --release -p davit-run --example ctl -q
tgt=${CARGO_TARGET_DIR:-$repo/target}
export DAVIT=$tgt/release/davit CTL=$tgt/release/examples/ctl

# The image (cached, under a lock, by build.sh) and its shifted rootfs.
cache=${DAVIT_DEBIAN_CACHE:-${DAVIT_TEST_CACHE:-/var/cache/davit-test}/debian}
mkdir -p "$cache"
DAVIT=$DAVIT images/debian/build.sh --cache "$cache" --tarball-only /dev/null >&2
rootfs=/var/tmp/davit-bench-rootfs
exec 9>"$rootfs.lock"
flock 9
if [ ! -e "$rootfs/.done" ]; then
  rm -rf --one-file-system "$rootfs"
  bench/start/prepare-rootfs.sh "$rootfs" >&2
  touch "$rootfs/.done"
fi

if [ "$quick" = 1 ]; then s=5 b=3 m="10 1 5" c=2 w=3 u=1; else s=30 b=10 m="50 3 30" c=5 w=10 u=5; fi
export DAVIT_DEBIAN_CACHE=$cache
out=$repo/bench/RESULTS-all.md
BENCH_SUMMARY=$(mktemp /tmp/davit-bench-summary.XXXXXX)
export BENCH_SUMMARY
trap 'rm -f "$BENCH_SUMMARY"' EXIT
{
  echo "# bench/all.sh, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $(uname -r), davit $(git rev-parse --short HEAD)"
  echo
  echo "## start -- /bin/true (bench/start/run.sh ROOTFS $s)"
  bench/start/run.sh "$rootfs" "$s"
  echo
  echo "## start by storage and network (bench/start/storage.sh $s)"
  bench/start/storage.sh "$s"
  echo
  echo "## systemd boot and stop (bench/start/systemd-boot.sh ROOTFS $b)"
  bench/start/systemd-boot.sh "$rootfs" "$b"
  echo
  echo "## many containers (bench/many/run.sh ROOTFS $m)"
  # shellcheck disable=SC2086
  bench/many/run.sh "$rootfs" $m
  echo
  echo "## cold fetch and create (bench/cold/run.sh $c)"
  bench/cold/run.sh "$c"
  echo
  echo "## warm create (bench/create/run.sh $w)"
  bench/create/run.sh "$w"
  echo
  echo "## unpack (RUNS=$u bench/unpack/run.sh)"
  RUNS=$u bench/unpack/run.sh
  echo
  echo "## Every goal of issue 19, from the runs above"
  echo
  echo "| work | anchor | davit | ratio | goal | holds |"
  echo "|---|---|---|---|---|---|"
  cat "$BENCH_SUMMARY"
} | tee "$out"
echo "all.sh: written to $out" >&2
