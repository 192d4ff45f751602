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
# Advisory until a clean run has been seen on this machine: failures are
# reported loudly but only fail CI with MPQ_HARDENING_STRICT=1.
hardening() {
    # GCC 12 reports false maybe-uninitialized warnings under ASan
    # (std::optional moves in monitor/qmp.h); they stay warnings here only.
    cmake -S . -B build-asan -DMPQ_SANITIZERS=ON -DMPQ_BENCH=OFF \
        -DCMAKE_CXX_FLAGS=-Wno-error=maybe-uninitialized >build-asan.log 2>&1 || {
        cat build-asan.log; return 1; }
    cmake --build build-asan -j "$(nproc)" || return 1
    # SandboxApply installs a real seccomp filter, which the ASan runtime trips
    # over (it needs syscalls the steady state forbids); the plain build runs it.
    (cd build-asan && ctest -L unit -E "^SandboxApply\\." --output-on-failure -j "$(nproc)") || return 1
    make fuzz-smoke || return 1
}
if ! hardening; then
    echo "==== HARDENING STEP FAILED (ASan+UBSan unit tests or fuzz-smoke) ===="
    [ "${MPQ_HARDENING_STRICT:-0}" = 1 ] && exit 1
fi
