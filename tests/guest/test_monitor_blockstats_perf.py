#!/usr/bin/env python3
"""query-blockstats of our remote after the shared guest-e2e `perf` workload.

A real Linux guest (shared harness run-e2e.py, stock QEMU as the VMM) writes
and reads /dev/sda through our qemu-scsi-dev, which runs with
`-qmp unix:PATH,server,nowait -no-shutdown`. A stdlib QMP client polls
query-blockstats while the guest runs. `-no-shutdown` (QEMU's option) keeps
the remote up once the VMM is gone: the SHUTDOWN event says the guest is done,
the final counters are read, then `quit` lets the harness finish.

What the guest does to the disk (guest-init.sh, `perf`): REPS passes of one
O_DIRECT write of LEN bytes at offset 1 MiB (dd bs=1M, conv=fsync) and one
O_DIRECT read of the same bytes, then one O_DIRECT read of LEN to verify.
O_DIRECT means no page cache: the bytes reach the device exactly once.
Its own extra I/O is reads only, all before the workload: the firmware's
and the kernel's look at the new disk (SeaBIOS's boot-sector read, the
partition scan's page-cache reads near the start of the disk; 12800 bytes =
3 pages + 1 sector with Debian 12's kernel). Nothing is mounted, so nothing
else writes. So:
  wr_bytes          == LEN * REPS                     exactly
  rd_bytes - LEN * (REPS + 1) == the scan's reads,  which is
    - measured: the scan holds the disk's open_mutex, so it has finished
      before the first write starts, and no read of the workload starts
      before the first write pass is complete. Every sample taken with
      0 < wr_bytes < LEN therefore shows exactly the scan's reads;
    - bounded: at most SCAN_BOUND (64 KiB, the smallest request of the
      workload: the verify read's dd bs=65536), a multiple of 512.
    A request counted twice or missed moves rd_bytes by >= 64 KiB and fails
    both checks.
  wr_highest_offset == 1 MiB + LEN (the perf region's end)
Exit 0 pass, 77 skip, else fail.
"""
import os
import re
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import guesttest as gt  # noqa: E402
from monitor_client import QmpClient  # noqa: E402

MiB = 1 << 20
PERF_MB, REPS = 8, 2
LEN = PERF_MB * MiB
SCAN_BOUND = 64 * 1024


class ConsoleReader(threading.Thread):
    """Collects the harness's output (-v: the guest console as it arrives)."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream = stream
        self.lines = []
        self.lock = threading.Lock()

    def run(self):
        for line in self.stream:
            with self.lock:
                self.lines.append(line.rstrip("\n"))

    def seen(self, pattern):
        rx = re.compile(pattern)
        with self.lock:
            return any(rx.search(x) for x in self.lines)

    def text(self):
        with self.lock:
            return "\n".join(self.lines)


def main():
    gt.require_host()
    harness = os.path.join(gt.SHARED, "tools", "guest-e2e", "run-e2e.py")
    if not os.path.isfile(harness):
        gt.skip(f"shared harness not found at {harness} (MPQ_SHARED_DIR)")
    remote = gt.require_our_remote()
    sb = gt.Sandbox("monbs")
    qmp_path = sb.path("qmp.sock")
    template = (f"{remote} {{fd}} -name {sb.tag} -device lsi53c895a,id=lsi0 "
                "-drive id=d0,file={disk},format={format},if=none "
                "-device scsi-hd,id=sd0,drive=d0,bus=lsi0.0,scsi-id=0 "
                f"-qmp unix:{qmp_path},server,nowait -no-shutdown")
    argv = [sys.executable, harness, "-v", "--remote-cmd", template, "--workload", "perf",
            "--perf-mb", str(PERF_MB), "--perf-reps", str(REPS), "--disk-size", "64M",
            "--timeout", "400", "--remote-exit-grace", "120", "--workdir-base", sb.tmp,
            "--main-extra", f"-name {sb.tag}"] + gt.e2e_accel_args()
    gt.log("$ " + " ".join(argv))
    p = subprocess.Popen(argv, env=sb.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    console = ConsoleReader(p.stdout)
    console.start()
    samples = []
    final = status = None
    try:
        qmp = QmpClient(qmp_path, p)
        qmp.sock.settimeout(120)
        qmp.negotiate()
        deadline = time.monotonic() + 450
        # Poll until the remote reports the guest's end (SHUTDOWN, status
        # "shutdown"); every sample is kept for the baseline.
        while time.monotonic() < deadline:
            st = qmp.ret("query-blockstats")[0]["stats"]
            samples.append(st)
            if any(e["event"] == "SHUTDOWN" for e in qmp.events):
                break
            if p.poll() is not None:
                gt.fail("the harness ended before the remote reported SHUTDOWN")
            time.sleep(0.05)
        else:
            gt.fail("no SHUTDOWN event from the remote in time")
        status = qmp.ret("query-status")
        final = qmp.ret("query-blockstats")[0]
        info = qmp.ret("query-block")[0]
        qmp.cmd("quit")
        qmp.close()
        rc = p.wait(timeout=200)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    console.join(10)
    out = console.text()
    print("\n".join(x for x in out.splitlines() if "E2E" in x or "harness" in x), flush=True)
    if rc != 0 or not re.search(r"^E2E PASS", out, re.M):
        gt.fail(f"guest-e2e perf with our remote (-qmp, -no-shutdown) did not pass: rc={rc}")
    m = re.search(r"E2E-RESULT: PASS workload=perf write=(\d+) read=(\d+)", out)
    if not m or int(m.group(1)) != LEN * REPS:
        gt.fail(f"the guest did not report writing {LEN * REPS} bytes: {m and m.group(0)}")

    s = final["stats"]
    want_rd = LEN * (REPS + 1)
    extra = s["rd_bytes"] - want_rd
    baselines = sorted({x["rd_bytes"] for x in samples if 0 < x["wr_bytes"] < LEN})
    gt.log(f"final: wr_bytes={s['wr_bytes']} rd_bytes={s['rd_bytes']} (workload reads {want_rd}, "
           f"extra {extra}) wr_ops={s['wr_operations']} rd_ops={s['rd_operations']} "
           f"flush_ops={s['flush_operations']} wr_highest_offset={s['wr_highest_offset']}; "
           f"{len(samples)} samples, baseline(s) during the first write pass: {baselines}")
    problems = []
    if status.get("status") != "shutdown" or status.get("running") is not False:
        problems.append(f"query-status after the guest ended: {status}")
    shutdown = [e["data"] for e in qmp.events if e["event"] == "SHUTDOWN"]
    if shutdown[:1] != [{"guest": True, "reason": "guest-shutdown"}]:
        problems.append(f"SHUTDOWN event when the VMM went away: {shutdown}")
    if final["device"] != "d0" or info["inserted"]["image"]["virtual-size"] != 64 * MiB:
        problems.append(f"wrong device: {final['device']} / {info['inserted']['image']}")
    if s["wr_bytes"] != LEN * REPS:
        problems.append(f"wr_bytes {s['wr_bytes']} != {LEN * REPS} written by the guest")
    if not (0 <= extra <= SCAN_BOUND and extra % 512 == 0):
        problems.append(f"rd_bytes {s['rd_bytes']} - {want_rd} read by the workload = {extra}: "
                        f"not the partition scan's few sectors (0..{SCAN_BOUND}, whole sectors)")
    if len(baselines) > 1 or (baselines and baselines[0] != extra):
        problems.append(f"the scan's reads measured during the first write pass {baselines} "
                        f"differ from the final extra {extra}")
    if s["wr_highest_offset"] != MiB + LEN:
        problems.append(f"wr_highest_offset {s['wr_highest_offset']} != {MiB + LEN}")
    if s["flush_operations"] < REPS:
        problems.append(f"flush_operations {s['flush_operations']} < {REPS} (dd conv=fsync)")
    if s["wr_operations"] < LEN * REPS // (4 * MiB) or s["rd_operations"] < want_rd // (4 * MiB):
        problems.append("fewer operations than the largest request allows")
    failed = {k: v for k, v in s.items() if k.startswith("failed_") and v}
    if failed:
        problems.append(f"failed operations: {failed}")
    prev = None
    for x in samples + [s]:
        if prev and (x["rd_bytes"] < prev["rd_bytes"] or x["wr_bytes"] < prev["wr_bytes"]):
            problems.append("counters went backwards between samples")
            break
        prev = x
    if problems:
        gt.fail("; ".join(problems))
    if not baselines:
        gt.log("no sample fell inside the first write pass: the extra reads were only bounded")
    # The sandboxed remote may not unlink its socket (as documented).
    sb.assert_clean(keep=("qmp.sock",))
    sb.cleanup()
    print("PASS")


if __name__ == "__main__":
    main()
