#!/usr/bin/env python3
"""Launcher --self-test (default topology) with stock QEMU's remote: validates the launcher and guest tooling."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import guestcases  # noqa: E402

guestcases.selftest_default("stock")
