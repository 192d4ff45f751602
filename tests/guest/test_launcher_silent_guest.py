#!/usr/bin/env python3
"""The silent-guest net: a VMM that is alive but whose guest prints nothing stands
in for a guest hung under an accelerator that cannot run it (stock QEMU started
paused with -S).  With --silent-limit 5 the launcher must stop everything, say
"the guest printed nothing in 5 s under ACCEL" with the VMM's log tail, exit 15
(not the --timeout status 14), and leave no process or file behind."""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import guesttest as gt  # noqa: E402


def main():
    gt.require_host()
    gt.require_our_remote()
    sb = gt.Sandbox("silent")
    accel = gt.accel_args()
    args = sb.tag_args() + accel + ["--vmm-arg=-S", "--silent-limit", "5", "--self-test", "--timeout", "300"]
    rc, out, err = gt.launcher(args, sb, timeout=200)
    if rc != 15:
        gt.fail(f"exit status {rc}, expected 15 (silent guest)")
    if not re.search(rf"FAILED: the guest printed nothing in 5 s under {accel[1]} \(VMM pid \d+\); "
                     r"VMM log tail:", err):
        gt.fail("the reason (silence, limit, accelerator) and the VMM's log tail were not reported")
    if "VMM pid" not in err or "remote 0 pid" not in err:
        gt.fail("the VMM and the remote should have been started")
    sb.assert_clean()
    sb.cleanup()
    print("PASS")


if __name__ == "__main__":
    main()
