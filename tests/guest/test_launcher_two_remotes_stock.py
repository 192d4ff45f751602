#!/usr/bin/env python3
"""Launcher --self-test, two controllers in two stock remotes (stock hosts one device per process)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import guestcases  # noqa: E402

guestcases.two_controllers("stock", 2)
