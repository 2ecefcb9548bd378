#!/usr/bin/env bash
# test_lora.sh: LoRA fine-tuning end to end through the moetrain program.
# - a tiny base run (30 steps, Shakespeare) writes a full checkpoint; a LoRA run (rank 4,
#   dropout 0.1) fine-tunes it on a slice of the GSM8K corpus: it logs the trainable count
#   (= L * sum of r (d_in + d_out), computed here), evaluates the base at step 0, its
#   validation loss falls below the base's, and its checkpoint holds only adapters and their
#   moments plus the base's path and checksum (`ckpt info`, h5ls); the base file is
#   byte-identical afterwards;
# - the same run under mpirun -n 2 (expert parallel 2) gives the same losses (1e-4 relative);
# - exact resume: --stop-at 10, then --resume auto: losses of steps 11..20 and the final
#   adapters and moments are bit-identical (1 rank and -n 2);
# - a changed base is refused with both checksums (exit 1); a missing base names the run
#   that writes it; a base of another shape, another tokenizer, finetune + upcycling and a
#   bad target are refused naming the keys;
# - merged export (hf and gguf): `moetrain logits` of the adapter checkpoint (base +
#   adapters) and of the exports agree within 1e-5; --adapters-only writes PEFT's pair;
# - lora_rank 0 fine-tunes every weight and writes full checkpoints.
# Usage: test_lora.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_lora.sh MOETRAIN}
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
finetune: {init_from: $BASE, lora_rank: 4, lora_alpha: 8, lora_dropout: 0.1}
YAML
run "$TMP/base.log" "$BIN" "$TMP/base.yaml"
sum0=$(sha256sum "$BASE" | cut -d' ' -f1)

# One rank: counts, step-0 evaluation, the adapter checkpoint, the base untouched.
run "$TMP/l1.log" "$BIN" "$TMP/lora.yaml" --set "run.dir=$TMP/l1"
CK=$TMP/l1/checkpoints/step_00000020.h5
# rank 4 on C=32, H*D=32, Hkv*D=16: q 4(32+32) + k 4(32+16) + v 4(32+16) + o 4(32+32), 2 layers
want=$(( 2 * (4*(32+32) + 4*(32+16) + 4*(32+16) + 4*(32+32)) ))
grep -q "fine-tuning: $want trainable parameters of" "$TMP/l1.log" && ok \
  || { bad "trainable count is not $want"; grep "fine-tuning:" "$TMP/l1.log"; }
v0=$(grep -o '"step":0,"tokens":0,[^}]*' "$TMP/l1/eval.jsonl" | grep -o 'val_loss":[^}]*' | cut -d: -f2)
v20=$(grep -o '"step":20,[^}]*' "$TMP/l1/eval.jsonl" | grep -o 'val_loss":[^}]*' | cut -d: -f2)
[ -n "$v0" ] && [ -n "$v20" ] && awk -v a="$v0" -v b="$v20" 'BEGIN{exit !(b < a - 0.02)}' && ok \
  || bad "validation loss did not fall below the base's: step 0 '$v0', step 20 '$v20'"
"$BIN" ckpt info "$CK" > "$TMP/info" 2>&1 && grep -q "LoRA adapter checkpoint: rank 4" "$TMP/info" \
  && grep -q "^base .*step_00000030.h5 (checksum [0-9a-f]\{16\}" "$TMP/info" \
  && grep -q "parameters      $want stored" "$TMP/info" && ok || { bad "ckpt info"; cat "$TMP/info"; }
n_params=$(h5ls -r "$CK" | grep -c "^/params/.*Dataset")
n_lora=$(h5ls -r "$CK" | grep -c "^/params/.*lora_[AB].weight.*Dataset")
[ "$n_params" = 16 ] && [ "$n_lora" = 16 ] && [ "$(h5ls -r "$CK" | grep -c '^/optim/m/.*Dataset')" = 16 ] \
  && ok || bad "adapter checkpoint holds $n_params tensors ($n_lora adapters), want the 16 adapters"
[ "$(sha256sum "$BASE" | cut -d' ' -f1)" = "$sum0" ] && ok || bad "the base checkpoint changed"

# Two ranks (expert parallel 2): the same losses.
run "$TMP/l2.log" timeout 300 "$MPIRUN" -n 2 "$BIN" "$TMP/lora.yaml" --set "run.dir=$TMP/l2"
close "$(losses "$TMP/l1" 1 20)" "$(losses "$TMP/l2" 1 20)" 1e-4 && ok \
  || { bad "-n 2 losses differ from -n 1"; paste <(losses "$TMP/l1" 1 5) <(losses "$TMP/l2" 1 5); }

# Exact resume, 1 and 2 ranks.
for R in 1 2; do
  D=$TMP/r$R
  run "$D-a.log" timeout 300 "$MPIRUN" -n $R "$BIN" "$TMP/lora.yaml" --set "run.dir=$D" --stop-at 10
  run "$D-b.log" timeout 300 "$MPIRUN" -n $R "$BIN" "$TMP/lora.yaml" --set "run.dir=$D" --resume auto
  grep -q "resumed from .*step_00000010.h5 at step 10" "$D-b.log" && ok || bad "-n $R: no resume at 10"
  [ -n "$(losses "$TMP/l$R" 11 20)" ] && [ "$(losses "$TMP/l$R" 11 20)" = "$(losses "$D" 11 20)" ] && ok \
    || bad "-n $R: resumed losses of steps 11..20 differ"
  h5diff -q "$TMP/l$R/checkpoints/step_00000020.h5" "$D/checkpoints/step_00000020.h5" /params /params \
    && h5diff -q "$TMP/l$R/checkpoints/step_00000020.h5" "$D/checkpoints/step_00000020.h5" /optim /optim \
    && ok || bad "-n $R: resumed adapters/moments are not bit-identical"
done

# Merged exports: logits within 1e-5 of base + adapters; PEFT adapters.
"$BIN" export "$CK" "$TMP/hf" --format hf > "$TMP/log" 2>&1 && ok || { bad "merged hf export"; cat "$TMP/log"; }
"$BIN" export "$CK" "$TMP/m.gguf" > "$TMP/log" 2>&1 && ok || { bad "merged gguf export"; cat "$TMP/log"; }
IDS=1,2,300,45,7,100,200,319,5,64
"$BIN" logits "$CK" --ids $IDS > "$TMP/la" 2>&1 || bad "logits of the adapter checkpoint"
"$BIN" logits "$BASE" --ids $IDS > "$TMP/lbase" 2>&1 || bad "logits of the base"
for s in hf m.gguf; do
  "$BIN" logits "$TMP/$s" --ids $IDS > "$TMP/l_$s" 2>&1 || bad "logits of $s"
  paste -d' ' <(tr -s ' ' '\n' < "$TMP/la" | grep -v ':') <(tr -s ' ' '\n' < "$TMP/l_$s" | grep -v ':') \
    | awk '{d=$1-$2; if(d<0)d=-d; if(d>m)m=d; n++} END{exit !(n==3200 && m<=1e-5)}' && ok \
    || bad "merged $s logits are not within 1e-5 of base + adapters"
done
cmp -s "$TMP/la" "$TMP/lbase" && bad "the adapter checkpoint's logits equal the base's" || ok
"$BIN" export "$CK" "$TMP/peft" --adapters-only > "$TMP/log" 2>&1 && ok || { bad "--adapters-only"; cat "$TMP/log"; }
J=$TMP/peft/adapter_config.json
for f in '"peft_type": "LORA"' '"task_type": "CAUSAL_LM"' '"r": 4' '"lora_alpha": 8' \
         '"lora_dropout": 0.1' '"bias": "none"' '"fan_in_fan_out": false' \
         '"target_modules": \["q_proj", "k_proj", "v_proj", "o_proj"\]' "\"base_model_name_or_path\": \"$BASE\""; do
  grep -q "$f" "$J" && ok || bad "adapter_config.json lacks $f"
done
ST=$TMP/peft/adapter_model.safetensors
hlen=$(od -An -t u8 -N 8 "$ST" | tr -d ' ')
[ "$(stat -c %s "$ST")" = $((8 + hlen + 4 * want)) ] && ok || bad "adapter_model.safetensors size"
head -c $((8 + hlen)) "$ST" | grep -aq '"base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight":{"dtype":"F32","shape":\[16,4\]' \
  && ok || bad "adapter_model.safetensors lacks PEFT's lora_B name/shape"
expect_fail "adapters-only of a full checkpoint" "needs a LoRA adapter checkpoint" -- \
  "$BIN" export "$BASE" "$TMP/peft2" --adapters-only

# Refusals.
cp "$BASE" "$TMP/base.keep"
cp "$TMP/l1/checkpoints/step_00000020.h5" "$TMP/other.h5"   # any other file's bytes
"$BIN" "$TMP/base.yaml" --set "run.dir=$TMP/base2" --set train.steps=31 > /dev/null 2>&1
cp "$TMP/base2/checkpoints/step_00000031.h5" "$BASE"
expect_fail "changed base (resume)" "checksum is [0-9a-f]{16} but .* checksum [0-9a-f]{16}" -- \
  "$BIN" "$TMP/lora.yaml" --set "run.dir=$TMP/l1" --set train.steps=25 --resume auto
expect_fail "changed base (logits)" "has changed: its checksum is [0-9a-f]{16}" -- "$BIN" logits "$CK" --ids 1,2
cp "$TMP/base.keep" "$BASE"
expect_fail "missing base" "moetrain configs/nope.yaml" -- \
  "$BIN" "$TMP/lora.yaml" --set "run.dir=$TMP/x" --set finetune.init_from=runs/nope/checkpoints/step_00000001.h5
expect_fail "adapter checkpoint as base" "adapter checkpoint, not a full model" -- \
  "$BIN" "$TMP/lora.yaml" --set "run.dir=$TMP/x2" --set "finetune.init_from=$CK"
expect_fail "other shape" "model.dim: 32 -> 64" -- \
  "$BIN" "$TMP/lora.yaml" --set "run.dir=$TMP/x3" --set model.dim=64
"$BIN" tokenizer train --vocab 320 --out "$TMP/tok2.bpe" "$TMP/gsm.txt" > /dev/null 2>&1
expect_fail "other tokenizer" "different tokenizer" -- \
  "$BIN" "$TMP/lora.yaml" --set "run.dir=$TMP/x4" --set "data.tokenizer=$TMP/tok2.bpe"
expect_fail "finetune + upcycle" "finetune.init_from, init.upcycle_from" -- \
  "$BIN" "$TMP/lora.yaml" --set "init.upcycle_from=$BASE"
expect_fail "bad target" "did you mean 'q_proj'" -- "$BIN" "$TMP/lora.yaml" --set "finetune.lora_targets=[qproj]"

# lora_rank 0: every weight trains, full checkpoints.
run "$TMP/f.log" "$BIN" "$TMP/lora.yaml" --set "run.dir=$TMP/f" --set finetune.lora_rank=0 --set train.steps=5
grep -q "fine-tuning: \([0-9]*\) trainable parameters of \1 (100.000%)" "$TMP/f.log" && ok || bad "full fine-tuning count"
"$BIN" ckpt info "$TMP/f/checkpoints/step_00000005.h5" 2>&1 | grep -q "LoRA" && bad "full fine-tuning wrote an adapter checkpoint" || ok

echo "test_lora.sh: $pass passed, $fail failed"
[ "$fail" = 0 ]
