#!/usr/bin/env python3
"""The launcher's accelerator choice on simulated hosts and on this one.

The host facts are simulated by pointing the decision module's cpuinfo and KVM
device paths (scripts/mpqemu_accel.py: CPUINFO, KVM_DEV) at fake files in a child
Python that then runs the launcher's main(); the launcher itself has no switch
for this.  On a software-only KVM host --accel kvm must fail at once with status
3 and the reason, before any process or file is made; auto must pick TCG with the
guest polling for interrupts; on a hardware KVM host auto picks KVM.  On this
real host, unless it has hardware KVM, the shipped launcher and its perf mode
must refuse --accel kvm the same way."""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import guesttest as gt  # noqa: E402

CHILD = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("launcher", sys.argv[1])
L = importlib.util.module_from_spec(spec)
spec.loader.exec_module(L)
L.mpqemu_accel.CPUINFO, L.mpqemu_accel.KVM_DEV = sys.argv[2], sys.argv[3]
sys.exit(L.main(sys.argv[4:]))
"""
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def simulated(sb, cpuinfo, kvm_dev, args):
    return gt.run([sys.executable, "-c", CHILD, gt.LAUNCHER, cpuinfo, kvm_dev] + args, sb, timeout=120)


def vmm_line(out):
    lines = out.splitlines()
    return lines[lines.index("# VMM") + 1] if "# VMM" in lines else ""


def main():
    gt.require_our_remote()
    sb = gt.Sandbox("accel")
    kvm = os.path.join(sb.tmp, "kvm")
    open(kvm, "w").close()
    soft, hard = os.path.join(sb.tmp, "cpuinfo-soft"), os.path.join(sb.tmp, "cpuinfo-hw")
    with open(soft, "w") as f:
        f.write("processor\t: 0\nflags\t\t: fpu pae hypervisor lahf_lm\n\n")
    with open(hard, "w") as f:
        f.write("processor\t: 0\nflags\t\t: fpu pae vmx ept\n\n")
    fakes = {"kvm", "cpuinfo-soft", "cpuinfo-hw"}
    base = sb.tag_args() + ["--self-test", "--timeout", "60"]

    # software-only KVM, --accel kvm: refused before anything starts
    rc, out, err = simulated(sb, soft, kvm, base + ["--accel", "kvm"])
    check(rc == 3, f"--accel kvm on software-only KVM exits 3 (got {rc})")
    check(re.search(r"FAILED: --accel kvm: KVM here is software-only \(no vmx/svm\)", err) is not None,
          "the message says why")
    check("pid" not in err and not sb.processes(), "no remote or VMM was started")
    sb.assert_clean(keep=fakes)

    # no KVM device at all, --accel kvm: same
    rc, out, err = simulated(sb, hard, os.path.join(sb.tmp, "absent"), base + ["--accel", "kvm"])
    check(rc == 3 and "is missing" in err, f"--accel kvm without a KVM device exits 3 (got {rc})")

    # software-only KVM, auto: TCG, one line saying why, the guest polls for interrupts
    rc, out, err = simulated(sb, soft, kvm, base + ["--dry-run"])
    vmm = vmm_line(out)
    check(rc == 0 and "accelerator: KVM here is software-only (no vmx/svm): using TCG" in err,
          "auto on software-only KVM says why it uses TCG")
    check("accel=tcg" in vmm and "irqpoll noapictimer nohz=off" in vmm, f"TCG with irq polling: {vmm}")

    # hardware KVM, auto: KVM, no polling
    rc, out, err = simulated(sb, hard, kvm, base + ["--dry-run"])
    vmm = vmm_line(out)
    check(rc == 0 and "accel=kvm" in vmm and "irqpoll" not in vmm, f"auto on hardware KVM uses KVM: {vmm}")

    # this real host
    d = gt.mpqemu_accel.decide()
    gt.log(f"this host: {d.why}")
    if d.kvm_ok:
        gt.log("this host has hardware KVM: --accel kvm is allowed here (checked above on simulated hosts)")
    else:
        for perf in (False, True):
            what = "perf mode" if perf else "launcher"
            args = (["--accel", "kvm", "--timeout", "60"] + ([f"--vmm-arg=-name {sb.tag}"] if perf else base))
            rc, out, err = gt.launcher(args, sb, timeout=120, perf=perf)
            check(rc == 3 and "FAILED: --accel kvm:" in err and "pid" not in err,
                  f"{what} --accel kvm on this host exits 3 at once with the reason (got {rc})")
        sb.assert_clean(keep=fakes)
    sb.cleanup()
    if failures:
        gt.fail(f"{len(failures)} check(s) failed: {failures}")
    print("PASS")


if __name__ == "__main__":
    main()
