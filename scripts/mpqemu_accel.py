#!/usr/bin/env python3
"""Which accelerator stock QEMU gets on this host (Python 3 stdlib only).

The one place that decides it, for the launcher, its perf mode, the tests'
helpers and the bench scripts.  KVM only when /dev/kvm opens read-write AND
the CPU shows hardware virtualization (the vmx or svm flag in /proc/cpuinfo).
A host can offer a /dev/kvm that opens and even creates VMs while being
software-only (PVM, the kvm_pvm module): it runs only specially built guest
kernels, and a stock Debian kernel hangs there in its first protected-mode
steps with nothing on the console.  Everything else gets TCG, where stock
x-pci-proxy-dev cannot deliver the remote's INTx (it only has a KVM irqfd
path), so the guest polls for interrupts with TCG_IRQ_POLL on its command line.

The host facts are read through parameters (cpuinfo, kvm_dev) so that tests
can present the facts of another kind of host.

As a program (for shell scripts):
    mpqemu_accel.py                 prints the accelerator (kvm or tcg)
    mpqemu_accel.py --why           prints the one-line reason as well (stderr)
    mpqemu_accel.py --e2e-args      prints "--accel A --irq-poll on|off" for guest-e2e's run-e2e.py
    --cpuinfo PATH / --kvm-dev PATH read the host facts from elsewhere
"""
import argparse
import os
import sys

CPUINFO = "/proc/cpuinfo"
KVM_DEV = "/dev/kvm"
HW_VIRT_FLAGS = ("vmx", "svm")   # Intel VT-x, AMD-V
# irqpoll runs every IRQ handler on each tick, the tick is on IRQ0
# (noapictimer) and periodic (nohz=off): completions are seen within 4 ms.
TCG_IRQ_POLL = "irqpoll noapictimer nohz=off"


class Decision:
    """accel: "kvm" or "tcg"; why: one line a user can act on; kvm_ok: KVM can run a stock guest."""

    def __init__(self, accel, why, kvm_ok):
        self.accel, self.why, self.kvm_ok = accel, why, kvm_ok

    @property
    def irq_poll(self):
        return irq_poll(self.accel)

    def __repr__(self):
        return f"Decision({self.accel!r}, {self.why!r})"


def kvm_opens(kvm_dev=None):
    """True when the KVM device opens read-write (an open, not just a permission check)."""
    try:
        fd = os.open(kvm_dev or KVM_DEV, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def hw_virt_flags(cpuinfo=None):
    """The hardware-virtualization flags the CPU shows (a subset of HW_VIRT_FLAGS), or None
    when the cpuinfo file cannot be read or has no flags line."""
    found = None
    try:
        with open(cpuinfo or CPUINFO, errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "flags":
                    flags = set(value.split())
                    found = (found or set()) | (flags & set(HW_VIRT_FLAGS))
    except OSError:
        return None
    return found


def decide(cpuinfo=None, kvm_dev=None):
    """The accelerator for `--accel auto`, with its reason."""
    path = kvm_dev or KVM_DEV
    if not kvm_opens(path):
        why = (f"{path} is missing" if not os.path.exists(path)
               else f"{path} does not open read-write (permissions: add yourself to group kvm)")
        return Decision("tcg", f"no usable KVM ({why}): using TCG", kvm_ok=False)
    flags = hw_virt_flags(cpuinfo)
    if flags is None:
        return Decision("tcg", f"cannot tell whether KVM is hardware-assisted ({cpuinfo or CPUINFO} "
                        "shows no CPU flags): using TCG", kvm_ok=False)
    if not flags:
        return Decision("tcg", "KVM here is software-only (no vmx/svm): using TCG", kvm_ok=False)
    return Decision("kvm", f"KVM with hardware virtualization ({'/'.join(sorted(flags))})", kvm_ok=True)


def resolve(requested, cpuinfo=None, kvm_dev=None):
    """requested: auto|kvm|tcg. Returns (accel, note); raises ValueError with the reason when
    kvm is requested on a host where it cannot run a stock guest."""
    if requested == "tcg":
        return "tcg", "TCG (requested)"
    d = decide(cpuinfo, kvm_dev)
    if requested == "kvm":
        if not d.kvm_ok:
            reason = d.why.rsplit(":", 1)[0]
            raise ValueError(f"--accel kvm: {reason}; a stock guest cannot run under this KVM "
                             "(use --accel tcg or auto)")
        return "kvm", "KVM (requested)"
    if requested != "auto":
        raise ValueError(f"unknown accelerator {requested!r} (auto, kvm or tcg)")
    return d.accel, d.why


def irq_poll(accel):
    """Whether the guest must poll for interrupts behind stock x-pci-proxy-dev."""
    return accel == "tcg"


def e2e_args(requested="auto", cpuinfo=None, kvm_dev=None):
    """Arguments for the shared guest-e2e harness (run-e2e.py): the decision, passed on explicitly."""
    accel, _ = resolve(requested, cpuinfo, kvm_dev)
    return ["--accel", accel, "--irq-poll", "on" if irq_poll(accel) else "off"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    ap.add_argument("--cpuinfo", help=f"CPU description to read (default {CPUINFO})")
    ap.add_argument("--kvm-dev", help=f"KVM device to open (default {KVM_DEV})")
    ap.add_argument("--e2e-args", action="store_true", help="print run-e2e.py's --accel/--irq-poll arguments")
    ap.add_argument("--why", action="store_true", help="also print the reason on stderr")
    a = ap.parse_args(argv)
    try:
        accel, why = resolve(a.accel, a.cpuinfo, a.kvm_dev)
    except ValueError as e:
        print(f"mpqemu_accel: {e}", file=sys.stderr)
        return 3
    if a.why:
        print(why, file=sys.stderr)
    print(" ".join(e2e_args(accel)) if a.e2e_args else accel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
