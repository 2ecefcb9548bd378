#!/usr/bin/env bash
# run_all.sh: the whole test suite, what README's test command and CI run:
#   1. a warning-free (-Werror) build and every Check, MPI and integration test (ctest);
#   2. the same tests built with AddressSanitizer + UndefinedBehaviorSanitizer (any report
#      is fatal; tests/lsan.supp lists Open MPI's own allocations), except the *_2threads
#      repeats of tests that already ran with one thread;
#   3. every libFuzzer target for FUZZ_SECONDS (default 25) on its committed seed corpus
#      (tests/fuzz/run_fuzz.sh; clang).
# Prints "run_all: N passed, N failed" over the three stages and exits non-zero on failure.
set -uo pipefail
cd "$(dirname "$0")/.."
pass=0; failed=0
stage() {   # NAME command...
  local name=$1; shift
  local t0=$SECONDS
  echo "== run_all: $name"
  if "$@"; then pass=$((pass+1)); echo "== run_all: $name passed in $((SECONDS - t0)) s"
  else failed=$((failed+1)); echo "== run_all: $name FAILED after $((SECONDS - t0)) s"; fi
}
build_and_test() {   # DIR CTEST-EXCLUDE-REGEX cmake-options...
  local dir=$1 exclude=$2; shift 2
  cmake -S . -B "$dir" -DMOE_WERROR=ON "$@" && cmake --build "$dir" -j2 &&
    ctest --test-dir "$dir" --output-on-failure ${exclude:+-E "$exclude"}
}
stage "tests" build_and_test build ""
# Under the sanitizers the *_2threads repeats are left out: they run the same code as their
# one-thread runs (which ASan+UBSan do check); stage 1 runs them for the thread split.
stage "tests under ASan+UBSan" build_and_test build-asan "_2threads$" -DMOE_SANITIZE=ON -DMOE_NATIVE=OFF
stage "fuzzing (${FUZZ_SECONDS:-25} s per target)" tests/fuzz/run_fuzz.sh "${FUZZ_SECONDS:-25}"
echo "run_all: $pass passed, $failed failed"
[ "$failed" = 0 ]
