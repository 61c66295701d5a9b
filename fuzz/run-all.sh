#!/bin/sh
# Runs every target once, one after another (never in parallel: shared cores), with a fixed
# number of executions and a time guard, and prints libFuzzer's final line for each.
# Usage: fuzz/run-all.sh [RUNS]   (from the repository root or fuzz/)
set -eu
cd "$(dirname "$0")"
RUNS="${1:-1000000}"
for target in $(cargo +nightly fuzz list); do
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
