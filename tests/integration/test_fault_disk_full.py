#!/usr/bin/env python3
"""The disk stops taking writes while the guest writes: ENOSPC with raw and
qcow2 images on a tiny tmpfs, and a loop block device whose backing file
sits on a full tmpfs (cache=none; the loop driver reports ENOSPC too — real
EIO is covered in-process by tests/unit/fault_eio_test.cc). The guest sees CHECK CONDITION — never a hang —, the
remote stays up and keeps serving reads, every acknowledged write is on the
image, and qcow2 stays consistent (`qemu-img check`, leaks aside)."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import faultrig as fr  # noqa: E402

KIND = os.environ.get("MPQ_FAULT_REMOTE", "ours")
DRIVE_OPTS = os.environ.get("MPQ_FAULT_DRIVE_OPTS", "")  # e.g. ",werror=report" for stock




def mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "mpq-fault", path],
                   check=True)


def umount(path):
    subprocess.run(["umount", "-l", path], check=False)


def fill_until_error(rig, nblk, max_writes):
    """Sequential writes until one fails. Returns (acked list, status, sense)."""
    acked = []
    for i in range(max_writes):
        lba = i * nblk
        data = fr.pattern(lba, 7, nblk)
        ok, st = rig.write_blocks(lba, data, timeout=30)
        if not ok:
            sense = rig.request_sense() if st == 2 else b""
            return acked, st, sense
        acked.append((lba, data))
    return acked, 0, b""


def check_after_error(rig, acked, st, sense, what, nblk):
    assert st == 2, "%s: failing write gave status 0x%02x, want CHECK CONDITION" % (what, st)
    key = sense[2] & 0x0F if len(sense) > 2 else 0
    assert key != 0, "%s: REQUEST SENSE after the failure has no sense key: %s" % (
        what, sense.hex())
    assert rig.remote.poll() is None, "%s: remote died:\n%s" % (what, rig.log("remote"))
    # Still serving: TUR and reads of what was written.
    assert rig.scsi(bytes(6), 0)[0] == 0, "%s: TEST UNIT READY failed after the error" % what
    for lba, data in acked[-4:]:
        ok, st2, got = rig.read_blocks(lba, nblk)
        assert ok and got == data, "%s: read-back of LBA %d after the error failed" % (what, lba)
    # A second failing write fails the same way (no hang, no crash).
    ok, st3 = rig.write_blocks(len(acked) * nblk + 4096, fr.pattern(0, 9, nblk), timeout=30)
    assert not ok and st3 == 2, "%s: second failing write: ok=%s status=0x%02x" % (what, ok, st3)
    assert rig.remote.poll() is None, "%s: remote died on the second failure" % what
    print("%s: %d writes acknowledged, then CHECK CONDITION (sense key 0x%x); remote up"
          % (what, len(acked), key))


def enospc(fmt, tmp):
    mnt = os.path.join(tmp, "small")
    mount_tmpfs(mnt, "3M")
    try:
        disk = os.path.join(mnt, "disk." + fmt)
        if fmt == "raw":
            fr.make_raw(disk, 64)
        else:
            fr.make_qcow2(disk, 64)
        rig = fr.Rig(tmp, disk, fmt=fmt, remote=KIND, drive_opts=DRIVE_OPTS).start()
        fr.require_writes(rig)
        nblk = 128
        try:
            acked, st, sense = fill_until_error(rig, nblk, 600)
            assert acked, "%s: no write succeeded at all" % fmt
            check_after_error(rig, acked, st, sense, "ENOSPC/" + fmt, nblk)
        finally:
            rig.stop()
        if fmt == "qcow2":
            clean, text = fr.qemu_img_check(disk)
            assert clean, "qcow2 after ENOSPC:\n" + text
            raw = os.path.join(tmp, "conv.raw")
            subprocess.run(["qemu-img", "convert", "-O", "raw", disk, raw], check=True)
            disk = raw
        lost = [lba for lba, data in acked if fr.file_blocks(disk, lba, nblk) != data]
        assert not lost, "%s: acknowledged writes at LBAs %s not on the image" % (fmt, lost[:8])
    finally:
        umount(mnt)


def eio(tmp):
    mnt = os.path.join(tmp, "small")
    mount_tmpfs(mnt, "2M")
    loop = None
    try:
        backing = os.path.join(mnt, "backing.img")
        fr.make_raw(backing, 64)
        p = subprocess.run(["losetup", "--find", "--show", backing], capture_output=True,
                           text=True)
        if p.returncode != 0:
            print("EIO part skipped: losetup failed: " + p.stderr.strip())
            return
        loop = p.stdout.strip()
        rig = fr.Rig(tmp, loop, fmt="raw", remote=KIND,
                     drive_opts=",cache=none" + DRIVE_OPTS).start()
        fr.require_writes(rig)
        nblk = 128
        try:
            acked, st, sense = fill_until_error(rig, nblk, 600)
            assert acked, "loop device: no write succeeded at all"
            check_after_error(rig, acked, st, sense, "full/loop-device(cache=none)", nblk)
        finally:
            rig.stop()
    finally:
        if loop:
            subprocess.run(["losetup", "-d", loop], check=False)
        umount(mnt)


def run():
    if KIND == "ours":
        fr.need_peers()
    if os.geteuid() != 0:
        fr.skip("needs root (tmpfs/loop mounts)")
    with fr.TmpDir() as tmp:
        enospc("raw", tmp)
    with fr.TmpDir() as tmp:
        enospc("qcow2", tmp)
    with fr.TmpDir() as tmp:
        eio(tmp)


if __name__ == "__main__":
    fr.main(run)
