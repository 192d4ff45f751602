#!/usr/bin/env python3
"""Disk hot-plug on our VMM's in-process controller, through its QMP and HMP.

mpqemu-system-x86_64 under qtest runs an in-process lsi53c895a (lsi0, disk sd0 at SCSI id 0)
and a proxied one (rlsi) served by our qemu-scsi-dev; the shared qtest-bench SCRIPTS driver
plays the guest on lsi0. Checked:
- blockdev-add raw over /dev/fdset/N (add-fd over the QMP socket), device_add scsi-hd at
  scsi-id 1: UNIT ATTENTION 06/3f/0e first, INQUIRY answers a disk, reads return the image's
  data and writes reach the image file; query-block, info block and info qtree list it;
- blockdev-del of a node in use is refused; device_del: DEVICE_DELETED, then INQUIRY and TEST
  UNIT READY at that id end in a selection timeout, a second device_del is DeviceNotFound;
  blockdev-del then succeeds and query-block no longer lists the node;
- HMP drive_add (qcow2 by path) / device_add / device_del; the drive goes with the disk;
  qemu-img check and the data on the qcow2 image;
- bad input, each with the remote's error while disk 0 keeps its data: a taken SCSI id, a
  bus that does not exist, a drive that does not exist or is in use, lun 1, an image that is
  not qcow2, an fdset that does not exist, a read-only fd for a writable drive, a PCI device
  for device_add / device_del, a disk for the proxied controller (its device process's
  monitor owns its disks; info block says so).
"""
import os
import shutil
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import mpqtest as T  # noqa: E402
from monitor_client import HmpClient, QmpClient, Scsi, Target, send_fd  # noqa: E402

SHARED = os.environ.get("MPQ_SHARED_DIR") or os.path.join(HERE, "..", "..", "..", "shared")
BENCH = os.path.join(SHARED, "tools", "qtest-bench")
MiB = 1 << 20
DISK_MB = 4


def main():
    import random
    vmm_bin = T.program("mpqemu-system-x86_64")
    remote_bin = T.program("qemu-scsi-dev")
    if not os.path.exists(os.path.join(BENCH, "lsi_bench.py")) or not shutil.which("qemu-img"):
        print("SKIP: qtest-bench (MPQ_SHARED_DIR) or qemu-img not found")
        sys.exit(T.SKIP)
    sys.path.insert(0, BENCH)
    import lsi_bench as B  # noqa: E402
    from qtest import QTest  # noqa: E402

    chk = T.Checker()
    tmp = T.tmpdir("mpq-vmm-hotplug-")
    rng = random.Random(23)
    disk = os.path.join(tmp, "disk.img")
    rdisk = os.path.join(tmp, "remote.img")
    hot = os.path.join(tmp, "hot.raw")
    for p in (disk, rdisk, hot):
        with open(p, "wb") as f:
            f.write(rng.randbytes(DISK_MB * MiB))
    with open(hot, "rb") as f:
        hot_orig = f.read()
    with open(disk, "rb") as f:
        disk0_head = f.read(4096)
    qc = os.path.join(tmp, "hot.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", qc, "%dM" % DISK_MB], check=True)
    notqcow = os.path.join(tmp, "garbage.img")
    with open(notqcow, "wb") as f:
        f.write(rng.randbytes(MiB))

    qmp_path, hmp_path = os.path.join(tmp, "qmp.sock"), os.path.join(tmp, "hmp.sock")
    qsock = os.path.join(tmp, "qtest.sock")
    vlog = open(os.path.join(tmp, "vmm.log"), "wb")
    ms, rs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    remote = subprocess.Popen(
        [remote_bin, str(rs.fileno()), "-device", "lsi53c895a,id=rlsi",
         "-drive", "id=rd0,file=%s,format=raw,if=none" % rdisk,
         "-device", "scsi-hd,id=rsd0,drive=rd0,bus=rlsi.0,scsi-id=0"],
        pass_fds=[rs.fileno()], stdout=vlog, stderr=subprocess.STDOUT)
    rs.close()
    q = QTest.listen(qsock)
    # The in-process controller sits in the lower slot: Scsi() drives the first one found.
    vmm = subprocess.Popen(
        [vmm_bin, "-machine", "pc,memory-backend=mem0", "-accel", "qtest", "-m", "128M",
         "-object", "memory-backend-memfd,id=mem0,size=128M,share=on",
         "-nodefaults", "-display", "none", "-qtest", "unix:" + qsock, "-qtest-log", "none",
         "-device", "lsi53c895a,id=lsi0,addr=3",
         "-drive", "if=none,id=d0,file=%s,format=raw" % disk,
         "-device", "scsi-hd,id=sd0,drive=d0,bus=lsi0.0,scsi-id=0",
         "-device", "pci-proxy-dev,id=rlsi,socket=%d,addr=6" % ms.fileno(),
         "-qmp", "unix:%s,server=on,wait=off" % qmp_path,
         "-monitor", "unix:%s,server=on,wait=off" % hmp_path],
        pass_fds=[ms.fileno()], stdout=vlog, stderr=subprocess.STDOUT)
    ms.close()
    try:
        q.accept(timeout=60, proc=vmm)
        q.cmd("endianness")
        qmp = QmpClient(qmp_path, vmm)
        qmp.negotiate()
        hmp = HmpClient(hmp_path, vmm)
        scsi = Scsi(B, q)
        scsi.ready()
        t0 = Target(scsi, 0)

        def disk0_ok(what):
            st, data = t0.read(0, 8)
            chk.check(st == 0 and data == disk0_head, "disk 0 still reads its data after: " + what)

        def err(r):
            return r.get("error", {}).get("desc", "") if isinstance(r, dict) else ""

        # ---- fds and blockdev-add errors
        fd = os.open(hot, os.O_RDWR)
        r = send_fd(qmp, "add-fd", {"fdset-id": 1, "opaque": "hot.raw"}, fd)
        os.close(fd)
        chk.eq(r.get("return", {}).get("fdset-id"), 1, "add-fd fdset 1: %r" % r)
        fdro = os.open(notqcow, os.O_RDONLY)
        r = send_fd(qmp, "add-fd", {"fdset-id": 3}, fdro)
        os.close(fdro)
        chk.check("return" in r, "add-fd of a read-only fd (fdset 3)")

        def badd(node, driver, filename, **extra):
            a = {"driver": driver, "node-name": node, "file": {"driver": "file", "filename": filename}}
            a.update(extra)
            return qmp.cmd("blockdev-add", a)
        chk.eq(err(badd("n", "raw", "/dev/fdset/9")), "Could not open '/dev/fdset/9': No such file or directory",
               "an fdset that does not exist")
        chk.eq(err(badd("n", "raw", "/dev/fdset/3")), "Could not open '/dev/fdset/3': Permission denied",
               "a read-only fd for a writable drive")
        r = badd("n", "qcow2", notqcow, **{"read-only": True})
        chk.check("qcow2" in err(r).lower() or "magic" in err(r).lower(), "not a qcow2 image: %r" % r)
        chk.eq(err(qmp.cmd("blockdev-add", {"driver": "raw", "file": {"driver": "file", "filename": hot}})),
               "'node-name' must be specified for the root node", "no node-name")
        disk0_ok("bad blockdev-add")
        chk.eq(badd("hot", "raw", "/dev/fdset/1"), {"return": {}}, "blockdev-add raw over /dev/fdset/1")
        chk.check("Duplicate" in err(badd("hot", "raw", "/dev/fdset/1")), "duplicate node-name")

        # ---- device_add errors
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
        chk.check("hotplugging" in err(dadd(driver="pci-proxy-dev", id="p9")), "no proxy hot-plug")
        r = dadd(id="x", drive="hot", bus="rlsi.0", **{"scsi-id": 1})
        chk.check("device process" in err(r) and "rlsi" in err(r),
                  "a disk for the proxied controller points at its device process: %r" % r)
        chk.eq(err(dadd(id="rlsi", drive="hot", bus="lsi0.0", **{"scsi-id": 1})),
               "Duplicate ID 'rlsi' for device", "a proxy's id")
        chk.check("hotplugging" in err(qmp.cmd("device_del", {"id": "lsi0"})), "device_del of a controller")
        chk.check("hotplugging" in err(qmp.cmd("device_del", {"id": "rlsi"})), "device_del of a proxy")
        disk0_ok("bad device_add")

        # ---- the real thing
        chk.eq(dadd(id="hot0", drive="hot", bus="lsi0.0", **{"scsi-id": 1, "serial": "HOT0"}), {"return": {}},
               "device_add scsi-hd id=hot0 scsi-id=1")
        blk = {b.get("qdev"): b for b in qmp.ret("query-block")}
        chk.check("hot0" in blk and blk["hot0"]["inserted"]["node-name"] == "hot", "query-block: %r" % list(blk))
        chk.check("rsd0" not in blk, "query-block does not list the device process's disk")
        info = hmp.cmd("info block")
        chk.check("Attached to:      hot0" in info, "info block lists the new disk:\n" + info)
        chk.check("rlsi (pci-proxy-dev): disks are listed by its device process's monitor" in info,
                  "info block says where the proxied controller's disks are listed:\n" + info)
        tree = hmp.cmd("info qtree")
        print(tree)
        lsi = tree.find('dev: lsi53c895a, id "lsi0"')
        chk.check(lsi >= 0 and "bus: lsi0.0" in tree[lsi:] and 'dev: scsi-hd, id "hot0"' in tree[lsi:]
                  and "scsi-id = 1 (0x1)" in tree and 'drive = "hot"' in tree,
                  "info qtree shows hot0 at scsi-id 1 on lsi0.0")
        chk.check('dev: pci-proxy-dev, id "rlsi"' in tree, "info qtree shows the proxy")
        ids = [d.get("qdev_id") for d in qmp.ret("query-pci")[0]["devices"]]
        chk.check("lsi0" in ids and "rlsi" in ids, "query-pci: %r" % ids)
        t1 = Target(scsi, 1)
        chk.eq(t1.run(bytes(6), 0), 2, "first command to the new disk: CHECK CONDITION")
        chk.eq(t1.sense(), (6, 0x3F, 0x0E), "UNIT ATTENTION: REPORTED LUNS DATA HAS CHANGED")
        chk.eq(t1.inquiry(), (0, 0x00), "INQUIRY: a direct-access device at scsi-id 1")
        chk.eq(t1.run(bytes(6), 0), 0, "then TEST UNIT READY is GOOD")
        st, data = t1.read(16, 8)
        chk.check(st == 0 and data == hot_orig[16 * 512:24 * 512], "the new disk reads the image's data")
        new = rng.randbytes(16 * 512)
        chk.eq(t1.write(100, new), 0, "a write to the new disk")
        with open(hot, "rb") as f:
            chk.check(os.pread(f.fileno(), len(new), 100 * 512) == new, "the write reached the image file")
        chk.eq(err(qmp.cmd("blockdev-del", {"node-name": "hot"})), "Node hot is in use",
               "blockdev-del of a node in use")
        chk.eq(err(qmp.cmd("blockdev-del", {"node-name": "d0"})), "Node d0 is in use",
               "blockdev-del of the command line's drive")
        disk0_ok("the new disk's I/O")

        chk.eq(qmp.cmd("device_del", {"id": "hot0"}), {"return": {}}, "device_del hot0")
        ev = qmp.wait_event("DEVICE_DELETED")
        chk.eq(ev["data"], {"device": "hot0", "path": "/machine/peripheral/hot0"}, "DEVICE_DELETED data")
        chk.check(t1.selection_timeout(bytes([0x12, 0, 0, 0, 36, 0]), 36),
                  "INQUIRY at scsi-id 1: selection timeout")
        chk.check(t1.selection_timeout(), "TEST UNIT READY at scsi-id 1: selection timeout")
        chk.eq(qmp.cmd("device_del", {"id": "hot0"}).get("error"),
               {"class": "DeviceNotFound", "desc": "Device 'hot0' not found"}, "second device_del")
        disk0_ok("device_del")
        chk.check("hot0" not in hmp.cmd("info block"), "info block no longer shows hot0")
        tree = hmp.cmd("info qtree")
        chk.check('id "hot0"' not in tree and 'dev: scsi-hd, id "sd0"' in tree,
                  "info qtree no longer shows hot0, still sd0")
        chk.eq(qmp.cmd("blockdev-del", {"node-name": "hot"}), {"return": {}}, "blockdev-del hot")
        chk.check("hot" not in [b["inserted"]["node-name"] for b in qmp.ret("query-block")],
                  "query-block no longer lists it")
        chk.eq(qmp.cmd("remove-fd", {"fdset-id": 1}), {"return": {}}, "remove-fd 1")

        # ---- qcow2 through HMP, by path (the VMM has no sandbox)
        chk.eq(hmp.cmd("drive_add 0 if=none,id=hq,file=%s,format=qcow2" % qc).strip(), "OK", "HMP drive_add")
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
        chk.eq(qmp.cmd("quit"), {"return": {}}, "quit")
        chk.eq(vmm.wait(timeout=30), 0, "VMM exits 0 on quit (it never died)")
    finally:
        try:
            q.close()
        except Exception:
            pass
        T.stop(vmm)
        T.stop(remote)
        vlog.close()
    r = subprocess.run(["qemu-img", "check", qc], capture_output=True, text=True)
    chk.eq(r.returncode, 0, "qemu-img check of the hot-plugged qcow2: %s" % r.stdout.strip()[-200:])
    conv = os.path.join(tmp, "qc.raw")
    subprocess.run(["qemu-img", "convert", "-O", "raw", qc, conv], check=True)
    with open(conv, "rb") as f:
        chk.check(os.pread(f.fileno(), len(qdata), 2048 * 512) == qdata, "the qcow2 image holds the data")
    if chk.failures:
        print(open(os.path.join(tmp, "vmm.log"), errors="replace").read()[-3000:])
    shutil.rmtree(tmp, ignore_errors=True)
    chk.finish()


if __name__ == "__main__":
    main()
