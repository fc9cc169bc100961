#!/usr/bin/env bash
# Builds a tiny, working busybox rootfs from the host's busybox-static and
# publishes it as a signed image with `davit publish`.
#
#   images/busybox/build.sh --to TREE --key KEY [--gnupg-home DIR]
#                           [--release R] [--build ID] [--keep N] [--rootfs-only DIR]
#
# DAVIT names the davit binary (default: davit on PATH). As root the rootfs
# holds real device nodes under /dev (listed in excludes-user); as a plain
# user they are left out.
set -euo pipefail

to= key= home= release=1.36 build= keep=3 rootfs_only= extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --to) to=$2; shift 2 ;;
    --key) key=$2; shift 2 ;;
    --gnupg-home) home=$2; shift 2 ;;
    --release) release=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    --rootfs-only) rootfs_only=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

bb=${BUSYBOX:-/bin/busybox}
if ! "$bb" --list >/dev/null 2>&1; then
  echo "build.sh: $bb is not a working busybox; install busybox-static (apt-get install busybox-static)" >&2
  exit 1
fi
if ldd "$bb" >/dev/null 2>&1; then
  echo "build.sh: $bb is dynamically linked; the image needs busybox-static" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
r=${rootfs_only:-$work/rootfs}
mkdir -p "$r"
mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,etc/init.d,dev,proc,sys,tmp,root,run,var/log,home}
chmod 1777 "$r/tmp"
chmod 700 "$r/root"
install -m 0755 "$bb" "$r/bin/busybox"
# One symlink per applet, where busybox itself would put it.
"$bb" --list-full | while read -r applet; do
  [ "$applet" = bin/busybox ] && continue
  mkdir -p "$r/$(dirname "$applet")"
  rel=$(realpath -m --relative-to="$r/$(dirname "$applet")" "$r/bin/busybox")
  ln -sf "$rel" "$r/$applet"
done

cat >"$r/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat >"$r/etc/group" <<'G'
root:x:0:
tty:x:5:
nogroup:x:65534:
G
printf 'root:*::0:::::\n' >"$r/etc/shadow"
chmod 600 "$r/etc/shadow"
echo LXC_NAME >"$r/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tLXC_NAME\n' >"$r/etc/hosts"
cat >"$r/etc/os-release" <<O
NAME="davit busybox"
ID=busybox
VERSION_ID=$release
PRETTY_NAME="davit busybox $release"
O
# busybox init: set the hostname, then idle until told to stop.
cat >"$r/etc/inittab" <<'I'
::sysinit:/etc/init.d/rcS
::shutdown:/bin/sync
I
cat >"$r/etc/init.d/rcS" <<'S'
#!/bin/sh
[ -r /etc/hostname ] && hostname -F /etc/hostname
exit 0
S
chmod 755 "$r/etc/init.d/rcS"

if [ "$(id -u)" = 0 ]; then
  mknod -m 666 "$r/dev/null" c 1 3
  mknod -m 666 "$r/dev/zero" c 1 5
  mknod -m 666 "$r/dev/full" c 1 7
  mknod -m 666 "$r/dev/random" c 1 8
  mknod -m 666 "$r/dev/urandom" c 1 9
  mknod -m 666 "$r/dev/tty" c 5 0
  mknod -m 600 "$r/dev/console" c 5 1
  mknod -m 666 "$r/dev/ptmx" c 5 2
fi

[ -n "$rootfs_only" ] && exit 0
if [ -z "$to" ] || [ -z "$key" ]; then
  echo "build.sh: --to TREE and --key KEY are needed to publish (or use --rootfs-only DIR)" >&2
  exit 2
fi
args=(publish "$r" --dist busybox --release "$release" --to "$to" --key "$key" --keep "$keep")
[ -n "$home" ] && args+=(--gnupg-home "$home")
[ -n "$build" ] && args+=(--build "$build")
printf 'You just created a busybox %s container.\nIt has no package manager; /bin/busybox --list shows the tools.\n' "$release" >"$work/message"
args+=(--create-message "$work/message")
"${DAVIT:-davit}" "${args[@]}" "${extra[@]}"
