#!/usr/bin/env python3
"""Monitors of our VMM (mpqemu-system-x86_64).

The VMM runs under qtest with a proxied lsi53c895a served by our remote and
an in-process lsi53c895a + scsi-hd, with `-qmp unix:...,server,nowait`, a
`-chardev socket,...` + `-mon chardev=..,mode=readline` HMP and a TCP QMP.
Checked: HMP and QMP views of PCI (with BARs programmed through qtest),
block devices and chardevs; query-remote-devices; RESET events for a monitor
reset (exactly one, host-qmp-system-reset) and for a guest reset through
port 0xcf9 (guest-reset); X_REMOTE_DISCONNECTED when the remote process
dies; SHUTDOWN and exit status 0 on quit.
"""
import os
import re
import shutil
import signal
import socket
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import mpqtest as T  # noqa: E402
import vmm_rig as R  # noqa: E402
from monitor_client import HmpClient, QmpClient  # noqa: E402


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    chk = T.Checker()
    tmp = R.tmpdir("mpq-monvmm-")
    rdisk = R.make_disk(os.path.join(tmp, "remote.img"), 4)
    vdisk = R.make_disk(os.path.join(tmp, "local.img"), 2)
    qmp_path = os.path.join(tmp, "qmp.sock")
    hmp_path = os.path.join(tmp, "hmp.sock")
    port = free_port()
    rig = R.Rig(tmp, remotes=[(R.our_remote_argv([("lsi0", rdisk)]), ["lsi0"])],
                proxy="pci-proxy-dev",
                vmm_args=["-device", "lsi53c895a,id=lsi1",
                          "-drive", "if=none,id=vd0,file=%s,format=raw" % vdisk,
                          "-device", "scsi-hd,id=vsd0,drive=vd0,bus=lsi1.0,scsi-id=0",
                          "-qmp", "unix:%s,server,nowait" % qmp_path,
                          "-chardev", "socket,id=hmon,path=%s,server=on,wait=off" % hmp_path,
                          "-mon", "chardev=hmon,mode=readline",
                          "-qmp", "tcp:127.0.0.1:%d,server=on,wait=off" % port])
    try:
        q = rig.q
        qmp = QmpClient(qmp_path, rig.vmm)
        qmp.negotiate()
        hmp = HmpClient(hmp_path, rig.vmm)
        tcp = socket.create_connection(("127.0.0.1", port), timeout=30)
        greeting = tcp.makefile("rb").readline()
        chk.check(b'"QMP"' in greeting, "TCP QMP greeting")
        tcp.close()

        slots = q.find(0x1000, 0x0012)
        chk.eq(len(slots), 2, "two controllers on the bus")
        R.program_bars(q, slots[0])
        pci = qmp.ret("query-pci")
        devs = {d["qdev_id"]: d for d in pci[0]["devices"]}
        chk.check("lsi0" in devs and "lsi1" in devs, "query-pci lists both controllers")
        descs = [d["class_info"].get("desc") for d in pci[0]["devices"]]
        chk.check("Host bridge" in descs and "ISA bridge" in descs, "query-pci lists the chipset")
        lsi0 = devs.get("lsi0", {})
        chk.eq(lsi0.get("id", {}).get("vendor"), 0x1000, "proxied vendor read over the wire")
        chk.eq([(r["bar"], r["type"], r["size"]) for r in lsi0.get("regions", [])],
               [(0, "io", 256), (1, "memory", 1024), (2, "memory", 8192)], "proxied regions")
        chk.eq([r["address"] for r in lsi0.get("regions", [])],
               [R.IO_BASE, R.MMIO_BASE, R.RAM_BAR_BASE], "programmed BAR addresses")
        chk.eq(lsi0.get("slot"), slots[0], "slot")
        text = hmp.cmd("info pci")
        chk.check("SCSI controller: PCI device 1000:0012" in text and 'id "lsi0"' in text
                  and 'id "lsi1"' in text, "HMP info pci")
        chk.check(("BAR0: I/O at %#06x" % R.IO_BASE) in text, "HMP info pci BAR0 address")

        blk = qmp.ret("query-block")
        chk.eq([b["device"] for b in blk], ["vd0"], "query-block on the VMM")
        chk.eq(blk[0]["inserted"]["file"] if blk else None, vdisk, "query-block file")
        chk.eq(blk[0]["qdev"] if blk else None, "vsd0", "query-block qdev")
        chk.check(re.match(r"vd0 \(#block\d+\): %s \(raw\)" % re.escape(vdisk),
                           hmp.cmd("info block")) is not None, "HMP info block")
        st = qmp.ret("query-blockstats")
        chk.eq(st[0]["stats"]["rd_bytes"] if st else None, 0, "query-blockstats")
        labels = [c["label"] for c in qmp.ret("query-chardev")]
        chk.check("hmon" in labels and "compat_monitor0" in labels, "query-chardev %r" % labels)
        chk.eq(qmp.ret("query-status")["status"], "running", "query-status")
        rd = qmp.ret("query-remote-devices")
        chk.eq([(d["id"], d["channel"]) for d in rd], [("lsi0", "connected")],
               "query-remote-devices")

        # Reset from the monitor: one RESET, ours.
        qmp.ret("system_reset")
        ev = qmp.wait_event("RESET")
        chk.eq(ev["data"], {"guest": False, "reason": "host-qmp-system-reset"}, "monitor RESET")
        qmp.ret("query-status")
        chk.check(not [e for e in qmp.events if e["event"] == "RESET"], "exactly one RESET")
        # Reset by the guest through the PIIX3 reset control register.
        q.outb(0xCF9, 0x06)
        q.cmd("endianness")
        ev = qmp.wait_event("RESET")
        chk.eq(ev["data"], {"guest": True, "reason": "guest-reset"}, "guest RESET")

        # The remote dies: an event and the channel state say so.
        rig.remote_procs[0].send_signal(signal.SIGKILL)
        rig.remote_procs[0].wait(timeout=30)
        q.inb(R.IO_BASE)          # the proxy notices on its next access
        ev = qmp.wait_event("X_REMOTE_DISCONNECTED")
        chk.eq(ev["data"].get("id"), "lsi0", "X_REMOTE_DISCONNECTED id")
        chk.check(isinstance(ev["data"].get("reason"), str), "X_REMOTE_DISCONNECTED reason")
        rd = qmp.ret("query-remote-devices")
        chk.eq([(d["id"], d["channel"]) for d in rd], [("lsi0", "disconnected")],
               "channel disconnected")
        chk.check("channel disconnected" in hmp.cmd("info remote-devices"),
                  "HMP info remote-devices")

        r = qmp.cmd("quit", id=9)
        chk.eq(r, {"return": {}, "id": 9}, "quit")
        ev = qmp.wait_event("SHUTDOWN")
        chk.eq(ev["data"], {"guest": False, "reason": "host-qmp-quit"}, "SHUTDOWN")
        chk.eq(rig.vmm.wait(timeout=30), 0, "VMM exits 0")
        chk.check(not os.path.exists(qmp_path), "QMP socket removed at exit")
    finally:
        rig.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    chk.finish()


if __name__ == "__main__":
    main()
