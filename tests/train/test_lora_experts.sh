#!/usr/bin/env bash
# test_lora_experts.sh: LoRA on the experts (w1, w2, w3) and the router (gate) end to end
# through the moetrain program (layers/lora.h, docs/finetuning.md).
# - a tiny base run (30 steps) writes a full checkpoint; a LoRA run with adapters on q_proj,
#   w1, w2, w3 and gate (rank 4) fine-tunes it: the logged trainable count equals the count
#   computed here from the shapes (per expert: E pairs per expert target), the validation
#   loss falls below the base's, and the adapter checkpoint holds the adapters per expert
#   (h5ls: the stacked adapters stored under each expert's name) and no base tensor;
# - the same run under mpirun -n 2 (expert parallel 2) and -n 4 (expert parallel 4) gives
#   the 1-rank losses within 1e-4 relative (float sums in another order);
# - exact resume (--stop-at 10, --resume auto): bit-identical steps 11..20 and final
#   adapters and moments, per expert on 1 and 2 ranks (expert parallel: the per-expert
#   adapters are gathered to rank 0 for the file and cut again on resume) and shared on 2;
# - train.recompute gives the same steps bit for bit; the sharded optimizer on 2 ranks the
#   same losses;
# - greedy KV-cache sampling of the adapter checkpoint and of its merged export agree;
# - merged export: `moetrain logits` of the adapter checkpoint (base + adapters) and of the
#   merged HF and GGUF exports agree within 1e-5 (per expert and shared; the merged
#   products sum in another order: a few float32 ulps on O(1) logits);
# - --adapters-only writes PEFT's per-module layout for Mixtral's nn.Linear experts: the
#   names and shapes of docs/export.md (a shared pair repeated under every expert's name),
#   target_modules with w1, w2, w3, gate, and a file size that counts them;
# - config refusals naming the keys: dropout with expert targets, lora_expert_shared
#   without one, expert targets on a dense model.
# Usage: test_lora_experts.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_lora_experts.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?run through ctest}
. "$SRC/tests/testlib.sh"
expect_fail() {   # NAME PATTERN -- command...: exit 1 and stderr matching PATTERN
  local name=$1 pat=$2; shift 3
  "$@" > "$TMP/out" 2> "$TMP/err"; local rc=$?
  if [ "$rc" != 1 ]; then bad "$name: exit $rc, want 1"; cat "$TMP/err"; return; fi
  grep -qE -- "$pat" "$TMP/err" && ok || { bad "$name: stderr lacks /$pat/"; cat "$TMP/err"; }
}
losses() { grep '"lm_loss"' "$1/metrics.jsonl" | sed -n "$2,$3p" | grep -o '"loss":[^,]*' | cut -d: -f2; }
close() {   # two columns of numbers agree within $3 relative
  paste <(echo "$1") <(echo "$2") | awk -v tol="$3" '{d=$1-$2; if(d<0)d=-d; m=$1<0?-$1:$1;
    if(NF!=2 || d>tol*m) bad=1; n++} END{exit bad || n==0}'
}
logits_close() {   # two `moetrain logits` outputs agree within 1e-5 over all 3200 values
  paste -d' ' <(tr -s ' ' '\n' < "$1" | grep -v ':') <(tr -s ' ' '\n' < "$2" | grep -v ':') \
    | awk '{d=$1-$2; if(d<0)d=-d; if(d>m)m=d; n++} END{exit !(n==3200 && m<=1e-5)}'
}

head -c 60000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
head -c 50000 "$SRC/data/gsm8k_train.txt" > "$TMP/gsm.txt"
model="model: {vocab_size: 320, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, head_dim: 8}
moe: {n_experts: 4, top_k: 2, hidden: 48}"
cat > "$TMP/base.yaml" <<YAML
$model
train: {seq_len: 32, micro_batch: 8, steps: 30, log_every: 10, eval_every: 0, eval_batches: 2}
optim: {lr: 3e-3, warmup_steps: 5, min_lr: 3e-4}
data: {tokenizer: $TMP/tok.bpe, text: [$TMP/corpus.txt]}
run: {dir: $TMP/base}
YAML
BASE=$TMP/base/checkpoints/step_00000030.h5
cat > "$TMP/lora.yaml" <<YAML
$model
train: {seq_len: 32, micro_batch: 8, steps: 20, log_every: 5, eval_every: 0, eval_batches: 4}
optim: {lr: 1e-2, warmup_steps: 2, min_lr: 1e-3, weight_decay: 0.0}
data: {tokenizer: $TMP/tok.bpe, text: [$TMP/gsm.txt]}
finetune: {init_from: $BASE, lora_rank: 4, lora_alpha: 8, lora_dropout: 0.0,
           lora_targets: [q_proj, w1, w2, w3, gate]}
YAML
run "$TMP/base.log" "$BIN" "$TMP/base.yaml"

# One rank: the count, the step-0 evaluation, the adapter checkpoint.
run "$TMP/l1.log" "$BIN" "$TMP/lora.yaml" --set "run.dir=$TMP/l1"
CK=$TMP/l1/checkpoints/step_00000020.h5
# rank 4, C=32, F=48, E=4, H*D=32: q 4(32+32); w1, w3 4(32+48) and w2 4(48+32) per expert;
# gate 4(32+4); 2 layers
per_layer=$(( 4*(32+32) + 4 * 3 * 4*(32+48) + 4*(32+4) ))
want=$(( 2 * per_layer ))
grep -q "fine-tuning: $want trainable parameters of" "$TMP/l1.log" && ok \
  || { bad "trainable count is not $want"; grep "fine-tuning:" "$TMP/l1.log"; }
v0=$(grep -o '"step":0,"tokens":0,[^}]*' "$TMP/l1/eval.jsonl" | grep -o 'val_loss":[^}]*' | cut -d: -f2)
v20=$(grep -o '"step":20,[^}]*' "$TMP/l1/eval.jsonl" | grep -o 'val_loss":[^}]*' | cut -d: -f2)
echo "per-expert adapters: $want trainable, val loss step 0 $v0, step 20 $v20"
[ -n "$v0" ] && [ -n "$v20" ] && awk -v a="$v0" -v b="$v20" 'BEGIN{exit !(b < a - 0.02)}' && ok \
  || bad "validation loss did not fall below the base's: step 0 '$v0', step 20 '$v20'"
# per layer: q (2) + 3 targets x 2 (A, B) x 4 experts + gate (2) = 28 datasets
n_params=$(h5ls -r "$CK" | grep -c "^/params/.*Dataset")
n_lora=$(h5ls -r "$CK" | grep -c "^/params/.*lora_[AB].weight.*Dataset")
[ "$n_params" = 56 ] && [ "$n_lora" = 56 ] && ok || bad "checkpoint holds $n_params tensors ($n_lora adapters), want 56 adapters"
h5ls -r "$CK" | grep -q "^/params/model.layers.1.block_sparse_moe.experts.3.w2.lora_B.weight .*{32, 4}" \
  && ok || bad "no per-expert w2 lora_B (32, 4) for expert 3"

# Rank layouts: expert parallel 2 and 4 give the 1-rank losses.
for R in 2 4; do
  run "$TMP/l$R.log" timeout 300 "$MPIRUN" -n $R "$BIN" "$TMP/lora.yaml" --set "run.dir=$TMP/l$R" \
    --set parallel.expert_parallel=$R
  close "$(losses "$TMP/l1" 1 20)" "$(losses "$TMP/l$R" 1 20)" 1e-4 && ok \
    || { bad "-n $R losses differ from -n 1"; paste <(losses "$TMP/l1" 1 5) <(losses "$TMP/l$R" 1 5); }
done

# Per-layer recomputation: the same steps bit for bit; the sharded optimizer on 2 ranks
# (per-expert moments split over the expert-data group): the same losses (1e-4 relative).
run "$TMP/rc.log" "$BIN" "$TMP/lora.yaml" --set "run.dir=$TMP/rc" --set train.recompute=true
[ -n "$(steps "$TMP/l1" 1 20)" ] && [ "$(steps "$TMP/l1" 1 20)" = "$(steps "$TMP/rc" 1 20)" ] && ok \
  || bad "train.recompute changes the steps"
run "$TMP/z2.log" timeout 300 "$MPIRUN" -n 2 "$BIN" "$TMP/lora.yaml" --set "run.dir=$TMP/z2" \
  --set parallel.expert_parallel=1 --set parallel.shard_optimizer=true
close "$(losses "$TMP/l1" 1 20)" "$(losses "$TMP/z2" 1 20)" 1e-4 && ok || bad "-n 2 sharded optimizer losses differ"

# Exact resume: per expert on 1 and 2 ranks, shared on 2.
CFG=$TMP/lora.yaml RESUME_AT=10 exact_resume per1
CFG=$TMP/lora.yaml RESUME_AT=10 exact_resume per2 timeout 300 "$MPIRUN" -n 2
SETS=(--set finetune.lora_expert_shared=true)
CFG=$TMP/lora.yaml RESUME_AT=10 exact_resume shared2 timeout 300 "$MPIRUN" -n 2
SETS=()
SK=$TMP/shared2-a/checkpoints/step_00000020.h5

# Merged exports compute what base + adapters compute.
IDS=1,2,300,45,7,100,200,319,5,64
for k in per shared; do
  C=$CK; [ $k = shared ] && C=$SK
  "$BIN" export "$C" "$TMP/hf_$k" --format hf > "$TMP/log" 2>&1 || { bad "merged export ($k)"; cat "$TMP/log"; }
  "$BIN" logits "$C" --ids $IDS > "$TMP/la_$k" 2>&1 || bad "logits of the $k adapter checkpoint"
  "$BIN" logits "$TMP/hf_$k" --ids $IDS > "$TMP/lm_$k" 2>&1 || bad "logits of the $k export"
  logits_close "$TMP/la_$k" "$TMP/lm_$k" && ok || bad "merged $k logits are not within 1e-5 of base + adapters"
  "$BIN" export "$C" "$TMP/m_$k.gguf" > "$TMP/log" 2>&1 || { bad "merged gguf export ($k)"; cat "$TMP/log"; }
  "$BIN" logits "$TMP/m_$k.gguf" --ids $IDS > "$TMP/lg_$k" 2>&1 || bad "logits of the $k gguf"
  logits_close "$TMP/la_$k" "$TMP/lg_$k" && ok || bad "merged $k gguf logits are not within 1e-5"
done
"$BIN" logits "$BASE" --ids $IDS > "$TMP/lbase" 2>&1
cmp -s "$TMP/la_per" "$TMP/lbase" && bad "the adapter checkpoint's logits equal the base's" || ok
# KV-cache sampling runs base + adapters (layers/infer.c through the same MoE layer)
"$BIN" sample "$CK" --prompt "Natalia sold" --max-tokens 8 --temperature 0 > "$TMP/s1" 2>&1 \
  && "$BIN" sample "$TMP/hf_per" --prompt "Natalia sold" --max-tokens 8 --temperature 0 > "$TMP/s2" 2>&1 \
  && [ "$(head -1 "$TMP/s1")" = "$(head -1 "$TMP/s2")" ] && ok \
  || { bad "greedy samples of the adapter checkpoint and its merged export differ"; head -2 "$TMP/s1" "$TMP/s2"; }

# PEFT adapters: per-module names on Mixtral's per-expert nn.Linear (docs/export.md).
for k in per shared; do
  C=$CK; [ $k = shared ] && C=$SK
  "$BIN" export "$C" "$TMP/peft_$k" --adapters-only > "$TMP/log" 2>&1 && ok || { bad "--adapters-only ($k)"; cat "$TMP/log"; }
  grep -q '"target_modules": \["q_proj", "w1", "w2", "w3", "gate"\]' "$TMP/peft_$k/adapter_config.json" \
    && ok || bad "$k: target_modules"
  ST=$TMP/peft_$k/adapter_model.safetensors
  hlen=$(od -An -t u8 -N 8 "$ST" | tr -d ' ')
  [ "$(stat -c %s "$ST")" = $((8 + hlen + 4 * want)) ] && ok || bad "$k: adapter_model.safetensors size"
  hdr=$(head -c $((8 + hlen)) "$ST" | tr -d '\000')
  for f in '"base_model.model.model.layers.1.block_sparse_moe.experts.3.w2.lora_B.weight":{"dtype":"F32","shape":\[32,4\]' \
           '"base_model.model.model.layers.0.block_sparse_moe.experts.0.w1.lora_A.weight":{"dtype":"F32","shape":\[4,32\]' \
           '"base_model.model.model.layers.0.block_sparse_moe.gate.lora_B.weight":{"dtype":"F32","shape":\[4,4\]' \
           '"base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight":{"dtype":"F32","shape":\[4,32\]'; do
    echo "$hdr" | grep -aq "$f" && ok || bad "$k: adapter_model.safetensors lacks $f"
  done
done

# Refusals, naming the keys.
expect_fail "dropout on expert adapters" "finetune.lora_dropout, finetune.lora_targets" -- \
  "$BIN" "$TMP/lora.yaml" --set finetune.lora_dropout=0.1
expect_fail "shared without expert targets" "finetune.lora_expert_shared" -- \
  "$BIN" "$TMP/lora.yaml" --set finetune.lora_expert_shared=true --set "finetune.lora_targets=[q_proj, gate]"
expect_fail "expert targets on a dense model" "finetune.lora_targets, moe.n_experts" -- \
  "$BIN" "$TMP/lora.yaml" --set moe.n_experts=0
expect_fail "bad target" "did you mean 'w2'" -- "$BIN" "$TMP/lora.yaml" --set "finetune.lora_targets=[w22]"

echo "test_lora_experts.sh: $pass passed, $fail failed"
[ "$fail" = 0 ]
