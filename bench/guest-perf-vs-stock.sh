#!/bin/bash
# Real-guest perf workload (guest-e2e --workload perf): our qemu-scsi-dev vs
# stock QEMU's x-remote, back to back, alternating order, N pairs. Prints
# MB/s per run, the per-pair ratio ours/stock, medians, and each remote's
# peak RssAnon / VmRSS sampled from /proc/PID/status while the guest ran.
#   bench/guest-perf-vs-stock.sh [PAIRS] [extra run-e2e.py args...]
# Env: MPQ_BUILD_DIR (default ./build), MPQ_SHARED_DIR (default ../shared),
#      OUT (default /tmp/mpq-bench/guest-perf).
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
pairs=${1:-3}; shift || true
extra=("$@")
build=${MPQ_BUILD_DIR:-$here/build}
shared=${MPQ_SHARED_DIR:-$here/../shared}
out=${OUT:-/tmp/mpq-bench/guest-perf}
mkdir -p "$out"
bin=$(cd "$build" && pwd)/qemu-scsi-dev
[ -x "$bin" ] || { echo "no $bin (build first)"; exit 1; }
# the project's accelerator decision (KVM only with vmx/svm), passed on explicitly
accel_args=$(python3 "$here/scripts/mpqemu_accel.py" --why --e2e-args) || exit 3
read -r -a accel_args <<<"$accel_args"
ours="$bin {fd} -device lsi53c895a,id=lsi0 -drive id=d0,file={disk},format={format},if=none -device scsi-hd,id=sd0,drive=d0,bus=lsi0.0,scsi-id=0"

# run KIND TAG: one guest-e2e perf run; writes $out/TAG.json and TAG.mem
run() {
    local kind=$1 tag=$2 args=()
    [ "$kind" = ours ] && args=(--remote-cmd "$ours")
    python3 "$shared/tools/guest-e2e/run-e2e.py" --workload perf --json "$out/$tag.json" "${accel_args[@]}" "${args[@]}" "${extra[@]}" \
        >"$out/$tag.log" 2>&1 &
    local h=$! pid="" anon=0 rss=0
    while kill -0 $h 2>/dev/null; do
        [ -z "$pid" ] && pid=$(sed -n 's/.*harness\] remote pid \([0-9]*\).*/\1/p' "$out/$tag.log" | head -1)
        if [ -n "$pid" ] && [ -r /proc/$pid/status ]; then
            local a r
            a=$(awk '/^RssAnon:/{print $2}' /proc/$pid/status 2>/dev/null)
            r=$(awk '/^VmRSS:/{print $2}' /proc/$pid/status 2>/dev/null)
            [ -n "$a" ] && [ "$a" -gt "$anon" ] && anon=$a
            [ -n "$r" ] && [ "$r" -gt "$rss" ] && rss=$r
        fi
        sleep 0.5
    done
    wait $h; local rc=$?
    echo "$anon $rss" >"$out/$tag.mem"
    python3 - "$out/$tag.json" "$kind" "$tag" "$rc" "$anon" "$rss" <<'PY'
import json, sys
f, kind, tag, rc, anon, rss = sys.argv[1:]
try:
    p = json.load(open(f)).get("perf") or {}
except Exception:
    p = {}
print(f"{tag:10s} {kind:5s} rc={rc} write={p.get('write_MBps','?')} read={p.get('read_MBps','?')} "
      f"RssAnon_max={int(anon)/1024:.1f}MB VmRSS_max={int(rss)/1024:.1f}MB load={open('/proc/loadavg').read().split()[0]}")
PY
}

for i in $(seq 1 "$pairs"); do
    if [ $((i % 2)) = 1 ]; then run stock p$i-stock; run ours p$i-ours
    else run ours p$i-ours; run stock p$i-stock; fi
done

python3 - "$out" "$pairs" <<'PY'
import json, statistics, sys
out, n = sys.argv[1], int(sys.argv[2])
def perf(tag):
    try:
        return json.load(open(f"{out}/{tag}.json")).get("perf") or {}
    except Exception:
        return {}
def mem(tag):
    try:
        a, r = open(f"{out}/{tag}.mem").read().split()
        return int(a) / 1024, int(r) / 1024
    except Exception:
        return float("nan"), float("nan")
rows = []
print(f"\n| pair | stock W | ours W | W ratio | stock R | ours R | R ratio | RssAnon stock/ours MB | VmRSS stock/ours MB |")
print("|---|---|---|---|---|---|---|---|---|")
for i in range(1, n + 1):
    s, o = perf(f"p{i}-stock"), perf(f"p{i}-ours")
    sm, om = mem(f"p{i}-stock"), mem(f"p{i}-ours")
    try:
        wr = o["write_MBps"] / s["write_MBps"]; rr = o["read_MBps"] / s["read_MBps"]
    except Exception:
        wr = rr = float("nan")
    rows.append((s.get("write_MBps"), o.get("write_MBps"), wr, s.get("read_MBps"), o.get("read_MBps"), rr, sm, om))
    print(f"| {i} | {s.get('write_MBps')} | {o.get('write_MBps')} | {wr:.2f} | {s.get('read_MBps')} | "
          f"{o.get('read_MBps')} | {rr:.2f} | {sm[0]:.1f} / {om[0]:.1f} | {sm[1]:.1f} / {om[1]:.1f} |")
ok = [r for r in rows if all(isinstance(x, (int, float)) for x in r[:6])]
if ok:
    med = lambda k: statistics.median(r[k] for r in ok)
    print(f"| median ({len(ok)}) | {med(0):.1f} | {med(1):.1f} | {med(2):.2f} | {med(3):.1f} | {med(4):.1f} | {med(5):.2f} | | |")
PY
