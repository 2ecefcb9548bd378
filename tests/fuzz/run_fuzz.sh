#!/usr/bin/env bash
# run_fuzz.sh DURATION [TARGET...]: build the libFuzzer variant (build-fuzz/, clang, ASan +
# UBSan + LSan) if needed and run every fuzz target (or the ones named, e.g. "config") for
# DURATION seconds each, from a temporary copy of its committed seed corpus
# tests/fuzz/corpus/<target>/ (so the repository is never written to). Exits non-zero on the
# first crash, leak, timeout, out-of-memory or sanitizer report, leaving the input that did
# it as crash-*/leak-*/timeout-*/oom-* in the printed directory.
# Environment: BUILD_DIR (default build-fuzz), JOBS (parallel builds, default 2), FUZZ_SEED
# (default 1: a fixed seed makes a run explore a prefix of the same mutation sequence, so CI
# repeats what was fuzzed, longer, before a commit; set another seed to explore afresh).
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${1:?usage: tests/fuzz/run_fuzz.sh DURATION_SECONDS [TARGET...]}
shift
BUILD_DIR=${BUILD_DIR:-build-fuzz}
ALL=(config tokenizer tokenizer_json shard json sft ckpt ckpt_raw safetensors gguf)
if [ $# -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL[@]}"); fi

# -max_len per target: long enough for the seeds and the structures that matter (ckpt_raw:
# its seed is a whole sealed checkpoint of about 190 KiB; a shorter cut fails the seal).
max_len() {
  case $1 in
    config) echo 4096 ;; tokenizer) echo 4096 ;; tokenizer_json) echo 8192 ;;
    shard) echo 1024 ;; json) echo 2048 ;;
    sft) echo 2048 ;;
    ckpt) echo 512 ;; ckpt_raw) echo 262144 ;; safetensors) echo 2048 ;; gguf) echo 2048 ;;
    *) echo 4096 ;;
  esac
}

if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  CC=clang cmake -S . -B "$BUILD_DIR" -DMOE_FUZZ=ON -DMOE_SANITIZE=ON -DMOE_NATIVE=OFF >/dev/null
fi
cmake --build "$BUILD_DIR" -j"${JOBS:-2}" --target $(printf 'fuzz_%s ' "${TARGETS[@]}") >/dev/null

WORK=$(mktemp -d /tmp/moe_fuzz_run.XXXXXX)
echo "run_fuzz: ${#TARGETS[@]} targets x ${DURATION}s; corpora and artifacts in $WORK"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
status=0
for t in "${TARGETS[@]}"; do
  bin="$BUILD_DIR/fuzz_$t"
  mkdir -p "$WORK/$t"
  cp -r "tests/fuzz/corpus/$t/." "$WORK/$t/corpus"
  start=$(date +%s)
  if "$bin" -seed="${FUZZ_SEED:-1}" -max_total_time="$DURATION" -timeout=10 -rss_limit_mb=2048 -max_len="$(max_len "$t")" \
       -print_final_stats=1 -artifact_prefix="$WORK/$t/" "$WORK/$t/corpus" >"$WORK/$t/log" 2>&1; then
    line=$(grep -E '^#[0-9]+.*DONE' "$WORK/$t/log" | tail -1)
    printf 'run_fuzz: %-12s ok   %3ss  %s\n' "$t" "$(( $(date +%s) - start ))" "$line"
  else
    status=1
    printf 'run_fuzz: %-12s FAIL %3ss  (log: %s/%s/log)\n' "$t" "$(( $(date +%s) - start ))" "$WORK" "$t"
    grep -E 'ERROR|SUMMARY|assertion failed|Test unit written' "$WORK/$t/log" | head -5 | sed 's/^/    /'
  fi
done
if [ $status -eq 0 ]; then rm -rf "$WORK"; fi
exit $status
