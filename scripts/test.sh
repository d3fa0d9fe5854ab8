#!/bin/sh
# Builds everything and runs every test: libFuzzer targets for a bounded time,
# the suite under AddressSanitizer and UndefinedBehaviorSanitizer, then the
# suite on the normal build (its ctest summary is the last thing printed).
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh

jobs=$(nproc 2>/dev/null || echo 2)
fuzz_seconds=${FUZZ_SECONDS:-30}

echo "== fuzzing (${fuzz_seconds} s per target)"
CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DBS_ROUTER_FUZZ=ON -DBS_ROUTER_TESTS=OFF -DBS_ROUTER_BENCH=OFF >/dev/null
cmake --build build-fuzz -j"$jobs" --target fuzz_beanstalk_protocol fuzz_job fuzz_signature
for target in fuzz_beanstalk_protocol fuzz_job fuzz_signature; do
  corpus="build-fuzz/corpus-$target"
  mkdir -p "$corpus"
  "build-fuzz/tests/fuzz/$target" -max_total_time="$fuzz_seconds" -print_final_stats=1 \
    "$corpus" 2>"build-fuzz/$target.log" || { tail -n 50 "build-fuzz/$target.log"; exit 1; }
  grep -E "stat::number_of_executed_units|Done" "build-fuzz/$target.log" | sed "s/^/$target: /"
done

echo "== tests under AddressSanitizer + UndefinedBehaviorSanitizer"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DBS_ROUTER_SANITIZE=ON -DBS_ROUTER_BENCH=OFF >/dev/null
cmake --build build-asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j"$jobs"

echo "== tests"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs"
