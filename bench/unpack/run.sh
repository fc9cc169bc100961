#!/bin/bash
# Benchmark: davit unpack vs GNU tar on a Debian bookworm rootfs
# (minbase + systemd-sysv, published as multi-block `xz -T0 -6`).
#
#   sudo bench/unpack/run.sh            # RUNS=5 WORK=/var/tmp/davit-bench
#
# Times (median of RUNS) and peak RSS (/usr/bin/time %M, which includes
# waited-for children such as tar's xz and davit's userns child):
#   root:       davit unpack --map b:0:1000000:65536    vs  tar --numeric-owner -xpJf
#   plain user: davit unpack (in a newuidmap'd userns)   vs  lxc-usernsexec -m u:… -m g:… -- tar -xpJf
# each to a fresh dir on disk and on tmpfs. Needs root (creates the
# `davit-test` user and its /etc/subuid+subgid lines if missing, mounts and
# unmounts a tmpfs), mmdebstrap, lxc (lxc-usernsexec), time.
# DAVIT_UNPACK overrides the davit binary (default: a release build of
# the davit CLI from this repo).
set -euo pipefail

RUNS=${RUNS:-5}
WORK=${WORK:-/var/tmp/davit-bench}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
USER_NAME=davit-test

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
mkdir -p "$WORK"
chmod 755 "$WORK"
cd "$WORK"

if [ ! -s rootfs.tar.xz ]; then
    mmdebstrap --variant=minbase --include=systemd-sysv bookworm rootfs.tar http://deb.debian.org/debian
    xz -T0 -6 -f rootfs.tar
fi
chmod 644 rootfs.tar.xz
# Device nodes cannot be made in a user namespace: exclude them from the
# unprivileged GNU tar run, as LXC's excludes-user does (davit skips them by
# type and reports them).
[ -s dev-excludes ] || tar -tvJf rootfs.tar.xz | awk '$1 ~ /^[cb]/ {print $6}' >dev-excludes
chmod 644 dev-excludes
BLOCKS=$(xz --robot -lvv rootfs.tar.xz | awk '$1=="block"' | wc -l)
XZ_MB=$(du -m rootfs.tar.xz | cut -f1)
TAR_MB=$(xz --robot -l rootfs.tar.xz | awk '$1=="totals"{printf "%d", $5/1048576}')

if [ -z "${DAVIT_UNPACK:-}" ]; then
    (cd "$REPO" && cargo build -q --release --bin davit)
    DAVIT_UNPACK=${CARGO_TARGET_DIR:-$REPO/target}/release/davit
fi
BIN=$WORK/davit
install -m 755 "$DAVIT_UNPACK" "$BIN"

# The plain user and its subordinate ranges (appended, never rewritten).
id -u "$USER_NAME" >/dev/null 2>&1 || useradd --no-create-home --shell /usr/sbin/nologin --user-group "$USER_NAME"
subid() { # file -> start
    local f=$1 s
    s=$(awk -F: -v u="$USER_NAME" '$1==u && $3>=65536 {print $2; exit}' "$f" 2>/dev/null || true)
    if [ -z "$s" ]; then
        s=$(awk -F: 'NF==3 {e=$2+$3; if (e>m) m=e} END {m = m < 2000000 ? 2000000 : m; print int((m+65535)/65536)*65536}' "$f" 2>/dev/null || echo 2000000)
        echo "$USER_NAME:$s:65536" >>"$f"
    fi
    echo "$s"
}
SUBU=$(subid /etc/subuid)
SUBG=$(subid /etc/subgid)
UU=$(id -u "$USER_NAME"); UG=$(id -g "$USER_NAME")
AS_USER=(setpriv --reuid="$UU" --regid="$UG" --init-groups --)

TMPFS=$WORK/tmpfs
mkdir -p "$TMPFS" "$WORK/disk"
if compgen -G "$WORK/disk/d.*" >/dev/null; then
    rm -rf "$WORK/disk"/d.*
    sync
    sleep 40 # let ext4 forget the freed inodes (see fresh below)
fi
mount -t tmpfs -o size=12g,mode=755 davit-bench "$TMPFS"
cleanup() { umount "$TMPFS" 2>/dev/null || true; rm -rf "$WORK"/disk/d.*; }
trap cleanup EXIT

RESULTS=$WORK/results.txt
: >"$RESULTS"

# fresh DIR OWNER: an empty destination owned by OWNER (uid:gid).
# Every run gets a new directory and nothing is deleted until the end: on
# ext4, inodes freed in the last ~30 s make inode allocation scan
# (`recently_deleted()` dominated a profile of rm-then-unpack loops), which
# would add the same large kernel cost to both tools.
fresh() { mkdir "$1"; chown "$2" "$1"; chmod 755 "$1"; sync; }

# measure LABEL FS OWNER CMD...: one timed run (@DEST@ is replaced by a
# fresh destination), appends "LABEL FS secs kib".
measure() {
    local label=$1 fs=$2 owner=$3; shift 3
    local dir=$WORK/disk/d.$label.$run
    [ "$fs" = tmpfs ] && dir=$TMPFS/d.$label.$run
    fresh "$dir" "$owner"
    local args=()
    for a in "$@"; do args+=("${a//@DEST@/$dir}"); done
    if ! /usr/bin/time -o "$WORK/time.out" -f "%e %M" "${args[@]}" >"$WORK/cmd.out" 2>"$WORK/cmd.err"; then
        echo "FAILED: $label $fs: ${args[*]}" >&2
        cat "$WORK/cmd.err" >&2
        exit 1
    fi
    # Other tenants of the machine (e.g. a TCG qemu of another test suite)
    # steal a CPU; record how many other busy processes there were.
    local busy
    busy=$(ps -eo pcpu=,pid= | awk -v me=$$ '$1 > 20 && $2 != me' | wc -l)
    echo "$label $fs $(tail -1 "$WORK/time.out") $busy" >>"$RESULTS"
}

for run in $(seq 1 "$RUNS"); do
    for fs in disk tmpfs; do
        measure davit-root "$fs" 0:0 "$BIN" unpack --map b:0:1000000:65536 rootfs.tar.xz @DEST@
        measure tar-root "$fs" 0:0 tar --numeric-owner -xpJf rootfs.tar.xz -C @DEST@
        measure davit-user "$fs" "$UU:$UG" "${AS_USER[@]}" "$BIN" unpack --map "u:0:$SUBU:65536" --map "g:0:$SUBG:65536" rootfs.tar.xz @DEST@
        measure tar-user "$fs" "$SUBU:$SUBG" "${AS_USER[@]}" lxc-usernsexec -m "u:0:$SUBU:65536" -m "g:0:$SUBG:65536" -- tar -X dev-excludes -xpJf rootfs.tar.xz -C @DEST@
    done
done

# Summary: median seconds, max RSS, ratios.
python3 - "$RESULTS" "$RUNS" "$XZ_MB" "$TAR_MB" "$BLOCKS" "$(nproc)" <<'PY'
import sys, statistics, collections
path, runs, xz, tarmb, blocks, cpus = sys.argv[1:]
t = collections.defaultdict(list); m = collections.defaultdict(int)
busy = 0
for l in open(path):
    label, fs, secs, kib, b = l.split()
    busy += int(b) > 0
    t[(label, fs)].append(float(secs)); m[(label, fs)] = max(m[(label, fs)], int(kib))
print(f"Image: Debian bookworm minbase+systemd-sysv, {xz} MiB xz ({blocks} blocks), {tarmb} MiB tar; {cpus} CPUs; median of {runs} runs.\n")
print("| pair | fs | davit s (median) | GNU tar s (median) | ratio of medians (target ≤ 0.6) | davit s (best) | GNU tar s (best) | ratio of bests | davit peak RSS MiB (target ≤ 64) | tar peak RSS MiB |")
print("|---|---|---|---|---|---|---|---|---|---|")
for mode, tl in (("root", "tar --numeric-owner -xpJf"), ("user", "lxc-usernsexec … tar -xpJf")):
    for fs in ("disk", "tmpfs"):
        d = statistics.median(t[(f"davit-{mode}", fs)]); g = statistics.median(t[(f"tar-{mode}", fs)])
        db = min(t[(f"davit-{mode}", fs)]); gb = min(t[(f"tar-{mode}", fs)])
        print(f"| {mode}: davit vs {tl} | {fs} | {d:.2f} | {g:.2f} | {d/g:.2f} | {db:.2f} | {gb:.2f} | {db/gb:.2f} | {m[(f'davit-{mode}', fs)]/1024:.1f} | {m[(f'tar-{mode}', fs)]/1024:.1f} |")
import os
if os.environ.get("BENCH_SUMMARY"):
    d = statistics.median(t[("davit-root", "disk")]); g = statistics.median(t[("tar-root", "disk")])
    with open(os.environ["BENCH_SUMMARY"], "a") as f:
        f.write(f"| unpack of the Debian rootfs (root, disk) | GNU tar {g:.2f} s | {d:.2f} s | {d/g:.2f} | <= 0.6 | {'yes' if d/g <= 0.6 else 'no'} |\n")
print(f"\n{busy} of {sum(len(v) for v in t.values())} timed runs had another process using >20% CPU when they ended.")
print("\nRaw runs (label fs seconds maxrss-KiB other-busy-processes):\n```")
print(open(path).read().rstrip())
print("```")
PY
