#!/usr/bin/env python3
"""Launcher with OUR VMM (--vmm mpqemu: qtest, no guest OS): both remotes, one and two
controllers; every controller must answer 1000:0012 over qtest; nothing left behind."""
import os
import re
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import guesttest as gt  # noqa: E402


def main():
    for tool in ("qemu-system-x86_64", "qemu-img"):
        if not shutil.which(tool):
            gt.skip(f"{tool} is not installed")
    for prog in ("qemu-scsi-dev", "mpqemu-system-x86_64"):
        if not os.access(os.path.join(gt.BUILD, prog), os.X_OK):
            gt.fail(f"{prog} is not built in {gt.BUILD}")
    sb = gt.Sandbox("vmmq")
    cases = [(["--remote", "mpqemu", "--controllers", "2"], 2),
             (["--remote", "stock"], 1)]
    for extra, n in cases:
        rc, out, err = gt.launcher(["--vmm", "mpqemu", "--self-test", "--timeout", "60"] + sb.tag_args() + extra,
                                   sb, timeout=120)
        if rc != 0:
            gt.fail(f"{extra}: exit status {rc}")
        found = re.findall(r"PCI 00:[0-9a-f]{2}\.0 1000:0012", err)
        if len(found) != n or f"our VMM sees {n} lsi53c895a" not in err:
            gt.fail(f"{extra}: expected {n} lsi53c895a functions, got {found}")
        sb.assert_clean()
    # a remote that cannot start is reported as such
    rc, out, err = gt.launcher(["--vmm", "mpqemu", "--self-test", "--timeout", "60", "--remote-arg=-bogus"]
                               + sb.tag_args(), sb, timeout=120)
    if rc != 10 or "remote0 (pid" not in err or "failed to start" not in err:
        gt.fail(f"bad remote option: exit status {rc}, expected 10 (remote0 failed to start)")
    sb.assert_clean()
    sb.cleanup()
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
