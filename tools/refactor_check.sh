#!/usr/bin/env bash
# refactor_check.sh BASE_REV [NEW_BUILD_DIR]: a refactor changed nothing.
# Builds BASE_REV (a git worktree in a temporary folder) and the working tree (NEW_BUILD_DIR,
# default build/), then trains the same 4 steps with each binary in each configuration:
#   default   configs/mixtral_tiny.yaml on one process
#   mpi2      the same under mpirun -n 2 (expert parallel 2)
#   dense     configs/dense_tiny.yaml
#   lora      configs/lora_tiny.yaml on the base's own 4-step default checkpoint
# and requires, per configuration, the same metrics lines (loss, lm, aux, z, grad norm,
# lr, validation loss; times and throughput left out) and no difference in /params and
# /optim of the final checkpoints (h5diff, exact). Dev-only: not part of the test suite.
# Prints one line per configuration and exits non-zero on any difference.
set -euo pipefail
BASE=${1:?usage: tools/refactor_check.sh BASE_REV [NEW_BUILD_DIR]}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NEWB=$(cd "$ROOT" && realpath "${2:-build}")
W=$(mktemp -d /tmp/moe_refactor.XXXXXX)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
git -C "$ROOT" worktree add -q --detach "$W/base" "$BASE"
trap 'git -C "$ROOT" worktree remove --force "$W/base"' EXIT
cmake -S "$W/base" -B "$W/base/build" >/dev/null && cmake --build "$W/base/build" -j2 --target moetrain >/dev/null
cmake --build "$NEWB" -j2 --target moetrain >/dev/null
head -c 200000 "$ROOT/data/tinyshakespeare.txt" > "$W/corpus.txt"
common=(--set train.steps=4 --set train.log_every=1 --set train.eval_every=2
        --set train.eval_batches=2 --set checkpoint.every=0 --set "data.text=[$W/corpus.txt]"
        --set "data.tokenizer=$W/tok.bpe" --set model.vocab_size=512)
# strip what legitimately varies between runs: times, rates (tokens/s, achieved TFLOP/s), MFU
filt() { sed -E 's/"(tokens_per_s|mfu|step_time|time|wall_time|model_tflops)":[^,}]*,?//g' "$1"; }
status=0
run_one() {   # NAME SIDE(base|new) BIN CONFIG [launcher...] -- [extra --set...]
  local name=$1 side=$2 bin=$3 cfg=$4; shift 4
  local launch=() extra=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do launch+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  extra=("$@")
  "${launch[@]}" "$bin" "$cfg" "${common[@]}" "${extra[@]}" \
    --set "run.dir=$W/$side-$name" > "$W/$side-$name.log" 2>&1 ||
    { echo "$name: $side run failed:"; tail -5 "$W/$side-$name.log"; return 1; }
}
for side in base new; do
  bin=$([ $side = base ] && echo "$W/base/build/moetrain" || echo "$NEWB/moetrain")
  run_one default $side "$bin" "$ROOT/configs/mixtral_tiny.yaml"
  run_one mpi2 $side "$bin" "$ROOT/configs/mixtral_tiny.yaml" mpirun -n 2
  run_one dense $side "$bin" "$ROOT/configs/dense_tiny.yaml"
  run_one lora $side "$bin" "$ROOT/configs/lora_tiny.yaml" -- \
    --set "finetune.init_from=$W/base-default/checkpoints/step_00000004.h5"
done
for name in default mpi2 dense lora; do
  a="$W/base-$name" b="$W/new-$name"
  if ! diff <(filt "$a/metrics.jsonl") <(filt "$b/metrics.jsonl") >/dev/null; then
    echo "$name: metrics differ"; diff <(filt "$a/metrics.jsonl") <(filt "$b/metrics.jsonl") | head -4
    status=1; continue
  fi
  ca="$a/checkpoints/step_00000004.h5" cb="$b/checkpoints/step_00000004.h5"
  for g in /params /optim; do
    if ! h5diff -q "$ca" "$cb" "$g" "$g"; then echo "$name: $g differs"; status=1; fi
  done
  [ $status = 0 ] && echo "$name: identical (4 steps: $(grep -c '"loss"' "$b/metrics.jsonl") loss lines; /params and /optim by h5diff)"
done
exit $status
