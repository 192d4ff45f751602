#!/bin/sh
# The README's test command (what CI runs): set-up, build, every test
# (unit, integration, real guest) through CTest.
set -e
cd "$(dirname "$0")/.."
scripts/setup.sh
[ -f config.mk ] || ./configure --enable-mpqemu
make
make check
