#!/usr/bin/env bash
# test_routers.sh: the routers of moe.router (topp, expert_choice) through the moetrain
# program, with every capability they must work with:
# - exact resume: 20 steps straight vs 10, stop, --resume auto, 10 more: losses of steps
#   11..20 and the final parameters and AdamW moments bit-identical, on 1 rank and on
#   mpirun -n 4 (expert parallel 4), for both routers;
# - top-p routes each token on its own, so -n 2 (expert parallel 2) reproduces the -n 1
#   losses within 1e-4 relative (expert choice is per rank batch: not compared);
# - the log line and metrics.jsonl report experts per token; expert choice fills every
#   expert to exactly its capacity (expert_load = 1/E each);
# - export (hf, gguf) of a non-topk checkpoint exits 1 naming moe.router and writes
#   nothing; sample refuses expert choice, eval notes it; sample works with top-p;
# - both routers train from an upcycled dense checkpoint;
# - bad router keys exit 1 naming the key, with the allowed values.
# Usage: test_routers.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_routers.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?run through ctest}
. "$SRC/tests/testlib.sh"
expect_fail() {   # NAME WANT_EXIT PATTERN -- command...
  local name=$1 want=$2 pat=$3; shift 4
  "$@" >"$TMP/out" 2>"$TMP/err"; local rc=$?
  if [ "$rc" != "$want" ]; then bad "$name: exit $rc, want $want"; cat "$TMP/err"; return; fi
  if ! grep -qE -- "$pat" "$TMP/err"; then bad "$name: stderr lacks /$pat/"; cat "$TMP/err"; return; fi
  ok
}

head -c 60000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
cat > "$TMP/c.yaml" <<YAML
model: {vocab_size: 320, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, head_dim: 8}
moe: {n_experts: 4, top_k: 2, hidden: 48, top_p: 0.6, entropy_coef: 0.001}
train: {seq_len: 32, micro_batch: 8, steps: 20, log_every: 10, eval_every: 0, eval_batches: 1}
optim: {lr: 3e-3, warmup_steps: 5, min_lr: 3e-4}
data: {tokenizer: $TMP/tok.bpe, text: [$TMP/corpus.txt]}
checkpoint: {every: 0, keep: 2}
YAML
losses() { grep -o '"loss":[-0-9.e+]*' "$1/metrics.jsonl" | cut -d: -f2; }

for router in topp expert_choice; do   # 20-step config: stop and resume at step 10
  SETS=(--set "moe.router=$router")
  RESUME_AT=10 exact_resume "$router-r1"
  RESUME_AT=10 exact_resume "$router-r4" timeout 300 "$MPIRUN" -n 4
  for label in "$router-r1" "$router-r4"; do
    grep -qE "^  router: $router( |$)" "$TMP/$label-a/config.yaml" && ok \
      || bad "$label: config.yaml lacks moe.router: $router"
  done
done
SETS=()

# ckpt info names the router.
"$BIN" ckpt info "$TMP/topp-r1-a/checkpoints/step_00000020.h5" > "$TMP/out" 2>&1 \
  && grep -q "router topp (top_p 0.6, max_experts 0)" "$TMP/out" && ok || { bad "ckpt info: router"; cat "$TMP/out"; }

# Log line and metrics: experts per token; top-p between 1 and E, expert choice exactly
# K = 2 (capacity N K / E per expert) with every expert at 1/E of the slots.
grep -q "experts/token" "$TMP/topp-r1-a.log" && ok || bad "top-p log line lacks experts/token"
ept=$(grep -o '"experts_per_token":\[[^]]*\]' "$TMP/topp-r1-a/metrics.jsonl" | tail -1)
echo "$ept" | grep -qE '"experts_per_token":\[[0-9.]+,[0-9.]+\]' && ok || bad "top-p metrics: '$ept'"
echo "$ept" | tr -d '[]"a-z_:' | tr ',' '\n' | awk '$1 < 1 || $1 > 4 { b = 1 } END { exit b }' && ok \
  || bad "top-p experts per token outside [1, 4]: $ept"
grep -o '"experts_per_token":\[[^]]*\]' "$TMP/expert_choice-r1-a/metrics.jsonl" | sort -u | grep -qx '"experts_per_token":\[2.0000,2.0000\]' \
  && ok || bad "expert choice: experts per token is not exactly 2"
grep -o '"expert_load":\[\[[^"]*\]\]' "$TMP/expert_choice-r4-a/metrics.jsonl" | sort -u \
  | grep -qx '"expert_load":\[\[0.2500,0.2500,0.2500,0.2500\],\[0.2500,0.2500,0.2500,0.2500\]\]' \
  && ok || bad "expert choice under -n 4: expert load is not exactly 1/E"

# Top-p is layout-invariant: -n 2 (EP 2) reproduces the -n 1 losses.
run "$TMP/topp-n2.log" timeout 300 "$MPIRUN" -n 2 "$BIN" "$TMP/c.yaml" --set moe.router=topp --set "run.dir=$TMP/topp-n2"
if paste <(losses "$TMP/topp-r1-a") <(losses "$TMP/topp-n2") | awk '
    { n++; d = $1 - $2; if (d < 0) d = -d; if (d > 1e-4 * $1) { print "step " NR ": " $1 " vs " $2; b++ } }
    END { exit !(n == 20 && b == 0) }'; then ok
else bad "top-p: -n 2 losses differ from -n 1"; fi

# Export refuses; nothing is written.
for router in topp expert_choice; do
  ck="$TMP/$router-r1-a/checkpoints/step_00000020.h5"
  expect_fail "$router export hf" 1 "moe.router is '$router'" -- "$BIN" export "$ck" "$TMP/hf-$router" --format hf
  [ ! -e "$TMP/hf-$router" ] && [ -z "$(ls -d "$TMP"/hf-"$router".tmp-* 2>/dev/null)" ] && ok || bad "$router: hf export left files"
  expect_fail "$router export gguf" 1 "moe.router is '$router'" -- "$BIN" export "$ck" "$TMP/$router.gguf" --format gguf
  [ -z "$(ls "$TMP"/"$router".gguf* 2>/dev/null)" ] && ok || bad "$router: gguf export left files"
done

# Inference: sample works with top-p, refuses expert choice; eval runs expert choice with a note.
"$BIN" sample "$TMP/topp-r1-a/checkpoints/step_00000020.h5" --prompt "ROMEO:" --max-tokens 8 > "$TMP/out" 2> "$TMP/err" \
  && grep -q "ROMEO:" "$TMP/out" && ok || { bad "sample with top-p"; cat "$TMP/err"; }
expect_fail "sample expert choice" 1 "moe.router is expert_choice" -- \
  "$BIN" sample "$TMP/expert_choice-r1-a/checkpoints/step_00000020.h5" --prompt "ROMEO:"
grep -q "hint:" "$TMP/err" && ok || bad "sample expert choice: no hint"
"$BIN" eval "$TMP/expert_choice-r1-a/checkpoints/step_00000020.h5" --text "$TMP/corpus.txt" --ctx 32 > "$TMP/out" 2> "$TMP/err" \
  && grep -q "not causal" "$TMP/err" && grep -qi "perplexity" "$TMP/out" && ok || { bad "eval expert choice"; cat "$TMP/err"; }

# Upcycling: a dense run's checkpoint starts a top-p and an expert-choice run (every expert
# a copy of the dense FFN); the runs train with finite losses.
run "$TMP/dense.log" "$BIN" "$TMP/c.yaml" --set moe.n_experts=0 --set moe.hidden=96 --set train.steps=10 --set "run.dir=$TMP/dense"
for router in topp expert_choice; do
  run "$TMP/up-$router.log" "$BIN" "$TMP/c.yaml" --set moe.router=$router --set train.steps=5 --set "run.dir=$TMP/up-$router" \
    --set moe.hidden=48 --set init.granularity=2 --set "init.upcycle_from=$TMP/dense/checkpoints/step_00000010.h5"
  grep -q "upcycled from" "$TMP/up-$router.log" && [ "$(losses "$TMP/up-$router" | grep -c '^[0-9]')" = 5 ] && ok \
    || { bad "$router: upcycled run"; tail -3 "$TMP/up-$router.log"; }
done

# Bad keys: exit 1, the key named, what is allowed.
expect_fail "unknown router" 1 "moe.router: unknown value 'top_p'" -- "$BIN" "$TMP/c.yaml" --set moe.router=top_p --set "run.dir=$TMP/bad"
grep -q "did you mean 'topp'? expected one of topk, topp, expert_choice" "$TMP/err" && ok || { bad "router hint"; cat "$TMP/err"; }
expect_fail "top_p 0" 1 "moe.top_p: value 0 is out of range" -- "$BIN" "$TMP/c.yaml" --set moe.top_p=0 --set "run.dir=$TMP/bad"
expect_fail "max_experts > E" 1 "moe.max_experts, moe.n_experts: max_experts = 5 exceeds n_experts = 4" -- \
  "$BIN" "$TMP/c.yaml" --set moe.max_experts=5 --set "run.dir=$TMP/bad"
[ ! -e "$TMP/bad/metrics.jsonl" ] && ok || bad "a bad config trained"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
