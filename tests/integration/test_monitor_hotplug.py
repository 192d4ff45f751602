#!/usr/bin/env python3
"""Disk hot-plug on our remote (sandbox on, the default): QMP and HMP, seen over SCSI.

Our qemu-scsi-dev (-qmp/-monitor sockets, lsi0 with disk sd0 at SCSI id 0) is driven by stock
QEMU's x-pci-proxy-dev; the shared qtest-bench SCRIPTS driver plays the guest. Checked:
- add-fd passes an image over the QMP socket (SCM_RIGHTS); query-fdsets lists it; getfd/closefd;
- blockdev-add raw over {"driver": "file", "filename": "/dev/fdset/N"}, device_add scsi-hd at
  scsi-id 1: the new disk's first command gets UNIT ATTENTION 06/3f/0e (REPORTED LUNS DATA HAS
  CHANGED), then it reads the image and its writes reach the image file;
- query-block shows the node and the disk using it; blockdev-del of a node in use is refused;
- device_del: DEVICE_DELETED (device, path), the id then answers a selection timeout, a second
  device_del is DeviceNotFound; blockdev-del and remove-fd then succeed;
- HMP: drive_add (qcow2 over /dev/fdset/N) / device_add / device_del; the drive goes with the
  disk (as QEMU's drive_add drives do); qemu-img check and the data on the qcow2 image;
- bad input, each with a clear error while disk 0 keeps answering with its data: a taken SCSI
  id, a bus that does not exist, a drive that does not exist or is in use, lun 1, an image that
  is not qcow2, an fdset that does not exist, a read-only fd for a writable drive, add-fd
  without an fd, a path under the sandbox (open=deny), a PCI device for device_add/device_del.
"""
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import mpqtest as T  # noqa: E402
from monitor_client import HmpClient, QmpClient, RemoteRig, Scsi, Target, bench_setup, send_fd  # noqa: E402

SHARED = os.environ.get("MPQ_SHARED_DIR") or os.path.join(HERE, "..", "..", "..", "shared")
BENCH = os.path.join(SHARED, "tools", "qtest-bench")
MiB = 1 << 20
DISK_MB = 4


def main():
    env = bench_setup(T, BENCH, "mpq-monitor-hotplug-", DISK_MB, 19)
    qemu, remote, B, QTest = env.qemu, env.remote, env.B, env.QTest
    chk, tmp, disk, rng = env.chk, env.tmp, env.disk, env.rng
    hot = os.path.join(tmp, "hot.raw")
    with open(hot, "wb") as f:
        f.write(rng.randbytes(DISK_MB * MiB))
    with open(hot, "rb") as f:
        hot_orig = f.read()
    qc = os.path.join(tmp, "hot.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", qc, "%dM" % DISK_MB], check=True)
    notqcow = os.path.join(tmp, "garbage.img")
    with open(notqcow, "wb") as f:
        f.write(rng.randbytes(MiB))
    with open(disk, "rb") as f:
        disk0_head = f.read(4096)

    rig = RemoteRig(T, qemu, remote, tmp, disk, QTest)
    q = rig.q
    try:
        qmp = QmpClient(rig.qmp_path, rig.remote)
        qmp.negotiate()
        hmp = HmpClient(rig.hmp_path, rig.remote)
        scsi = Scsi(B, q)
        scsi.ready()
        t0 = Target(scsi, 0)

        def disk0_ok(what):
            st, data = t0.read(0, 8)
            chk.check(st == 0 and data == disk0_head, "disk 0 still reads its data after: " + what)

        def err(r):
            return r.get("error", {}).get("desc", "") if isinstance(r, dict) else ""

        # ---- fds
        r = qmp.cmd("add-fd", {"fdset-id": 1})
        chk.eq(err(r), "No file descriptor supplied via SCM_RIGHTS", "add-fd without an fd")
        fd = os.open(hot, os.O_RDWR)
        r = send_fd(qmp, "add-fd", {"fdset-id": 1, "opaque": "hot.raw"}, fd)
        os.close(fd)
        chk.eq(r.get("return", {}).get("fdset-id"), 1, "add-fd fdset 1: %r" % r)
        sets = qmp.ret("query-fdsets")
        chk.check(len(sets) == 1 and sets[0]["fdset-id"] == 1 and sets[0]["fds"][0]["opaque"] == "hot.raw",
                  "query-fdsets lists it: %r" % sets)
        fd = os.open(notqcow, os.O_RDONLY)
        chk.eq(send_fd(qmp, "getfd", {"fdname": "spare"}, fd), {"return": {}}, "getfd spare")
        os.close(fd)
        chk.eq(qmp.cmd("closefd", {"fdname": "spare"}), {"return": {}}, "closefd spare")
        chk.eq(err(qmp.cmd("closefd", {"fdname": "spare"})), "File descriptor named 'spare' not found",
               "closefd again")
        fdro = os.open(notqcow, os.O_RDONLY)
        r = send_fd(qmp, "add-fd", {"fdset-id": 3}, fdro)
        os.close(fdro)
        chk.check("return" in r, "add-fd of a read-only fd (fdset 3)")

        # ---- blockdev-add: errors first
        def badd(node, driver, filename, **extra):
            a = {"driver": driver, "node-name": node, "file": {"driver": "file", "filename": filename}}
            a.update(extra)
            return qmp.cmd("blockdev-add", a)
        chk.check("add-fd" in err(badd("p", "raw", hot)),
                  "a path under the sandbox is refused and names add-fd: %r" % err(badd("p", "raw", hot)))
        chk.eq(err(badd("n", "raw", "/dev/fdset/9")), "Could not open '/dev/fdset/9': No such file or directory",
               "an fdset that does not exist")
        chk.eq(err(badd("n", "raw", "/dev/fdset/3")), "Could not open '/dev/fdset/3': Permission denied",
               "a read-only fd for a writable drive")
        r = badd("n", "qcow2", "/dev/fdset/3", **{"read-only": True})
        chk.check("qcow2" in err(r).lower() or "magic" in err(r).lower(), "not a qcow2 image: %r" % r)
        chk.eq(err(qmp.cmd("blockdev-add", {"driver": "vmdk", "node-name": "v", "file": {"driver": "file",
                                                                                         "filename": "x"}})),
               "Parameter 'driver' does not accept value 'vmdk'", "unknown driver")
        chk.eq(err(qmp.cmd("blockdev-add", {"driver": "raw", "file": {"driver": "file", "filename": "x"}})),
               "'node-name' must be specified for the root node", "no node-name")
        disk0_ok("bad blockdev-add")

        chk.eq(badd("hot", "raw", "/dev/fdset/1"), {"return": {}}, "blockdev-add raw over /dev/fdset/1")
        chk.check("Duplicate" in err(badd("hot", "raw", "/dev/fdset/1")), "duplicate node-name")

        # ---- device_add: errors
        def dadd(**a):
            a.setdefault("driver", "scsi-hd")
            return qmp.cmd("device_add", a)
        chk.eq(err(dadd(id="x", drive="hot", bus="lsi0.0", **{"scsi-id": 0})),
               "SCSI id 0 is already in use on bus 'lsi0.0'", "a taken SCSI id")
        chk.eq(err(dadd(id="x", drive="hot", bus="nope.0", **{"scsi-id": 1})), "Bus 'nope.0' not found",
               "a bus that does not exist")
        chk.eq(err(dadd(id="x", drive="nope", bus="lsi0.0", **{"scsi-id": 1})),
               "Property 'scsi-hd.drive' can't find value 'nope'", "a drive that does not exist")
        chk.eq(err(dadd(id="x", drive="d0", bus="lsi0.0", **{"scsi-id": 1})),
               "Property 'scsi-hd.drive' can't take value 'd0', it's in use", "a drive in use")
        chk.eq(err(dadd(id="x", drive="hot", bus="lsi0.0", **{"scsi-id": 1, "lun": 1})),
               "bad scsi device lun: 1", "lun 1")
        chk.eq(err(dadd(id="sd0", drive="hot", bus="lsi0.0", **{"scsi-id": 1})),
               "Duplicate ID 'sd0' for device", "a taken device id")
        chk.check("hotplugging" in err(dadd(driver="lsi53c895a", id="lsi9")), "no PCI hot-plug")
        disk0_ok("bad device_add")

        # ---- the real thing
        chk.eq(dadd(id="hot0", drive="hot", bus="lsi0.0", **{"scsi-id": 1, "serial": "HOT0"}), {"return": {}},
               "device_add scsi-hd id=hot0 scsi-id=1")
        blk = {b.get("qdev"): b for b in qmp.ret("query-block")}
        chk.check("hot0" in blk and blk["hot0"]["inserted"]["node-name"] == "hot", "query-block: %r" % list(blk))
        tree = hmp.cmd("info qtree")
        chk.check('dev: scsi-hd, id "hot0"' in tree and "scsi-id = 1 (0x1)" in tree and "bus: lsi0.0" in tree,
                  "info qtree shows hot0 on lsi0.0:\n" + tree)
        t1 = Target(scsi, 1)
        chk.eq(t1.run(bytes(6), 0), 2, "first command to the new disk: CHECK CONDITION")
        chk.eq(t1.sense(), (6, 0x3F, 0x0E), "UNIT ATTENTION: REPORTED LUNS DATA HAS CHANGED")
        chk.eq(t1.run(bytes(6), 0), 0, "then TEST UNIT READY is GOOD")
        st, data = t1.read(16, 8)
        chk.check(st == 0 and data == hot_orig[16 * 512:24 * 512], "the new disk reads the image's data")
        new = rng.randbytes(16 * 512)
        chk.eq(t1.write(100, new), 0, "a write to the new disk")
        with open(hot, "rb") as f:
            chk.check(os.pread(f.fileno(), len(new), 100 * 512) == new, "the write reached the image file")
        chk.eq(qmp.cmd("block-set-write-threshold", {"node-name": "hot", "write-threshold": 8 * MiB}),
               {"return": {}}, "block-set-write-threshold on a blockdev-add node")
        chk.eq(qmp.cmd("block_resize", {"node-name": "hot", "size": 6 * MiB}), {"return": {}},
               "block_resize of a blockdev-add node")
        chk.eq(os.path.getsize(hot), 6 * MiB, "the image grew to 6 MiB")
        chk.eq(t1.run(bytes(6), 0), 2, "resized: CHECK CONDITION")
        chk.eq(t1.sense(), (6, 0x2A, 0x09), "CAPACITY DATA HAS CHANGED")
        chk.eq(err(qmp.cmd("blockdev-del", {"node-name": "hot"})), "Node hot is in use",
               "blockdev-del of a node in use")
        chk.eq(err(qmp.cmd("blockdev-del", {"node-name": "d0"})), "Node d0 is in use",
               "blockdev-del of the command line's drive")
        disk0_ok("the new disk's I/O")

        chk.check("hotplugging" in err(qmp.cmd("device_del", {"id": "lsi0"})), "device_del of the controller")
        chk.eq(qmp.cmd("device_del", {"id": "hot0"}), {"return": {}}, "device_del hot0")
        ev = qmp.wait_event("DEVICE_DELETED")
        chk.eq(ev["data"], {"device": "hot0", "path": "/machine/peripheral/hot0"}, "DEVICE_DELETED data")
        chk.check(t1.selection_timeout(), "scsi-id 1 is gone (selection timeout)")
        chk.eq(qmp.cmd("device_del", {"id": "hot0"}).get("error"),
               {"class": "DeviceNotFound", "desc": "Device 'hot0' not found"}, "second device_del")
        disk0_ok("device_del")
        chk.check('id "hot0"' not in hmp.cmd("info qtree"), "info qtree no longer shows hot0")
        chk.eq(qmp.cmd("blockdev-del", {"node-name": "hot"}), {"return": {}}, "blockdev-del hot")
        chk.check("hot" not in [b["inserted"]["node-name"] for b in qmp.ret("query-block")],
                  "query-block no longer lists it")
        chk.eq(qmp.cmd("remove-fd", {"fdset-id": 1}), {"return": {}}, "remove-fd 1")
        chk.eq(err(qmp.cmd("remove-fd", {"fdset-id": 1})), "File descriptor named 'fdset-id:1' not found",
               "remove-fd again")

        # ---- qcow2 through HMP
        fd = os.open(qc, os.O_RDWR)
        r = send_fd(qmp, "add-fd", {"fdset-id": 2}, fd)
        os.close(fd)
        chk.check("return" in r, "add-fd fdset 2 (qcow2)")
        chk.eq(hmp.cmd("drive_add 0 if=none,id=hq,file=/dev/fdset/2,format=qcow2").strip(), "OK", "HMP drive_add")
        chk.eq(hmp.cmd("device_add scsi-hd,id=hq0,drive=hq,bus=lsi0.0,scsi-id=2").strip(), "",
               "HMP device_add")
        t2 = Target(scsi, 2)
        chk.eq(t2.run(bytes(6), 0), 2, "qcow2 disk: unit attention first")
        t2.sense()
        qdata = rng.randbytes(32 * 512)
        chk.eq(t2.write(2048, qdata), 0, "a write to the qcow2 disk")
        st, back = t2.read(2048, 32)
        chk.check(st == 0 and back == qdata, "read back from the qcow2 disk")
        chk.eq(hmp.cmd("device_del hq0").strip(), "", "HMP device_del")
        chk.check(qmp.wait_event("DEVICE_DELETED")["data"]["device"] == "hq0", "DEVICE_DELETED for hq0")
        chk.check("hq" not in [b["device"] for b in qmp.ret("query-block")],
                  "the drive_add drive went with its disk")
        chk.check(hmp.cmd("device_del hq0").startswith("Error: Device 'hq0' not found"), "HMP error")
        disk0_ok("the qcow2 disk")
        qmp.cmd("quit")
        chk.eq(rig.remote.wait(timeout=30), 0, "remote exits 0 on quit (it never died)")
    finally:
        rig.stop()
    r = subprocess.run(["qemu-img", "check", qc], capture_output=True, text=True)
    chk.eq(r.returncode, 0, "qemu-img check of the hot-plugged qcow2: %s" % r.stdout.strip()[-200:])
    conv = os.path.join(tmp, "qc.raw")
    subprocess.run(["qemu-img", "convert", "-O", "raw", qc, conv], check=True)
    with open(conv, "rb") as f:
        chk.check(os.pread(f.fileno(), len(qdata), 2048 * 512) == qdata, "the qcow2 image holds the data")
    shutil.rmtree(tmp, ignore_errors=True)
    chk.finish()


if __name__ == "__main__":
    main()
