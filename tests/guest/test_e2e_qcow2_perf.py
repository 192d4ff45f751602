#!/usr/bin/env python3
"""Shared guest-e2e harness, perf workload, qcow2 disk, our remote."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import guestcases  # noqa: E402

guestcases.shared_e2e("perf", fmt="qcow2")
