#!/bin/bash
# What a plain user's cgroups cost at start (issue 15): `davit start NAME --
# /bin/true` of busybox as a plain user, without cgroups (no grant) and
# with the admin's grant (the monitor goes through the setuid davit-cgroup,
# makes its cgroups in all hierarchies and hands the leaf to container root
# from a helper user namespace), interleaved, medians of N.
#
#   sudo bench/start/plain-user.sh [N]        (default 30; run as root)
#
# It makes the user davit-bench (subordinate ids 3100000-3165535) if
# missing, a busybox image signed with a throwaway key, and the grant in a
# private mount namespace (the host's /etc/davit is never written). It uses
# target/release/davit, davit-monitor and davit-cgroup (cargo build
# --release --workspace --bins).
set -euo pipefail
n=${1:-30}
repo=$(cd "$(dirname "$0")/../.." && pwd)
rel=$repo/target/release
for b in davit davit-monitor davit-cgroup; do
    [ -x "$rel/$b" ] || { echo "build first: cargo build --release --workspace --bins" >&2; exit 2; }
done
user=davit-bench
id "$user" >/dev/null 2>&1 || useradd -r -M -s /usr/sbin/nologin "$user"
grep -q "^$user:" /etc/subuid || echo "$user:3100000:65536" >>/etc/subuid
grep -q "^$user:" /etc/subgid || echo "$user:3100000:65536" >>/etc/subgid
uid=$(id -u "$user")
t=$(mktemp -d /tmp/davit-bench-pu.XXXXXX)
chmod 755 "$t"
cleanup() {
    for m in $(awk '$9 ~ /^cgroup2?$/ {print $5}' /proc/self/mountinfo); do
        [ -d "$m/user/$user" ] || continue
        find "$m/user/$user" -depth -mindepth 1 -type d -exec rmdir {} + 2>/dev/null || true
        rmdir "$m/user/$user" "$m/user" 2>/dev/null || true
    done
    rm -rf "$t"
}
trap cleanup EXIT
export GNUPGHOME=$t/gnupg
mkdir -m 700 "$GNUPGHOME"
gpg --batch --passphrase '' --quick-gen-key "bench <bench@davit.invalid>" ed25519 sign never 2>/dev/null
fpr=$(gpg --list-secret-keys --with-colons | awk -F: '/^fpr/{print $10; exit}')
gpg --export --armor "$fpr" >"$t/key.asc"
DAVIT=$rel/davit "$repo/images/busybox/build.sh" --to "$t/tree" --key "$fpr" --gnupg-home "$GNUPGHOME" >/dev/null
gpgconf --kill all 2>/dev/null || true
mkdir -p "$t/etc" "$t/home"/{cache,config,data,run}
chown -R "$uid" "$t/home"
chmod -R a+rX "$t/tree" "$t/key.asc"
echo "$user" >"$t/etc/cgroups"
install -o root -g root -m 4755 "$rel/davit-cgroup" "$t/davit-cgroup"
mkdir -p /etc/davit
as_user() { # grants-dir, davit args...
    local etc=$1
    shift
    unshare -m --propagation private -- sh -c 'mount --bind "$0" /etc/davit && exec "$@"' "$etc" \
        setpriv --reuid="$uid" --regid="$uid" --clear-groups -- \
        env -i PATH=/usr/bin:/bin HOME="$t/home" XDG_CACHE_HOME="$t/home/cache" \
        XDG_CONFIG_HOME="$t/home/config" XDG_DATA_HOME="$t/home/data" XDG_RUNTIME_DIR="$t/home/run" \
        DAVIT_CGROUP_HELPER="$t/davit-cgroup" "$rel/davit" "$@"
}
mkdir -p "$t/none"
as_user "$t/none" create b1 busybox 1.36 amd64 --network none --storage dir \
    --server "file://$t/tree" --keyring "$t/key.asc" >/dev/null
ms() { # grants-dir
    local s e
    s=$(date +%s%N)
    as_user "$1" start b1 -- /bin/true >/dev/null 2>&1
    e=$(date +%s%N)
    echo $(((e - s) / 1000))
}
: >"$t/a"
: >"$t/b"
for _ in $(seq "$n"); do
    ms "$t/none" >>"$t/a"
    ms "$t/etc" >>"$t/b"
done
med() { sort -n "$1" | awk '{v[NR]=$1} END {m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2; printf "%.1f", m / 1000}'; }
a=$(med "$t/a")
b=$(med "$t/b")
echo "plain user, start -- /bin/true, medians of $n, interleaved:"
echo "  no cgroups (no grant):              $a ms"
echo "  own cgroups (grant, davit-cgroup):  $b ms"
echo "  ratio: $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", b / a}')"
