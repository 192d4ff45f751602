#!/usr/bin/env python3
"""Perf mode with 4 of our remotes, 4 MiB per disk, data verified."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import guestcases  # noqa: E402

guestcases.perf_mode("mpqemu")
