#!/usr/bin/env python3
"""Launcher lifecycle with our remote: remote/VMM fail to start, remote killed mid-run, SIGTERM."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import guestcases  # noqa: E402

guestcases.lifecycle("mpqemu")
