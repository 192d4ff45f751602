#!/usr/bin/env python3
"""One proxied register access through our VMM and our remote, nothing else
running: a qtest `readl` of SCRATCHA minus a `readl` of RAM, median of REPS
rounds of N accesses each. For A/B runs of one change (environment
variables such as MPQ_REMOTE_LOOP=epoll reach the remote, proxy properties
such as ,x-poll-us=0 the VMM).

usage: bench/proxy-lat.py [PROXY_PROPS] [N] [REPS]    (MPQ_BUILD_DIR: default ./build)"""
import os
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "lib"))
os.environ.setdefault("MPQ_BUILD_DIR", os.path.join(here, "..", "build"))
import vmm_rig as R  # noqa: E402


def main():
    props = sys.argv[1] if len(sys.argv) > 1 else ""
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    tmp = R.tmpdir("mpq-lat-")
    disk = R.make_disk(os.path.join(tmp, "d.img"), 8)
    rig = R.Rig(tmp, remotes=[(R.our_remote_argv([("lsi0", disk)]), ["lsi0"])], proxy="pci-proxy-dev",
                proxy_props=props)
    try:
        q = rig.q
        R.program_bars(q, q.find(R.LSI_VENDOR, R.LSI_DEVICE)[0])

        def loop(addr):
            t = time.perf_counter()
            for _ in range(n):
                q.readl(addr)
            return (time.perf_counter() - t) / n * 1e6

        rounds = []
        for _ in range(reps):
            ram = loop(0x100000)
            mmio = loop(R.MMIO_BASE + R.SCRATCHA)
            rounds.append((mmio - ram, ram, mmio))
        rounds.sort()
        cost, ram, mmio = rounds[len(rounds) // 2]
        print("%-28s readl RAM %.1f us, MMIO %.1f us: proxied access %.1f us" % (props or "(defaults)", ram, mmio, cost))
    finally:
        rig.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
