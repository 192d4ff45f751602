#!/usr/bin/env python3
"""The remote is SIGKILLed while the guest writes: the VMM keeps running,
accesses to the dead device read all-ones, and every write acknowledged
(status GOOD) before the kill is on the image."""
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import faultrig as fr  # noqa: E402

KIND = os.environ.get("MPQ_FAULT_REMOTE", "ours")  # "stock" checks the test itself


def run():
    if KIND == "ours":
        fr.need_peers()
    with fr.TmpDir() as tmp:
        disk = os.path.join(tmp, "disk.img")
        fr.make_raw(disk, 16)
        rig = fr.Rig(tmp, disk, remote=KIND).start()
        fr.require_writes(rig)
        try:
            # Let a few writes through, then kill while one is in flight.
            acked = []
            killer_go = threading.Event()

            def killer():
                killer_go.wait()
                time.sleep(0.05)
                rig.remote.send_signal(signal.SIGKILL)

            t = threading.Thread(target=killer)
            t.start()
            lba, nblk, failed_at = 0, 8, None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                data = fr.pattern(lba, 1, nblk)
                ok, st = rig.write_blocks(lba, data)
                if not ok:
                    failed_at = lba
                    break
                acked.append((lba, data))
                lba += nblk
                if len(acked) == 20:
                    killer_go.set()
            killer_go.set()
            t.join()
            assert failed_at is not None, "writes kept succeeding after the kill"
            assert len(acked) >= 20, "only %d writes before the kill" % len(acked)
            rc = rig.remote.wait(timeout=10)
            assert rc == -signal.SIGKILL, "remote exit %r" % rc

            # The VMM survives; the device reads all-ones.
            assert rig.vmm_alive(), "VMM died with the remote:\n" + rig.log("vmm")
            v = rig.q.readl(rig.lsi.mmio + lb_reg("DSA"))
            assert v == 0xFFFFFFFF, "MMIO read of a dead device gave 0x%x" % v
            cfg = rig.pci.read32(rig.bdf, 0)
            assert cfg == 0xFFFFFFFF, "config read of a dead device gave 0x%x" % cfg
            rig.q.writel(rig.lsi.mmio + lb_reg("DSA"), 0x1234)  # must not hang or crash
            assert rig.vmm_alive(), "VMM died on a write to the dead device"

            # Everything acknowledged is on the image.
            for a_lba, data in acked:
                got = fr.file_blocks(disk, a_lba, nblk)
                assert got == data, "acknowledged write at LBA %d lost" % a_lba
            print("%d acknowledged writes before the kill, all on the image" % len(acked))
        finally:
            rig.stop()


def lb_reg(name):
    return getattr(fr.lb, name)


if __name__ == "__main__":
    fr.main(run)
