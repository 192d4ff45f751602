#!/usr/bin/env python3
"""Launcher --boot disk: SeaBIOS boots a GRUB image through our remote.

tests/lib/bootimage.py builds a BIOS-bootable image from Debian packages (GRUB's boot.img and a
core.img from grub-mkimage in the MBR gap, an ext2 partition with the bundled kernel, initramfs and
grub.cfg) and writes a random marker into one sector of it and into grub.cfg's kernel arguments.
The launcher starts with --boot disk (no -kernel, no -initrd: --dry-run shows it), the firmware
boots the image behind our lsi53c895a, GRUB loads Linux off it, and the guest's /init reads the
marker sector from /dev/sda through the SCSI driver, prints it, and powers off: exit 0.
Raw first, then the same kind of image as qcow2 (another marker). Also: --boot disk refuses the
modes that need the bundled guest, and says once (TCG) that it cannot add irqpoll.
Exit 0 pass, 77 skip, else fail.
"""
import os
import re
import secrets
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import bootimage  # noqa: E402
import guesttest as gt  # noqa: E402


def run_log(sb, name):
    path = sb.path(name)
    os.makedirs(path, exist_ok=True)
    return path


def boot(sb, fmt):
    marker = f"MPQBOOT-{fmt}-{secrets.token_hex(8)}"
    img = sb.path(f"boot.{fmt}")
    try:
        bootimage.build(img, fmt=fmt, marker=marker)
    except bootimage.Unavailable as e:
        gt.skip(str(e))
    logdir = run_log(sb, f"logs-{fmt}")
    accel = gt.accel_args()
    rc, out, err = gt.launcher(["--remote", "mpqemu"] + sb.tag_args() + accel + [
        "--boot", "disk", "--disk", img, "--timeout", "300", "--log-dir", logdir],
        sb, timeout=400)
    with open(os.path.join(logdir, "console.log"), errors="replace") as f:
        console = f.read()
    problems = []
    if rc != 0:
        problems.append(f"launcher exit status {rc}")
    if "Booting `mpqemu bundled guest from disk'" not in console:
        problems.append("GRUB's menu entry never showed on the console")
    # The run's output between the /init's markers, tied to the nonce from grub.cfg.
    m = re.search(r"MPQ-RUN-BEGIN nonce=%s\s*\n(.*?)\n\s*MPQ-RUN-END nonce=%s status=(\d+)"
                  % (re.escape(marker), re.escape(marker)), console, re.S)
    if not m:
        problems.append("the guest's /init never ran the marker command with this image's nonce")
    elif m.group(1).strip() != marker or m.group(2) != "0":
        problems.append(f"the guest read {m.group(1).strip()!r} (status {m.group(2)}) from /dev/sda, "
                        f"expected {marker!r}")
    if not re.search(r"MPQ-RESULT: PASS .*nonce=%s" % re.escape(marker), console):
        problems.append("no PASS result line from the guest")
    # Under TCG the launcher says once that it cannot add irqpoll (grub.cfg has it).
    notes, want = err.count("cannot add it"), 1 if accel[-1] == "tcg" else 0
    if notes != want:
        problems.append(f"the irqpoll note was printed {notes} times, expected {want}")
    if problems:
        gt.fail(f"{fmt}: " + "; ".join(problems))
    gt.log(f"{fmt}: booted off the image, marker {marker} read back from /dev/sda")
    return img, logdir


def main():
    gt.require_host()
    gt.require_our_remote()
    sb = gt.Sandbox("bootdisk")
    img = sb.path("probe.raw")
    with open(img, "wb") as f:
        f.truncate(1 << 20)
    # What the VMM gets: no kernel of ours.
    rc, out, _ = gt.launcher(["--boot", "disk", "--disk", img, "--dry-run"], sb, timeout=60)
    vmm_line = out.split("# VMM\n", 1)[-1]
    if rc != 0 or "-kernel" in vmm_line or "-initrd" in vmm_line or "-append" in vmm_line:
        gt.fail(f"--boot disk --dry-run: rc {rc}, VMM line {vmm_line.strip()!r}")
    refused = ((["--self-test", "--disk", img], "bundled guest"), (["--run", "true", "--disk", img], "bundled guest"),
               (["--perf", "--disk", img], "bundled guest"), (["--append", "quiet", "--disk", img], "boot loader"),
               ([], "--disk IMAGE"))
    for extra, why in refused:
        args = ["--boot", "disk", "--dry-run"] + extra
        rc, out, err = gt.launcher(args, sb, timeout=60)
        if rc != 2 or why not in err:
            gt.fail(f"{' '.join(args)}: expected exit 2 naming {why!r}, got {rc}")
    os.unlink(img)

    raw, raw_logs = boot(sb, "raw")
    qcow, qcow_logs = boot(sb, "qcow2")
    sb.assert_clean(keep=(os.path.basename(raw), os.path.basename(qcow),
                          os.path.basename(raw_logs), os.path.basename(qcow_logs)))
    sb.cleanup()
    print("PASS")


if __name__ == "__main__":
    main()
