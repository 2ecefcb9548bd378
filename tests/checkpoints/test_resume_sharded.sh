#!/usr/bin/env bash
# test_resume_sharded.sh: checkpoints of the sharded optimizer (parallel.shard_optimizer,
# parallel/zero.h) keep the rank-count-free layout, end to end through moetrain.
# - Exact resume, sharded, mpirun -n 4 with expert_parallel 2 (dense moments split over 4
#   ranks, expert moments over 2): steps after the resume and the final /params and /optim
#   bit-identical to the straight run.
# - The sharded file holds the same datasets as an unsharded run's (moments gathered to full
#   size when saving).
# - Reshard: the sharded -n 4 checkpoint resumes unsharded on -n 2 and on -n 1, and an
#   unsharded -n 4 checkpoint resumes sharded on -n 4 (expert_parallel 1); the next losses
#   stay within 1e-4 relative of the run that wrote it (test_resume.sh's reshard tolerance:
#   the layouts sum their float gradients in different orders).
# - -n 2 sharded vs unsharded from scratch: identical step lines (each gradient sum is one
#   commutative float addition, and AdamW is elementwise: mpi_zero.c argues it).
# - LoRA fine-tuning on -n 2, sharded vs unsharded: identical step lines and adapter files.
# - The log says what was sharded; on one rank the option is a no-op and says so.
# Usage: test_resume_sharded.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_resume_sharded.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?run through ctest}
. "$SRC/tests/testlib.sh"

head -c 60000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
cat > "$TMP/c.yaml" <<YAML
model: {vocab_size: 320, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, head_dim: 8}
moe: {n_experts: 4, top_k: 2, hidden: 48}
train: {seq_len: 32, micro_batch: 8, steps: 20, log_every: 10, eval_every: 0, eval_batches: 1}
optim: {lr: 3e-3, warmup_steps: 5, min_lr: 3e-4}
data: {tokenizer: $TMP/tok.bpe, text: [$TMP/corpus.txt]}
checkpoint: {every: 0, keep: 2}
YAML
ON=(--set parallel.shard_optimizer=true)
export RESUME_AT=10

# exact resume, sharded, -n 4, EP 2
SETS=("${ON[@]}" --set parallel.expert_parallel=2)
exact_resume z4 timeout 300 "$MPIRUN" -n 4
SETS=()
grep -q "optimizer: sharded (ZeRO-1): AdamW moments of dense parameters split over all ranks, of experts over their expert-data-parallel group" "$TMP/z4-a.log" \
  && ok || { bad "the -n 4 log does not say what is sharded"; grep optimizer "$TMP/z4-a.log"; }

# the unsharded run of the same layout, stopped at step 10 and continued to 20
run "$TMP/u4-1.log" timeout 300 "$MPIRUN" -n 4 "$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/u4" --set parallel.expert_parallel=2 --stop-at 10
run "$TMP/u4-2.log" timeout 300 "$MPIRUN" -n 4 "$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/u4" --set parallel.expert_parallel=2 --stop-at 20 --resume auto
S10=step_00000010.h5
diff <(h5ls -r "$TMP/z4-b/checkpoints/$S10" | awk '{print $1, $2, $3}') \
     <(h5ls -r "$TMP/u4/checkpoints/$S10" | awk '{print $1, $2, $3}') > /dev/null \
  && ok || bad "the sharded checkpoint's datasets differ from the unsharded one's"

# losses of steps FROM..TO of run dir A against all of run dir B's (a resumed copy that
# logged only those steps) within 1e-4 relative
close() {
  local a b
  a=$(steps "$1" "$3" "$4" | grep -o '"loss":[^,]*' | cut -d: -f2)
  b=$(grep -o '"loss":[^,]*' "$2/metrics.jsonl" | cut -d: -f2)
  [ -n "$a" ] && [ "$(echo "$a" | wc -l)" = "$(echo "$b" | wc -l)" ] &&
    paste <(echo "$a") <(echo "$b") | awk '{d=$1-$2; if(d<0)d=-d; if(d>1e-4*$1) bad=1} END{exit bad}'
}

# sharded -n 4 checkpoint -> unsharded -n 2 and -n 1
for R in 1 2; do
  mkdir -p "$TMP/zs$R/checkpoints"
  cp "$TMP/z4-b/checkpoints/$S10" "$TMP/zs$R/checkpoints/"
  run "$TMP/zs$R.log" timeout 300 "$MPIRUN" -n $R "$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/zs$R" --resume auto --stop-at 20
  close "$TMP/z4-b" "$TMP/zs$R" 11 20 && ok || bad "sharded -n 4 -> unsharded -n $R: losses differ"
done
# unsharded -n 4 checkpoint -> sharded -n 4 with expert_parallel 1 (experts over all 4)
mkdir -p "$TMP/us/checkpoints"
cp "$TMP/u4/checkpoints/$S10" "$TMP/us/checkpoints/"
run "$TMP/us.log" timeout 300 "$MPIRUN" -n 4 "$BIN" "$TMP/c.yaml" "${ON[@]}" --set parallel.expert_parallel=1 --set "run.dir=$TMP/us" --resume auto --stop-at 20
close "$TMP/u4" "$TMP/us" 11 20 && ok || bad "unsharded -n 4 -> sharded -n 4 EP 1: losses differ"
grep -q "optimizer: sharded" "$TMP/us.log" && ok || bad "the resumed run is not sharded"

# -n 2: sharded and unsharded runs step identically
run "$TMP/p2a.log" timeout 300 "$MPIRUN" -n 2 "$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/p2a" --set train.steps=10
run "$TMP/p2b.log" timeout 300 "$MPIRUN" -n 2 "$BIN" "$TMP/c.yaml" "${ON[@]}" --set "run.dir=$TMP/p2b" --set train.steps=10
[ -n "$(steps "$TMP/p2a" 1 10)" ] && [ "$(steps "$TMP/p2a" 1 10)" = "$(steps "$TMP/p2b" 1 10)" ] \
  && ok || bad "-n 2 sharded vs unsharded step lines differ"
params_equal "$TMP/p2a/checkpoints/step_00000010.h5" "$TMP/p2b/checkpoints/step_00000010.h5" \
  && ok || bad "-n 2 sharded vs unsharded: final parameters/moments not bit-identical"

# LoRA on -n 2 (trainable adapters laid out apart from the frozen values: the all-gather
# goes through the gradient layout): sharded and unsharded identical
BASE="$TMP/p2a/checkpoints/step_00000010.h5"
for z in false true; do
  run "$TMP/lora$z.log" timeout 300 "$MPIRUN" -n 2 "$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/lora$z" \
    --set "finetune.init_from=$BASE" --set finetune.lora_rank=4 --set train.steps=6 \
    --set parallel.shard_optimizer=$z
done
grep -q "optimizer: sharded" "$TMP/loratrue.log" && [ -n "$(steps "$TMP/lorafalse" 1 6)" ] &&
  [ "$(steps "$TMP/lorafalse" 1 6)" = "$(steps "$TMP/loratrue" 1 6)" ] &&
  params_equal "$TMP/lorafalse/checkpoints/step_00000006.h5" "$TMP/loratrue/checkpoints/step_00000006.h5" \
  && ok || bad "LoRA -n 2: sharded and unsharded runs differ"

# one rank: a no-op, said so
run "$TMP/one.log" "$BIN" "$TMP/c.yaml" "${ON[@]}" --set "run.dir=$TMP/one" --set train.steps=2
grep -q "parallel.shard_optimizer is on but no block is replicated over more than one rank (1 rank(s)): nothing to shard, a no-op" "$TMP/one.log" \
  && ok || bad "one rank: no note that sharding is a no-op"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
