#!/usr/bin/env python3
"""Shared guest-e2e harness, fs workload (ext2), raw disk, our remote."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import guestcases  # noqa: E402

guestcases.shared_e2e("fs", fstype="ext2")
