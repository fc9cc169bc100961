#!/usr/bin/env bash
# Make the Debian rootfs the benchmarks use: images/debian/build.sh (reusing
# its cache, $DAVIT_DEBIAN_CACHE or $DAVIT_TEST_CACHE/debian like the systemd
# test, default /var/cache/davit-test/debian), then
# shift every owner by 100000 as `davit create` will (setuid bits kept).
#
#   bench/start/prepare-rootfs.sh DIR
set -euo pipefail
dir=${1:?usage: prepare-rootfs.sh DIR}
[ ! -e "$dir" ] || { echo "prepare-rootfs.sh: $dir exists" >&2; exit 1; }
here=$(dirname "$(readlink -f "$0")")
"$here/../../images/debian/build.sh" --cache "${DAVIT_DEBIAN_CACHE:-${DAVIT_TEST_CACHE:-/var/cache/davit-test}/debian}" --rootfs-only "$dir"
python3 - "$dir" 100000 <<'PY'
import os, sys
root, off = sys.argv[1], int(sys.argv[2])
os.lchown(root, os.lstat(root).st_uid + off, os.lstat(root).st_gid + off)
for d, dirs, files in os.walk(root):
    for n in [os.path.join(d, x) for x in dirs + files]:
        st = os.lstat(n)
        os.lchown(n, st.st_uid + off, st.st_gid + off)
        if not os.path.islink(n) and st.st_mode & 0o6000:
            os.chmod(n, st.st_mode & 0o7777)
PY
