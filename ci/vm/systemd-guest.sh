#!/bin/bash
# The VM lane's second guest (issue 15): Debian 12 with systemd as PID 1
# on cgroup v2 alone, and a plain user `tester` (uid 1000, subordinate ids
# 200000-265535) whose own systemd manager runs from boot
# (`loginctl enable-linger`, with dbus-user-session).
#
#   systemd-guest.sh OUT.cpio DAVIT DAVIT_MONITOR
#
# The base (mmdebstrap, about 40 s, apt mirror needed) is cached as
# $DAVIT_VM_CACHE/systemd-guest-KEY.tar, KEY a hash of this recipe, built
# once under a lock (scripts/lib/cache.sh). Each run adds davit, the Debian
# image (images/debian/build.sh's cached tarball, published into /srv/tree
# with a throwaway key), ci/vm/systemd-test.sh as a oneshot unit that
# reports on the serial console, and ci/vm/systemd-init.sh as /init, which
# makes the initramfs's own files a bind mount that systemd can run from
# (and containers pivot_root away from).
set -euo pipefail
out=$1 davit=$2 monitor=$3
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${DAVIT_VM_CACHE:?}
# shellcheck source=../../scripts/lib/cache.sh
. "$repo/scripts/lib/cache.sh"

release=bookworm
packages=systemd-sysv,dbus,dbus-user-session,libpam-systemd,uidmap,passwd,mount,procps,libgpgme11,gpg,gpg-agent
mirror=http://deb.debian.org/debian
host_release=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
if [ "$host_release" = "$release" ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
    mirror=/etc/apt/sources.list.d/debian.sources
fi
mirror_id=$mirror
[ -f "$mirror" ] && mirror_id=$(cat "$mirror")
key=$( { sed -n '/^# --- recipe/,/^# --- end/p' "$0"; printf '%s\n' "$release" "$packages" "$mirror_id"; } \
    | sha256sum | cut -c1-16)
base=$cache/systemd-guest-$key.tar

# --- recipe (the cache key covers these lines)
build_base() {
    command -v mmdebstrap >/dev/null || apt-get install -y --no-install-recommends mmdebstrap >&2
    mmdebstrap --mode=root --variant=minbase --format=tar --include="$packages" \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --customize-hook='echo davit-vm-systemd >"$1/etc/hostname"' \
        --customize-hook='chroot "$1" useradd -m -u 1000 -s /bin/sh tester' \
        --customize-hook='echo tester:200000:65536 >"$1/etc/subuid"; echo tester:200000:65536 >"$1/etc/subgid"' \
        --customize-hook='mkdir -p "$1/var/lib/systemd/linger"; touch "$1/var/lib/systemd/linger/tester"' \
        --customize-hook='for u in serial-getty@ttyS0 getty@tty1 systemd-timesyncd apt-daily apt-daily-upgrade; do ln -sf /dev/null "$1/etc/systemd/system/$u.service"; done' \
        --customize-hook='rm -f "$1/etc/machine-id"; : >"$1/etc/machine-id"; rm -rf "$1/var/cache/apt/"*.bin "$1/var/lib/apt/lists/"*' \
        "$release" "$CACHE_TMP" "$mirror" >&2
}
# --- end
cache_build "$base" build_base

st=$(mktemp -d "${TMPDIR:-/tmp}/davit-vm-systemd.XXXXXX")
trap 'rm -rf --one-file-system "$st"' EXIT
mkdir "$st/root"
tar -C "$st/root" -xf "$base"
r=$st/root

# davit (debug symbols dropped: the initramfs lives in the guest's memory).
strip --strip-debug -o "$r/usr/local/bin/davit" "$davit"
strip --strip-debug -o "$r/usr/local/bin/davit-monitor" "$monitor"

# The Debian image, signed with a throwaway key, served from file://.
export GNUPGHOME=$st/gnupg
mkdir -m 700 "$GNUPGHOME"
gpg --batch --passphrase '' --quick-gen-key "davit vm <vm@davit.invalid>" ed25519 sign never 2>/dev/null
fpr=$(gpg --list-secret-keys --with-colons | awk -F: '/^fpr/{print $10; exit}')
mkdir -p "$r/srv"
gpg --export --armor "$fpr" >"$r/srv/key.asc"
bash "$repo/images/debian/build.sh" --cache "${DAVIT_DEBIAN_CACHE:-${DAVIT_TEST_CACHE:-/var/cache/davit-test}/debian}" \
    --tarball-only "$st/debian.tar" >&2
"$davit" publish "$st/debian.tar" --dist debian --release 1 --arch amd64 --key "$fpr" \
    --gnupg-home "$GNUPGHOME" --to "$r/srv/tree" --xz-preset 0 >/dev/null
rm -f "$st/debian.tar"
gpgconf --kill all 2>/dev/null || true
chmod -R a+rX "$r/srv"

# The test, as a oneshot unit once the system is up.
install -m 0755 "$here/systemd-test.sh" "$r/usr/local/sbin/davit-vm-systemd-test"
cat >"$r/etc/systemd/system/davit-vm-test.service" <<'U'
[Unit]
Description=davit VM lane: a plain user's systemd scope
After=multi-user.target systemd-user-sessions.service user@1000.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/davit-vm-systemd-test
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0

[Install]
WantedBy=multi-user.target
U
ln -sf /etc/systemd/system/davit-vm-test.service "$r/etc/systemd/system/multi-user.target.wants/davit-vm-test.service"
install -m 0755 "$here/systemd-init.sh" "$r/init"

(cd "$r" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet) >"$out"
