#!/usr/bin/env bash
# test_arch_options.sh: the architecture options that live above the ops (shared experts,
# moe.n_shared_experts; sliding-window attention, model.sliding_window) through the program.
# - exact resume with both options on: 40 steps straight vs 20, stop, --resume auto, 20 more
#   give bit-identical losses 21..40 and final parameters + AdamW moments, on 1 rank and on
#   mpirun -n 2 (expert parallel 2; the shared experts are reduced with the dense block);
# - a resume that changes an option is refused naming the key;
# - export: shared experts are refused by --format hf and gguf (exit 1, naming
#   moe.n_shared_experts, nothing written); a window goes to HF (config.json
#   "sliding_window") and `logits` from the checkpoint and the export are byte-identical;
#   GGUF refuses the window naming model.sliding_window;
# - sample with a window generates past train.seq_len (prompt and continuation > T) with the
#   ring KV cache; eval and logits run on the shared-expert checkpoint;
# - bench_train runs with both options set.
# Usage: test_arch_options.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_arch_options.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?run through ctest}
. "$SRC/tests/testlib.sh"
BUILD=${MOE_BUILD_DIR:-$(dirname "$BIN")}
expect_fail() {   # NAME PATTERN -- command...: exit 1 with the pattern on stderr
  local name=$1 pat=$2; shift 3
  "$@" >"$TMP/out" 2>"$TMP/err"; local rc=$?
  if [ "$rc" != 1 ]; then bad "$name: exit $rc, want 1"; cat "$TMP/err"; return; fi
  grep -qE -- "$pat" "$TMP/err" && grep -q "^hint: " "$TMP/err" && ok \
    || { bad "$name: stderr lacks /$pat/ or a hint"; cat "$TMP/err"; }
}

head -c 60000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
cat > "$TMP/c.yaml" <<YAML
model: {vocab_size: 320, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, head_dim: 8, sliding_window: 8}
moe: {n_experts: 4, top_k: 2, hidden: 24, n_shared_experts: 2, shared_hidden: 12}
train: {seq_len: 32, micro_batch: 8, steps: 40, log_every: 10, eval_every: 20, eval_batches: 1}
optim: {lr: 3e-3, warmup_steps: 5, min_lr: 3e-4}
data: {tokenizer: $TMP/tok.bpe, text: [$TMP/corpus.txt]}
checkpoint: {every: 0, keep: 2}
YAML

exact_resume r1
exact_resume r2 timeout 300 "$MPIRUN" -n 2
CK=$TMP/r1-a/checkpoints/step_00000040.h5
h5ls -r "$CK" | grep -q "/params/model.layers.1.block_sparse_moe.shared_experts.down_proj.weight Dataset {32, 24}" \
  && ok || bad "checkpoint lacks the shared experts' down projection (32, 2 x 12)"
grep -q "M active per token" "$TMP/r1-a.log" && ok || bad "no parameter line"

# Changing an option on resume is refused, naming the key.
for kv in model.sliding_window=16 moe.n_shared_experts=1; do
  expect_fail "resume with $kv" "${kv%%=*}: " -- "$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/r1-a" --set "$kv" --set train.steps=50 --resume auto
done

# Export: shared experts cannot be expressed by either format.
expect_fail "hf export with shared experts" "moe.n_shared_experts = 2" -- "$BIN" export "$CK" "$TMP/hf_shared" --format hf
expect_fail "gguf export with shared experts" "moe.n_shared_experts = 2" -- "$BIN" export "$CK" "$TMP/shared.gguf"
[ -z "$(ls "$TMP" | grep -E 'hf_shared|shared.gguf')" ] && ok || bad "a refused export left files: $(ls "$TMP")"
# ... but the checkpoint itself runs: logits, eval, sample past seq_len (window 8, T 32).
run "$TMP/lg.log" "$BIN" logits "$CK" --ids 1,2,3,4,5,6,7,8,9,10,11,12 --out "$TMP/shared.f32"
[ "$(stat -c %s "$TMP/shared.f32")" = $((12 * 320 * 4)) ] && ok || bad "logits of the shared checkpoint"
run "$TMP/ev.log" "$BIN" eval "$CK" --text "$TMP/corpus.txt" --ctx 32
grep -q "perplexity" "$TMP/ev.log" && ok || bad "eval of the shared checkpoint"
PROMPT="First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. First Citizen: You are all resolved rather to die than to famish?"
"$BIN" sample "$CK" --prompt "$PROMPT" --max-tokens 80 --temperature 0.8 --seed 3 > "$TMP/s.out" 2> "$TMP/s.err" && ok || { bad "sample"; cat "$TMP/s.err"; }
np=$(grep -o 'prompt [0-9]* tokens' "$TMP/s.err" | grep -o '[0-9]*')
ng=$(grep -o 'generated [0-9]* tokens' "$TMP/s.err" | grep -o '[0-9]*')
[ -n "$np" ] && [ -n "$ng" ] && [ $((np + ng)) -gt 64 ] && [ "$np" -gt 8 ] && ok \
  || { bad "sample did not run past 2 x seq_len ($np + $ng tokens)"; cat "$TMP/s.err"; }

# A window alone: HF export keeps it, logits agree byte for byte; GGUF refuses it.
run "$TMP/w.log" "$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/w" --set moe.n_shared_experts=0 --set train.steps=10 --set train.eval_every=0
CW=$TMP/w/checkpoints/step_00000010.h5
run "$TMP/wx.log" "$BIN" export "$CW" "$TMP/hf_w" --format hf
grep -q '"sliding_window": 8,' "$TMP/hf_w/config.json" && ok || bad "config.json lacks sliding_window 8"
IDS=$(seq -s, 1 40)   # 40 > W and > seq_len
run "$TMP/l1.log" "$BIN" logits "$CW" --ids "$IDS" --out "$TMP/w_ck.f32"
run "$TMP/l2.log" "$BIN" logits "$TMP/hf_w" --ids "$IDS" --out "$TMP/w_hf.f32"
cmp -s "$TMP/w_ck.f32" "$TMP/w_hf.f32" && ok || bad "logits of the checkpoint and its HF export differ"
expect_fail "gguf export with a window" "model.sliding_window = 8" -- "$BIN" export "$CW" "$TMP/w.gguf"
[ ! -e "$TMP/w.gguf" ] && ok || bad "refused GGUF export left a file"

# bench_train reads the options from the config.
if [ -x "$BUILD/bench_train" ]; then
  "$BUILD/bench_train" "$TMP/c.yaml" --steps 2 --warmup 1 --set train.micro_batch=2 > "$TMP/b.log" 2>&1 \
    && grep -q "tokens/s" "$TMP/b.log" && ok || { bad "bench_train with the options"; tail -5 "$TMP/b.log"; }
else
  bad "no bench_train next to $BIN"
fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
