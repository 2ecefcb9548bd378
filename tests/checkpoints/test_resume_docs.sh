#!/usr/bin/env bash
# test_resume_docs.sh: data.doc_mask end to end through the moetrain program, on a corpus of
# 60 small text files (each ends with the end-of-text token, ~50 tokens a document, so most
# 32-token windows hold a document start).
# - Exact resume with documents masked: 40 steps straight vs 20, stop, --resume auto, 20
#   more: step lines 21..40, final parameters and AdamW moments bit-identical; on 1 rank and
#   on mpirun -n 2 (expert parallel 2).
# - The setting reaches the model: the same run without doc_mask has other losses; the log
#   says documents are masked; the checkpoint's config holds data.doc_mask: true; resuming
#   with it switched off is reported as a changed setting.
# - Inference follows the checkpoint's config: `moetrain logits` of a document after other
#   tokens and an end-of-text token equals its logits alone (within float rounding), and a
#   checkpoint trained without doc_mask gives different ones.
# Usage: test_resume_docs.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_resume_docs.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?run through ctest}
. "$SRC/tests/testlib.sh"

files=""
for i in $(seq 0 59); do
  tail -c +$((i * 150 + 1)) "$SRC/data/tinyshakespeare.txt" | head -c 150 > "$TMP/d$i.txt"
  files="$files${files:+, }$TMP/d$i.txt"
done
cat > "$TMP/c.yaml" <<YAML
model: {vocab_size: 320, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, head_dim: 8}
moe: {n_experts: 4, top_k: 2, hidden: 48}
train: {seq_len: 32, micro_batch: 8, steps: 40, log_every: 10, eval_every: 10, eval_batches: 2}
optim: {lr: 3e-3, warmup_steps: 5, min_lr: 3e-4}
data: {tokenizer: $TMP/tok.bpe, text: [$files], doc_mask: true}
checkpoint: {every: 0, keep: 2}
YAML

exact_resume d1
exact_resume d2 timeout 300 "$MPIRUN" -n 2

grep -q "^documents: .*end-of-text token (id 319).*(data.doc_mask)" "$TMP/d1-a.log" && ok \
  || bad "the log does not say documents are masked"
final="$TMP/d1-a/checkpoints/step_00000040.h5"
h5dump -d /config -b -o "$TMP/config.yaml" "$final" > /dev/null 2>&1
grep -q "doc_mask: true" "$TMP/config.yaml" && ok \
  || bad "the checkpoint's config lacks data.doc_mask: true"

# the same run without the mask trains differently (the setting is not ignored)
run "$TMP/p.log" "$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/p" --set data.doc_mask=false
[ "$(steps "$TMP/p" 1 40)" != "$(steps "$TMP/d1-a" 1 40)" ] && ok \
  || bad "data.doc_mask: false gave the same losses as true"
grep -q "^documents:" "$TMP/p.log" && bad "documents line without doc_mask" || ok

# switching it off on resume is a changed setting, reported
mkdir -p "$TMP/off/checkpoints"; cp "$final" "$TMP/off/checkpoints/"
run "$TMP/off.log" "$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/off" --set data.doc_mask=false \
  --set train.steps=42 --resume auto
grep -q "resuming with changed settings: .*data.doc_mask: true -> false" "$TMP/off.log" && ok \
  || bad "no changed-setting line for data.doc_mask"

# logits of the document [EOT 8 9 10] after "5 6" and alone: rows 2..5 of the first equal rows
# 0..3 of the second with the mask (float rounding of other GEMM row counts: 1e-5 + 1e-5
# relative on logits of O(1)), and differ by > 1e-3 somewhere without it
rows_close() {   # FILE_A FIRST_ROW_A FILE_B -> exit 0 when every value is within tolerance
  awk -v a0="$2" 'NR == FNR { if (FNR - 1 >= a0) A[FNR - 1 - a0] = $0; next }
    { split(A[FNR - 1], x, " "); n = split($0, y, " ");
      for (i = 2; i <= n; i++) { d = x[i] - y[i]; if (d < 0) d = -d;
        m = y[i] < 0 ? -y[i] : y[i]; if (d > 1e-5 + 1e-5 * m) bad = 1 } }
    END { exit bad }' "$1" "$3"
}
for model in d1-a p; do
  "$BIN" logits "$TMP/$model" --ids 5,6,319,8,9,10 > "$TMP/$model.packed" 2> /dev/null \
    || bad "logits on $model failed"
  "$BIN" logits "$TMP/$model" --ids 319,8,9,10 > "$TMP/$model.alone" 2> /dev/null \
    || bad "logits on $model failed"
done
rows_close "$TMP/d1-a.packed" 2 "$TMP/d1-a.alone" && ok \
  || bad "doc_mask checkpoint: the document's logits depend on what precedes it"
rows_close "$TMP/p.packed" 2 "$TMP/p.alone" && bad "without doc_mask the prefix changed no logit" || ok

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
