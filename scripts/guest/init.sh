#!/bin/busybox sh
# /init of mpqemu's bundled guest (PID 1, busybox ash).
#
# Kernel command line (set by scripts/mpqemu-launcher.py):
#   mpq.mode=shell|selftest|run|perf  what to do once the disks are there (default shell)
#   mpq.nonce=TOKEN        echoed in result lines so the host can tell runs apart
#   mpq.disks=N            how many SCSI disks to wait for (default 1)
#   mpq.wait=SECONDS       limit for driver load + disk discovery (default 120)
#   mpq.limit=SECONDS      limit for the workload (default 300)
#   mpq.run=BASE64         run: the shell command, base64-encoded
#   mpq.perf_mb=N          perf: MiB written and read per disk (even number, default 32)
# Module parameters (sym53c8xx.verb=2, ...) are passed to insmod as modprobe would.
#
# Lines for the host start with "MPQ-"; a non-interactive run ends with exactly one
#   MPQ-RESULT: PASS|FAIL <details> nonce=TOKEN
# and then powers the VM off (QEMU runs with -no-reboot).

/bin/busybox mkdir -p /proc /sys /dev /tmp /mnt
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc none /proc
mount -t sysfs none /sys
mount -t devtmpfs none /dev 2>/dev/null
mount -t tmpfs -o size=75% none /tmp
# No modprobe here: let the kernel's request_module() fail at once.
echo >/proc/sys/kernel/modprobe

mode=shell nonce=- want_disks=1 wait_s=120 limit_s=300 run_b64= perf_mb=32
for word in $(cat /proc/cmdline); do
    case $word in
        mpq.mode=*) mode=${word#*=} ;;
        mpq.nonce=*) nonce=${word#*=} ;;
        mpq.disks=*) want_disks=${word#*=} ;;
        mpq.wait=*) wait_s=${word#*=} ;;
        mpq.limit=*) limit_s=${word#*=} ;;
        mpq.run=*) run_b64=${word#*=} ;;
        mpq.perf_mb=*) perf_mb=${word#*=} ;;
    esac
done
PAT=/etc/mpq/pattern.bin

uptime_s() { cut -d' ' -f1 /proc/uptime; }
# Nanosecond clock when the kernel exposes one, else /proc/uptime (10 ms).
clock() {
    awk '/^now at/ { printf "%.6f\n", $3 / 1000000000; found = 1; exit } END { if (!found) exit 1 }' \
        /proc/timer_list 2>/dev/null || uptime_s
}
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { if (s < 0.001) s = 0.001; printf "%.1f", n / 1048576 / s }'; }
digest() { sha256sum | cut -c1-64; }

# ---- ending the run ----------------------------------------------------------
# A PASS syncs and powers off in order. A FAIL resets at once (sysrq-b): a
# wedged controller would hang an orderly shutdown in SYNCHRONIZE CACHE.
halt_ok() { sync; poweroff -f; sleep 30; }
halt_now() { echo b >/proc/sysrq-trigger; sleep 30; }
result() {
    [ -z "${guard:-}" ] || kill "$guard" 2>/dev/null
    echo "MPQ-RESULT: $* nonce=$nonce"
    case $1 in PASS) halt_ok ;; *) halt_now ;; esac
}
fail() {
    echo "MPQ-GUEST: dmesg tail:"
    dmesg | tail -n 25 | sed 's/^/  | /'
    result FAIL "$*"
}

# A guard process ends a stuck run with a verdict (it cannot be interrupted by
# a hung dd in the foreground).
step() { echo "$*" >/tmp/step; [ "$mode" = shell ] || echo "MPQ-GUEST: $*"; }
arm() {
    [ -z "${guard:-}" ] || kill "$guard" 2>/dev/null
    (
        sleep "$1"
        echo "MPQ-RESULT: FAIL guest limit of $1 s exceeded in: $(cat /tmp/step) nonce=$nonce"
        dmesg | tail -n 25 | sed 's/^/  | /'
        echo b >/proc/sysrq-trigger
    ) &
    guard=$!
}

echo "MPQ-GUEST: boot kernel=$(uname -r) mode=$mode t=$(uptime_s)"

# ---- drivers -----------------------------------------------------------------
insmod_list() {
    while read -r mod; do
        [ -n "$mod" ] || continue
        echo "insmod $mod" >/tmp/step
        params=
        for word in $(cat /proc/cmdline); do
            case $word in "$mod".*=*) params="$params ${word#"$mod".}" ;; esac
        done
        msg=$(insmod "/lib/modules/$mod.ko" $params 2>&1) || fail "insmod $mod: $msg"
    done <"/etc/mpq/$1.mods"
}
arm "$wait_s"
insmod_list storage
echo "MPQ-GUEST: modules loaded t=$(uptime_s)"

# ---- disks -----------------------------------------------------------------
step "waiting for $want_disks disk(s)"
list_disks() {
    for b in /sys/block/sd*; do
        [ -e "$b" ] && [ -b "/dev/${b##*/}" ] && [ "$(cat "$b/size" 2>/dev/null || echo 0)" -gt 0 ] && echo "${b##*/}"
    done
}
if [ "$mode" = shell ]; then
    # Interactive: give up waiting quietly after wait_s and hand over the shell.
    [ -z "${guard:-}" ] || kill "$guard" 2>/dev/null
    guard=
    give_up=$(( $(cut -d. -f1 /proc/uptime) + wait_s ))
fi
while :; do
    disks=$(list_disks)
    [ "$(echo $disks | wc -w)" -lt "$want_disks" ] || break
    if [ "$mode" = shell ] && [ "$(cut -d. -f1 /proc/uptime)" -ge "$give_up" ]; then
        echo "MPQ-GUEST: warning: only $(echo $disks | wc -w) of $want_disks disk(s) appeared"
        break
    fi
    sleep 0.2
done
info=
for d in $disks; do
    addr=$(basename "$(readlink "/sys/block/$d/device")")
    info="$info $d=$(( $(cat /sys/block/$d/size) * 512 ))@$addr"
done
echo "MPQ-GUEST: disks n=$(echo $disks | wc -w)$info t=$(uptime_s)"

# ---- self-test: tagged pattern regions on every disk, read back after a cache drop
# Region layout (the host checks the same one, see mpqemu-launcher.py):
#   tag   sector 0       "MPQ-SELFTEST nonce=.. dev=.. idx=.. bytes=.." zero-padded
#   A     1 MiB          1 MiB of pattern from poff = idx*16 KiB
#   B     half + 1536    64 KiB of pattern from poff = 1 MiB + idx*16 KiB
#   C     end - 256 KiB  256 KiB of pattern from poff = 1 MiB + 64 KiB + idx*16 KiB
regions() { # bytes idx -> "off len poff" lines
    s=$(( $2 * 16384 ))
    echo "1048576 1048576 $s"
    echo "$(( $1 / 1024 * 512 + 1536 )) 65536 $(( 1048576 + s ))"
    echo "$(( $1 - 262144 )) 262144 $(( 1114112 + s ))"
}
pattern_sha() { dd if=$PAT bs=16384 iflag=skip_bytes,count_bytes skip="$1" count="$2" 2>/dev/null | digest; }
disk_sha() { dd if="/dev/$1" bs=65536 iflag=skip_bytes,count_bytes,direct skip="$2" count="$3" 2>/dev/null | digest; }

selftest() {
    idx=0
    for d in $disks; do
        bytes=$(( $(cat /sys/block/$d/size) * 512 ))
        [ "$bytes" -ge 8388608 ] || fail "$d is only $bytes bytes (self-test needs 8 MiB)"
        step "self-test: writing $d"
        printf 'MPQ-SELFTEST nonce=%s dev=%s idx=%s bytes=%s\n' "$nonce" "$d" "$idx" "$bytes" >/tmp/tag
        dd if=/tmp/tag of=/tmp/tag.blk bs=512 count=1 conv=sync 2>/dev/null
        dd if=/tmp/tag.blk of="/dev/$d" bs=512 count=1 oflag=direct conv=notrunc 2>/tmp/err \
            || fail "tag write to $d: $(tail -n1 /tmp/err)"
        regions "$bytes" "$idx" | while read -r off len poff; do
            dd if=$PAT of="/dev/$d" bs=65536 iflag=skip_bytes,count_bytes oflag=seek_bytes,direct \
                conv=notrunc skip="$poff" seek="$off" count="$len" 2>/tmp/err \
                || { echo "write $d@$off: $(tail -n1 /tmp/err)" >/tmp/why; exit 1; }
        done || fail "$(cat /tmp/why)"
        idx=$((idx + 1))
    done
    step "self-test: sync + drop caches"
    sync
    echo 3 >/proc/sys/vm/drop_caches
    idx=0 bad=
    for d in $disks; do
        step "self-test: reading $d"
        bytes=$(( $(cat /sys/block/$d/size) * 512 ))
        printf 'MPQ-SELFTEST nonce=%s dev=%s idx=%s bytes=%s\n' "$nonce" "$d" "$idx" "$bytes" >/tmp/tag
        dd if=/tmp/tag of=/tmp/tag.blk bs=512 count=1 conv=sync 2>/dev/null
        ok=1
        [ "$(disk_sha "$d" 0 512)" = "$(digest </tmp/tag.blk)" ] || ok=0
        n=1
        for r in $(regions "$bytes" "$idx" | tr ' ' ':'); do
            off=${r%%:*} rest=${r#*:}
            len=${rest%%:*} poff=${rest#*:}
            [ "$(disk_sha "$d" "$off" "$len")" = "$(pattern_sha "$poff" "$len")" ] || ok=0
            n=$((n + 1))
        done
        echo "MPQ-SELFTEST: dev=$d idx=$idx bytes=$bytes regions=$n ok=$ok"
        [ $ok = 1 ] || bad="$bad $d"
        idx=$((idx + 1))
    done
    [ -z "$bad" ] || fail "read-back mismatch on$bad"
    result PASS "selftest disks=$idx"
}

# ---- perf: every disk at once, O_DIRECT, 1 MiB blocks -----------------------
perf() {
    [ $((perf_mb % 2)) = 0 ] && [ "$perf_mb" -gt 0 ] || fail "mpq.perf_mb=$perf_mb must be even and > 0"
    len=$((perf_mb * 1048576))
    for d in $disks; do
        [ $(( $(cat /sys/block/$d/size) * 512 )) -ge $((len + 1048576)) ] || fail "$d too small for $perf_mb MiB"
    done
    step "perf: staging data"
    i=0
    while [ $i -lt $((perf_mb / 2)) ]; do cat $PAT; i=$((i + 1)); done >/tmp/perf.bin
    want=$(digest </tmp/perf.bin)
    sync
    echo 3 >/proc/sys/vm/drop_caches
    step "perf: writing"
    t0=$(clock) jobs=
    for d in $disks; do
        (
            a=$(clock)
            dd if=/tmp/perf.bin of="/dev/$d" bs=1M seek=1 oflag=direct conv=notrunc,fsync 2>/tmp/err.$d || exit 1
            echo "$(elapsed "$a" "$(clock)")" >/tmp/w.$d
        ) &
        jobs="$jobs $!"
    done
    wait $jobs   # not a bare wait: the guard is a child too
    t1=$(clock)
    for d in $disks; do [ -s /tmp/w.$d ] || fail "perf write to $d failed: $(tail -n1 /tmp/err.$d)"; done
    echo 3 >/proc/sys/vm/drop_caches
    step "perf: reading"
    t2=$(clock) jobs=
    for d in $disks; do
        (
            a=$(clock)
            dd if="/dev/$d" of=/dev/null bs=1M skip=1 count="$perf_mb" iflag=direct 2>/tmp/err.$d || exit 1
            echo "$(elapsed "$a" "$(clock)")" >/tmp/r.$d
        ) &
        jobs="$jobs $!"
    done
    wait $jobs
    t3=$(clock)
    step "perf: verifying"
    bad=
    for d in $disks; do
        [ -s /tmp/r.$d ] || fail "perf read from $d failed: $(tail -n1 /tmp/err.$d)"
        got=$(dd if="/dev/$d" bs=1M skip=1 count="$perf_mb" iflag=direct 2>/dev/null | digest)
        ok=0
        [ "$got" = "$want" ] && ok=1
        [ $ok = 1 ] || bad="$bad $d"
        ws=$(cat /tmp/w.$d) rs=$(cat /tmp/r.$d)
        echo "MPQ-PERF: dev=$d bytes=$len write_s=$ws write_MBps=$(rate $len "$ws") read_s=$rs read_MBps=$(rate $len "$rs") ok=$ok"
    done
    n=$(echo $disks | wc -w)
    tw=$(elapsed "$t0" "$t1") tr=$(elapsed "$t2" "$t3")
    echo "MPQ-PERF-TOTAL: disks=$n bytes=$((n * len)) write_s=$tw write_MBps=$(rate $((n * len)) "$tw") read_s=$tr read_MBps=$(rate $((n * len)) "$tr")"
    [ -z "$bad" ] || fail "perf read-back mismatch on$bad"
    result PASS "perf disks=$n mb=$perf_mb"
}

# ---- run: one shell command, its output between markers --------------------
run_cmd() {
    insmod_list fs
    echo "$run_b64" | base64 -d >/tmp/cmd.sh 2>/dev/null || fail "mpq.run is not valid base64"
    step "running the command"
    echo "MPQ-RUN-BEGIN nonce=$nonce"
    (cd /root && sh /tmp/cmd.sh </dev/null 2>&1)
    rc=$?
    echo "MPQ-RUN-END nonce=$nonce status=$rc"
    result PASS "run status=$rc"
}

shell() {
    insmod_list fs
    echo
    echo "mpqemu guest ($(uname -r)): disk controller(s) in separate process(es)."
    for d in $disks; do
        echo "  /dev/$d  $(( $(cat /sys/block/$d/size) / 2048 )) MiB  $(cat /sys/block/$d/device/vendor 2>/dev/null) $(cat /sys/block/$d/device/model 2>/dev/null)"
    done
    echo "busybox shell; 'poweroff' (or exit) ends the VM; Ctrl-C in the launcher stops everything."
    echo "MPQ-GUEST: shell"
    # busybox's poweroff/halt/reboot signal PID 1 (USR2/USR1/TERM): this script.
    # The shell runs as a background job so that `wait` returns for the trap.
    trap 'echo "MPQ-GUEST: power off requested"; halt_ok' USR1 USR2 TERM
    setsid cttyhack sh -l </dev/console >/dev/console 2>&1 &
    shell_pid=$!
    while kill -0 "$shell_pid" 2>/dev/null; do
        wait "$shell_pid"
    done
    echo "MPQ-GUEST: shell exited"
    halt_ok
}

[ "$(echo $disks | wc -w)" -ge "$want_disks" ] || [ "$mode" = shell ] || fail "found $(echo $disks | wc -w) of $want_disks disk(s)"
arm "$limit_s"
case $mode in
    selftest) selftest ;;
    perf) perf ;;
    run) run_cmd ;;
    shell) [ -z "${guard:-}" ] || kill "$guard" 2>/dev/null; guard=; shell ;;
    *) fail "unknown mpq.mode=$mode" ;;
esac
fail "mode $mode ended without a verdict"
