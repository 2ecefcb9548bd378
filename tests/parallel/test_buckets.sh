#!/usr/bin/env bash
# test_buckets.sh: the trainer's bucketed gradient reduction (parallel/reduce.h) changes no
# bit of training. Under `mpirun -n 3` (a group of 3: an order the library would not
# promise) with gradient accumulation (only the last micro-batch's backward launches
# buckets) and per-layer recomputation (the marks sit in front of the checkpoint ops),
# 3 steps with buckets of 0.01 MiB (2621 floats: most tensors are cut) reduced during the
# backward give the same metrics lines (times left out) and the same final /params and
# /optim (h5diff, exact) as with parallel.bucket_mb=0 (after the backward); the log names
# the layout of the reduction. The same with MOE_NODE_MAP=0,0,1,1 under -n 4 (2 nodes x
# 2: the hierarchical stages), bucketed against after the backward, and for LoRA adapters
# on that run's checkpoint (frozen base: only the adapters, declared after every layer,
# have gradients).
# Usage: test_buckets.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_buckets.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?run through ctest}
. "$SRC/tests/testlib.sh"

head -c 60000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
cat > "$TMP/b.yaml" <<YAML
model: {vocab_size: 320, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, head_dim: 8}
moe: {n_experts: 4, top_k: 2, hidden: 48, router_noise: true, capacity_factor: 0}
train: {seq_len: 32, micro_batch: 12, grad_accum: 2, steps: 3, log_every: 1, eval_every: 0, eval_batches: 1, recompute: true}
optim: {lr: 3e-3, warmup_steps: 1, min_lr: 3e-4}
parallel: {expert_parallel: 1}
checkpoint: {every: 0}
data: {tokenizer: $TMP/tok.bpe, text: [$TMP/corpus.txt]}
YAML
filt() { sed -E 's/"(tokens_per_s|mfu|model_tflops|step_time|time|wall_time)":[^,}]*,?//g' "$1"; }

EXTRA=()
same_run() {   # $1 label, $2 ranks, $3 expected log words; rest: env assignments; EXTRA: sets
  local lb=$1 np=$2 want=$3; shift 3
  for b in 0 0.01; do
    if env "$@" timeout 300 "$MPIRUN" -n "$np" "$BIN" "$TMP/b.yaml" --set "parallel.bucket_mb=$b" \
        "${EXTRA[@]}" \
        --set "run.dir=$TMP/$lb$b" > "$TMP/$lb$b.log" 2>&1; then ok
    else bad "$lb: bucket_mb=$b run failed"; tail -20 "$TMP/$lb$b.log"; return; fi
  done
  grep -q "gradient reduction: $want" "$TMP/${lb}0.01.log" && ok ||
    bad "$lb: no '$want' reduction line: $(grep 'gradient reduction' "$TMP/${lb}0.01.log")"
  [ "$(grep -c '"loss"' "$TMP/${lb}0.01/metrics.jsonl")" = 3 ] && ok || bad "$lb: not 3 steps"
  diff <(filt "$TMP/${lb}0/metrics.jsonl") <(filt "$TMP/${lb}0.01/metrics.jsonl") > /dev/null && ok ||
    bad "$lb: metrics differ between bucket_mb 0 and 0.01"
  for g in /params /optim; do
    h5diff -q "$TMP/${lb}0/checkpoints/step_00000003.h5" "$TMP/${lb}0.01/checkpoints/step_00000003.h5" \
      "$g" "$g" && ok || bad "$lb: $g differs between bucket_mb 0 and 0.01"
  done
}

same_run flat 3 "1 node(s) x 3 rank(s), flat"
same_run nodes 4 "2 node(s) x 2 rank(s), hierarchical" MOE_NODE_MAP=0,0,1,1
EXTRA=(--set "finetune.init_from=$TMP/flat0/checkpoints/step_00000003.h5" --set finetune.lora_rank=4)
same_run lora 3 "1 node(s) x 3 rank(s), flat"

grep -q "with LoRA adapters" "$TMP/lora0.01.log" && ok || bad "lora: the run did not fine-tune adapters"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
