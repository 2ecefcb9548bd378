#!/usr/bin/env bash
# test_route_options.sh: the topk router's variants (moe.score, route_scale, n_groups,
# topk_groups) and the load-balancing scope (moe.aux_scope) through the moetrain program:
# - exact resume: sigmoid scores + route scale + group-limited routing + the aux-loss-free
#   bias, with the sequence-wise scope on 1 rank and the global scope (two micro-batches a
#   step) under mpirun -n 2 (expert parallel 2): 10 steps straight vs 5, stop, --resume
#   auto, 5 more: step lines, final parameters and moments bit-identical;
# - config.yaml records the keys, ckpt info names them; sample runs such a checkpoint;
#   the global scope under train.recompute gives bit-identical steps;
# - export (hf, gguf) of a checkpoint with sigmoid scores, route_scale != 1 or groups
#   exits 1 naming the key and writes nothing;
# - n_groups 0 with topk_groups takes parallel.expert_parallel (trains under -n 2, EP 2);
# - bad combinations exit 1 naming the keys.
# Usage: test_route_options.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_route_options.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?run through ctest}
. "$SRC/tests/testlib.sh"
expect_fail() {   # NAME WANT_EXIT PATTERN -- command...
  local name=$1 want=$2 pat=$3; shift 4
  "$@" >"$TMP/out" 2>"$TMP/err"; local rc=$?
  if [ "$rc" != "$want" ]; then bad "$name: exit $rc, want $want"; cat "$TMP/err"; return; fi
  if ! grep -qE -- "$pat" "$TMP/err"; then bad "$name: stderr lacks /$pat/"; cat "$TMP/err"; return; fi
  ok
}

head -c 40000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
cat > "$TMP/c.yaml" <<YAML
model: {vocab_size: 300, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, head_dim: 8}
moe: {n_experts: 8, top_k: 2, hidden: 24, aux_loss_coef: 0.01}
train: {seq_len: 16, micro_batch: 4, grad_accum: 2, steps: 10, log_every: 5, eval_every: 0, eval_batches: 1}
optim: {lr: 3e-3, warmup_steps: 3, min_lr: 3e-4}
data: {tokenizer: $TMP/tok.bpe, text: [$TMP/corpus.txt]}
checkpoint: {every: 0, keep: 2}
YAML

V=(--set moe.score=sigmoid --set moe.route_scale=2.5 --set moe.n_groups=4 --set moe.topk_groups=2
   --set moe.bias_update_rate=0.001)
SETS=("${V[@]}" --set moe.aux_scope=sequence)
RESUME_AT=5 exact_resume seq-r1
SETS=("${V[@]}" --set moe.aux_scope=global)
RESUME_AT=5 exact_resume glob-r2 timeout 300 "$MPIRUN" -n 2
SETS=()
for k in "score: sigmoid" "route_scale: 2.5" "n_groups: 4" "topk_groups: 2" "aux_scope: sequence"; do
  grep -qE "^  $k( |$)" "$TMP/seq-r1-a/config.yaml" && ok || bad "config.yaml lacks moe.$k"
done
CK="$TMP/seq-r1-a/checkpoints/step_00000010.h5"
"$BIN" ckpt info "$CK" > "$TMP/out" 2>&1 && grep -q "sigmoid scores, route scale 2.5, 2 of 4 expert groups" "$TMP/out" \
  && ok || { bad "ckpt info: routing"; cat "$TMP/out"; }
"$BIN" sample "$CK" --prompt "ROMEO:" --max-tokens 8 > "$TMP/out" 2> "$TMP/err" \
  && grep -q "ROMEO:" "$TMP/out" && ok || { bad "sample with sigmoid + groups"; cat "$TMP/err"; }

# Recomputation re-runs each layer's routing in backward: the global scope must read the
# step's counts without adding that layer's again (train.recompute is bit-identical to the
# kept activations, so the step lines, gradient norms included, must be too).
for rc in false true; do
  run "$TMP/rc$rc.log" "$BIN" "$TMP/c.yaml" --set train.steps=4 --set "run.dir=$TMP/rc$rc" \
    "${V[@]}" --set moe.aux_scope=global --set train.recompute=$rc
done
[ -n "$(steps "$TMP/rcfalse" 1 4)" ] && [ "$(steps "$TMP/rcfalse" 1 4)" = "$(steps "$TMP/rctrue" 1 4)" ] && ok \
  || bad "global scope: train.recompute changes the steps"

# Export refuses each variant alone (no bias: that refusal is another test's), naming it.
i=0
for v in "moe.score=sigmoid|moe.score is 'sigmoid'" "moe.route_scale=2|moe.route_scale is 2" \
         "moe.topk_groups=2 --set moe.n_groups=2|moe.topk_groups is 2"; do
  set=${v%%|*}; pat=${v#*|}; i=$((i + 1))
  # shellcheck disable=SC2086
  run "$TMP/x$i.log" "$BIN" "$TMP/c.yaml" --set train.steps=1 --set "run.dir=$TMP/x$i" --set $set
  ck="$TMP/x$i/checkpoints/step_00000001.h5"
  expect_fail "export hf ($set)" 1 "$pat" -- "$BIN" export "$ck" "$TMP/hf$i" --format hf
  grep -q "hint:" "$TMP/err" && ok || bad "export hf ($set): no hint"
  [ ! -e "$TMP/hf$i" ] && [ -z "$(ls -d "$TMP"/hf"$i".tmp-* 2>/dev/null)" ] && ok || bad "$set: hf export left files"
  expect_fail "export gguf ($set)" 1 "$pat" -- "$BIN" export "$ck" "$TMP/m$i.gguf" --format gguf
  [ -z "$(ls "$TMP"/m"$i".gguf* 2>/dev/null)" ] && ok || bad "$set: gguf export left files"
done
# the default router still exports
run "$TMP/x0.log" "$BIN" "$TMP/c.yaml" --set train.steps=1 --set "run.dir=$TMP/x0"
run "$TMP/e0.log" "$BIN" export "$TMP/x0/checkpoints/step_00000001.h5" "$TMP/hf0" --format hf
[ -e "$TMP/hf0/config.json" ] && ok || bad "default model did not export"

# n_groups 0: one group per expert-parallel shard (needs parallel.expert_parallel set).
run "$TMP/ep.log" timeout 300 "$MPIRUN" -n 2 "$BIN" "$TMP/c.yaml" --set train.steps=2 \
  --set "run.dir=$TMP/ep" --set moe.topk_groups=1 --set parallel.expert_parallel=2
[ "$(grep -c '"lm_loss"' "$TMP/ep/metrics.jsonl" 2>/dev/null)" = 2 ] && ok || bad "topk_groups with EP groups did not train"

bad_cfg() {   # NAME PATTERN --set ...
  local name=$1 pat=$2; shift 2
  expect_fail "$name" 1 "$pat" -- "$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/bad" "$@"
}
bad_cfg "score enum" "moe.score: unknown value 'tanh'" --set moe.score=tanh
bad_cfg "route_scale 0" "moe.route_scale: value 0 is out of range" --set moe.route_scale=0
bad_cfg "sigmoid + topp" "moe.score, moe.router: .* the router is 'topp'" --set moe.score=sigmoid --set moe.router=topp
bad_cfg "groups + expert choice" "moe.topk_groups, moe.router" --set moe.topk_groups=2 --set moe.n_groups=4 --set moe.router=expert_choice
bad_cfg "scope + expert choice" "moe.aux_scope, moe.router" --set moe.aux_scope=sequence --set moe.router=expert_choice
bad_cfg "n_groups alone" "moe.n_groups, moe.topk_groups: n_groups = 4 has no effect" --set moe.n_groups=4
bad_cfg "groups from auto EP" "parallel.expert_parallel: n_groups 0 means one group per expert-parallel shard" --set moe.topk_groups=1
bad_cfg "groups do not divide" "moe.n_groups, moe.n_experts: 3 groups do not divide 8 experts" --set moe.n_groups=3 --set moe.topk_groups=1
bad_cfg "topk_groups > n_groups" "moe.topk_groups, moe.n_groups: topk_groups = 5 exceeds the 4 groups" --set moe.n_groups=4 --set moe.topk_groups=5
bad_cfg "top_k too many" "moe.top_k, moe.topk_groups, moe.n_groups: top_k = 3 exceeds the 2 experts" --set moe.n_groups=4 --set moe.topk_groups=1 --set moe.top_k=3
grep -q "raise moe.topk_groups to at least 2" "$TMP/err" && ok || bad "top_k hint"
[ ! -e "$TMP/bad/metrics.jsonl" ] && ok || bad "a bad config trained"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
