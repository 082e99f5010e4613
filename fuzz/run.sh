#!/bin/sh
# Builds every fuzz target (release, with debug assertions: overflow
# checks catch what a sanitizer cannot see in safe Rust) and runs each
# for SECONDS (default 10) from its seeds (fuzz/seeds/TARGET) and its
# regressions (fuzz/regressions/TARGET), one target at a time. Prints per target the
# executions, libFuzzer's final coverage figures (cov, ft) and the
# crashes; exits non-zero when any target crashed (the crashing input is
# left in fuzz/artifacts/TARGET/).
#
# Needs a nightly toolchain and cargo-fuzz: cargo install cargo-fuzz
# Environment:
#   FUZZ_TARGETS="a b"   runs only those targets;
#   FUZZ_RUNS=N          stops each target after N executions instead of
#                        after SECONDS (docs/testing.md's long run: 10000000);
#   FUZZ_SANITIZER=none  builds without AddressSanitizer (the parsers are
#                        safe Rust, so ASan finds little and costs about
#                        half the speed; the default keeps it).
# One target at a time keeps a shared machine usable.
set -u
seconds=${1:-10}
cd "$(dirname "$0")" || exit 2
targets=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}
sanitizer=${FUZZ_SANITIZER:-address}
if [ -n "${FUZZ_RUNS:-}" ]; then
    limit="-runs=$FUZZ_RUNS"
else
    limit="-max_total_time=$seconds"
fi

# The targets that need a spool make one per process under this run's own
# scratch directory (fuzz/src/lib.rs): removing it never touches another
# run's, even one of the same target.
if [ -d /dev/shm ]; then base=/dev/shm; else base=${TMPDIR:-/tmp}; fi
SPOOLMAIL_FUZZ_SCRATCH=$(mktemp -d "$base/spoolmail-fuzz.XXXXXX") || exit 2
export SPOOLMAIL_FUZZ_SCRATCH
trap 'rm -rf "$SPOOLMAIL_FUZZ_SCRATCH"' EXIT

cargo +nightly fuzz build -O -a --sanitizer "$sanitizer" >logs.build 2>&1 || { cat logs.build; exit 2; }
rm -f logs.build
mkdir -p logs
failed=0
printf '%-10s %12s %8s %8s %6s %s\n' target execs cov ft secs crashes
for t in $targets; do
    # The working corpus grows in corpus/ (ignored by git); the committed
    # seeds and regressions are read, never written.
    mkdir -p "corpus/$t" "artifacts/$t"
    dirs="corpus/$t"
    [ -d "seeds/$t" ] && dirs="$dirs seeds/$t"
    [ -d "regressions/$t" ] && dirs="$dirs regressions/$t"
    log="logs/$t.log"
    start=$(date +%s)
    # shellcheck disable=SC2086
    cargo +nightly fuzz run -O -a --sanitizer "$sanitizer" "$t" $dirs -- \
        "$limit" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    rm -rf "${SPOOLMAIL_FUZZ_SCRATCH:?}"/*
    secs=$(( $(date +%s) - start ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(echo "$last" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
    ft=$(echo "$last" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
    crashes=0
    if [ "$rc" -ne 0 ]; then
        crashes=$(find "artifacts/$t" -type f | wc -l)
        [ "$crashes" -eq 0 ] && crashes="rc=$rc"
        failed=1
    fi
    printf '%-10s %12s %8s %8s %6s %s\n' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$secs" "$crashes"
    if [ "$rc" -ne 0 ]; then
        grep -E 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" | head -8 | sed 's/^/    /'
    fi
done
exit $failed
