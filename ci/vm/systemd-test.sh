#!/bin/sh
# Runs in the VM lane's systemd guest (ci/vm/systemd-guest.sh) as a oneshot
# unit, as root, and reports on the serial console with the lane's protocol
# (DAVIT-VM-RESULT/LOG/INFO/DONE, see ci/vm/init.sh). The plain user
# `tester` runs `davit start -d` of the Debian image directly, from this
# system unit's cgroup (no wrapper, no delegation of its own): davit asks
# tester's systemd manager for a transient scope with Delegate=yes. Then
# systemd inside must reach `running`, a memory limit must hold, attach
# must work, and the scope must be gone after stop.
passed=0
failed=0
result() { # name PASS|FAIL detail...
    n=$1 r=$2
    shift 2
    echo "DAVIT-VM-RESULT systemd:$n $r $*"
    if [ "$r" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}
log() { # name file
    tail -n 40 "$2" | while IFS= read -r l; do echo "DAVIT-VM-LOG systemd:$1 $l"; done
}
finish() {
    echo "DAVIT-VM-DONE passed=$passed failed=$failed"
    sync
    systemctl poweroff --force --force
    sleep 30
}
as_tester() {
    setpriv --reuid=1000 --regid=1000 --init-groups \
        env -i HOME=/home/tester PATH=/usr/local/bin:/usr/bin:/bin \
        XDG_RUNTIME_DIR=/run/user/1000 "$@"
}
t0=$(date +%s)
echo "DAVIT-VM-INFO systemd guest: $(systemctl is-system-running) after $(cut -d' ' -f1 /proc/uptime)s; cgroup: $(stat -fc %T /sys/fs/cgroup)"
i=0
until systemctl is-active -q user@1000.service && [ -S /run/user/1000/bus ]; do
    i=$((i + 1))
    if [ "$i" -gt 120 ]; then
        result user-manager FAIL "user@1000.service or its bus did not come up in 120 s"
        systemctl status user@1000.service --no-pager >/tmp/um 2>&1
        log user-manager /tmp/um
        finish
    fi
    sleep 1
done
result user-manager PASS "user@1000.service and /run/user/1000/bus up"
echo "DAVIT-VM-INFO the test runs in $(cat /proc/self/cgroup)"

s=$(date +%s)
if as_tester davit create deb debian 1 amd64 --network none --storage dir \
    --server file:///srv/tree --keyring /srv/key.asc >/tmp/create 2>&1; then
    result create PASS "$(($(date +%s) - s))s"
else
    result create FAIL "exit $?"
    log create /tmp/create
    finish
fi

s=$(date +%s)
if as_tester davit start -d deb --memory 256M --pids 256 >/tmp/start 2>&1 \
    && ! grep -q warning /tmp/start; then
    result start PASS "$(($(date +%s) - s))s, no warning"
else
    result start FAIL "start failed or warned"
    log start /tmp/start
    finish
fi
as_tester davit info deb --json >/tmp/info 2>&1
pid=$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' /tmp/info | head -1)
# Init's own cgroup: the container's leaf, or systemd's init.scope below it
# once it has moved itself there.
initcg=$(sed -n 's/^0:://p' "/proc/$pid/cgroup" 2>/dev/null)
cg=${initcg%/init.scope}
case "$cg" in
    /user.slice/user-1000.slice/user@1000.service/*/davit-deb-*.scope/davit/deb)
        result in-scope PASS "$initcg" ;;
    *) result in-scope FAIL "init's cgroup is '$initcg'"; log in-scope /tmp/info ;;
esac
scope=$(echo "$cg" | sed -n 's|.*/\(davit-deb-[0-9]*\.scope\)/.*|\1|p')
d=/sys/fs/cgroup$cg
if [ "$(cat "$d/memory.max" 2>/dev/null)" = 268435456 ] && [ "$(cat "$d/pids.max" 2>/dev/null)" = 256 ]; then
    result limits PASS "memory.max 268435456, pids.max 256"
else
    result limits FAIL "memory.max '$(cat "$d/memory.max" 2>&1)', pids.max '$(cat "$d/pids.max" 2>&1)'"
fi
if [ "$(stat -c %u "$d")" = 200000 ] && [ "$(stat -c %u "$d/cgroup.procs")" = 200000 ]; then
    result handed-over PASS "the leaf is container root's (200000)"
else
    result handed-over FAIL "owner $(stat -c %u "$d") / $(stat -c %u "$d/cgroup.procs")"
fi

s=$(date +%s)
# `start -d` returns once init has exec'd; under TCG systemd may not have
# made its private bus yet, and systemctl fails at once without it. Wait
# for the socket first (an attach that fails here is logged below).
i=0
until as_tester davit attach deb -- test -S /run/systemd/private 2>>/tmp/attach; do
    i=$((i + 1))
    [ "$i" -gt 60 ] && break
    sleep 1
done
state=$(as_tester davit attach deb -- systemctl is-system-running --wait 2>>/tmp/attach)
rc=$?
if [ "$state" = running ]; then
    result systemd-running PASS "$(($(date +%s) - s))s after start returned"
else
    result systemd-running FAIL "is-system-running: '$state' (attach exit $rc)"
    as_tester davit attach deb -- systemctl --failed --no-pager >>/tmp/attach 2>&1
    # Attach's own errors first, then the boot as the console saw it.
    log systemd-running /tmp/attach
    as_tester davit console deb --log >/tmp/console 2>&1
    log systemd-console /tmp/console
fi
if [ -d "$d/init.scope" ]; then
    result systemd-cgroups PASS "systemd made $cg/init.scope"
else
    result systemd-cgroups FAIL "no init.scope below $cg: $(ls "$d" | tr '\n' ' ')"
fi
mem=$(sed -n 's/.*"memory_bytes": *\([0-9]*\).*/\1/p' /tmp/info | head -1)
if [ "${mem:-0}" -gt 1048576 ]; then
    result info-memory PASS "memory_bytes $mem"
else
    result info-memory FAIL "memory_bytes '$mem'"
    log info-memory /tmp/info
fi

# 300 MiB inside a 256 MiB limit: the allocation is killed, the container lives.
out=$(as_tester davit attach deb -- sh -c 'dd if=/dev/zero of=/dev/null bs=300M count=1 2>&1; echo rc=$?' 2>&1)
st2=$(as_tester davit info deb --json 2>&1 | sed -n 's/.*"state": *"\([A-Z]*\)".*/\1/p')
if echo "$out" | grep -q 'rc=137' && [ "$st2" = RUNNING ] && grep -q '^oom_kill [1-9]' "$d/memory.events"; then
    result oom PASS "killed inside at 256M, container RUNNING, $(grep '^oom_kill ' "$d/memory.events")"
else
    result oom FAIL "attach said '$(echo "$out" | tr '\n' ' ')', state '$st2', $(tr '\n' ' ' <"$d/memory.events")"
fi

s=$(date +%s)
if as_tester davit stop deb -t 60 >/tmp/stop 2>&1; then
    result stop PASS "$(($(date +%s) - s))s"
else
    result stop FAIL "exit $?"
    log stop /tmp/stop
fi
gone=1
for _ in $(seq 50); do
    gone=1
    [ -n "$(find /sys/fs/cgroup -name "$scope" -type d 2>/dev/null)" ] && gone=0
    as_tester env DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/1000/bus \
        systemctl --user list-units --all --no-legend "$scope" 2>/dev/null | grep -q . && gone=0
    [ "$gone" = 1 ] && break
    sleep 0.2
done
if [ -n "$scope" ] && [ "$gone" = 1 ]; then
    result scope-gone PASS "$scope gone from systemd and /sys/fs/cgroup"
else
    result scope-gone FAIL "scope '$scope' still there"
fi
left=$(ps -u 200000 -o pid= 2>/dev/null | tr -d ' \n')
if [ -z "$left" ]; then
    result no-processes PASS "none of the container's ids left"
else
    result no-processes FAIL "left: $left"
fi
echo "DAVIT-VM-INFO systemd guest tests took $(($(date +%s) - t0))s"
finish
