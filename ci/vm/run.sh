#!/bin/bash
# The VM test lane (issue 8): cgroup v2 alone and Debian 12's kernel 6.1,
# for real, under qemu. Run as root from anywhere in the work tree:
#
#   bash ci/vm/run.sh
#
# 1. fetch.sh: the kernel (apt-get download + dpkg-deb -x, cached under
#    $DAVIT_VM_CACHE, default $DAVIT_TEST_CACHE/vm, /var/cache/davit-test/vm),
#    qemu and the tools, each built once under a lock;
# 2. cargo builds the vm_v2, cgroup_v1 and real test binaries, the example
#    driver and davit;
# 3. mkinitramfs.sh packs them with busybox, newuidmap and a rootfs;
# 4. a short KVM probe boot decides KVM or TCG (here KVM hangs: TCG);
# 5. the VM runs the tests as root and as a plain user and reports on the
#    serial console;
# 6. a second guest, Debian with systemd as PID 1 and a lingering plain
#    user (systemd-guest.sh, systemd-test.sh), boots the same kernel: the
#    user's `davit start -d` of the Debian image gets a transient scope
#    from its own systemd manager (issue 15).
# This script prints each result and the summary line `vm: N passed, M
# failed`, and exits non-zero on any failure, no boot, a missing DONE line
# or a timeout, in either guest.
#
# Environment: DAVIT_VM_CACHE, DAVIT_VM_TIMEOUT (the test boot, seconds,
# default 480), DAVIT_VM_ACCEL (kvm or tcg: skip the probe),
# DAVIT_VM_KEEP (keep the work dir with the serial log), CARGO_TARGET_DIR;
# to chase one test: DAVIT_VM_ONLY (vm_v2 test names, space or comma
# separated: only those, as root and as the user, and no systemd guest),
# DAVIT_VM_REPEAT (each that many times), DAVIT_VM_TEST_TIMEOUT (seconds
# one test may take before the guest reports it hung, with every
# process's kernel stack, and kills it; default 180).
set -euo pipefail

t0=$(date +%s)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
export DAVIT_VM_CACHE=${DAVIT_VM_CACHE:-${DAVIT_TEST_CACHE:-/var/cache/davit-test}/vm}
timeout_s=${DAVIT_VM_TIMEOUT:-480}
say() { echo "vm: $*"; }
die() {
    say "$*"
    say "0 passed, 1 failed"
    exit 1
}

[ "$(id -u)" = 0 ] || die "run as root (apt-get, setuid newuidmap and chown in the initramfs)"

work=$(mktemp -d "${TMPDIR:-/tmp}/davit-vm.XXXXXX")
qpid=""
cleanup() {
    if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
        kill "$qpid" 2>/dev/null || true
        wait "$qpid" 2>/dev/null || true
    fi
    if [ -n "${DAVIT_VM_KEEP:-}" ]; then
        say "work dir kept: $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

# 1. Kernel, qemu, tools.
fetch_out=$("$here/fetch.sh") || die "fetch.sh failed"
eval "$fetch_out"
say "kernel $KERNEL_PKG, qemu $QEMU"

# 2. Build.
cd "$repo"
export PATH="$HOME/.cargo/bin:$PATH"
target_dir=${CARGO_TARGET_DIR:-$repo/target}
export CARGO_TARGET_DIR=$target_dir
# cargo's output goes to build.log, shown when a build fails.
build() { # what, cargo args...
    local what=$1
    shift
    if ! cargo "$@" >>"$work/build.log" 2>&1; then
        tail -n 40 "$work/build.log"
        die "cargo build of $what failed"
    fi
}
build driver build -p davit-run --example driver
# The test binaries: vm_v2 (root and user), and the host suites that also
# hold on v2 (cgroup_v1.rs whole, real.rs in part: see init.sh).
tests=()
for t in vm_v2 cgroup_v1 real; do
    build "the $t tests" test -p davit-run --test "$t" --no-run
    bin=$(cargo test -p davit-run --test "$t" --no-run 2>&1 \
        | sed -n "s/.*Executable .*(\(.*\/$t-[0-9a-f]*\))\$/\1/p" | tail -1)
    if [ -z "$bin" ] || [ ! -x "$bin" ]; then
        die "cargo test --no-run gave no $t binary"
    fi
    tests+=("$bin")
done
driver=$target_dir/debug/examples/driver
build davit build --bin davit
davit=$target_dir/debug/davit
build davit-monitor build -p davit-run --bin davit-monitor
t_build=$(date +%s)

# 3. Initramfs.
"$here/mkinitramfs.sh" "$work/initramfs.cpio" "$KERNEL_DIR" "$driver" "$davit" "${tests[@]}" \
    || die "mkinitramfs.sh failed"
say "initramfs $(($(stat -c %s "$work/initramfs.cpio") / 1048576)) MiB"

qemu_args=(-m 2048 -smp 2 -nographic -no-reboot -nic none
    -kernel "$KERNEL_DIR/vmlinuz" -initrd "$work/initramfs.cpio")
if [ -n "$QEMU_DATA" ]; then
    IFS=: read -r -a dirs <<<"$QEMU_DATA"
    for d in "${dirs[@]}"; do qemu_args+=(-L "$d"); done
fi
[ -n "$QEMU_MODULES" ] && export QEMU_MODULE_DIR=$QEMU_MODULES
cmdline="console=ttyS0 panic=-1 loglevel=3 rdinit=/init"

# Boot in the background with a deadline; the serial console goes to $log.
boot() { # log secs accel cmdline-extra
    local log=$1 secs=$2 accel=$3 extra=$4 machine
    machine=(-machine "q35,accel=$accel")
    [ "$accel" = kvm ] && machine+=(-cpu host)
    "$QEMU" "${machine[@]}" "${qemu_args[@]}" -append "$cmdline $extra" \
        </dev/null >"$log" 2>&1 &
    qpid=$!
    local end=$(($(date +%s) + secs))
    while kill -0 "$qpid" 2>/dev/null; do
        if [ "$(date +%s)" -ge "$end" ]; then
            kill "$qpid" 2>/dev/null || true
            wait "$qpid" 2>/dev/null || true
            qpid=""
            return 124
        fi
        sleep 0.2
    done
    wait "$qpid" || true
    qpid=""
    return 0
}

# 4. KVM or TCG.
accel=${DAVIT_VM_ACCEL:-}
if [ -z "$accel" ]; then
    accel=tcg
    if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
        if boot "$work/probe.log" 10 kvm davit.mode=probe \
            && tr -d '\r' <"$work/probe.log" | grep -q '^DAVIT-VM-PROBE ok'; then
            accel=kvm
        else
            say "KVM probe failed (no guest output within 10 s or an abort): using TCG"
        fi
    fi
fi
t_probe=$(date +%s)

# 5. The test boot.
say "booting ($accel, timeout ${timeout_s}s)"
rc=0
opts="davit.mode=test"
[ -n "${DAVIT_VM_ONLY:-}" ] && opts="$opts davit.only=$(echo "$DAVIT_VM_ONLY" | tr ' ' ',')"
[ -n "${DAVIT_VM_REPEAT:-}" ] && opts="$opts davit.repeat=$DAVIT_VM_REPEAT"
[ -n "${DAVIT_VM_TEST_TIMEOUT:-}" ] && opts="$opts davit.test_timeout=$DAVIT_VM_TEST_TIMEOUT"
boot "$work/serial.log" "$timeout_s" "$accel" "$opts" || rc=$?
t_end=$(date +%s)

passed=0 failed=0 ok=1
# Results of one guest's serial log: adds to passed/failed, clears ok.
report() { # serial.log rc what
    local log=$1 rc=$2 what=$3 txt=${1%.log}.txt p f done_line
    # One protocol line per line: drop CRs and escapes, and anything the
    # BIOS or the kernel printed before the marker on the same line.
    tr -d '\r' <"$log" \
        | sed 's/\x1b[[][?0-9;]*[a-zA-Z]//g; s/\x1bc//g; s/^.*\(DAVIT-VM-[A-Z]* \)/\1/' \
        >"$txt"
    grep -E '^DAVIT-VM-(BOOT|INFO|RESULT|LOG)' "$txt" | sed 's/^DAVIT-VM-/  /' || true
    p=$(grep -c '^DAVIT-VM-RESULT [^ ]* PASS' "$txt" || true)
    f=$(grep -c '^DAVIT-VM-RESULT [^ ]* FAIL' "$txt" || true)
    done_line=$(grep -m1 '^DAVIT-VM-DONE ' "$txt" || true)
    if ! grep -q '^DAVIT-VM-BOOT ' "$txt"; then
        say "the $what did not boot; the console's last lines:"
        tail -n 30 "$txt" | sed 's/^/  | /'
        f=$((f + 1))
    elif [ "$rc" = 124 ]; then
        say "timeout: the $what ran past its deadline; the console's last lines:"
        tail -n 30 "$txt" | sed 's/^/  | /'
        f=$((f + 1))
    elif [ -z "$done_line" ]; then
        say "no DAVIT-VM-DONE line: the $what died before the end; the console's last lines:"
        tail -n 30 "$txt" | sed 's/^/  | /'
        f=$((f + 1))
    elif [ "$done_line" != "DAVIT-VM-DONE passed=$p failed=$f" ]; then
        say "the $what's DONE line ($done_line) disagrees with the results seen"
        f=$((f + 1))
    fi
    [ "$p" -gt 0 ] || { [ "$f" -gt 0 ] || f=1; }
    [ "$f" = 0 ] || ok=0
    passed=$((passed + p))
    failed=$((failed + f))
}
report "$work/serial.log" "$rc" "VM"

# 6. The systemd guest (not with DAVIT_VM_ONLY).
t_sd0=$(date +%s)
sd_timeout=${DAVIT_VM_SYSTEMD_TIMEOUT:-360}
if [ -n "${DAVIT_VM_ONLY:-}" ]; then
    say "DAVIT_VM_ONLY is set: no systemd guest"
elif bash "$here/systemd-guest.sh" "$work/systemd.cpio" "$davit" "$target_dir/debug/davit-monitor" \
    >"$work/systemd-guest.log" 2>&1; then
    say "systemd guest initramfs $(($(stat -c %s "$work/systemd.cpio") / 1048576)) MiB, built in $(($(date +%s) - t_sd0))s; booting ($accel, timeout ${sd_timeout}s)"
    qemu_args=(-m 3072 -smp 2 -nographic -no-reboot -nic none
        -kernel "$KERNEL_DIR/vmlinuz" -initrd "$work/systemd.cpio")
    if [ -n "$QEMU_DATA" ]; then
        for d in "${dirs[@]}"; do qemu_args+=(-L "$d"); done
    fi
    cmdline="console=ttyS0 panic=-1 loglevel=3 rdinit=/init"
    rc=0
    boot "$work/systemd.log" "$sd_timeout" "$accel" "systemd.show_status=0" || rc=$?
    report "$work/systemd.log" "$rc" "systemd guest"
else
    tail -n 30 "$work/systemd-guest.log" | sed 's/^/  | /'
    say "systemd-guest.sh failed"
    failed=$((failed + 1))
    ok=0
fi
t_sd=$(date +%s)

say "times: fetch+build $((t_build - t0))s, initramfs+probe $((t_probe - t_build))s, test boot $((t_end - t_probe))s ($accel), systemd guest $((t_sd - t_sd0))s, lane $((t_sd - t0))s"
echo "vm: $passed passed, $failed failed"
[ "$ok" = 1 ]
