#!/usr/bin/env python3
"""mpqemu-launcher-perf-mode: one VMM, N device processes, one controller + disk each.

The guest writes then reads --perf-mb MiB on every disk at once (O_DIRECT, 1 MiB
blocks), checks the data by sha256, and the host checks every image afterwards.
Prints per-device and total MB/s (guest clock) and each remote's memory
footprint from /proc/PID/status (VmRSS, RssAnon, VmHWM = peak RSS).

Exit status: as mpqemu-launcher.py (0 = all data verified).
"""
import argparse
import importlib.util
import json
import os
import sys

HERE = os.path.dirname(os.path.realpath(__file__))
_spec = importlib.util.spec_from_file_location("mpqemu_launcher", os.path.join(HERE, "mpqemu-launcher.py"))
L = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(L)

MEM_KEYS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")


def read_status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key in MEM_KEYS:
                    out[key] = int(val.split()[0])   # kB
    except OSError:
        return None
    return out


class PerfLauncher(L.Launcher):
    def __init__(self, args):
        super().__init__(args)
        self.mem = {}     # remote index -> {"last": {...}, "max_rss": kB}

    def on_tick(self):
        for i, c in enumerate(self.remotes):
            st = read_status(c.pid) if c.poll() is None else None
            if st:
                m = self.mem.setdefault(i, {"pid": c.pid, "last": st, "max_rss": 0})
                m["last"] = st
                m["max_rss"] = max(m["max_rss"], st.get("VmRSS", 0))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--remotes", type=int, default=4, help="remote processes = controllers = disks (default 4)")
    ap.add_argument("--perf-mb", type=int, default=32, help="MiB written and read per disk (even, default 32)")
    ap.add_argument("--disk-format", choices=("raw", "qcow2"), default="raw")
    ap.add_argument("--remote", choices=("mpqemu", "stock"), default="mpqemu")
    ap.add_argument("--remote-bin")
    ap.add_argument("-m", "--memory", default="512M")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--log-dir")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    ap.add_argument("--remote-arg", action="append", default=[])
    ap.add_argument("--vmm-arg", action="append", default=[])
    ap.add_argument("--append", default="")
    ap.add_argument("--firmware", choices=("seabios", "qboot"), default="seabios")
    ap.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                    help="as mpqemu-launcher.py: auto = kvm only with hardware KVM (vmx/svm), else tcg")
    ap.add_argument("--silent-limit", type=float, default=L.SILENT_LIMIT,
                    help="as mpqemu-launcher.py (status 15 when the guest prints nothing this long)")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    p = ap.parse_args()
    if not 1 <= p.remotes <= 8:
        ap.error("--remotes must be 1..8")

    size_mb = max(64, p.perf_mb + 8)
    argv = ["--perf", "--controllers", str(p.remotes), "--remotes", str(p.remotes),
            "--perf-mb", str(p.perf_mb), "--disk-size", f"{size_mb}M", "--disk-format", p.disk_format,
            "--remote", p.remote, "--memory", p.memory, "--timeout", str(p.timeout),
            "--firmware", p.firmware, "--append", p.append, "--silent-limit", str(p.silent_limit)]
    # the one decision (scripts/mpqemu_accel.py), made here and passed on explicitly
    try:
        accel, why = L.mpqemu_accel.resolve(p.accel)
    except ValueError as e:
        L.say(f"FAILED: {e}")
        return L.EXIT_SETUP
    L.say(f"accelerator: {why}")
    argv += ["--accel", accel]
    for opt, vals in (("--remote-arg", p.remote_arg), ("--vmm-arg", p.vmm_arg)):
        for v in vals:
            argv += [opt, v]
    for flag, val in (("--remote-bin", p.remote_bin), ("--log-dir", p.log_dir)):
        if val:
            argv += [flag, val]
    if p.dry_run:
        argv.append("--dry-run")
    if p.verbose:
        argv.append("-v")
    L._libc = L.ctypes.CDLL(None, use_errno=True)
    try:
        args = L.resolve_args(L.make_parser(), argv)
    except L.LaunchError as e:
        L.say(f"FAILED: {e}")
        return e.code
    launcher = PerfLauncher(args)
    rc = launcher.run()
    if p.dry_run or launcher.console is None:
        return rc

    con = launcher.console
    devs = [L.kv(x) for x in con.data_lines("MPQ-PERF: ")]
    total = [L.kv(x) for x in con.data_lines("MPQ-PERF-TOTAL: ")]
    result = {"rc": rc, "remotes": p.remotes, "perf_mb": p.perf_mb, "disk_format": p.disk_format,
              "remote": p.remote, "devices": devs, "total": total[0] if total else None,
              "remote_memory_kB": {str(i): m for i, m in sorted(launcher.mem.items())}}
    print(f"perf mode: {p.remotes} remote process(es), one lsi53c895a + {p.disk_format} disk each, "
          f"{p.perf_mb} MiB per disk, all disks at once")
    print(f"  {'device':8} {'write MB/s':>10} {'read MB/s':>10}  verified")
    for d in devs:
        print(f"  {d.get('dev', '?'):8} {d.get('write_MBps', '?'):>10} {d.get('read_MBps', '?'):>10}  "
              f"{'yes' if d.get('ok') == '1' else 'NO'}")
    if total:
        t = total[0]
        print(f"  {'total':8} {t.get('write_MBps', '?'):>10} {t.get('read_MBps', '?'):>10}  "
              f"({t.get('disks')} disks, {int(t.get('bytes', 0)) // (1 << 20)} MiB each way)")
    print("  remote memory (kB, last sample while the guest ran; VmHWM = peak RSS):")
    for i, m in sorted(launcher.mem.items()):
        last = m["last"]
        print(f"    remote{i} pid {m['pid']}: " + ", ".join(f"{k} {last.get(k, '?')}" for k in MEM_KEYS))
    if p.json:
        with open(p.json, "w") as f:
            json.dump(result, f, indent=1)
    return rc


if __name__ == "__main__":
    sys.exit(main())
