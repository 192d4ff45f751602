#!/usr/bin/env python3
"""Our VMM (mpqemu-system-x86_64) driving stock QEMU 7.2's x-remote LSI over
x-pci-proxy-dev: IDs, BAR sizing and remapping, register access, INTx as
qtest IRQ lines (no KVM), DMA, system reset; then the remote dies and the
device reads as all-ones while the VMM keeps answering."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import vmm_rig as R  # noqa: E402


def main():
    qemu = R.stock_qemu()
    tmp = R.tmpdir("vmm-stock-")
    disk = R.make_disk(os.path.join(tmp, "disk.img"))
    c = R.Checker()
    rig = R.Rig(tmp, remotes=[(R.stock_remote_argv(qemu, disk), ["lsi0"])])
    try:
        q = rig.q
        slots = q.find(R.LSI_VENDOR, R.LSI_DEVICE)
        c.eq(slots, [2], "controller at 00:02.0")
        c.eq(q.cfg_readl(0, 0), 0x12378086, "host bridge")
        c.eq(q.cfg_readl(1, 0), 0x70008086, "PIIX3")
        R.device_suite(c, q, 2, "stock remote")
        # The remote dies: accesses read all-ones, writes are dropped, the
        # VMM and qtest keep working.
        rig.remote_procs[0].kill()
        rig.remote_procs[0].wait()
        c.eq(q.readl(R.MMIO_BASE + R.SCRATCHA), 0xFFFFFFFF, "dead remote: MMIO reads all-ones")
        q.writel(R.MMIO_BASE + R.SCRATCHA, 1)
        c.eq(q.cfg_readl(2, 0), 0xFFFFFFFF, "dead remote: config reads all-ones")
        q.writel(0x1000, 0xABCD)
        c.eq(q.readl(0x1000), 0xABCD, "VMM still serves RAM")
        c.check(rig.vmm.poll() is None, "VMM still running")
        log = rig.vmm_log()
        c.eq(log.count("remote device lost"), 1, "one error line for the lost remote")
    finally:
        rig.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
