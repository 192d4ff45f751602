#!/bin/sh
# The README's test command: set-up, build, every test.
set -e
cd "$(dirname "$0")/.."
scripts/setup.sh
[ -f config.mk ] || ./configure --enable-mpqemu
make
make check
