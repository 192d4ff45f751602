#!/bin/sh
# Short libFuzzer run of every target in build-fuzz/ (CI: `make fuzz-smoke`).
# First replays the committed regression inputs (fuzz/regressions/<target>/),
# then fuzzes for FUZZ_SECONDS (default 30) from the seed corpus
# (fuzz/corpus/<target>/) in a scratch copy, so CI never rewrites the tree.
# Exit status: non-zero if any target crashed, leaked, hung or timed out.
set -u
src=$(cd "$(dirname "$0")/.." && pwd)
build=${FUZZ_BUILD_DIR:-$src/build-fuzz}
secs=${FUZZ_SECONDS:-30}
work=$(mktemp -d /tmp/mpq-fuzz-smoke.XXXXXX)
trap 'rm -rf "$work"' EXIT
status=0
found=0
for bin in "$build"/fuzz/*_fuzz; do
    [ -x "$bin" ] || continue
    found=1
    name=$(basename "$bin")
    dict=""
    [ -f "$src/fuzz/$name.dict" ] && dict="-dict=$src/fuzz/$name.dict"
    if [ -d "$src/fuzz/regressions/$name" ] && [ -n "$(ls -A "$src/fuzz/regressions/$name")" ]; then
        if ! "$bin" -runs=0 "$src/fuzz/regressions/$name"/* >"$work/$name.replay.log" 2>&1; then
            echo "FAIL $name: a regression input fails again"; tail -n 30 "$work/$name.replay.log"
            status=1
            continue
        fi
    fi
    mkdir -p "$work/$name"
    [ -d "$src/fuzz/corpus/$name" ] && cp -r "$src/fuzz/corpus/$name/." "$work/$name/"
    if nice -n 5 "$bin" $dict -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
            -print_final_stats=1 -artifact_prefix="$work/$name-" "$work/$name" \
            >"$work/$name.log" 2>&1; then
        execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$name.log" | grep -o '[0-9]*$')
        rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$work/$name.log" | grep -o '[0-9]*$')
        echo "ok   $name: ${execs:-?} runs, ${rate:-?} exec/s in ${secs}s"
    else
        echo "FAIL $name (input saved as $work/$name-*; copy it into fuzz/regressions/$name/)"
        tail -n 40 "$work/$name.log"
        ls "$work/$name-"* 2>/dev/null | while read -r f; do
            mkdir -p "$src/build-fuzz/failures" && cp "$f" "$src/build-fuzz/failures/"; done
        status=1
    fi
done
[ "$found" = 1 ] || { echo "no fuzz targets in $build/fuzz (run make fuzz)"; exit 1; }
exit $status
