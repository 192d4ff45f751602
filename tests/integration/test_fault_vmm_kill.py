#!/usr/bin/env python3
"""The VMM is SIGKILLed while the guest writes: the remote sees the socket
close and exits cleanly (status 0, no signal), and the image is consistent:
raw and qcow2 hold every acknowledged write, `qemu-img check` is clean."""
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import faultrig as fr  # noqa: E402

KIND = os.environ.get("MPQ_FAULT_REMOTE", "ours")


def image_blocks(path, fmt, tmp, lba, nblk):
    if fmt == "raw":
        return fr.file_blocks(path, lba, nblk)
    raw = os.path.join(tmp, "converted.raw")
    if not os.path.exists(raw):
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", path, raw], check=True)
    return fr.file_blocks(raw, lba, nblk)


def one(fmt):
    with fr.TmpDir() as tmp:
        disk = os.path.join(tmp, "disk." + fmt)
        fr.make_disk(disk, fmt, 16)
        rig = fr.Rig(tmp, disk, fmt=fmt, remote=KIND).start()
        fr.require_writes(rig)
        try:
            acked = []
            go = threading.Event()

            def killer():
                go.wait()
                time.sleep(0.05)
                rig.vmm.send_signal(signal.SIGKILL)

            t = threading.Thread(target=killer)
            t.start()
            lba, nblk = 0, 16
            try:
                while True:
                    # Scattered LBAs so qcow2 allocates clusters while dying.
                    target = (lba * 37) % (16 * 2048 - nblk)
                    target -= target % nblk
                    data = fr.pattern(target, lba + 1, nblk)
                    ok, _ = rig.write_blocks(target, data, timeout=5)
                    if not ok:
                        break
                    acked = [(a, d) for a, d in acked if a != target] + [(target, data)]
                    lba += 1
                    if lba == 20:
                        go.set()
            except Exception:
                pass  # the qtest socket closes under us: expected
            go.set()
            t.join()
            assert len(acked) >= 20, "only %d writes before the kill" % len(acked)
            rc = rig.wait_remote_exit(15)
            assert rc is not None, "remote still running 15 s after the VMM died"
            assert rc == 0, "remote exit status %r after VMM death:\n%s" % (rc, rig.log("remote"))
            if fmt == "qcow2":
                clean, text = fr.qemu_img_check(disk)
                assert clean, "qemu-img check after VMM kill:\n" + text
            for a, data in acked:
                got = image_blocks(disk, fmt, tmp, a, nblk)
                assert got == data, "%s: acknowledged write at LBA %d lost" % (fmt, a)
            print("%s: remote exited 0; %d acknowledged writes intact" % (fmt, len(acked)))
        finally:
            rig.stop()


def run():
    if KIND == "ours":
        fr.need_peers()
    one("raw")
    one("qcow2")


if __name__ == "__main__":
    fr.main(run)
