#!/bin/sh
# The README's test command (what CI runs): set-up, build, every test
# (unit, integration, real guest) through CTest.
set -e
cd "$(dirname "$0")/.."
scripts/setup.sh
[ -f config.mk ] || ./configure --enable-mpqemu
make
make check

# Hardening (h-hard): the unit tests again under ASan + UBSan in their own
# build dir (cmake directly, so config.mk keeps pointing at the main build),
# then a short run of every libFuzzer target (FUZZ_SECONDS each, default 30).
cmake -S . -B build-asan -DMPQ_SANITIZERS=ON -DMPQ_BENCH=OFF >build-asan.log 2>&1 || {
    cat build-asan.log; exit 1; }
cmake --build build-asan -j "$(nproc)"
(cd build-asan && ctest -L unit --output-on-failure -j "$(nproc)")
make fuzz-smoke
