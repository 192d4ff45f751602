"""The real-guest test cases; tests/guest/test_*.py pick one case and a remote.

remote = "mpqemu" (our qemu-scsi-dev) or "stock" (qemu-system-x86_64 -machine x-remote,
the reference: it proves the launcher and guest tooling while ours is being finished).
"""
import os
import re
import signal
import subprocess
import sys
import time

import guesttest as gt


def _remote_args(remote):
    if remote == "stock":
        return ["--remote", "stock"]
    gt.require_our_remote()
    return ["--remote", "mpqemu"]


def _begin(name, remote):
    gt.require_host()
    sb = gt.Sandbox(name)
    return sb, _remote_args(remote) + sb.tag_args() + gt.accel_args()


def _passed(out_err, what):
    if "SELF-TEST PASSED" not in out_err:
        gt.fail(f"{what}: no 'SELF-TEST PASSED' line")


def _raw_tag(path):
    with open(path, "rb") as f:
        return f.read(512).split(b"\n")[0].decode(errors="replace")


def selftest_default(remote):
    """The main job's non-interactive form: a fresh qcow2 disk, guest + host verification."""
    sb, base = _begin("selftest", remote)
    rc, out, err = gt.launcher(base + ["--self-test", "--timeout", "400"], sb, timeout=500)
    if rc != 0:
        gt.fail(f"launcher --self-test exited {rc}")
    _passed(err, "self-test")
    if not re.search(r"host check: lsi0\.0 = guest /dev/sda: tag, 3 regions and zeros elsewhere ok", err):
        gt.fail("the host-side check of the created image did not run")
    sb.assert_clean()
    sb.cleanup()
    print("PASS")


def two_disks(remote):
    """Two disks (raw + qcow2) on one controller."""
    sb, base = _begin("twodisks", remote)
    a = gt.image(sb, "a.raw", "raw", "32M")
    b = gt.image(sb, "b.qcow2", "qcow2", "48M")
    rc, out, err = gt.launcher(base + ["--self-test", "--disk", a, "--disk", b, "--timeout", "400"], sb, timeout=500)
    if rc != 0:
        gt.fail(f"exit status {rc}")
    _passed(err, "two disks")
    for label in ("lsi0.0", "lsi0.1"):
        if f"host check: {label} = guest" not in err:
            gt.fail(f"no host check of {label}")
    if not _raw_tag(a).startswith("MPQ-SELFTEST nonce="):
        gt.fail(f"the raw image has no self-test tag: {_raw_tag(a)!r}")
    sizes = re.search(r"disks n=2 (\S+) (\S+)", out + err)
    if not sizes or sorted(int(x.split("=")[1].split("@")[0]) for x in sizes.groups()) != [32 << 20, 48 << 20]:
        gt.fail("the guest did not see a 32 MiB and a 48 MiB disk")
    sb.assert_clean(keep=("a.raw", "b.qcow2"))
    sb.cleanup()
    print("PASS")


def two_controllers(remote, remotes):
    """Two controllers (one disk each) in `remotes` device process(es)."""
    sb, base = _begin("twoctl", remote)
    rc, out, err = gt.launcher(base + ["--self-test", "--controllers", "2", "--remotes", str(remotes),
                                       "--disk-format", "raw", "--timeout", "400"], sb, timeout=500)
    if rc != 0:
        gt.fail(f"exit status {rc}")
    _passed(err, "two controllers")
    want = ["remote 0 pid \\d+: lsi0, lsi1"] if remotes == 1 else ["remote 0 pid \\d+: lsi0 ", "remote 1 pid \\d+: lsi1 "]
    for w in want:
        if not re.search(w, err):
            gt.fail(f"expected '{w}' in the launcher's output")
    for label in ("lsi0.0", "lsi1.0"):
        if f"host check: {label} = guest" not in err:
            gt.fail(f"no host check of {label}")
    sb.assert_clean()
    sb.cleanup()
    print("PASS")


def perf_mode(remote):
    """mpqemu-launcher-perf-mode.py: 4 remotes, small sizes, all data verified."""
    gt.require_host()
    sb = gt.Sandbox("perf")
    args = ["--remote", remote, "--perf-mb", "4", "--timeout", "400",
            f"--remote-arg=-name {sb.tag}", f"--vmm-arg=-name {sb.tag}"]
    if remote == "mpqemu":
        gt.require_our_remote()
    rc, out, err = gt.launcher(args, sb, timeout=500, perf=True)
    if rc != 0:
        gt.fail(f"perf mode exited {rc}")
    rows = re.findall(r"^  (sd[a-z]+)\s+([\d.]+)\s+([\d.]+)\s+yes$", out, re.M)
    if len(rows) != 4:
        gt.fail(f"expected 4 verified devices in the table, got {rows}")
    if not re.search(r"^  total\s+[\d.]+\s+[\d.]+", out, re.M):
        gt.fail("no total line")
    mem = re.findall(r"remote\d pid \d+: VmRSS (\d+), RssAnon (\d+)", out)
    if len(mem) != 4 or any(int(r) <= 0 for r, _ in mem):
        gt.fail(f"expected the memory footprint of 4 remotes, got {mem}")
    if "4 image(s) hold the 4 MiB" not in err:
        gt.fail("no host check of the 4 images")
    sb.assert_clean()
    sb.cleanup()
    print("PASS")


def run_command(remote):
    """--run: output between markers reaches stdout, the status is reported."""
    sb, base = _begin("run", remote)
    cmd = "echo hello-from-guest; cat /sys/block/sda/size; dd if=/dev/sda bs=512 count=1 2>/dev/null | wc -c; exit 5"
    rc, out, err = gt.launcher(base + ["--run", cmd, "--disk-size", "16M", "--timeout", "300"], sb, timeout=400)
    lines = out.splitlines()
    if lines[:3] != ["hello-from-guest", str(16 << 11), "512"]:
        gt.fail(f"guest command output wrong: {lines[:5]}")
    if rc != 1 or "guest command exited with status 5" not in err:
        gt.fail(f"status 5 in the guest must give exit 1 with a message (rc={rc})")
    sb.assert_clean()
    sb.cleanup()
    print("PASS")


def _expect(rc, want, err, text, what):
    if rc != want:
        gt.fail(f"{what}: exit status {rc}, expected {want}")
    if not re.search(text, err):
        gt.fail(f"{what}: no message matching {text!r}")
    gt.log(f"{what}: ok (status {rc})")


def lifecycle(remote):
    """Failures end with a clear message, the documented status, nothing left behind."""
    sb, base = _begin("life", remote)
    # 1. a remote that fails to start
    rc, _, err = gt.launcher(base + ["--self-test", "--remote-arg=-no-such-option", "--timeout", "120"], sb, 200)
    _expect(rc, 10, err, r"remote0 \(pid \d+\) failed to start", "remote fails to start")
    sb.assert_clean()
    # 2. a VMM that fails to start
    rc, _, err = gt.launcher(base + ["--self-test", "--vmm-arg=-no-such-option", "--timeout", "120"], sb, 200)
    _expect(rc, 12, err, r"VMM \(pid \d+\) failed to start", "VMM fails to start")
    sb.assert_clean()
    # 3. a remote killed while the guest runs (interactive mode, stdin at EOF)
    p = gt.start_launcher(base + ["--timeout", "300"], sb)
    seen = []
    m = gt.wait_for_line(p, r"remote 0 pid (\d+)", 60, seen)
    if not m:
        p.kill()
        gt.fail("launcher did not report the remote's pid")
    rpid = int(m.group(1))
    if not gt.wait_for_line(p, r"MPQ-GUEST: (disks|shell)", 240, seen):
        p.kill()
        gt.fail("guest did not reach its disks")
    os.kill(rpid, signal.SIGKILL)
    out, _ = p.communicate(timeout=60)
    _expect(p.returncode, 11, "".join(seen) + out, r"remote0 \(pid \d+\) died while the VM was running: killed by SIGKILL",
            "remote killed mid-run")
    sb.assert_clean()
    # 4. SIGTERM to the launcher while the guest boots
    p = gt.start_launcher(base + ["--timeout", "300"], sb)
    seen = []
    if not gt.wait_for_line(p, r"VMM pid \d+", 60, seen):
        p.kill()
        gt.fail("launcher did not start the VMM")
    time.sleep(2)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=60)
    _expect(p.returncode, 143, "".join(seen) + out, r"SIGTERM received", "SIGTERM to the launcher")
    sb.assert_clean()
    sb.cleanup()
    print("PASS")


def shared_e2e(workload, fmt="raw", fstype=None):
    """The shared guest-e2e harness with OUR remote in place of stock's x-remote."""
    gt.require_host()
    harness = os.path.join(gt.SHARED, "tools", "guest-e2e", "run-e2e.py")
    if not os.path.isfile(harness):
        gt.skip(f"shared harness not found at {harness} (MPQ_SHARED_DIR)")
    remote = gt.require_our_remote()
    sb = gt.Sandbox("e2e")
    template = (f"{remote} {{fd}} -name {sb.tag} -device lsi53c895a,id=lsi0 "
                "-drive id=d0,file={disk},format={format},if=none "
                "-device scsi-hd,id=sd0,drive=d0,bus=lsi0.0,scsi-id=0")
    argv = [sys.executable, harness, "--remote-cmd", template, "--workload", workload,
            "--disk-format", fmt, "--timeout", "400", "--workdir-base", sb.tmp,
            "--main-extra", f"-name {sb.tag}"] + gt.e2e_accel_args()
    if fstype:
        argv += ["--fstype", fstype]
    if workload == "perf":
        argv += ["--perf-mb", "16", "--perf-reps", "1"]
    rc, out, err = gt.run(argv, sb, timeout=500)
    if rc != 0 or not re.search(r"^E2E PASS", out, re.M):
        gt.fail(f"guest-e2e {workload}/{fmt}{'/' + fstype if fstype else ''} with our remote: rc={rc}")
    sb.assert_clean()
    sb.cleanup()
    print("PASS")


def interactive_shell(remote):
    """The main job's interactive form: typed commands reach the guest shell, their output
    comes back, `poweroff` ends the VM and the launcher exits 0."""
    sb, base = _begin("shell", remote)
    argv = [sys.executable, gt.LAUNCHER] + base + ["--timeout", "300"]
    gt.log("$ " + " ".join(argv) + " (commands on stdin)")
    p = subprocess.Popen(argv, env=sb.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    seen = []
    if not gt.wait_for_line(p, r"MPQ-GUEST: shell", 240, seen):
        p.kill()
        gt.fail("the guest shell did not come up")
    time.sleep(1)
    p.stdin.write("echo typed-$((6*7)); dd if=/dev/sda bs=512 count=2 2>/dev/null | wc -c; poweroff\n")
    p.stdin.flush()
    try:
        out, _ = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        gt.fail("poweroff did not end the VM")
    text = "".join(seen) + out
    sys.stdout.write(out)
    if "typed-42" not in text or not re.search(r"^1024\r?$", text, re.M):
        gt.fail("the typed command's output did not come back")
    if p.returncode != 0 or "MPQ-GUEST: power off requested" not in text:
        gt.fail(f"poweroff in the guest must end the run with status 0 (got {p.returncode})")
    sb.assert_clean()
    sb.cleanup()
    print("PASS")
