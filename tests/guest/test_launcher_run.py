#!/usr/bin/env python3
"""Launcher --run with our remote: command output and exit status."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import guestcases  # noqa: E402

guestcases.run_command("mpqemu")
