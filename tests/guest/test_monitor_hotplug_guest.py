#!/usr/bin/env python3
"""Disk hot-plug while a Linux guest runs, through our remote's QMP, sandbox on.

scripts/mpqemu-launcher.py boots the bundled guest with one disk on our remote
(`-sandbox on`, also the default, and `-qmp unix:PATH`). Once the guest has found
its disk, the test passes a fresh 16 MiB raw image to the remote with add-fd (SCM_RIGHTS:
the sandboxed remote may open no path), then blockdev-add (raw over /dev/fdset/N) and
device_add scsi-hd at scsi-id 1. The guest command rescans the SCSI host
(`echo '- - -' > /sys/class/scsi_host/host0/scan`) until /dev/sdb appears, writes 1 MiB of
the bundled pattern at 64 KiB with O_DIRECT, reads it back and compares, then polls sdb.
The test removes the disk with device_del (DEVICE_DELETED), blockdev-del and remove-fd; the
guest's next read fails, it deletes sdb, checks sda still reads, and prints the kernel's log
lines. Checked: the guest's data on the image file (and zeros elsewhere), the guest saw the
disk go, logged the unit attention (REPORTED LUNS DATA HAS CHANGED: "LUN assignments ...
changed"), the launcher exited 0 and nothing was left behind.
Exit 0 pass, 77 skip, else fail.
"""
import array
import json
import os
import re
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import guesttest as gt  # noqa: E402
from monitor_client import QmpClient  # noqa: E402

MiB = 1 << 20
HOT_SIZE = 16 * MiB
OFF, LEN = 64 * 1024, MiB

GUEST_CMD = (
    "i=0; while [ ! -b /dev/sdb ] && [ $i -lt 240 ]; do echo '- - -' >/sys/class/scsi_host/host0/scan; "
    "sleep 0.5; i=$((i+1)); done; [ -b /dev/sdb ] || exit 3; "
    "echo \"MPQ-GUEST: hotplug sdb size=$(cat /sys/block/sdb/size)\"; "
    "P=/etc/mpq/pattern.bin; dd if=$P of=/dev/sdb bs=64k seek=1 count=16 oflag=direct 2>/dev/null || exit 4; "
    "w=$(dd if=$P bs=64k count=16 2>/dev/null | sha256sum | cut -c1-64); "
    "r=$(dd if=/dev/sdb bs=64k skip=1 count=16 iflag=direct 2>/dev/null | sha256sum | cut -c1-64); "
    "[ \"$w\" = \"$r\" ] || exit 5; echo \"MPQ-GUEST: hotplug written $r\"; "
    "i=0; while [ $i -lt 480 ] && dd if=/dev/sdb of=/dev/null bs=512 count=1 iflag=direct 2>/dev/null; "
    "do sleep 0.5; i=$((i+1)); done; echo \"hotplug: polls=$i\"; "
    "echo 1 >/sys/block/sdb/device/delete; [ -e /sys/block/sdb ] || echo 'hotplug: sdb gone'; "
    "dd if=/dev/sda of=/dev/null bs=64k count=16 iflag=direct 2>/dev/null && echo 'hotplug: sda reads'; "
    "dmesg | grep -i -e 'LUN assignments' -e 'luns data' | sed 's/^/klog: /'")


def send_fd(qmp, name, args, fd):
    msg = json.dumps({"execute": name, "arguments": args}).encode() + b"\n"
    qmp.sock.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
    return qmp.response()


def main():
    gt.require_host()
    gt.require_our_remote()
    sb = gt.Sandbox("hotplug")
    qmp_path = sb.path("qmp.sock")
    base = sb.path("base.raw")
    hot = sb.path("hot.raw")
    for path in (base, hot):
        with open(path, "wb") as f:
            f.truncate(HOT_SIZE if path == hot else 32 * MiB)
    logdir = sb.path("logs")
    console = os.path.join(logdir, "console.log")
    args = ["--remote", "mpqemu"] + sb.tag_args() + ["--log-dir", logdir,
        "--remote-arg=-sandbox on", f"--remote-arg=-qmp unix:{qmp_path},server,nowait",
        "--disk", base + ",format=raw"] + gt.accel_args() + ["--run", GUEST_CMD, "--timeout", "400"]
    p = gt.start_launcher(args, sb)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True)
    reader.start()

    def console_text():
        try:
            with open(console, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # The --run command's own lines reach the launcher's output only at its
    # end; the console log has them as they come.
    def wait_line(rx, what, limit=300):
        deadline = time.monotonic() + limit
        while not re.search(rx, console_text(), re.M):
            if p.poll() is not None or time.monotonic() > deadline:
                gt.fail(f"never saw {what}; output:\n{''.join(lines)[-2000:]}\nconsole:\n{console_text()[-2000:]}")
            time.sleep(0.1)

    events = []
    try:
        qmp = QmpClient(qmp_path, p)
        qmp.sock.settimeout(120)
        qmp.negotiate()
        wait_line(r"^MPQ-RUN-BEGIN", "the guest's command starting")
        fd = os.open(hot, os.O_RDWR)
        r = send_fd(qmp, "add-fd", {"opaque": "hot.raw"}, fd)
        os.close(fd)
        if "return" not in r:
            gt.fail(f"add-fd: {r}")
        fdset = r["return"]["fdset-id"]
        for name, a in (("blockdev-add", {"driver": "raw", "node-name": "hot",
                                          "file": {"driver": "file", "filename": f"/dev/fdset/{fdset}"}}),
                        ("device_add", {"driver": "scsi-hd", "id": "hot0", "drive": "hot", "bus": "lsi0.0",
                                        "scsi-id": 1})):
            r = qmp.cmd(name, a)
            if r != {"return": {}}:
                gt.fail(f"{name}: {r}")
        gt.log("disk hot0 added at scsi-id 1; waiting for the guest to use it")
        wait_line(r"^MPQ-GUEST: hotplug written [0-9a-f]{64}", "the guest's write + read-back on sdb")
        r = qmp.cmd("device_del", {"id": "hot0"})
        if r != {"return": {}}:
            gt.fail(f"device_del: {r}")
        events.append(qmp.wait_event("DEVICE_DELETED", timeout=60)["data"])
        for name, a in (("blockdev-del", {"node-name": "hot"}), ("remove-fd", {"fdset-id": fdset})):
            r = qmp.cmd(name, a)
            if r != {"return": {}}:
                gt.fail(f"{name}: {r}")
        left = qmp.ret("query-block")
        qmp.close()
        p.wait(timeout=300)
        reader.join(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    out = "".join(lines)
    sys.stdout.write(out)
    problems = []
    if p.returncode != 0:
        problems.append(f"launcher exit status {p.returncode}")
    if events != [{"device": "hot0", "path": "/machine/peripheral/hot0"}]:
        problems.append(f"DEVICE_DELETED events {events}")
    if [b["inserted"]["node-name"] for b in left if b["inserted"]["node-name"] == "hot"]:
        problems.append("query-block still lists the removed node")
    out += console_text()
    if not re.search(r"hotplug sdb size=%d\b" % (HOT_SIZE // 512), out):
        problems.append("the guest did not see a 16 MiB sdb")
    m = re.search(r"^hotplug: polls=(\d+)", out, re.M)
    if not m or int(m.group(1)) >= 480:
        problems.append("the guest's reads of sdb never stopped after device_del")
    for want in ("hotplug: sdb gone", "hotplug: sda reads"):
        if not re.search("^" + want, out, re.M):
            problems.append(f"guest did not print {want!r}")
    if not re.search(r"^klog: .*LUN assignments on this target have changed", out, re.M):
        problems.append("the guest kernel did not log the unit attention (REPORTED LUNS DATA HAS CHANGED)")
    with open(gt_pattern(), "rb") as f:
        pattern = f.read(LEN)
    with open(hot, "rb") as f:
        img = f.read()
    if img[OFF:OFF + LEN] != pattern:
        problems.append("the image does not hold the guest's pattern at 64 KiB")
    if img[:OFF].count(0) != OFF or img[OFF + LEN:].count(0) != HOT_SIZE - OFF - LEN:
        problems.append("the image changed outside the guest's write")
    if problems:
        gt.fail("; ".join(problems))
    sb.assert_clean(keep=("qmp.sock", "base.raw", "hot.raw", "logs"))
    sb.cleanup()
    print("PASS")


def gt_pattern():
    cache = os.environ.get("MPQ_GUEST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mpqemu-guest")
    return os.path.join(cache, "guest", "pattern.bin")


if __name__ == "__main__":
    main()
