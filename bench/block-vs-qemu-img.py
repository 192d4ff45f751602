#!/usr/bin/env python3
"""Our raw and qcow2 block drivers (mpq-io bench) against `qemu-img bench`.

Same image, same run, same request sequence: qemu-img bench has no random
mode, so "random" 4 KiB I/O uses a large prime stride (-S) that scatters
consecutive requests over the whole image, and mpq-io replays exactly that
sequence (`step=`). Both sides run one request at a time (qemu-img bench -d 1;
our drivers are synchronous and qcow2 is serialised by the backend).

usage: bench/block-vs-qemu-img.py [--build DIR] [--size MiB] [--cache writeback|none]
                                  [--ops N] [--seq-mib N] [--reps N] [--dir DIR]
Prints a markdown table (for bench/README.md).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

STRIDE = 4096 * 7919  # a prime number of 4 KiB blocks


def qemu_bench(img, fmt, cache, bs, count, step, write):
    cmd = ["qemu-img", "bench", "-f", fmt, "-t", cache, "-d", "1", "-c", str(count), "-s", str(bs),
           "-S", str(step)]
    if write:
        cmd.append("-w")
    out = subprocess.run(cmd + [img], check=True, stdout=subprocess.PIPE, text=True).stdout
    m = re.search(r"Run completed in ([0-9.]+) seconds", out)
    if not m:
        raise RuntimeError("unexpected qemu-img bench output: " + out)
    return float(m.group(1))


def mpq_bench(mpq_io, img, fmt, cache, mode, bs, count, step):
    out = subprocess.run([mpq_io, "-f", fmt, "-t", cache, img, "-c",
                          "bench %s %d %d step=%d" % (mode, bs, count, step)],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    m = re.search(r"secs=([0-9.]+)", out)
    if not m:
        raise RuntimeError("unexpected mpq-io output: " + out)
    return float(m.group(1))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(here, "..", "build"))
    ap.add_argument("--size", type=int, default=512, help="image size in MiB")
    ap.add_argument("--cache", default="writeback")
    ap.add_argument("--ops", type=int, default=40000, help="4 KiB requests per run")
    ap.add_argument("--seq-mib", type=int, default=2048, help="MiB moved per 1 MiB sequential run")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions; the best of each side counts")
    ap.add_argument("--dir", default=None, help="where to put the images (default: a temp dir)")
    args = ap.parse_args()
    mpq_io = os.path.join(args.build, "mpq-io")
    if not shutil.which("qemu-img") or not os.path.exists(mpq_io):
        print("need qemu-img on PATH and %s" % mpq_io, file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="blockbench-", dir=args.dir)
    try:
        size = args.size << 20
        raw = os.path.join(tmp, "disk.raw")
        with open(raw, "wb") as f:  # fully allocated, non-zero content
            chunk = os.urandom(1 << 20)
            for _ in range(args.size):
                f.write(chunk)
        qcow = os.path.join(tmp, "disk.qcow2")
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow], check=True)
        rows = []
        tests = [
            ("4 KiB random read", "randread", 4096, args.ops, STRIDE, False),
            ("4 KiB random write", "randwrite", 4096, args.ops, STRIDE, True),
            ("1 MiB sequential read", "seqread", 1 << 20, args.seq_mib, 1 << 20, False),
            ("1 MiB sequential write", "seqwrite", 1 << 20, args.seq_mib, 1 << 20, True),
        ]
        for fmt, img in (("raw", raw), ("qcow2", qcow)):
            for name, mode, bs, count, step, write in tests:
                # Warm-up pass so that both tools see the same cache state.
                mpq_bench(mpq_io, img, fmt, args.cache, mode, bs, max(1, count // 10), step)
                # The host is shared: interleave the tools and keep each one's best run.
                q = m = float("inf")
                for _ in range(args.reps):
                    q = min(q, qemu_bench(img, fmt, args.cache, bs, count, step, write))
                    m = min(m, mpq_bench(mpq_io, img, fmt, args.cache, mode, bs, count, step))
                if bs == 4096:
                    unit, ours, theirs = "IOPS", count / m, count / q
                else:
                    unit, ours, theirs = "MB/s", count * bs / m / 1e6, count * bs / q / 1e6
                rows.append((fmt, name, unit, ours, theirs))
                print("%-6s %-24s ours %10.0f %s  qemu-img %10.0f %s  ratio %.2f" %
                      (fmt, name, ours, unit, theirs, unit, ours / theirs), file=sys.stderr, flush=True)
        print("Run %s, %d MiB image, cache=%s, %d x 4 KiB / %d x 1 MiB requests, queue depth 1, "
              "best of %d interleaved runs, host: %d CPUs" %
              (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), args.size, args.cache, args.ops, args.seq_mib,
               args.reps, os.cpu_count()))
        print()
        print("| driver | workload | ours | qemu-img bench | ours / qemu |")
        print("|---|---|---:|---:|---:|")
        for fmt, name, unit, ours, theirs in rows:
            print("| %s | %s | %.0f %s | %.0f %s | %.2f |" % (fmt, name, ours, unit, theirs, unit, ours / theirs))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
