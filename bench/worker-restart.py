#!/usr/bin/env python3
"""How long a guest's disk is gone when the device worker dies
(`qemu-scsi-dev -x-worker on`): our VMM under qtest drives the controller,
the worker is SIGKILLed N times, and after each kill one 4 KiB READ is
issued at once.

Reported, median / 90th percentile / max over the kills:
  * client: from the kill() to the READ's completion as the qtest client sees
    it, minus the median READ time without a kill (measured the same way
    before the kills): the time the device was not there for the guest;
  * remote: the remote's own figures, from the worker's death (reaped by the
    supervisor) to the successor serving (`worker: serving again N us` in
    its log) and to its first request carried out (`first request served`).
The qtest client polls ISTAT without pause, so the client and the VMM keep
both cores busy while the successor starts: the client figure includes the
wait for a core.

Usage: bench/worker-restart.py [--kills N] [--gap SECONDS]
Env: MPQ_BUILD_DIR (default ./build), MPQ_SHARED_DIR (default ../shared).
Prints the machine's load average with the figures."""
import argparse
import os
import re
import signal
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "lib"))
import faultrig as fr  # noqa: E402


def summary(xs):
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]
    return "median %.0f us, p90 %.0f us, max %.0f us, min %.0f us (n=%d)" % (
        statistics.median(xs), p90, xs[-1], xs[0], len(xs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=25)
    ap.add_argument("--gap", type=float, default=0.2, help="seconds between kills")
    a = ap.parse_args()
    load_before = os.getloadavg()
    with fr.TmpDir() as tmp:
        disk = os.path.join(tmp, "disk.img")
        fr.make_raw(disk, 8)
        rig = fr.Rig(tmp, disk, vmm="ours", remote_args=["-x-worker", "on"]).start()
        try:
            base = []
            for i in range(50):
                t0 = time.monotonic()
                ok, st, _ = rig.read_blocks(i % 64, 8)
                base.append((time.monotonic() - t0) * 1e6)
                if not ok:
                    sys.exit("READ failed before any kill (status %r)" % st)
            read_us = statistics.median(base)
            client = []
            for i in range(a.kills):
                w = fr.worker_pid(rig.remote.pid)
                end = time.monotonic() + 5
                while w is None and time.monotonic() < end:
                    time.sleep(0.001)
                    w = fr.worker_pid(rig.remote.pid)
                if w is None:
                    sys.exit("no worker; remote log:\n" + rig.log("remote"))
                t0 = time.monotonic()
                os.kill(w, signal.SIGKILL)
                ok, st, _ = rig.read_blocks(i % 64, 8)
                client.append((time.monotonic() - t0) * 1e6 - read_us)
                if not ok:
                    sys.exit("READ after kill %d failed (status %r)" % (i, st))
                time.sleep(a.gap)
        finally:
            rig.stop()
        remote = [int(x) for x in re.findall(r"serving again (\d+) us", rig.log("remote"))]
        first = [int(x) for x in re.findall(r"first request served (\d+) us", rig.log("remote"))]
    load_after = os.getloadavg()
    print("worker restarts: %d SIGKILLs, %.1f s apart; 4 KiB READ without a kill: %.0f us (median)"
          % (a.kills, a.gap, read_us))
    print("  client (kill -> READ done, minus a READ): " + summary(client))
    if remote:
        print("  remote (death reaped -> successor serving): " + summary(remote))
    if first:
        print("  remote (death reaped -> its first request carried out): " + summary(first))
    print("  load average before %.2f %.2f %.2f, after %.2f %.2f %.2f" % (load_before + load_after))


if __name__ == "__main__":
    main()
