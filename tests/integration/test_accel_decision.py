#!/usr/bin/env python3
"""The accelerator decision (scripts/mpqemu_accel.py) from fake host facts: a cpuinfo
file and a KVM device path given as parameters, for hosts without KVM, with
software-only KVM (a /dev/kvm that opens, no vmx/svm) and with hardware KVM.
Also the program form the bench scripts call."""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import guesttest as gt  # noqa: E402

A = gt.mpqemu_accel
PROGRAM = os.path.join(gt.SOURCE, "scripts", "mpqemu_accel.py")
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def cpuinfo(tmp, name, flags, extra=""):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        for cpu in range(2):
            f.write(f"processor\t: {cpu}\nvendor_id\t: GenuineIntel\nmodel name\t: Some CPU{extra}\n"
                    f"flags\t\t: {flags}\n\n")
    return path


def main():
    tmp = tempfile.mkdtemp(prefix="mpq-accel-")
    kvm = os.path.join(tmp, "kvm")          # a device that opens read-write
    open(kvm, "w").close()
    missing = os.path.join(tmp, "no-kvm")
    unopenable = os.path.join(tmp, "kvm-dir")   # open(O_RDWR) fails even for root
    os.mkdir(unopenable)
    soft = cpuinfo(tmp, "soft", "fpu vme de pse tsc msr pae hypervisor lahf_lm")
    intel = cpuinfo(tmp, "intel", "fpu vme vmx ept hypervisor")
    amd = cpuinfo(tmp, "amd", "fpu svm npt")
    decoy = cpuinfo(tmp, "decoy", "fpu pae", extra=" vmx svm")    # the words outside the flags line
    noflags = os.path.join(tmp, "noflags")
    with open(noflags, "w") as f:
        f.write("processor\t: 0\n")
    nofile = os.path.join(tmp, "no-cpuinfo")

    # software-only KVM: the device opens, the CPU shows no hardware virtualization
    d = A.decide(soft, kvm)
    check(d.accel == "tcg" and not d.kvm_ok and d.irq_poll, f"software-only KVM -> tcg with irq polling ({d})")
    check("software-only" in d.why and "no vmx/svm" in d.why, f"reason names software-only KVM: {d.why!r}")
    check(A.resolve("auto", soft, kvm)[0] == "tcg", "auto resolves to tcg on software-only KVM")
    try:
        A.resolve("kvm", soft, kvm)
        check(False, "--accel kvm on software-only KVM must be refused")
    except ValueError as e:
        check("software-only" in str(e), f"--accel kvm refused with the reason: {e}")
    check(A.resolve("tcg", soft, kvm)[0] == "tcg", "tcg is always allowed")
    check(A.e2e_args("auto", soft, kvm) == ["--accel", "tcg", "--irq-poll", "on"],
          f"guest-e2e args on software-only KVM: {A.e2e_args('auto', soft, kvm)}")

    # hardware KVM
    for name, path, flag in (("Intel", intel, "vmx"), ("AMD", amd, "svm")):
        d = A.decide(path, kvm)
        check(d.accel == "kvm" and d.kvm_ok and not d.irq_poll and flag in d.why, f"{name} hardware KVM -> kvm ({d})")
        check(A.resolve("kvm", path, kvm)[0] == "kvm", f"--accel kvm allowed on {name} hardware KVM")
        check(A.e2e_args("auto", path, kvm) == ["--accel", "kvm", "--irq-poll", "off"],
              f"guest-e2e args on {name} hardware KVM")

    # no KVM at all: the flags do not matter
    for what, dev in (("missing", missing), ("not openable read-write", unopenable)):
        d = A.decide(intel, dev)
        check(d.accel == "tcg" and not d.kvm_ok and dev in d.why, f"/dev/kvm {what} -> tcg ({d.why})")
        try:
            A.resolve("kvm", intel, dev)
            check(False, f"--accel kvm with /dev/kvm {what} must be refused")
        except ValueError:
            check(True, f"--accel kvm refused with /dev/kvm {what}")

    # cpuinfo that does not say: never guess KVM
    for what, path in (("vmx/svm only outside the flags line", decoy), ("no flags line", noflags),
                       ("unreadable", nofile)):
        d = A.decide(path, kvm)
        check(d.accel == "tcg" and not d.kvm_ok, f"cpuinfo {what} -> tcg ({d.why})")

    # the program form (bench scripts): prints the decision, exits 3 when kvm cannot be had
    r = subprocess.run([sys.executable, PROGRAM, "--cpuinfo", soft, "--kvm-dev", kvm, "--why", "--e2e-args"],
                       capture_output=True, text=True)
    check(r.returncode == 0 and r.stdout.split() == ["--accel", "tcg", "--irq-poll", "on"]
          and "software-only" in r.stderr, f"program --e2e-args: rc={r.returncode} {r.stdout!r} {r.stderr!r}")
    r = subprocess.run([sys.executable, PROGRAM, "--cpuinfo", amd, "--kvm-dev", kvm], capture_output=True, text=True)
    check(r.returncode == 0 and r.stdout.strip() == "kvm", f"program on hardware KVM: {r.stdout!r}")
    r = subprocess.run([sys.executable, PROGRAM, "--cpuinfo", soft, "--kvm-dev", kvm, "--accel", "kvm"],
                       capture_output=True, text=True)
    check(r.returncode == 3 and "software-only" in r.stderr and not r.stdout,
          f"program --accel kvm on software-only KVM: rc={r.returncode} {r.stderr!r}")

    # the defaults are the real host's files
    check((A.CPUINFO, A.KVM_DEV) == ("/proc/cpuinfo", "/dev/kvm"), "defaults read /proc/cpuinfo and /dev/kvm")
    print(f"this host: {A.decide().why}")

    for p in (kvm, soft, intel, amd, decoy, noflags):
        os.unlink(p)
    os.rmdir(unopenable)
    os.rmdir(tmp)
    if failures:
        gt.fail(f"{len(failures)} check(s) failed: {failures}")
    print("PASS")


if __name__ == "__main__":
    main()
