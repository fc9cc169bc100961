#!/bin/sh
# /init of the VM lane's initramfs (ci/vm/mkinitramfs.sh puts it there).
#
# Stage 1 (pid 1 on the initramfs rootfs): the initramfs root cannot be
# pivot_root'ed away from, which every container start does, so copy the
# tree to a tmpfs and switch_root into it. With davit.mode=probe on the
# kernel command line it only says hello and powers off (the KVM probe).
#
# Stage 2: proc/sys/dev, cgroup2 alone at /sys/fs/cgroup with every
# controller enabled, user namespaces on, the modules, a delegated subtree
# for the plain user; then the vm_v2 tests as root and as that user, the
# host suites that hold on v2 as root, and the davit CLI (cli.sh).
#
# Protocol on the serial console, one line each, nothing else starts so:
#   DAVIT-VM-BOOT <kernel release>
#   DAVIT-VM-INFO <free text>
#   DAVIT-VM-RESULT <name> PASS|FAIL <detail>
#   DAVIT-VM-LOG <name> <line>          (the output of a failed test)
#   DAVIT-VM-DONE passed=N failed=M
PATH=/bin:/sbin:/usr/bin:/usr/sbin
export PATH
export DAVIT_VM=1
export DAVIT_VM_DRIVER=/davit/examples/driver

mode="test"
if [ ! -e /.stage2 ]; then
    mount -t proc proc /proc
    case " $(cat /proc/cmdline) " in *" davit.mode=probe "*) mode=probe ;; esac
    echo "DAVIT-VM-BOOT $(uname -r)"
    if [ "$mode" = probe ]; then
        echo "DAVIT-VM-PROBE ok"
        poweroff -f
    fi
    mkdir -p /newroot
    mount -t tmpfs -o mode=0755 tmpfs /newroot
    for e in /* /.[!.]*; do
        [ -e "$e" ] || continue
        case "$e" in
            /proc | /sys | /dev | /newroot) mkdir -p "/newroot$e" ;;
            *) cp -a "$e" /newroot/ ;;
        esac
    done
    touch /newroot/.stage2
    umount /proc
    # shellcheck disable=SC2093 # only reached when switch_root fails
    exec switch_root /newroot /init
    echo "DAVIT-VM-RESULT switch_root FAIL could not switch to the tmpfs root"
    poweroff -f
fi

passed=0
failed=0
result() { # name PASS|FAIL detail...
    n=$1 r=$2
    shift 2
    echo "DAVIT-VM-RESULT $n $r $*"
    if [ "$r" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}
log_tail() { # name file lines
    tail -n "$3" "$2" | while IFS= read -r l; do echo "DAVIT-VM-LOG $1 $l"; done
}
finish() {
    echo "DAVIT-VM-DONE passed=$passed failed=$failed"
    sync
    poweroff -f
    sleep 5
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /tmp /run
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
chmod 1777 /tmp
hostname davit-vm
ip link set lo up 2>/dev/null

# Modules the runner may need (bridge and veth for networking, overlay).
mods=""
for m in llc stp bridge veth overlay; do
    if [ -f "/modules/$m.ko" ]; then
        insmod "/modules/$m.ko" 2>/tmp/insmod.err || grep -q "File exists" /tmp/insmod.err \
            || { result "module-$m" FAIL "$(cat /tmp/insmod.err)"; continue; }
        mods="$mods $m"
    fi
done
echo "DAVIT-VM-INFO modules:$mods"

# cgroup2 alone, every controller on in the root's subtree_control.
if ! mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup; then
    result cgroup2-mount FAIL "mount -t cgroup2 failed"
    finish
fi
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
    echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null \
        || echo "DAVIT-VM-INFO cannot enable $c in the root subtree_control"
done
echo "DAVIT-VM-INFO cgroup2 subtree_control: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
if grep -q ' cgroup ' /proc/self/mounts; then
    result cgroup2-alone FAIL "a cgroup v1 hierarchy is mounted"
fi

# User namespaces on (Debian's knob, then the generic one).
[ -w /proc/sys/kernel/unprivileged_userns_clone ] && echo 1 >/proc/sys/kernel/unprivileged_userns_clone
[ "$(cat /proc/sys/user/max_user_namespaces)" -gt 0 ] || echo 15000 >/proc/sys/user/max_user_namespaces
echo "DAVIT-VM-INFO userns: max_user_namespaces=$(cat /proc/sys/user/max_user_namespaces) unprivileged_userns_clone=$(cat /proc/sys/kernel/unprivileged_userns_clone 2>/dev/null || echo n/a)"

# The plain user's delegated subtree, as systemd's Delegate=yes makes it:
# user-1000 (the delegated base) and user-1000/session (where its shell is,
# a leaf, so that controllers can be enabled in user-1000).
# user-1000-flat: a second delegated cgroup with no leaf, for the test of a
# user sitting in the delegated cgroup itself.
D=/sys/fs/cgroup/user-1000
mkdir -p "$D/session" "$D-flat"
for d in "$D" "$D/session" "$D-flat"; do
    chown 1000:1000 "$d"
    for f in $(cat /sys/kernel/cgroup/delegate); do
        [ -e "$d/$f" ] && chown 1000:1000 "$d/$f"
    done
done
echo "DAVIT-VM-INFO delegate: $(tr '\n' ' ' </sys/kernel/cgroup/delegate)"

# Options on the kernel command line (run.sh sets them from DAVIT_VM_ONLY,
# DAVIT_VM_REPEAT and DAVIT_VM_TEST_TIMEOUT): davit.only=a,b runs only
# those vm_v2 tests (as root and as the user, nothing else but the final
# checks), davit.repeat=N runs each N times, davit.test_timeout=S is how
# long one test may take before it is reported hung and killed.
only="" repeat=1 test_timeout=180
for w in $(cat /proc/cmdline); do
    case "$w" in
        davit.only=*) only=$(echo "${w#davit.only=}" | tr ',' ' ') ;;
        davit.repeat=*) repeat=${w#davit.repeat=} ;;
        davit.test_timeout=*) test_timeout=${w#davit.test_timeout=} ;;
    esac
done
[ -n "$only" ] && echo "DAVIT-VM-INFO only: $only, $repeat time(s) each"
echo 1 >/proc/sys/kernel/sysrq

# What every process is doing, for a hung test: state, wait channel,
# cgroup and kernel stack of each, then every CPU's backtrace (sysrq l)
# and the kernel log's tail.
diagnose() { # name
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        [ -n "$(head -c 1 "$p/cmdline" 2>/dev/null)" ] || continue
        st=$(awk '/^State:/ {print $2}' "$p/status" 2>/dev/null)
        echo "DAVIT-VM-LOG $1 ps: $pid $(cat "$p/comm" 2>/dev/null) $st wchan=$(cat "$p/wchan" 2>/dev/null) cg=$(sed -n 's/^0:://p' "$p/cgroup" 2>/dev/null) $(tr '\0' ' ' <"$p/cmdline" 2>/dev/null | head -c 80)"
        case "$st" in R | D)
            while IFS= read -r l; do echo "DAVIT-VM-LOG $1 stack $pid: $l"; done <"$p/stack" ;;
        esac
    done 2>/dev/null
    echo l >/proc/sysrq-trigger
    sleep 2
    dmesg | tail -n 120 | while IFS= read -r l; do echo "DAVIT-VM-LOG $1 dmesg: $l"; done
}

# After a hung test: kill whatever it left in cgroups of its own (every
# cgroup but the user's delegated ones) and remove them, deepest first.
reap_cgroups() {
    for d in $(cd /sys/fs/cgroup && find . -mindepth 1 -type d | sort -r); do
        case "$d" in ./user-1000 | ./user-1000/session | ./user-1000-flat) continue ;; esac
        echo 1 >"/sys/fs/cgroup/$d/cgroup.kill" 2>/dev/null
    done
    sleep 1
    for d in $(cd /sys/fs/cgroup && find . -mindepth 1 -type d | sort -r); do
        case "$d" in ./user-1000 | ./user-1000/session | ./user-1000-flat) continue ;; esac
        rmdir "/sys/fs/cgroup/$d" 2>/dev/null
    done
}

list_tests() { # binary: its test names
    "$1" --list --format=terse 2>/tmp/list.err | sed -n 's/: test$//p'
}
BIN=/davit/deps/vm_v2
if [ -z "$(list_tests "$BIN")" ]; then
    result list FAIL "the test binary lists no tests: $(head -c 300 /tmp/list.err)"
    finish
fi

# One test once: its result, and on a failure its output and the kernel's.
# A test still running after $test_timeout s is shown (diagnose) and
# killed by the watchdog, its cgroups reaped, and the lane goes on.
run_one() { # name test binary command-prefix...
    name=$1 t=$2 bin=$3
    shift 3
    log=/tmp/log.${name%#*}
    s=$(date +%s)
    dmesg -c >/dev/null
    in=""
    case "$name" in user:*_delegated_cgroup_itself_*) in="--in user-1000-flat" ;; esac
    rm -f /tmp/hung
    # shellcheck disable=SC2086
    "$@" $in "$bin" --exact "$t" --test-threads=1 --nocapture >"$log" 2>&1 &
    tp=$!
    (
        sleep "$test_timeout"
        if kill -0 "$tp" 2>/dev/null; then
            touch /tmp/hung
            diagnose "$name"
            kill -KILL "$tp"
        fi
    ) &
    wp=$!
    wait "$tp"
    rc=$?
    # A watchdog that has fired finishes its report; else it goes.
    [ -e /tmp/hung ] || kill "$wp" 2>/dev/null
    wait "$wp" 2>/dev/null
    secs=$(($(date +%s) - s))
    if [ -e /tmp/hung ]; then
        result "$name" FAIL "hung: killed after ${secs}s (davit.test_timeout=$test_timeout)"
        log_tail "$name" "$log" 60
        reap_cgroups
    elif [ "$rc" = 0 ] && grep -q '^test result: ok. 1 passed' "$log"; then
        result "$name" PASS "${secs}s"
    else
        result "$name" FAIL "exit $rc after ${secs}s"
        log_tail "$name" "$log" 60
        dmesg | tail -n 20 | while IFS= read -r l; do echo "DAVIT-VM-LOG $name dmesg: $l"; done
    fi
}

run_suite() { # role binary "tests" command-prefix...
    role=$1 bin=$2 tests=$3
    shift 3
    for t in $tests; do
        if [ "$repeat" = 1 ]; then
            run_one "$role:$t" "$t" "$bin" "$@"
        else
            i=1
            while [ "$i" -le "$repeat" ]; do
                run_one "$role:$t#$i" "$t" "$bin" "$@"
                i=$((i + 1))
            done
        fi
        if [ "$t" = check_reports_this_kernel ]; then
            grep '^CHECK ' "/tmp/log.$role:$t" | while IFS= read -r l; do echo "DAVIT-VM-INFO $role $l"; done
        fi
    done
}

VM_TESTS=$(list_tests "$BIN")
if [ -n "$only" ]; then
    for t in $only; do
        echo "$VM_TESTS" | grep -qx "$t" || result "only:$t" FAIL "vm_v2 has no test $t"
    done
    VM_TESTS=$only
fi
run_suite root "$BIN" "$VM_TESTS" env DAVIT_VM_ROOTFS=/vm/rootfs-root DAVIT_VM_IDBASE=100000
run_suite user "$BIN" "$VM_TESTS" /bin/as-user

# With davit.only: straight to the final checks.
[ -n "$only" ] || {

# The host suites, unchanged, on v2 and 6.1 as root: cgroup_v1.rs finds its
# directories through the layout and checks v1 files only on v1, so all of
# it holds; real.rs reads v1 paths (/sys/fs/cgroup/pids/...) in some tests,
# so only its version-agnostic tests run here.
run_suite host-cgroup /davit/deps/cgroup_v1 "$(list_tests /davit/deps/cgroup_v1)" env
REAL_OK="exit_code_of_init_is_returned symlinked_proc_in_image_is_refused
halt_signal_stops_a_cooperative_init privileged_container_uses_mknod_and_no_userns
starting_twice_is_refused killed_monitor_is_recovered_by_stop"
have=$(list_tests /davit/deps/real)
real_tests=""
for t in $REAL_OK; do
    if echo "$have" | grep -qx "$t"; then
        real_tests="$real_tests $t"
    else
        echo "DAVIT-VM-INFO real.rs has no test $t any more: not run"
    fi
done
run_suite host-real /davit/deps/real "$real_tests" env

# The davit CLI itself: start -d, attach, info, list, stop, check.
cli() { # role, then the command prefix
    role=$1
    shift
    "$@" /bin/davit-cli-test >"/tmp/cli.$role" 2>&1
    while IFS=' ' read -r tag n r d; do
        case "$tag" in
            R) result "$role:$n" "$r" "$d" ;;
            I) echo "DAVIT-VM-INFO $role cli $n $r $d" ;;
        esac
    done <"/tmp/cli.$role"
}
if [ -x /davit/davit ]; then
    cli root env DAVIT_VM_ROOTFS=/vm/rootfs-root DAVIT_VM_IDBASE=100000
    cli user /bin/as-user
fi
}

# Nothing may be left in the cgroup tree but the user's own subtree.
left=$(cd /sys/fs/cgroup && find . -mindepth 1 -type d | sort | tr '\n' ' ')
if [ "$left" = "./user-1000 ./user-1000-flat ./user-1000/session " ]; then
    result cgroup-tree-clean PASS "only the delegated user-1000/session and user-1000-flat remain"
else
    result cgroup-tree-clean FAIL "left: $left"
fi
# No container init, monitor or user process may outlive its test: every
# process left is root's and none runs the (memfd-sealed) driver.
stray=""
for p in /proc/[0-9]*; do
    uid=$(awk '/^Uid:/ {print $2}' "$p/status" 2>/dev/null)
    exe=$(readlink "$p/exe" 2>/dev/null)
    case "$exe" in *memfd* | *driver* | *vm_v2*) uid="$uid:$exe" ;; esac
    if [ -n "$uid" ] && [ "$uid" != 0 ]; then
        stray="$stray ${p#/proc/}($uid $(tr '\0' ' ' <"$p/cmdline" | head -c 60))"
    fi
done
if [ -z "$stray" ]; then
    result no-stray-processes PASS "none"
else
    result no-stray-processes FAIL "$stray"
fi
finish
