#!/usr/bin/env python3
"""block_resize and block-set-write-threshold on our remote, seen by a guest.

Our qemu-scsi-dev (-qmp/-monitor unix sockets) is driven by stock QEMU's
x-pci-proxy-dev; the shared qtest-bench LSI SCRIPTS driver plays the guest
and sends SCSI commands. A stdlib QMP client (and an HMP one) resizes the
disk and sets write thresholds. Checked, on the image file and through SCSI:
- block_resize (QMP by device and by node-name, HMP with a MiB default) grows
  and shrinks the raw image; the disk then answers CHECK CONDITION with
  UNIT ATTENTION 06/2a/09 (CAPACITY DATA HAS CHANGED) once, READ CAPACITY
  gives the new size, the new space takes data, I/O past a shrunk end is
  refused (05/21/00); query-block shows the new virtual-size;
- QEMU's errors for unknown devices, bad sizes, and a qcow2 image (refused);
- block-set-write-threshold: no event for writes up to the threshold, one
  BLOCK_WRITE_THRESHOLD (node-name, amount-exceeded, write-threshold,
  timestamp) for the first write past it, to every QMP client, then the
  threshold reads 0 and later writes stay quiet; query-blockstats'
  wr_highest_offset follows the writes.
"""
import os
import shutil
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import mpqtest as T  # noqa: E402
from monitor_client import HmpClient, QmpClient, RemoteRig, Scsi, bench_setup  # noqa: E402

SHARED = os.environ.get("MPQ_SHARED_DIR") or os.path.join(HERE, "..", "..", "..", "shared")
BENCH = os.path.join(SHARED, "tools", "qtest-bench")
MiB = 1 << 20
DISK_MB = 8


def read_capacity(B, q, scsi):
    """(last LBA + 1) * block size from READ CAPACITY(10)."""
    q.memset(B.SCSI_BUF, 8, 0xEE)
    scsi.run(bytes([0x25] + [0] * 9), 8)
    d = q.memread(B.SCSI_BUF, 8)
    return (int.from_bytes(d[0:4], "big") + 1) * int.from_bytes(d[4:8], "big")


def sense_after_check(B, q, scsi, cdb, dlen):
    """Runs cdb expecting CHECK CONDITION; returns (key, asc, ascq) by REQUEST SENSE."""
    st = scsi.run(cdb, dlen, allow_check=True)
    if st != 2:
        return ("status", st)
    q.memset(B.SCSI_BUF, 18, 0)
    scsi.run(bytes([0x03, 0, 0, 0, 18, 0]), 18)
    d = q.memread(B.SCSI_BUF, 18)
    return (d[2] & 0x0F, d[12], d[13])


def file_size(path):
    return os.stat(path).st_size


def qcow2_refused_and_no_shutdown(chk, remote, tmp):
    """A qcow2 drive: block_resize is refused with QEMU's words, nothing changes.
    The same remote runs with -no-shutdown: when its proxy goes away it stays
    up (SHUTDOWN event, status "shutdown", monitors answer) until quit."""
    img = os.path.join(tmp, "q.qcow2")
    if subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "4M"]).returncode != 0:
        chk.check(False, "qemu-img create qcow2")
        return
    path = os.path.join(tmp, "qcow2-qmp.sock")
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    p = subprocess.Popen([remote, str(b.fileno()), "-device", "lsi53c895a,id=lsi0",
                          "-drive", "id=q0,file=%s,format=qcow2,if=none" % img,
                          "-device", "scsi-hd,id=sd0,drive=q0,bus=lsi0.0,scsi-id=0",
                          "-qmp", "unix:%s,server,nowait" % path, "-no-shutdown"],
                         pass_fds=[b.fileno()])
    b.close()
    try:
        c = QmpClient(path, p)
        c.negotiate()
        r = c.cmd("block_resize", {"device": "q0", "size": 8 * MiB})
        chk.eq(r.get("error"), {"class": "GenericError",
                                "desc": "Image format driver does not support resize"},
               "qcow2: block_resize refused")
        chk.eq(c.ret("query-block")[0]["inserted"]["image"]["virtual-size"], 4 * MiB,
               "qcow2: size unchanged")
        a.close()  # the proxy goes away
        ev = c.wait_event("SHUTDOWN")
        chk.eq(ev["data"], {"guest": True, "reason": "guest-shutdown"}, "-no-shutdown: SHUTDOWN event")
        chk.eq(c.ret("query-status"), {"status": "shutdown", "singlestep": False, "running": False},
               "-no-shutdown: still up, status shutdown")
        chk.check(p.poll() is None and c.ret("query-blockstats")[0]["device"] == "q0",
                  "-no-shutdown: monitors still answer")
        c.cmd("quit")
        c.close()
        chk.eq(p.wait(timeout=30), 0, "qcow2 remote quits cleanly")
    finally:
        a.close()
        T.stop(p)
    info = subprocess.run(["qemu-img", "info", "--output=json", img], capture_output=True, text=True)
    chk.check('"virtual-size": %d' % (4 * MiB) in info.stdout, "qcow2 image untouched (qemu-img info)")


def main():
    env = bench_setup(T, BENCH, "mpq-monitor-resize-", DISK_MB, 7)
    qemu, remote, B, QTest = env.qemu, env.remote, env.B, env.QTest
    chk, tmp, disk, rng = env.chk, env.tmp, env.disk, env.rng
    rig = RemoteRig(T, qemu, remote, tmp, disk, QTest)
    q = rig.q
    try:
        qmp = QmpClient(rig.qmp_path, rig.remote)
        qmp.negotiate()
        other = QmpClient(rig.qmp_path, rig.remote)
        other.negotiate()
        hmp = HmpClient(rig.hmp_path, rig.remote)
        scsi = Scsi(B, q)
        scsi.ready()
        node = qmp.ret("query-block")[0]["inserted"]["node-name"]
        chk.eq(read_capacity(B, q, scsi), DISK_MB * MiB, "READ CAPACITY before")

        # ---- grow by device name
        chk.eq(qmp.cmd("block_resize", {"device": "d0", "size": 16 * MiB}), {"return": {}},
               "block_resize d0 16 MiB")
        chk.eq(file_size(disk), 16 * MiB, "image file grew to 16 MiB")
        chk.eq(qmp.ret("query-block")[0]["inserted"]["image"]["virtual-size"], 16 * MiB,
               "query-block virtual-size 16 MiB")
        chk.eq(sense_after_check(B, q, scsi, bytes(6), 0), (6, 0x2A, 0x09),
               "TEST UNIT READY: UNIT ATTENTION, CAPACITY DATA HAS CHANGED")
        chk.eq(scsi.run(bytes(6), 0, allow_check=True), 0, "reported once")
        chk.eq(read_capacity(B, q, scsi), 16 * MiB, "READ CAPACITY after growing")
        data = rng.randbytes(8 * 512)
        lba = 12 * MiB // 512
        q.memwrite(B.SCSI_BUF, data)
        scsi.run(B.cdb_rw10(True, lba, 8), len(data))
        with open(disk, "rb") as f:
            chk.check(os.pread(f.fileno(), len(data), lba * 512) == data,
                      "a write into the new space reached the image")

        # ---- shrink by node name, then HMP (MiB by default)
        chk.eq(qmp.cmd("block_resize", {"node-name": node, "size": 4 * MiB}), {"return": {}},
               "block_resize node-name %s 4 MiB" % node)
        chk.eq(file_size(disk), 4 * MiB, "image file shrank to 4 MiB")
        chk.eq(sense_after_check(B, q, scsi, bytes(6), 0), (6, 0x2A, 0x09), "unit attention again")
        chk.eq(read_capacity(B, q, scsi), 4 * MiB, "READ CAPACITY after shrinking")
        chk.eq(sense_after_check(B, q, scsi, B.cdb_rw10(False, 4 * MiB // 512, 1), 512),
               (5, 0x21, 0x00), "a read past the new end: LBA OUT OF RANGE")
        chk.eq(hmp.cmd("block_resize d0 12"), "", "HMP block_resize d0 12")
        chk.eq(file_size(disk), 12 * MiB, "HMP: 12 means 12 MiB")
        chk.eq(sense_after_check(B, q, scsi, bytes(6), 0), (6, 0x2A, 0x09), "unit attention (HMP)")
        chk.eq(read_capacity(B, q, scsi), 12 * MiB, "READ CAPACITY after HMP resize")
        chk.check(hmp.cmd("block_resize nope 1").startswith(
            "Error: Cannot find device='nope' nor node-name=''"), "HMP error for an unknown device")

        # ---- QEMU's errors
        errs = [({"device": "nope", "size": MiB}, "Cannot find device='nope' nor node-name=''"),
                ({"size": MiB}, "Cannot find device='' nor node-name=''"),
                ({"device": "d0", "size": -1}, "Parameter 'size' expects a >0 size"),
                ({"device": "d0", "size": "1G"}, "Invalid parameter type for 'size', expected: integer"),
                ({"device": "d0"}, "Parameter 'size' is missing")]
        for args, desc in errs:
            chk.eq(qmp.cmd("block_resize", args).get("error"), {"class": "GenericError", "desc": desc},
                   "block_resize %s" % args)
        chk.eq(file_size(disk), 12 * MiB, "errors left the image alone")

        # ---- write threshold
        chk.eq(qmp.cmd("block-set-write-threshold", {"node-name": "d0", "write-threshold": 1})
               .get("error", {}).get("desc"), "Device 'd0' not found",
               "the threshold takes a node name, not a device")
        thr = 2 * MiB + 4096
        chk.eq(qmp.cmd("block-set-write-threshold", {"node-name": node, "write-threshold": thr}),
               {"return": {}}, "block-set-write-threshold %d" % thr)
        chk.eq(qmp.ret("query-block")[0]["inserted"]["write_threshold"], thr, "query-block shows it")
        q.memwrite(B.SCSI_BUF, rng.randbytes(16 * 512))
        scsi.run(B.cdb_rw10(True, (thr - 8 * 512) // 512, 8), 8 * 512)   # ends at the threshold
        qmp.ret("query-status")  # collects any event sent so far
        chk.check(not [e for e in qmp.events if e["event"] == "BLOCK_WRITE_THRESHOLD"],
                  "no event for a write ending at the threshold")
        scsi.run(B.cdb_rw10(True, (thr - 4 * 512) // 512, 16), 16 * 512)  # 12 sectors past
        ev = qmp.wait_event("BLOCK_WRITE_THRESHOLD")
        chk.eq(ev["data"], {"node-name": node, "amount-exceeded": 12 * 512, "write-threshold": thr},
               "BLOCK_WRITE_THRESHOLD data")
        chk.check(set(ev.get("timestamp", {})) == {"seconds", "microseconds"}, "event timestamp")
        chk.eq(other.wait_event("BLOCK_WRITE_THRESHOLD")["data"], ev["data"], "second client got it too")
        chk.eq(qmp.ret("query-block")[0]["inserted"]["write_threshold"], 0, "cleared after firing")
        scsi.run(B.cdb_rw10(True, 10 * MiB // 512, 8), 8 * 512)
        qmp.ret("query-status")
        chk.check(not [e for e in qmp.events if e["event"] == "BLOCK_WRITE_THRESHOLD"],
                  "fires once only")
        # The highest write so far went to 12 MiB (while the disk was 16 MiB);
        # QEMU never lowers it, not even when the image shrinks.
        chk.eq(qmp.ret("query-blockstats")[0]["stats"]["wr_highest_offset"], lba * 512 + len(data),
               "wr_highest_offset = end of the highest write")
        qmp.cmd("quit")
        chk.eq(rig.remote.wait(timeout=30), 0, "remote exits 0 on quit")
    finally:
        rig.stop()
    qcow2_refused_and_no_shutdown(chk, remote, tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    chk.finish()


if __name__ == "__main__":
    main()
