#!/usr/bin/env bash
# Boot-to-running and stop times of the Debian image with systemd as init,
# davit (the run crate's `ctl` example) against LXC, medians of N (default 10).
#
#   bench/start/systemd-boot.sh ROOTFS [N]
#
# ROOTFS is the Debian rootfs (images/debian/build.sh) owned by the shifted
# ids 100000-165535. Both runtimes use it in turn with the same map.
# "running" is timed from just before `start -d` until an attach of
# `systemctl is-system-running --wait` prints running or degraded (the attach
# is retried while systemd's private bus socket does not exist yet); "stop"
# from just before the stop command until it returns. Needs root.
# CTL names the ctl binary (default: this repo's release build of it,
# `cargo build --release -p davit-run --example ctl`).
set -euo pipefail

rootfs=$(readlink -f "${1:?usage: systemd-boot.sh ROOTFS [N]}")
n=${2:-10}
ctl=${CTL:-$(cd "$(dirname "$0")/../.." && pwd)/target/release/examples/ctl}
[ "$(id -u)" = 0 ] || { echo "systemd-boot.sh: run as root" >&2; exit 1; }
[ -x "$ctl" ] || { echo "systemd-boot.sh: build $ctl first (cargo build --release -p davit-run --example ctl)" >&2; exit 1; }

work=$(mktemp -d /tmp/davit-sdboot.XXXXXX)
chmod 755 "$work" # LXC's mapped root must reach lxcpath
name=sdboot$$
prefix=davit-bench-$$
cleanup() {
  "$ctl" stop "$work/run" "$name" -k >/dev/null 2>&1 || true
  lxc-stop -P "$work/lxc" -n "$name" -k >/dev/null 2>&1 || true
  # LXC's monitor leaves an empty lxc.pivot cgroup in each hierarchy.
  rmdir /sys/fs/cgroup/*/lxc.pivot 2>/dev/null || true
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# shellcheck source=../lib/config.sh
. "$(dirname "$0")/../lib/config.sh"
bench_config "$name" "$rootfs" >"$work/config.toml"

wait_running() { # CMD... -> prints the state once running|degraded, fails after 60 s
  local t0 s
  t0=$(now)
  while :; do
    s=$("$@" 2>/dev/null || true)
    case "$s" in running|degraded) echo "$s"; return 0 ;; esac
    if [ "$(echo "$(now) - $t0 > 60" | bc)" = 1 ]; then echo "timeout:$s"; return 1; fi
    sleep 0.01
  done
}

: >"$work/davit.run"; : >"$work/davit.stop"
for _ in $(seq "$n"); do
  t0=$(now)
  # The config's init (/sbin/init, systemd) as pid 1: `-- CMD` would run it
  # under davit's pid-1 shim, where systemd refuses to be init.
  "$ctl" start "$work/config.toml" "$work/run" --prefix "$prefix" -d >/dev/null
  st=$(wait_running "$ctl" attach "$work/run" "$name" -- systemctl is-system-running --wait) \
    || { echo "systemd-boot.sh: davit's container never reached running in 60 s ($st)" >&2; exit 1; }
  t1=$(now)
  out=$("$ctl" stop "$work/run" "$name" -t 60)
  t2=$(now)
  [ "$out" = halted ] || { echo "davit stop: $out (not a clean halt)" >&2; exit 1; }
  echo "$t1 - $t0" | bc >>"$work/davit.run"
  echo "$t2 - $t1" | bc >>"$work/davit.stop"
  echo "davit: $st in $(tail -1 "$work/davit.run") s, stop $(tail -1 "$work/davit.stop") s" >&2
done
if ls -d /sys/fs/cgroup/*/"$prefix" >/dev/null 2>&1; then
  echo "davit left cgroups behind: $(ls -d /sys/fs/cgroup/*/"$prefix")" >&2; exit 1
fi

lxc_run= lxc_stop=
if command -v lxc-start >/dev/null; then
  mkdir -p "$work/lxc/$name"
  # LXC's common.conf without the lxcfs hooks (lxcfs is not running here),
  # as an unprivileged container with the same map and no network.
  cat >"$work/lxc/$name/config" <<EOF
lxc.uts.name = $name
lxc.rootfs.path = dir:$rootfs
lxc.idmap = u 0 100000 65536
lxc.idmap = g 0 100000 65536
lxc.net.0.type = empty
lxc.apparmor.profile = unconfined
lxc.pty.max = 1024
lxc.tty.max = 4
lxc.cap.drop = mac_admin mac_override sys_time sys_module sys_rawio
lxc.mount.auto = cgroup:mixed proc:mixed sys:mixed
lxc.seccomp.profile = /usr/share/lxc/config/common.seccomp
lxc.init.cmd = /sbin/init
EOF
  # LXC maps through newuidmap even as root, which needs root's ranges in
  # /etc/subuid and /etc/subgid: give them through a private bind mount in
  # lxc-start's own mount namespace (the host's files are not changed).
  printf 'root:100000:65536\n' >"$work/subid"
  : >"$work/lxc.run"; : >"$work/lxc.stop"
  for _ in $(seq "$n"); do
    t0=$(now)
    unshare -m --propagation private sh -c 'mount --bind "$1" /etc/subuid && mount --bind "$1" /etc/subgid && exec lxc-start -P "$2" -n "$3" -d' \
      sh "$work/subid" "$work/lxc" "$name"
    st=$(wait_running lxc-attach -P "$work/lxc" -n "$name" -- systemctl is-system-running --wait) \
      || { echo "systemd-boot.sh: LXC's container never reached running in 60 s ($st)" >&2; exit 1; }
    t1=$(now)
    lxc-stop -P "$work/lxc" -n "$name" -t 60
    t2=$(now)
    echo "$t1 - $t0" | bc >>"$work/lxc.run"
    echo "$t2 - $t1" | bc >>"$work/lxc.stop"
    echo "lxc: $st in $(tail -1 "$work/lxc.run") s, stop $(tail -1 "$work/lxc.stop") s" >&2
  done
  lxc_run=$(median <"$work/lxc.run")
  lxc_stop=$(median <"$work/lxc.stop")
fi

echo "| runtime | start to running (median of $n) | stop (median of $n) |"
echo "|---|---|---|"
printf '| davit | %.3f s | %.3f s |\n' "$(median <"$work/davit.run")" "$(median <"$work/davit.stop")"
[ -n "$lxc_run" ] && printf '| LXC %s | %.3f s | %.3f s |\n' "$(lxc-start --version)" "$lxc_run" "$lxc_stop"
if [ -n "$lxc_run" ]; then
  # shellcheck source=../lib/summary.sh
  . "$(dirname "$0")/../lib/summary.sh"
  dr=$(median <"$work/davit.run") ds=$(median <"$work/davit.stop")
  summary_row "systemd to \`running\` (Debian)" "LXC $(printf '%.3f s' "$lxc_run")" "$(printf '%.3f s' "$dr")" "$(awk -v a="$dr" -v b="$lxc_run" 'BEGIN {printf "%.2f", a/b}')" "<= 1.0"
  summary_row "clean stop of it" "LXC $(printf '%.3f s' "$lxc_stop")" "$(printf '%.3f s' "$ds")" "$(awk -v a="$ds" -v b="$lxc_stop" 'BEGIN {printf "%.2f", a/b}')" "<= 1.0"
fi
exit 0
