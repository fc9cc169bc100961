#!/bin/bash
# Fetch what the VM lane needs, without installing the guest kernel on the
# host:
#   - Debian's linux-image-amd64 (bookworm: 6.1), `apt-get download`ed and
#     unpacked with `dpkg-deb -x` into $DAVIT_VM_CACHE/kernel/VERSION;
#   - qemu-system-x86_64: the installed one if there is one, otherwise
#     `apt-get install qemu-system-x86`; when apt refuses that (this machine
#     carries a backported qemu-utils that Breaks bookworm's
#     qemu-system-common), qemu-system-x86, qemu-system-data and seabios are
#     unpacked into $DAVIT_VM_CACHE/qemu-root (with qemu-system-common, whose
#     accel-tcg module TCG needs: QEMU_MODULE_DIR) and only their plain
#     library dependencies are installed (apt-get runs with --no-remove:
#     it never removes or downgrades a package of the host);
#   - cpio, busybox-static, uidmap (newuidmap/newgidmap) and util-linux's
#     setpriv, installed with apt-get.
# The kernel and the unpacked qemu are each built once under a lock
# (scripts/lib/cache.sh), so lanes that start at once from an empty cache
# download them once, and a download killed half way is never taken for a
# finished one.
# Prints shell assignments (KERNEL_DIR=..., QEMU=..., QEMU_DATA=...) on
# stdout for run.sh to eval; everything else goes to stderr.
set -euo pipefail

CACHE=${DAVIT_VM_CACHE:-${DAVIT_TEST_CACHE:-/var/cache/davit-test}/vm}
mkdir -p "$CACHE"
log() { echo "vm-fetch: $*" >&2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../scripts/lib/cache.sh
. "$here/../../scripts/lib/cache.sh"

export DEBIAN_FRONTEND=noninteractive
apt_updated=0
apt_update() {
    if [ "$apt_updated" = 0 ]; then
        log "apt-get update"
        apt-get update -qq >&2
        apt_updated=1
    fi
}
apt_install() {
    apt_update
    log "apt-get install $*"
    apt-get install -y -qq --no-install-recommends --no-remove -o DPkg::Lock::Timeout=600 "$@" >&2
}

# Host tools that build the initramfs.
need=()
command -v cpio >/dev/null || need+=(cpio)
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' \
    || need+=(busybox-static)
command -v newuidmap >/dev/null && command -v newgidmap >/dev/null || need+=(uidmap)
command -v setpriv >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
    apt_install "${need[@]}"
fi

# The guest kernel: resolve the meta package to the real image package.
kpkg_file="$CACHE/kernel-package"
if [ -z "${DAVIT_VM_KERNEL_PKG:-}" ]; then
    if [ -s "$kpkg_file" ] && [ -f "$CACHE/kernel/$(cat "$kpkg_file")/vmlinuz" ] \
        && [ "${DAVIT_VM_REFRESH:-0}" != 1 ]; then
        DAVIT_VM_KERNEL_PKG=$(cat "$kpkg_file")
    else
        apt_update
        DAVIT_VM_KERNEL_PKG=$(apt-cache depends linux-image-amd64 \
            | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
        [ -n "$DAVIT_VM_KERNEL_PKG" ] || { log "cannot resolve linux-image-amd64"; exit 1; }
    fi
fi
kdir="$CACHE/kernel/$DAVIT_VM_KERNEL_PKG"
# cache_build's builder: the kernel package unpacked into $CACHE_TMP.
unpack_kernel() {
    # Beside CACHE_TMP: cache_build removes it with CACHE_TMP (and a
    # killed download's is swept by the next build).
    local dl=$CACHE_TMP.dl
    mkdir -p "$dl"
    log "apt-get download $DAVIT_VM_KERNEL_PKG"
    (cd "$dl" && chmod 755 . && apt-get download -q "$DAVIT_VM_KERNEL_PKG" >&2)
    mkdir -p "$dl/x" "$CACHE_TMP"
    dpkg-deb -x "$dl"/*.deb "$dl/x"
    cp "$dl"/x/boot/vmlinuz-* "$CACHE_TMP/vmlinuz"
    cp "$dl"/x/boot/config-* "$CACHE_TMP/config"
    mv "$dl"/x/lib/modules "$CACHE_TMP/modules"
}
if [ ! -f "$kdir/vmlinuz" ]; then
    apt_update
    cache_build "$kdir" unpack_kernel
fi
echo "$DAVIT_VM_KERNEL_PKG" >"$kpkg_file.$$"
mv -f "$kpkg_file.$$" "$kpkg_file"

# qemu. cache_build's builder: the qemu packages unpacked into $CACHE_TMP.
unpack_qemu() {
    local dl=$CACHE_TMP.dl d
    mkdir -p "$dl"
    (cd "$dl" && chmod 755 . \
        && apt-get download -q qemu-system-x86 qemu-system-common qemu-system-data seabios >&2)
    mkdir -p "$CACHE_TMP"
    for d in "$dl"/*.deb; do dpkg-deb -x "$d" "$CACHE_TMP"; done
}
# (qemu-root: the name an unlocked, older fetch never used.)
qroot=$CACHE/qemu-root
qemu="" qemu_data="" qemu_modules=""
if command -v qemu-system-x86_64 >/dev/null; then
    qemu=$(command -v qemu-system-x86_64)
elif [ -x "$qroot/usr/bin/qemu-system-x86_64" ] \
    && [ -f "$qroot/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so" ] \
    && ! ldd "$qroot/usr/bin/qemu-system-x86_64" | grep -q 'not found'; then
    qemu="$qroot/usr/bin/qemu-system-x86_64"
    qemu_data="$qroot/usr/share/qemu:$qroot/usr/share/seabios"
    qemu_modules="$qroot/usr/lib/x86_64-linux-gnu/qemu"
else
    if apt_install qemu-system-x86 2>/dev/null; then
        qemu=$(command -v qemu-system-x86_64)
    else
        log "apt-get install qemu-system-x86 refused (held or conflicting qemu-utils?):"
        log "unpacking qemu-system-x86 into $qroot instead"
        cache_build "$qroot" unpack_qemu
        # Its plain library dependencies install without conflicts.
        libs=$(apt-cache depends qemu-system-x86 \
            | awk '/ Depends: lib/ {print $2}' | sort -u)
        # shellcheck disable=SC2086
        apt_install $libs
        qemu="$qroot/usr/bin/qemu-system-x86_64"
        qemu_data="$qroot/usr/share/qemu:$qroot/usr/share/seabios"
        qemu_modules="$qroot/usr/lib/x86_64-linux-gnu/qemu"
        if ldd "$qemu" | grep 'not found' >&2; then
            log "qemu still misses libraries"
            exit 1
        fi
    fi
fi

printf 'KERNEL_PKG=%q\nKERNEL_DIR=%q\nQEMU=%q\nQEMU_DATA=%q\nQEMU_MODULES=%q\n' \
    "$DAVIT_VM_KERNEL_PKG" "$kdir" "$qemu" "$qemu_data" "$qemu_modules"
