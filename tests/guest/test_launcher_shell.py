#!/usr/bin/env python3
"""The main job, interactive: commands typed into the guest shell (our remote), poweroff ends it."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import guestcases  # noqa: E402

guestcases.interactive_shell("mpqemu")
