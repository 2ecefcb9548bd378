#!/usr/bin/env bash
# test_resume.sh: exact resume and crash safety, end to end through the moetrain program.
# - 40 steps straight vs 20 steps, stop, --resume auto, 20 more: losses of steps 21..40 and
#   the final parameters and AdamW moments are bit-for-bit identical; on 1 rank and on
#   mpirun -n 4 (expert parallel 4); and with bf16 products on 1 and 2 ranks.
# - Reshard: the -n 4 checkpoint at step 20 resumes on -n 1 and -n 2 and the next 10 losses
#   stay within 1e-4 relative of the -n 4 continuation.
# - A leftover partial *.tmp and a truncated/bit-flipped checkpoint: --resume auto skips to
#   the last complete one; ckpt info and --resume PATH reject the bad file naming it.
# - kill -9 while checkpointing every step: --resume auto continues.
# - A config that changes the model shape is refused naming the key.
# - Aux-loss-free balancing (moe.bias_update_rate > 0): exact resume on 1 and 4 ranks with the
#   router bias (/state/router_bias) bit-identical too; the bias range is logged; export
#   refuses the checkpoint (exit 1, naming the key); resuming a bias-less checkpoint with the
#   option on starts the bias at zero, and a biased one with the option off keeps it frozen,
#   each with a note.
# Usage: test_resume.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_resume.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?run through ctest}
. "$SRC/tests/testlib.sh"

head -c 60000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
cat > "$TMP/c.yaml" <<YAML
model: {vocab_size: 320, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, head_dim: 8}
moe: {n_experts: 4, top_k: 2, hidden: 48}
train: {seq_len: 32, micro_batch: 8, steps: 40, log_every: 10, eval_every: 0, eval_batches: 1}
optim: {lr: 3e-3, warmup_steps: 5, min_lr: 3e-4}
data: {tokenizer: $TMP/tok.bpe, text: [$TMP/corpus.txt]}
checkpoint: {every: 0, keep: 2}
YAML

exact_resume r1
exact_resume r4 timeout 300 "$MPIRUN" -n 4

# bf16 products (compute.precision; checkpoints stay fp32): exact resume on 1 and 2 ranks,
# where the CPU multiplies bf16 natively (elsewhere the run is refused, naming the key).
if "$BIN" "$TMP/c.yaml" --set compute.precision=bf16 --set "run.dir=$TMP/probe" \
     --set train.steps=1 > "$TMP/probe.log" 2>&1; then
  SETS=(--set compute.precision=bf16)
  exact_resume bf1
  exact_resume bf2 timeout 300 "$MPIRUN" -n 2
  grep -q "compute: .*bf16" "$TMP/bf1-a.log" && ok || bad "bf16 run does not log its compute line"
  SETS=()
elif grep -q "compute.precision" "$TMP/probe.log"; then
  echo "note: no native bf16 products on this CPU; bf16 resume not run"
else bad "bf16 probe run failed"; cat "$TMP/probe.log"; fi

# Reshard: -n 4 (EP 4) checkpoint at step 20 continued on -n 1 and -n 2.
ref=$(steps "$TMP/r4-b" 21 30 | grep -o '"loss":[^,]*' | cut -d: -f2)
for R in 1 2; do
  mkdir -p "$TMP/rs$R/checkpoints"
  cp "$TMP/r4-b/checkpoints/step_00000020.h5" "$TMP/rs$R/checkpoints/"
  run "$TMP/rs$R.log" timeout 300 "$MPIRUN" -n $R "$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/rs$R" --resume auto --stop-at 30
  got=$(grep -o '"loss":[^,]*' "$TMP/rs$R/metrics.jsonl" | cut -d: -f2)
  if [ "$(echo "$got" | wc -l)" = 10 ] && paste <(echo "$ref") <(echo "$got") | awk '{d=$1-$2; if(d<0)d=-d; if(d>1e-4*$1) bad=1} END{exit bad}'; then ok
  else bad "reshard -n 4 -> -n $R: losses differ"; paste <(echo "$ref") <(echo "$got") | head -3; fi
done

# Crash leftovers: a partial temp file and a truncated "newer" checkpoint are skipped.
D="$TMP/r1-b/checkpoints"
head -c 5000 "$D/step_00000040.h5" > "$D/step_00000050.h5.tmp"
head -c 5000 "$D/step_00000040.h5" > "$D/step_00000045.h5"
run "$TMP/skip.log" "$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/r1-b" --set train.steps=42 --resume auto
grep -q "resumed from .*step_00000040.h5" "$TMP/skip.log" && ok || bad "--resume auto did not skip the broken files"
"$BIN" ckpt info "$D/step_00000045.h5" > /dev/null 2> "$TMP/err"; rc=$?
[ $rc = 1 ] && grep -q "step_00000045.h5" "$TMP/err" && ok || bad "ckpt info on a truncated file: rc $rc"
"$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/r1-b" --resume "$D/step_00000045.h5" > /dev/null 2> "$TMP/err"; rc=$?
[ $rc = 1 ] && grep -q "step_00000045.h5" "$TMP/err" && ok || bad "--resume of a truncated file: rc $rc"
good=$(ls "$D"/step_*.h5 | grep -v step_00000045 | tail -1)
"$BIN" ckpt info "$good" > "$TMP/info" 2>&1 && grep -qi "step" "$TMP/info" && ok || { bad "ckpt info on a good file $good"; cat "$TMP/info"; }

# Shape change refused, naming the key.
"$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/r1-a" --set model.dim=64 --set train.steps=50 --resume auto > /dev/null 2> "$TMP/err"; rc=$?
[ $rc = 1 ] && grep -q "model.dim: 32 -> 64" "$TMP/err" && ok || { bad "shape change not refused (rc $rc)"; cat "$TMP/err"; }

# kill -9 while checkpointing every step, then --resume auto continues.
"$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/k" --set train.steps=100000 --set checkpoint.every=1 > "$TMP/k.log" 2>&1 &
pid=$!
for i in $(seq 1 100); do sleep 0.1; [ -n "$(ls "$TMP/k/checkpoints" 2>/dev/null | grep -v tmp)" ] && break; done
sleep 0.5; kill -9 $pid; wait $pid 2>/dev/null
last=$(ls "$TMP/k/checkpoints" | grep -v tmp | sort | tail -1 | sed "s/step_0*\([0-9]*\).h5/\1/")
run "$TMP/k2.log" "$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/k" --set train.steps=100000 --resume auto --stop-at $((last + 2))
grep -q "resumed from" "$TMP/k2.log" && ok || bad "no resume after kill -9"

# Aux-loss-free balancing: the same exact-resume checks with the router bias on.
sed 's/^moe: {\(.*\)}$/moe: {\1, bias_update_rate: 0.01}/' "$TMP/c.yaml" > "$TMP/cb.yaml"
grep -q "bias_update_rate: 0.01" "$TMP/cb.yaml" || bad "could not make the bias config"
for R in 1 4; do
  if [ $R = 1 ]; then CFG=$TMP/cb.yaml exact_resume b1
  else CFG=$TMP/cb.yaml exact_resume b4 timeout 300 "$MPIRUN" -n 4; fi
  a="$TMP/b$R-a/checkpoints/step_00000040.h5"; b="$TMP/b$R-b/checkpoints/step_00000040.h5"
  h5diff -q "$a" "$b" /state/router_bias /state/router_bias && ok \
    || bad "bias -n $R: the final router bias is not bit-identical (or missing)"
  grep -o '"router_bias_max":\[[^]]*' "$TMP/b$R-a/metrics.jsonl" | tail -1 | cut -d[ -f2 | tr , '\n' \
    | awk '$1 > 0 { f = 1 } END { exit !f }' && ok \
    || bad "bias -n $R: metrics.jsonl lacks a non-zero router_bias_max"
done
grep -qE "\| router bias [0-9.e+-]+ \(L[0-9]+\) \| eta" "$TMP/b1-a.log" && ok || bad "no bias range in the step log"
"$BIN" ckpt info "$TMP/b1-a/checkpoints/step_00000040.h5" 2>&1 | grep -q "router bias     yes" && ok \
  || bad "ckpt info does not show the router bias"
"$BIN" export "$TMP/b1-a/checkpoints/step_00000040.h5" "$TMP/b1-hf" --format hf > /dev/null 2> "$TMP/err"; rc=$?
[ $rc = 1 ] && grep -q "moe.bias_update_rate" "$TMP/err" && [ ! -e "$TMP/b1-hf" ] && ok \
  || { bad "export of a biased checkpoint: rc $rc"; cat "$TMP/err"; }
# option on over a bias-less checkpoint: note, bias from zero
mkdir -p "$TMP/on/checkpoints"; cp "$TMP/r1-a/checkpoints/step_00000040.h5" "$TMP/on/checkpoints/"
run "$TMP/on.log" "$BIN" "$TMP/cb.yaml" --set "run.dir=$TMP/on" --set train.steps=42 --resume auto
grep -q "holds no router bias: moe.bias_update_rate > 0 starts it at zero" "$TMP/on.log" && ok || bad "no note for a checkpoint without bias"
h5dump -d /state/router_bias "$TMP/on/checkpoints/step_00000042.h5" > /dev/null 2>&1 && ok || bad "the continued run saved no bias"
# option off over a biased checkpoint: note, the bias is kept frozen (bit for bit)
mkdir -p "$TMP/off/checkpoints"; cp "$TMP/b1-a/checkpoints/step_00000040.h5" "$TMP/off/checkpoints/"
run "$TMP/off.log" "$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/off" --set train.steps=42 --resume auto
grep -q "the router bias saved in .* is kept frozen" "$TMP/off.log" && ok || bad "no note for a frozen bias"
h5diff -q "$TMP/b1-a/checkpoints/step_00000040.h5" "$TMP/off/checkpoints/step_00000042.h5" /state/router_bias /state/router_bias && ok \
  || bad "the frozen bias changed or was dropped"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
