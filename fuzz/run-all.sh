#!/bin/sh
# Runs the fuzz targets one after another (never in parallel: shared cores), each for a fixed
# number of executions with a time guard, and prints one line per target from libFuzzer's
# final statistics. Seeds in seeds/<target>/ are read alongside the growing corpus/<target>/.
# Usage: fuzz/run-all.sh [RUNS [TARGET...]]   (RUNS defaults to 1000000; all targets by default)
set -eu
cd "$(dirname "$0")"
RUNS="${1:-1000000}"
[ $# -gt 0 ] && shift
targets="${*:-$(cargo +nightly fuzz list)}"
for target in $targets; do
    mkdir -p "corpus/$target"
    seeds=""
    [ -d "seeds/$target" ] && seeds="seeds/$target"
    start=$(date +%s)
    cargo +nightly fuzz run -O "$target" "corpus/$target" $seeds -- \
        -runs="$RUNS" -max_total_time=1800 -max_len=4096 -print_final_stats=1 \
        > "$target.log" 2>&1 && status=ok || status="FAILED (see fuzz/$target.log)"
    end=$(date +%s)
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$target.log" | grep -o '[0-9]*$' || echo "?")
    echo "$target: $runs executions in $((end - start)) s, $status"
done
