#!/usr/bin/env python3
"""Launcher --self-test with our remote: raw + qcow2 disk on one controller."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import guestcases  # noqa: E402

guestcases.two_disks("mpqemu")
