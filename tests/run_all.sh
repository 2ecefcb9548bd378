#!/usr/bin/env bash
# run_all.sh: the whole test suite, what README's test command (./setup.sh --test) and CI run:
#   1. a warning-free (-Werror) build and every Check, MPI and integration test (ctest);
#   2. the same tests built with AddressSanitizer + UndefinedBehaviorSanitizer (any report
#      is fatal; tests/lsan.supp lists Open MPI's own allocations), except the *_2threads
#      repeats of tests that already ran with one thread and the three layout-invariance
#      trainings (their code is sanitized through the mpi_* tests);
#   3. only when a developer asks for it with MOE_KERNEL_REPEATS=1 (CI and README's command
#      do not: they leave the host's OPENBLAS_CORETYPE as it is, set or not): stage 1's tests
#      again with each other OpenBLAS kernel set this CPU runs (Haswell: AVX2, SkylakeX:
#      AVX-512, except the one stage 1 ran with; and the library's own choice when the host
#      sets OPENBLAS_CORETYPE): results through a BLAS differ in rounding between kernels
#      and thread counts, and the suite must pass with any of them;
#   4. every libFuzzer target for FUZZ_SECONDS (default 15) on its committed seed corpus
#      (tests/fuzz/run_fuzz.sh; clang).
# Prints "run_all: N passed, N failed" over the stages and exits non-zero on failure.
set -uo pipefail
cd "$(dirname "$0")/.."
# tests run as many at a time as there are cores (ctest -j): each is a separate process with its
# own temporary directory, and none is timed, so they may share the machine
jobs=$(nproc 2>/dev/null || echo 2)
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
    ctest --test-dir "$dir" -j "$jobs" --output-on-failure ${exclude:+-E "$exclude"}
}
stage "tests" build_and_test build ""
# Under the sanitizers the *_2threads repeats are left out: they run the same code as their
# one-thread runs (which ASan+UBSan do check); stage 1 runs them for the thread split. So
# are the three layout-invariance trainings (test_layout, test_route_layout, test_buckets:
# moetrain under mpirun for 20 steps per layout, 190 s under the sanitizers): the code they
# drive is checked under ASan+UBSan by the mpi_grad, mpi_pipe, mpi_reduce and mpi_zero
# tests, and stage 1 runs them for the invariance itself.
stage "tests under ASan+UBSan" build_and_test build-asan \
  "_2threads$|^test_layout$|^test_route_layout$|^test_buckets$" -DMOE_SANITIZE=ON -DMOE_NATIVE=OFF
# Kernel sets for stage 3: those the CPU can run, other than the one stage 1 ran with (the
# host's OPENBLAS_CORETYPE, or else the set moetrain's start-up left OpenBLAS with, which
# `moetrain --version` names: a repeat with that set would run the same kernels again).
cpu_flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
stage1_core=${OPENBLAS_CORETYPE:-$(build/moetrain --version 2>/dev/null |
                                    sed -n 's/^openblas:.*(core \([A-Za-z0-9]*\),.*/\1/p')}
kernels=()
if [ "${MOE_KERNEL_REPEATS:-0}" = 1 ]; then
  [ -n "${OPENBLAS_CORETYPE:-}" ] && kernels+=(default)
  for k in Haswell:avx2 SkylakeX:avx512f; do
    name=${k%%:*}; flag=${k##*:}
    if [[ " $cpu_flags " == *" $flag "* ]] && [ "${stage1_core,,}" != "${name,,}" ]; then
      kernels+=("$name")
    fi
  done
fi
for k in "${kernels[@]}"; do
  if [ "$k" = default ]; then
    stage "tests with OpenBLAS's own kernel choice" env -u OPENBLAS_CORETYPE ctest --test-dir build -j "$jobs" --output-on-failure
  else
    stage "tests with OPENBLAS_CORETYPE=$k" env OPENBLAS_CORETYPE="$k" ctest --test-dir build -j "$jobs" --output-on-failure
  fi
done
stage "fuzzing (${FUZZ_SECONDS:-15} s per target)" tests/fuzz/run_fuzz.sh "${FUZZ_SECONDS:-15}"
echo "run_all: $pass passed, $failed failed"
[ "$failed" = 0 ]
