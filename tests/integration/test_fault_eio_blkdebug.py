#!/usr/bin/env python3
"""EIO from the disk while the guest writes, injected the QEMU way
(`-drive file=blkdebug:RULES:IMAGE` and `driver=blkdebug,config=...,
image.filename=...`), through the real processes: our remote behind stock
QEMU's proxy and behind our VMM, driven over qtest with LSI SCRIPTS.

Each case checks: the failing WRITE ends in CHECK CONDITION with sense data
(never a hang), the remote stays up and keeps serving, the failed blocks did
not reach the image, and every write acknowledged before and after the fault
is on the image byte for byte.

MPQ_FAULT_REMOTE=stock runs the same cases against stock QEMU's x-remote
(whose blkdebug is the reference for the rule semantics)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import faultrig as fr  # noqa: E402

KIND = os.environ.get("MPQ_FAULT_REMOTE", "ours")
NBLK = 16          # 8 KiB per WRITE(10)
BAD_LBA = 200      # the sector the sector-rule fails
# Medium error (ours: 03/0c/00 write error) or aborted command (stock QEMU
# 7.2 reports EIO as 0b/00/06 I/O process terminated).
ERROR_KEYS = (0x03, 0x0B)


def write_rules(tmp, text):
    path = os.path.join(tmp, "blkdebug.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


def sense_key(rig):
    sense = rig.request_sense()
    return sense[2] & 0x0F, sense


def check_failed_write(rig, what, lba):
    data = fr.pattern(lba, 0xBAD, NBLK)
    ok, st = rig.write_blocks(lba, data, timeout=30)
    assert not ok, "%s: WRITE at LBA %d was acknowledged despite the injected EIO" % (what, lba)
    assert st == 2, "%s: failing WRITE gave status 0x%02x, want CHECK CONDITION" % (what, st)
    key, sense = sense_key(rig)
    assert key in ERROR_KEYS, "%s: sense after EIO is %s (key 0x%x)" % (what, sense.hex(), key)
    assert rig.remote.poll() is None, "%s: remote died:\n%s" % (what, rig.log("remote"))
    return key


def sector_rule(tmp, vmm, syntax):
    """Writes overlapping BAD_LBA fail (every time), all others go through."""
    disk = os.path.join(tmp, "disk.raw")
    fr.make_raw(disk, 8)
    # Under a format (blkdebug:...) the format raises write_aio; as the top
    # node (driver=blkdebug) only the generic pwritev event happens (QEMU).
    event = "write_aio" if syntax == "filename" else "pwritev"
    rules = write_rules(tmp, '# fail writes covering sector %d\n'
                             '[inject-error]\n'
                             'event = "%s"\n'
                             'errno = "5"\n'
                             'sector = "%d"\n'
                             'iotype = "write"\n' % (BAD_LBA, event, BAD_LBA))
    if syntax == "filename":
        drive = "id=d0,if=none,format=raw,file=blkdebug:%s:%s" % (rules, disk)
    else:
        drive = "id=d0,if=none,driver=blkdebug,config=%s,image.filename=%s" % (rules, disk)
    what = "sector rule (%s syntax, %s VMM)" % (syntax, vmm)
    rig = fr.Rig(tmp, disk, remote=KIND, vmm=vmm, drive=drive).start()
    acked = []
    try:
        bad_start = BAD_LBA - BAD_LBA % NBLK
        for lba in range(0, bad_start, NBLK):
            data = fr.pattern(lba, 1, NBLK)
            ok, st = rig.write_blocks(lba, data)
            assert ok, "%s: WRITE at LBA %d (before the bad sector) failed: 0x%02x\n%s" % (
                what, lba, st, rig.log("remote"))
            acked.append((lba, data))
        key = check_failed_write(rig, what, bad_start)
        # Still serving: TUR, reads of what was written, writes elsewhere.
        assert rig.scsi(bytes(6), 0)[0] == 0, "%s: TEST UNIT READY failed after EIO" % what
        for lba, data in acked[-3:]:
            ok, st, got = rig.read_blocks(lba, NBLK)
            assert ok and got == data, "%s: read-back of LBA %d after EIO failed" % (what, lba)
        for lba in range(bad_start + NBLK, bad_start + 5 * NBLK, NBLK):
            data = fr.pattern(lba, 2, NBLK)
            ok, st = rig.write_blocks(lba, data)
            assert ok, "%s: WRITE at LBA %d (after the bad sector) failed: 0x%02x" % (
                what, lba, st)
            acked.append((lba, data))
        # The bad sector keeps failing (the rule has no once=on), reads of
        # it still work (iotype=write).
        check_failed_write(rig, what + ", again", bad_start)
        ok, st, got = rig.read_blocks(bad_start, NBLK)
        assert ok and got == bytes(NBLK * 512), "%s: read of the bad sector failed" % what
        assert rig.remote.poll() is None, "%s: remote died" % what
    finally:
        rig.stop()
    lost = [lba for lba, data in acked if fr.file_blocks(disk, lba, NBLK) != data]
    assert not lost, "%s: acknowledged writes at LBAs %s are not on the image" % (what, lost)
    assert fr.file_blocks(disk, bad_start, NBLK) == bytes(NBLK * 512), \
        "%s: the failed WRITE reached the image" % what
    print("%s: %d writes acknowledged and on the image; WRITE at LBA %d -> CHECK CONDITION "
          "(sense key 0x%x); remote kept serving" % (what, len(acked), bad_start, key))


def transient(tmp, vmm):
    """once=on in state 1, then set-state to 2: one failed write, the
    guest's retry and every later write succeed. (Flush faults are covered
    by tests/unit/fault_blkdebug_test.cc: the qtest SCRIPTS rig cannot issue
    SYNCHRONIZE CACHE, neither to stock QEMU's remote nor to ours.)"""
    disk = os.path.join(tmp, "disk.raw")
    fr.make_raw(disk, 8)
    rules = write_rules(tmp, '[inject-error]\n'
                             'event = "write_aio"\n'
                             'state = "1"\n'
                             'once = "on"\n'
                             'iotype = "write"\n'
                             '[set-state]\n'
                             'event = "write_aio"\n'
                             'state = "1"\n'
                             'new_state = "2"\n')
    drive = "id=d0,if=none,format=raw,file=blkdebug:%s:%s" % (rules, disk)
    what = "transient EIO (%s VMM)" % vmm
    rig = fr.Rig(tmp, disk, remote=KIND, vmm=vmm, drive=drive).start()
    acked = []
    try:
        lba = 64
        data = fr.pattern(lba, 3, NBLK)
        check_failed_write(rig, what, lba)
        ok, st = rig.write_blocks(lba, data)
        assert ok, "%s: the retried WRITE failed: 0x%02x" % (what, st)
        acked.append((lba, data))
        lba2 = 128
        data2 = fr.pattern(lba2, 4, NBLK)
        ok, st = rig.write_blocks(lba2, data2)
        assert ok, "%s: WRITE after the faults failed: 0x%02x" % (what, st)
        acked.append((lba2, data2))
        assert rig.remote.poll() is None, "%s: remote died" % what
    finally:
        rig.stop()
    lost = [lba for lba, data in acked if fr.file_blocks(disk, lba, NBLK) != data]
    assert not lost, "%s: acknowledged writes at LBAs %s are not on the image" % (what, lost)
    print("%s: the failed WRITE retried fine, later writes fine, all on the image" % what)


def bad_rules_refused(tmp):
    """A broken rules file is a clear start-up error, not a crash."""
    disk = os.path.join(tmp, "disk.raw")
    fr.make_raw(disk, 1)
    rules = write_rules(tmp, '[inject-error]\nevent = "no_such_event"\n')
    drive = "id=d0,if=none,format=raw,file=blkdebug:%s:%s" % (rules, disk)
    import subprocess
    p = subprocess.run([fr.remote_binary(), "-device", "lsi53c895a,id=lsi0", "-drive", drive,
                        "-device", "scsi-hd,drive=d0,bus=lsi0.0,scsi-id=0"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1, "bad rules: exit %d, want 1\n%s" % (p.returncode, p.stderr)
    assert "no_such_event" in p.stderr and "not supported" in p.stderr, \
        "bad rules: unclear error: " + p.stderr
    print("bad rules file refused: " + p.stderr.strip().splitlines()[-1])


def run():
    if KIND == "ours":
        fr.need_peers()
    elif not fr.QEMU:
        fr.skip("qemu-system-x86_64 not installed")
    vmms = ["stock"] + (["ours"] if fr.vmm_binary() else [])
    for vmm in vmms:
        with fr.TmpDir() as tmp:
            sector_rule(tmp, vmm, "filename" if vmm == "stock" else "driver")
        with fr.TmpDir() as tmp:
            transient(tmp, vmm)
    if KIND == "ours":
        with fr.TmpDir() as tmp:
            sector_rule(tmp, "stock", "driver")
        with fr.TmpDir() as tmp:
            bad_rules_refused(tmp)


if __name__ == "__main__":
    fr.main(run)
