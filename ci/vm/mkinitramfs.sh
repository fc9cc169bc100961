#!/bin/bash
# Build the VM lane's initramfs (an uncompressed newc cpio).
#   mkinitramfs.sh OUT.cpio KERNEL_DIR DRIVER DAVIT TEST_BINARY...
# KERNEL_DIR is what fetch.sh unpacked (vmlinuz, config, modules/). The
# archive holds: static busybox (+ applet links), the test binaries (as
# /davit/deps/NAME, cargo's hash dropped), the example driver (as
# /davit/examples/driver, where the tests look for it) and the davit CLI
# (with ci/vm/cli.sh) with the shared libraries ldd finds, util-linux's
# setpriv, newuidmap/newgidmap (setuid root), the llc/stp/bridge/veth/overlay
# modules, /etc/{passwd,group,subuid,subgid}, two busybox container rootfs
# trees (owned by 100000 for root's containers, 200000 for the user's), and
# ci/vm/init.sh as /init.
set -euo pipefail
out=$1 kdir=$2 driver=$3 davit=$4
shift 4
here=$(cd "$(dirname "$0")" && pwd)
st=$(mktemp -d "${TMPDIR:-/tmp}/davit-vm-initramfs.XXXXXX")
trap 'rm -rf "$st"' EXIT

mkdir -p "$st"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,root,modules,davit,vm,home/user}
chmod 1777 "$st/tmp"
chmod 0700 "$st/root"

# busybox, statically linked, and its applets.
cp /bin/busybox "$st/bin/busybox"
for a in $(/bin/busybox --list); do
    [ "$a" = busybox ] || ln -sf busybox "$st/bin/$a"
done

# A binary and the libraries it needs (ld.so included), at their own paths.
copy_with_libs() { # src dst [strip]
    local src=$1 dst=$2
    mkdir -p "$(dirname "$st$dst")"
    if [ "${3:-}" = strip ] && command -v strip >/dev/null; then
        strip --strip-debug -o "$st$dst" "$src"
    else
        cp -L "$src" "$st$dst"
    fi
    ldd "$src" | awk '/=> \// {print $3} /^\t\// {print $1}' | while read -r lib; do
        if [ ! -e "$st$lib" ]; then
            mkdir -p "$(dirname "$st$lib")"
            cp -L "$lib" "$st$lib"
        fi
    done
}
for t in "$@"; do
    name=$(basename "$t")
    copy_with_libs "$t" "/davit/deps/${name%-*}" strip
done
copy_with_libs "$driver" /davit/examples/driver strip
copy_with_libs "$davit" /davit/davit strip
install -m 0755 "$here/cli.sh" "$st/bin/davit-cli-test"
rm -f "$st/bin/setpriv" # busybox's has no --reuid
copy_with_libs "$(command -v setpriv)" /usr/bin/setpriv
for t in newuidmap newgidmap; do
    copy_with_libs "$(command -v $t)" /usr/bin/$t
    chown root:root "$st/usr/bin/$t"
    chmod 4755 "$st/usr/bin/$t"
done

# Kernel modules (plain .ko in Debian 12; decompress if a kernel ships .ko.xz).
for m in llc stp bridge veth overlay; do
    f=$(find "$kdir/modules" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" | head -1)
    case "$f" in
        "") ;;
        *.xz) xz -dc "$f" >"$st/modules/$m.ko" ;;
        *.zst) zstd -qdc "$f" >"$st/modules/$m.ko" ;;
        *) cp "$f" "$st/modules/$m.ko" ;;
    esac
done

cat >"$st/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:plain user:/home/user:/bin/sh
P
cat >"$st/etc/group" <<'G'
root:x:0:
tty:x:5:
user:x:1000:
G
printf 'root:100000:65536\nuser:200000:65536\n' >"$st/etc/subuid"
cp "$st/etc/subuid" "$st/etc/subgid"
chown 1000:1000 "$st/home/user"

# Container rootfs trees: busybox, owned by the first id of each map.
mkrootfs() { # dir owner
    local r=$1
    mkdir -p "$r"/{bin,sbin,etc,proc,sys,dev,tmp,root,test}
    chmod 1777 "$r/tmp"
    cp /bin/busybox "$r/bin/busybox"
    for a in $(/bin/busybox --list); do
        [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"
    done
    ln -sf /bin/busybox "$r/sbin/init"
    echo "root:x:0:0:root:/root:/bin/sh" >"$r/etc/passwd"
    printf 'root:x:0:\ntty:x:5:\n' >"$r/etc/group"
    printf '%s\n' "x=\$(head -c 200000000 /dev/zero | tr '\\0' a)" "echo survived" >"$r/test/eat.sh"
    chown -R -h "$2:$2" "$r"
}
mkrootfs "$st/vm/rootfs-root" 100000
mkrootfs "$st/vm/rootfs-user" 200000

install -m 0755 "$here/init.sh" "$st/init"
install -m 0755 "$here/as-user.sh" "$st/bin/as-user"

(cd "$st" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet) >"$out"
