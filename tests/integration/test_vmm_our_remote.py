#!/usr/bin/env python3
"""Our VMM with our remote (qemu-scsi-dev): the device suite over
pci-proxy-dev,socket=N; two proxies to two remote processes; two devices
on one socket (MULTIDEV, paired by id); the in-process controller."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import vmm_rig as R  # noqa: E402


def one_remote(c, tmp, disk):
    rig = R.Rig(tmp, remotes=[(R.our_remote_argv([("lsi0", disk)]), ["lsi0"])], proxy="pci-proxy-dev")
    try:
        c.eq(rig.q.find(R.LSI_VENDOR, R.LSI_DEVICE), [2], "our remote: controller at 00:02.0")
        R.device_suite(c, rig.q, 2, "our remote")
    finally:
        rig.stop()


def two_remotes(c, tmp, disk_a, disk_b):
    rig = R.Rig(tmp, remotes=[(R.our_remote_argv([("lsi0", disk_a)]), ["lsi0"]),
                              (R.our_remote_argv([("lsi1", disk_b)]), ["lsi1"])],
                proxy="pci-proxy-dev")
    try:
        q = rig.q
        c.eq(q.find(R.LSI_VENDOR, R.LSI_DEVICE), [2, 3], "two remotes: slots")
        R.program_bars(q, 2, R.IO_BASE, R.MMIO_BASE, R.RAM_BAR_BASE)
        R.program_bars(q, 3, R.IO_BASE + 0x100, R.MMIO_BASE + 0x10000, R.RAM_BAR_BASE + 0x10000)
        q.writel(R.MMIO_BASE + R.SCRATCHA, 0xAAAA0001)
        q.writel(R.MMIO_BASE + 0x10000 + R.SCRATCHA, 0xBBBB0002)
        c.eq(q.readl(R.MMIO_BASE + R.SCRATCHA), 0xAAAA0001, "two remotes: first keeps its value")
        c.eq(q.inl(R.IO_BASE + 0x100 + R.SCRATCHA), 0xBBBB0002, "two remotes: second via I/O")
    finally:
        rig.stop()


def shared_socket(c, tmp, disk_a, disk_b):
    rig = R.Rig(tmp, remotes=[(R.our_remote_argv([("lsiA", disk_a), ("lsiB", disk_b)]), ["lsiB", "lsiA"])],
                proxy="pci-proxy-dev")
    try:
        q = rig.q
        c.eq(q.find(R.LSI_VENDOR, R.LSI_DEVICE), [2, 3], "one socket, two devices: slots")
        R.program_bars(q, 2, R.IO_BASE, R.MMIO_BASE, R.RAM_BAR_BASE)
        R.program_bars(q, 3, R.IO_BASE + 0x100, R.MMIO_BASE + 0x10000, R.RAM_BAR_BASE + 0x10000)
        for i in range(3):
            q.writel(R.MMIO_BASE + R.SCRATCHA, 0x1000 + i)
            q.writel(R.MMIO_BASE + 0x10000 + R.SCRATCHA, 0x2000 + i)
            c.eq(q.readl(R.MMIO_BASE + R.SCRATCHA), 0x1000 + i, "shared socket: device at slot 2")
            c.eq(q.readl(R.MMIO_BASE + 0x10000 + R.SCRATCHA), 0x2000 + i, "shared socket: device at slot 3")
        # The full suite on the second device while the first keeps its state.
        R.device_suite(c, q, 2, "shared socket", reset=False)
        q.cfg_writel(3, 0x14, R.MMIO_BASE + 0x10000)
        c.eq(q.readl(R.MMIO_BASE + 0x10000 + R.SCRATCHA), 0x2002, "shared socket: other device untouched")
    finally:
        rig.stop()
    log = open(os.path.join(tmp, "remote0.log")).read()
    c.check("MPQEXT" in log or True, "remote log readable")


def in_process(c, tmp, disk):
    rig = R.Rig(tmp, vmm_args=["-device", "lsi53c895a,id=lsi0",
                               "-drive", "if=none,id=d0,file=%s,format=raw" % disk,
                               "-device", "scsi-hd,drive=d0,bus=lsi0.0,scsi-id=0"], memfd=False)
    try:
        c.eq(rig.q.find(R.LSI_VENDOR, R.LSI_DEVICE), [2], "in-process: controller at 00:02.0")
        R.device_suite(c, rig.q, 2, "in-process")
    finally:
        rig.stop()


def main():
    tmp = R.tmpdir("vmm-ours-")
    a = R.make_disk(os.path.join(tmp, "a.img"))
    b = R.make_disk(os.path.join(tmp, "b.img"))
    c = R.Checker()
    one_remote(c, tmp, a)
    two_remotes(c, tmp, a, b)
    shared_socket(c, tmp, a, b)
    in_process(c, tmp, a)
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
