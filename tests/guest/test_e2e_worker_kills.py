#!/usr/bin/env python3
"""A real guest under stock QEMU runs the basic workload on our remote with
-x-worker on while the device worker is killed about every 0.5 s (SIGKILL), raw image;
see tests/lib/worker_e2e.py for what is checked."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import worker_e2e  # noqa: E402

if __name__ == "__main__":
    worker_e2e.run("raw", worker_e2e.Disruption.KILL)
