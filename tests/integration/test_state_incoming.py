#!/usr/bin/env python3
"""Saved device state moves a device to a new process under a running
workload: our VMM (qtest) drives an lsi53c895a + scsi-hd in qemu-scsi-dev;
the remote saves its state (QMP x-device-state-save), is SIGKILLed, and a new
qemu-scsi-dev starts from the file (-incoming-state); its socket is handed to
the VMM (QMP getfd + x-proxy-reconnect). The workload carries on: what was
written reads back, a register the guest set is still set, no new unit
attention appears, new writes reach the image. Then hostile state files
(damaged, not a state, saved for another disk) are refused with a clear
error and exit status 1, before anything is served."""
import os
import signal
import socket
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import faultrig as fr  # noqa: E402
import monitor_client as mc  # noqa: E402

SCRATCHA = 0x34


def qmp_at(path, proc):
    c = mc.QmpClient(path, proc)
    c.negotiate()
    return c


def start_remote(rig, extra, sock_fd, log):
    args = rig.remote_args
    rig.remote_args = extra
    try:
        cmd = rig.remote_cmd(sock_fd)
    finally:
        rig.remote_args = args
    return subprocess.Popen(cmd, pass_fds=[sock_fd], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT)


def refused(rig, tmp, state, needle, disk=None):
    """A remote started from `state` exits 1 naming the problem."""
    ms, rs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    logp = os.path.join(tmp, "refused.log")
    saved_disk = rig.disk
    if disk:
        rig.disk = disk
    with open(logp, "wb") as log:
        p = start_remote(rig, ["-incoming-state", state], rs.fileno(), log)
    rig.disk = saved_disk
    rs.close()
    rc = p.wait(timeout=30)
    ms.close()
    out = open(logp, "rb").read().decode(errors="replace")
    assert rc == 1, "remote with %s: exit %r, log:\n%s" % (needle, rc, out)
    assert needle in out, "wanted %r in the refusal, got:\n%s" % (needle, out)
    assert "-incoming-state" in out, "the refusal does not name the option:\n" + out


def run():
    fr.need_peers()
    with fr.TmpDir() as tmp:
        disk = os.path.join(tmp, "disk.img")
        fr.make_raw(disk, 16)
        rqmp = os.path.join(tmp, "remote1.qmp")
        vqmp = os.path.join(tmp, "vmm.qmp")
        state = os.path.join(tmp, "dev.state")
        rig = fr.Rig(tmp, disk, vmm="ours",
                     remote_args=["-qmp", "unix:%s,server=on,wait=off" % rqmp,
                                  "-sandbox", "on,open=rw"],
                     vmm_args=["-qmp", "unix:%s,server=on,wait=off" % vqmp]).start()
        remote2 = None
        try:
            fr.require_writes(rig)
            written = []
            for i in range(12):
                lba = 64 + 8 * i
                data = fr.pattern(lba, 1, 8)
                ok, st = rig.write_blocks(lba, data)
                assert ok, "write %d failed (status %r)" % (i, st)
                written.append((lba, data))
            rig.q.writel(rig.lsi.mmio + SCRATCHA, 0x5a17e0ff)

            r1 = qmp_at(rqmp, rig.remote)
            r = r1.cmd("x-device-state-save", {"filename": state})
            assert r == {"return": {}}, "x-device-state-save: %r\n%s" % (r, rig.log("remote"))
            assert os.path.getsize(state) > 8192, "state file too small"
            with open(state, "rb") as f:
                assert f.read(8) == b"MPQSTATE"
            r1.close()

            # The whole remote dies.
            rig.remote.send_signal(signal.SIGKILL)
            assert rig.remote.wait(timeout=10) == -signal.SIGKILL

            # A new one from the saved state, on a new socket for the VMM.
            ms, rs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            log2 = open(os.path.join(tmp, "remote2.log"), "wb")
            rqmp2 = os.path.join(tmp, "remote2.qmp")
            remote2 = start_remote(rig, ["-incoming-state", state,
                                         "-qmp", "unix:%s,server=on,wait=off" % rqmp2],
                                   rs.fileno(), log2)
            rs.close()
            vm = qmp_at(vqmp, rig.vmm)
            # x-proxy-reconnect without a named fd, and getfd without an fd, fail cleanly.
            r = vm.cmd("x-proxy-reconnect", {"id": "lsi0", "fdname": "r2"})
            assert "error" in r and "not found" in r["error"]["desc"], r
            r = vm.cmd("getfd", {"fdname": "r2"})
            assert "error" in r and "SCM_RIGHTS" in r["error"]["desc"], r
            msg = b'{"execute": "getfd", "arguments": {"fdname": "r2"}}\n'
            socket.send_fds(vm.sock, [msg], [ms.fileno()])
            r = vm.response()
            assert r == {"return": {}}, "getfd: %r" % r
            ms.close()
            r = vm.cmd("x-proxy-reconnect", {"id": "lsi0", "fdname": "r2"})
            assert r == {"return": {}}, "x-proxy-reconnect: %r\nVMM log:\n%s" % (r, rig.log("vmm"))

            # The device carries on where it was.
            v = rig.q.readl(rig.lsi.mmio + SCRATCHA)
            assert v == 0x5a17e0ff, "SCRATCHA after the move: 0x%x" % v
            st, vec = rig.scsi(bytes(6), 0)  # TEST UNIT READY: no new unit attention
            assert st == 0, "TEST UNIT READY after the move: status %r (a fresh device?)" % st
            for lba, data in written:
                ok, st, got = rig.read_blocks(lba, 8)
                assert ok and got == data, "LBA %d after the move: ok=%r status=%r" % (lba, ok, st)
            for i in range(6):
                lba = 512 + 8 * i
                data = fr.pattern(lba, 2, 8)
                ok, st = rig.write_blocks(lba, data)
                assert ok, "write after the move failed (status %r)" % st
                written.append((lba, data))
            for lba, data in written:
                ok, st, got = rig.read_blocks(lba, 8)
                assert ok and got == data, "LBA %d read back: ok=%r" % (lba, ok)
            # The new remote runs with the default sandbox (no file
            # creation): x-device-state-save says so instead of dying.
            r2 = qmp_at(rqmp2, remote2)
            r = r2.cmd("x-device-state-save", {"filename": os.path.join(tmp, "no.state")})
            assert "error" in r and "sandbox" in r["error"]["desc"], r
            assert remote2.poll() is None and not os.path.exists(os.path.join(tmp, "no.state"))
            r2.close()
            vm.close()
            rig.stop()
            remote2.send_signal(signal.SIGTERM)
            remote2.wait(timeout=10)
            log2.close()
            for lba, data in written:
                assert fr.file_blocks(disk, lba, 8) == data, "image at LBA %d" % lba

            # Hostile state files.
            with open(state, "rb") as f:
                good = f.read()
            bad = os.path.join(tmp, "bad.state")
            with open(bad, "wb") as f:
                f.write(good[:100] + bytes([good[100] ^ 0x40]) + good[101:])
            refused(rig, tmp, bad, "checksum mismatch")
            with open(bad, "wb") as f:
                f.write(b"this is not a device state at all, just text\n" * 4)
            refused(rig, tmp, bad, "bad magic")
            with open(bad, "wb") as f:
                f.write(good[:len(good) // 2])
            refused(rig, tmp, bad, "payload length")
            other = os.path.join(tmp, "other.img")
            fr.make_raw(other, 8)
            refused(rig, tmp, state, "was 16777216 bytes, is 8388608 now", disk=other)
        finally:
            if remote2 is not None and remote2.poll() is None:
                remote2.kill()
                remote2.wait()
            rig.stop()
    print("ok: state saved, remote killed, new remote from -incoming-state, VMM reconnected; "
          "hostile state files refused")


if __name__ == "__main__":
    fr.main(run)
