#!/usr/bin/env python3
"""Saved device state after disks were added and removed at run time.

Our VMM (qtest) drives an lsi53c895a in qemu-scsi-dev (disk sd0 at SCSI id 0). A disk is
hot-added through the remote's QMP (blockdev-add + device_add at scsi-id 1), the guest
takes its unit attention and writes to it, and the remote saves its state and is killed.
- A new remote started from that state without the added disk on its command line exits 1
  naming the disk (its controller, SCSI id and drive).
- With the disk on its command line it loads; the VMM reconnects (getfd +
  x-proxy-reconnect) and the disk carries on where it was: no second unit attention, the
  data written before the save reads back, new writes reach the image.
- The disk is removed (device_del; its -drive goes with it, as in QEMU) and the state saved
  again: a remote started from it with the disk still on its command line exits 1 naming
  the disk that was not plugged at the save; with the drive alone, naming the drive; with
  neither it loads.
"""
import os
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import faultrig as fr  # noqa: E402
import monitor_client as mc  # noqa: E402


def qmp_at(path, proc):
    c = mc.QmpClient(path, proc)
    c.negotiate()
    return c


def scsi_at(rig, target, cdb, dlen):
    """One command to SCSI id `target`; returns (status byte, stopped normally)."""
    img = fr.lb.scsi_command_script(fr.SLOT, target, len(cdb), dlen, fr.BUF)
    rig.q.memwrite(fr.SLOT, bytes(fr.lb.slot_with_cdb(img, cdb)))
    rig.lsi.start(fr.SLOT)
    ist, dstat, s0, s1, dsps = rig.lsi.wait_int(20)
    return rig.q.memread(fr.SLOT + 0x120, 1)[0], bool(dstat & fr.lb.DSTAT_SIR) and dsps == fr.lb.VEC_DONE


def write_at(rig, target, lba, data):
    rig.q.memwrite(fr.BUF, data)
    st, ok = scsi_at(rig, target, fr.lb.cdb_rw10(True, lba, len(data) // 512), len(data))
    return st == 0 and ok


def read_at(rig, target, lba, nblk):
    rig.q.memset(fr.BUF, nblk * 512, 0xEE)
    st, ok = scsi_at(rig, target, fr.lb.cdb_rw10(False, lba, nblk), nblk * 512)
    return rig.q.memread(fr.BUF, nblk * 512) if st == 0 and ok else None


def remote_argv(rig, fd, extra):
    saved = rig.remote_args
    rig.remote_args = list(extra)
    try:
        return rig.remote_cmd(fd)
    finally:
        rig.remote_args = saved


def start_remote(rig, extra, fd, log):
    return subprocess.Popen(remote_argv(rig, fd, extra), pass_fds=[fd], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT)


def try_load(rig, tmp, name, extra):
    """A remote started with `extra` (an -incoming-state among it) on a socket nobody
    serves: (exit status or None if it came up and stayed, its log)."""
    ms, rs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    logp = os.path.join(tmp, name + ".log")
    with open(logp, "wb") as log:
        p = start_remote(rig, extra, rs.fileno(), log)
    rs.close()
    rc = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rc = p.poll()
        out = open(logp, "rb").read().decode(errors="replace")
        if rc is not None or "device state loaded" in out:
            break
        time.sleep(0.05)
    if rc is None:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=10)
    ms.close()
    return rc, open(logp, "rb").read().decode(errors="replace")


def run():
    fr.need_peers()
    with fr.TmpDir() as tmp:
        disk = os.path.join(tmp, "disk.img")
        hot = os.path.join(tmp, "hot.img")
        fr.make_raw(disk, 16)
        fr.make_raw(hot, 8)
        rqmp = os.path.join(tmp, "remote1.qmp")
        vqmp = os.path.join(tmp, "vmm.qmp")
        state1 = os.path.join(tmp, "plugged.state")
        state2 = os.path.join(tmp, "unplugged.state")
        hot_drive = ["-drive", "id=hot,file=%s,format=raw,if=none" % hot]
        hot_disk = ["-device", "scsi-hd,id=hot0,drive=hot,bus=lsi0.0,scsi-id=1"]
        rig = fr.Rig(tmp, disk, vmm="ours",
                     remote_args=["-qmp", "unix:%s,server=on,wait=off" % rqmp, "-sandbox", "on,open=rw"],
                     vmm_args=["-qmp", "unix:%s,server=on,wait=off" % vqmp]).start()
        remote2 = None
        try:
            fr.require_writes(rig)
            r1 = qmp_at(rqmp, rig.remote)
            r = r1.cmd("blockdev-add", {"driver": "raw", "node-name": "hot",
                                        "file": {"driver": "file", "filename": hot}})
            assert r == {"return": {}}, "blockdev-add: %r" % r
            r = r1.cmd("device_add", {"driver": "scsi-hd", "id": "hot0", "drive": "hot",
                                      "bus": "lsi0.0", "scsi-id": 1})
            assert r == {"return": {}}, "device_add: %r" % r
            st, _ = scsi_at(rig, 1, bytes(6), 0)
            assert st == 2, "the new disk's first command: status %r (no unit attention?)" % st
            scsi_at(rig, 1, bytes([0x03, 0, 0, 0, 18, 0]), 18)
            st, _ = scsi_at(rig, 1, bytes(6), 0)
            assert st == 0, "TEST UNIT READY after the unit attention: %r" % st
            written = []
            for i in range(4):
                lba = 32 + 8 * i
                data = fr.pattern(lba, 7, 8)
                assert write_at(rig, 1, lba, data), "write %d to the hot-added disk" % i
                written.append((lba, data))
            ok, _ = rig.write_blocks(100, fr.pattern(100, 7, 8))
            assert ok, "write to disk 0"
            r = r1.cmd("x-device-state-save", {"filename": state1})
            assert r == {"return": {}}, "x-device-state-save: %r\n%s" % (r, rig.log("remote"))
            r1.close()
            rig.remote.send_signal(signal.SIGKILL)
            assert rig.remote.wait(timeout=10) == -signal.SIGKILL

            # Without the disk that was plugged when the state was saved: refused by name.
            rc, out = try_load(rig, tmp, "without", ["-incoming-state", state1])
            assert rc == 1, "a remote without the hot-added disk: exit %r, log:\n%s" % (rc, out)
            want = "saved state: drive 'hot' (raw) is not on this command line"
            assert want in out, "wanted %r, got:\n%s" % (want, out)
            rc, out = try_load(rig, tmp, "driveonly", ["-incoming-state", state1] + hot_drive)
            assert rc == 1, "a remote with the drive but not the disk: exit %r, log:\n%s" % (rc, out)
            want = "saved state: disk 'hot0' (lsi0.0 scsi-id 1, drive 'hot') is not on this command line"
            assert want in out, "wanted %r, got:\n%s" % (want, out)
            print("ok: a state with a hot-added disk is refused by a command line without it")

            # With it: the device and its disks carry on.
            ms, rs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            log2 = open(os.path.join(tmp, "remote2.log"), "wb")
            rqmp2 = os.path.join(tmp, "remote2.qmp")
            remote2 = start_remote(rig, ["-incoming-state", state1, "-qmp", "unix:%s,server=on,wait=off" % rqmp2,
                                         "-sandbox", "on,open=rw"] + hot_drive + hot_disk, rs.fileno(), log2)
            rs.close()
            vm = qmp_at(vqmp, rig.vmm)
            msg = b'{"execute": "getfd", "arguments": {"fdname": "r2"}}\n'
            socket.send_fds(vm.sock, [msg], [ms.fileno()])
            assert vm.response() == {"return": {}}
            ms.close()
            r = vm.cmd("x-proxy-reconnect", {"id": "lsi0", "fdname": "r2"})
            log2.flush()
            assert r == {"return": {}}, "x-proxy-reconnect: %r\n%s" % (
                r, open(os.path.join(tmp, "remote2.log"), errors="replace").read())
            st, _ = scsi_at(rig, 1, bytes(6), 0)
            assert st == 0, "TEST UNIT READY on the restored hot-added disk: %r (a fresh disk?)" % st
            for lba, data in written:
                assert read_at(rig, 1, lba, 8) == data, "hot-added disk, LBA %d after the move" % lba
            data = fr.pattern(200, 8, 8)
            assert write_at(rig, 1, 200, data), "write after the move"
            written.append((200, data))
            ok, _, got = rig.read_blocks(100, 8)
            assert ok and got == fr.pattern(100, 7, 8), "disk 0 after the move"
            print("ok: with the disk on the command line the state loads and the disk carries on")

            # Removed, then saved: the state no longer has the disk (the node stays).
            r2 = qmp_at(rqmp2, remote2)
            r = r2.cmd("device_del", {"id": "hot0"})
            assert r == {"return": {}}, "device_del: %r" % r
            r2.wait_event("DEVICE_DELETED")
            r = r2.cmd("x-device-state-save", {"filename": state2})
            assert r == {"return": {}}, "x-device-state-save after device_del: %r" % r
            r2.close()
            vm.close()
            rig.stop()
            remote2.send_signal(signal.SIGTERM)
            remote2.wait(timeout=10)
            log2.close()
            for lba, data in written:
                assert fr.file_blocks(hot, lba, 8) == data, "hot image at LBA %d" % lba

            rc, out = try_load(rig, tmp, "stale", ["-incoming-state", state2] + hot_drive + hot_disk)
            assert rc == 1, "a remote with the removed disk: exit %r, log:\n%s" % (rc, out)
            want = "disk 'hot0' (lsi0.0 scsi-id 1) is not in the saved state"
            assert want in out, "wanted %r, got:\n%s" % (want, out)
            rc, out = try_load(rig, tmp, "stale-drive", ["-incoming-state", state2] + hot_drive)
            assert rc == 1, "a remote with the removed disk's drive: exit %r, log:\n%s" % (rc, out)
            want = "drive 'hot' is not in the saved state"
            assert want in out, "wanted %r, got:\n%s" % (want, out)
            rc, out = try_load(rig, tmp, "match", ["-incoming-state", state2])
            assert rc is None and "device state loaded" in out, \
                "the matching command line (disk and drive gone): exit %r, log:\n%s" % (rc, out)
            print("ok: a state saved after device_del is refused by a command line that still has the disk")
        finally:
            if remote2 is not None and remote2.poll() is None:
                remote2.kill()
                remote2.wait()
            rig.stop()


if __name__ == "__main__":
    fr.main(run)
