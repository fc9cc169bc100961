#!/usr/bin/env bash
# Builds a Debian rootfs that boots systemd in a davit (or LXC) container and
# publishes it as a signed image with `davit publish`.
# eth0 is configured by DHCP (systemd-networkd, IPv6 router adverts too) and
# names resolve through systemd-resolved, as upstream images do; on a davit
# bridge the bridge's dnsmasq answers (docs/NETWORKING.md).
#
#   images/debian/build.sh --to TREE --key KEY [--gnupg-home DIR]
#                          [--release R] [--arch A] [--build ID] [--keep N]
#                          [--mirror URL|FILE] [--cache DIR]
#                          [--rootfs-only DIR] [--tarball-only FILE]
#
# It must run as root (mmdebstrap --mode=root). It uses mmdebstrap (installed
# with apt-get if missing) through the host's configured apt mirror: by
# default the host's own deb822 sources file when the host runs the same
# release, else http://deb.debian.org/debian.
#
# --cache DIR keeps the built rootfs tarball as
#   DIR/debian-RELEASE-ARCH-KEY.tar
# where KEY is a hash of this recipe, the release, the arch, the package list
# and the mirror. A later run with the same KEY reuses it (no network), so CI
# can cache DIR between runs.
# --rootfs-only DIR unpacks the rootfs (owned by real root, not shifted) into
# DIR and publishes nothing. --tarball-only FILE copies the tarball to FILE.
# DAVIT names the davit binary (default: davit on PATH).
set -euo pipefail

to= key= home= release=bookworm arch= build= keep=3 rootfs_only= tarball_only= cache= mirror= extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --to) to=$2; shift 2 ;;
    --key) key=$2; shift 2 ;;
    --gnupg-home) home=$2; shift 2 ;;
    --release) release=$2; shift 2 ;;
    --arch) arch=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    --cache) cache=$2; shift 2 ;;
    --rootfs-only) rootfs_only=$2; shift 2 ;;
    --tarball-only) tarball_only=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" != 0 ]; then
  echo "build.sh: run as root (mmdebstrap --mode=root needs it)" >&2
  exit 1
fi
if [ -z "$rootfs_only" ] && [ -z "$tarball_only" ] && { [ -z "$to" ] || [ -z "$key" ]; }; then
  echo "build.sh: --to TREE and --key KEY are needed to publish (or use --rootfs-only DIR)" >&2
  exit 2
fi
[ -n "$arch" ] || arch=$(dpkg --print-architecture)

# What goes in beyond minbase: systemd as /sbin/init, dbus so that
# systemd-logind (and with it the whole boot) comes up (without dbus the
# system is "degraded"), and systemd-resolved, which gives the resolver that
# DHCP names (/etc/resolv.conf is its stub). Nothing else.
packages=systemd-sysv,dbus,systemd-resolved

if [ -z "$mirror" ]; then
  host_release=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
  if [ "$host_release" = "$release" ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
    mirror=/etc/apt/sources.list.d/debian.sources
  else
    mirror=http://deb.debian.org/debian
  fi
fi
mirror_id=$mirror
[ -f "$mirror" ] && mirror_id=$(cat "$mirror")

self=$(readlink -f "$0")
cache_key=$( { cat "$self"; printf '%s\n' "$release" "$arch" "$packages" "$mirror_id"; } \
  | sha256sum | cut -c1-16)

work=$(mktemp -d)
cleanup() {
  # A rootfs tree may hold mounts only while mmdebstrap runs; it unmounts them.
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# mmdebstrap writes the rootfs tarball to $CACHE_TMP (cache_build's contract:
# scripts/lib/cache.sh).
build_tarball() {
  if ! command -v mmdebstrap >/dev/null; then
    apt-get update
    apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=600 mmdebstrap
  fi
  local start
  start=$(date +%s)
  # The hooks run outside the chroot with $1 = the rootfs.
  mmdebstrap --mode=root --variant=minbase --arch="$arch" --format=tar \
    --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='echo LXC_NAME >"$1/etc/hostname"' \
    --customize-hook='printf "127.0.0.1\tlocalhost\n127.0.1.1\tLXC_NAME\n::1\tlocalhost ip6-localhost ip6-loopback\n" >"$1/etc/hosts"' \
    --customize-hook='rm -f "$1/etc/machine-id" "$1/var/lib/dbus/machine-id"; : >"$1/etc/machine-id"' \
    --customize-hook='rm -rf "$1/var/cache/apt/"*.bin "$1/var/lib/apt/lists/"*' \
    --customize-hook='printf "[Match]\nName=eth0\n\n[Network]\nDHCP=yes\nIPv6AcceptRA=yes\n" >"$1/etc/systemd/network/eth0.network"' \
    --customize-hook='chroot "$1" systemctl enable systemd-networkd.service systemd-resolved.service' \
    --customize-hook='chroot "$1" systemctl disable systemd-networkd-wait-online.service' \
    --customize-hook='ln -sf ../run/systemd/resolve/stub-resolv.conf "$1/etc/resolv.conf"' \
    "$release" "$CACHE_TMP" "$mirror"
  echo "build.sh: mmdebstrap took $(( $(date +%s) - start )) s" >&2
}

if [ -n "$cache" ]; then
  # Built once under a lock, whoever asks at the same time; a build killed
  # half way leaves nothing that a later run takes for a tarball.
  # shellcheck source=../../scripts/lib/cache.sh
  . "$(dirname "$self")/../../scripts/lib/cache.sh"
  tarball=$cache/debian-$release-$arch-$cache_key.tar
  [ -s "$tarball" ] && echo "build.sh: reusing $tarball" >&2
  cache_build "$tarball" build_tarball
else
  tarball=$work/rootfs.tar
  CACHE_TMP=$tarball build_tarball
fi

if [ -n "$tarball_only" ]; then
  cp "$tarball" "$tarball_only"
fi
if [ -n "$rootfs_only" ]; then
  mkdir -p "$rootfs_only"
  tar --numeric-owner --xattrs --xattrs-include='*' -xpf "$tarball" -C "$rootfs_only"
fi
if [ -n "$rootfs_only" ] || [ -n "$tarball_only" ]; then
  exit 0
fi

args=(publish "$tarball" --dist debian --release "$release" --arch "$arch" --to "$to" --key "$key" --keep "$keep")
[ -n "$home" ] && args+=(--gnupg-home "$home")
[ -n "$build" ] && args+=(--build "$build")
printf 'You just created a Debian %s container with systemd as init.\nStop it with davit stop (systemd halts on SIGRTMIN+3).\n' "$release" >"$work/message"
args+=(--create-message "$work/message")
"${DAVIT:-davit}" "${args[@]}" "${extra[@]}"
