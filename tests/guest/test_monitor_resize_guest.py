#!/usr/bin/env python3
"""block_resize while a Linux guest runs: the guest sees the new size.

scripts/mpqemu-launcher.py boots the guest with a 32 MiB raw disk on our
remote, which also serves `-qmp unix:PATH,server,nowait`. Once the guest's
kernel has found the disk (the launcher prints its size), the test grows it
to 48 MiB with QMP block_resize.
The guest command (--run) keeps asking the SCSI layer to rescan the disk
(sysfs `rescan`, at most 120 times) until /sys/block/sda/size changes, then prints the
sizes and the kernel's log lines about it. Checked: the guest saw 32 MiB
first and 48 MiB after, the kernel logged the unit attention ("Capacity data
has changed"), and the image file has the new size.
Exit 0 pass, 77 skip, else fail.
"""
import os
import re
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import guesttest as gt  # noqa: E402
from monitor_client import QmpClient  # noqa: E402

MiB = 1 << 20
OLD, NEW = 32 * MiB, 48 * MiB

GUEST_CMD = (
    "d=$(ls -d /sys/class/scsi_device/*/device | head -n1); "
    "s0=$(cat /sys/block/sda/size); s=$s0; i=0; "
    "while [ \"$s\" = \"$s0\" ] && [ $i -lt 120 ]; do "
    "echo 1 > $d/rescan; s=$(cat /sys/block/sda/size); sleep 0.5; i=$((i+1)); done; "
    "echo \"sizes before=$s0 after=$s\"; dmesg | grep -i 'capacity' | sed 's/^/klog: /'")


def main():
    gt.require_host()
    gt.require_our_remote()
    sb = gt.Sandbox("monresize")
    qmp_path = sb.path("qmp.sock")
    disk = sb.path("disk.raw")
    with open(disk, "wb") as f:
        f.truncate(OLD)
    args = ["--remote", "mpqemu"] + sb.tag_args() + gt.accel_args() + [
        f"--remote-arg=-qmp unix:{qmp_path},server,nowait",
        "--disk", disk + ",format=raw", "--run", GUEST_CMD, "--timeout", "300"]
    p = gt.start_launcher(args, sb)
    lines = []
    # Drained all along, so the launcher never blocks on a full pipe.
    reader = threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True)
    reader.start()
    try:
        qmp = QmpClient(qmp_path, p)
        qmp.sock.settimeout(60)
        qmp.negotiate()
        # The launcher reports the disks the guest kernel found (with their
        # size): from then on the kernel holds the old capacity. (The
        # firmware reads the disk earlier, so the counters cannot tell.)
        deadline = time.monotonic() + 240
        while not any(re.search(r"guest: disks n=1 sda=%d@" % OLD, x) for x in list(lines)):
            if p.poll() is not None or time.monotonic() > deadline:
                gt.fail("the guest never reported its disk with the old size")
            time.sleep(0.1)
        r = qmp.cmd("block_resize", {"device": qmp.ret("query-block")[0]["device"], "size": NEW})
        if r != {"return": {}}:
            gt.fail(f"block_resize: {r}")
        size_after = qmp.ret("query-block")[0]["inserted"]["image"]["virtual-size"]
        qmp.close()
        p.wait(timeout=280)
        reader.join(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    out = "".join(lines)
    sys.stdout.write(out)
    m = re.search(r"^sizes before=(\d+) after=(\d+)", out, re.M)
    if not m:
        gt.fail("the guest printed no sizes")
    before, after = int(m.group(1)) * 512, int(m.group(2)) * 512
    problems = []
    if (before, after) != (OLD, NEW):
        problems.append(f"guest saw {before} then {after} bytes, expected {OLD} then {NEW}")
    if not re.search(r"^klog: .*[Cc]apacity data has changed", out, re.M):
        problems.append("the guest kernel did not log the unit attention (Capacity data has changed)")
    if size_after != NEW or os.path.getsize(disk) != NEW:
        problems.append(f"query-block {size_after}, image file {os.path.getsize(disk)}, expected {NEW}")
    if p.returncode != 0:
        problems.append(f"launcher exit status {p.returncode}")
    if problems:
        gt.fail("; ".join(problems))
    sb.assert_clean(keep=("qmp.sock", "disk.raw"))
    sb.cleanup()
    print("PASS")


if __name__ == "__main__":
    main()
