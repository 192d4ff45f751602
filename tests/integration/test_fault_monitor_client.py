#!/usr/bin/env python3
"""Monitor clients that vanish mid-command must not hurt the remote: a QMP
client closing inside a JSON value, one closing right after sending a
command (before its reply), one resetting the connection (RST) with a
command queued, one stopping half-way through a huge value, and an HMP
client closing mid-line. Afterwards the remote still serves SCSI I/O and a
new QMP client gets normal answers. Runs with the default sandbox on, so
the monitor's accept/recv/send paths are inside the allowlist."""
import json
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import faultrig as fr  # noqa: E402


def connect(path, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            s.settimeout(timeout)
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def read_json(s, buf):
    while b"\n" not in buf[0]:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError("monitor closed the connection")
        buf[0] += chunk
    line, _, rest = buf[0].partition(b"\n")
    buf[0] = rest
    return json.loads(line)


def qmp_ok(path):
    s = connect(path)
    buf = [b""]
    greeting = read_json(s, buf)
    assert "QMP" in greeting, greeting
    s.sendall(b'{"execute":"qmp_capabilities"}\n')
    assert read_json(s, buf) == {"return": {}}
    s.sendall(b'{"execute":"query-block","id":7}\n')
    r = read_json(s, buf)
    while "event" in r:
        r = read_json(s, buf)
    assert r.get("id") == 7 and isinstance(r.get("return"), list), r
    s.close()
    return r["return"]


def run():
    fr.need_peers()
    with fr.TmpDir() as tmp:
        disk = os.path.join(tmp, "disk.img")
        fr.make_raw(disk, 16, pattern=b"mpq-monitor-test")
        qmp = os.path.join(tmp, "qmp.sock")
        hmp = os.path.join(tmp, "hmp.sock")
        rig = fr.Rig(tmp, disk, remote_args=[
            "-qmp", "unix:%s,server=on,wait=off" % qmp,
            "-monitor", "unix:%s,server=on,wait=off" % hmp])
        rig.start()
        try:
            if "not supported" in rig.log("remote") or not os.path.exists(qmp):
                fr.skip("qemu-scsi-dev has no monitors in this build")
            assert qmp_ok(qmp), "query-block returned nothing"

            # 1. closes inside a JSON value
            s = connect(qmp)
            s.recv(4096)
            s.sendall(b'{"execute":"qmp_capabilities"}\n{"execute":"query-bl')
            s.close()
            # 2. sends a command and leaves before the reply
            s = connect(qmp)
            s.sendall(b'{"execute":"qmp_capabilities"}\n{"execute":"query-pci"}\n' * 50)
            s.close()
            # 3. RST with commands queued
            s = connect(qmp)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.sendall(b'{"execute":"qmp_capabilities"}\n' + b'{"execute":"query-status"}\n' * 100)
            s.close()
            # 4. half of a huge value, then gone
            s = connect(qmp)
            s.recv(4096)
            s.sendall(b'{"execute":"qmp_capabilities","arguments":{"x":"' + b"A" * 200000)
            s.close()
            # 5. HMP client closes mid-line
            h = connect(hmp)
            h.sendall(b"info blo")
            h.close()
            h = connect(hmp)
            h.sendall(b"info pci\ninfo block\n")
            h.close()

            # The remote is fine: I/O and a fresh monitor session work.
            assert rig.remote.poll() is None, "remote died:\n" + rig.log("remote")
            for i in range(8):
                ok, st, data = rig.read_blocks(i * 64, 8)
                assert ok, "READ after the monitor clients left: status 0x%02x" % st
            blocks = qmp_ok(qmp)
            assert any(b.get("device") == "d0" for b in blocks), blocks
            assert rig.remote.poll() is None, "remote died:\n" + rig.log("remote")
            print("5 vanishing monitor clients: remote still serving I/O and QMP")
        finally:
            rig.stop()


if __name__ == "__main__":
    fr.main(run)
