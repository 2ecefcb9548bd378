#!/usr/bin/env bash
# test_cli.sh: the moetrain program end to end: help, bad configs and command lines (clear
# message with FILE:LINE:COL, non-zero exit, nothing trained), and a short real training run
# on a slice of the bundled corpus whose loss must fall and whose metrics.jsonl must hold
# the documented keys.  Usage: test_cli.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_cli.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?MOE_SOURCE_DIR must be set (run through ctest)}
. "$SRC/tests/testlib.sh"

# expect_fail NAME WANT_EXIT PATTERN -- command...
expect_fail() {
  local name=$1 want=$2 pat=$3; shift 4
  "$@" >"$TMP/out" 2>"$TMP/err"; local rc=$?
  if [ "$rc" != "$want" ]; then bad "$name: exit $rc, want $want"; cat "$TMP/err"; return; fi
  if ! grep -qE -- "$pat" "$TMP/err"; then bad "$name: stderr lacks /$pat/"; cat "$TMP/err"; return; fi
  ok
}

"$BIN" --help >"$TMP/out" 2>&1 && grep -q "usage: moetrain" "$TMP/out" && ok || bad "--help"
"$BIN" tokenizer --help >"$TMP/out" 2>&1 && grep -q -- "--vocab" "$TMP/out" && ok || bad "tokenizer --help"
"$BIN" data encode --help >"$TMP/out" 2>&1 && grep -q -- "--tokenizer" "$TMP/out" && ok || bad "data --help"
expect_fail "no args" 2 "^moetrain: .*\(see moetrain --help\)$" -- "$BIN"
expect_fail "unknown option" 2 "unknown option '--frobnicate'" -- "$BIN" "$SRC/configs/mixtral_tiny.yaml" --frobnicate

# A small valid config used below; bad variants are derived from it with sed.
head -c 60000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
cat > "$TMP/small.yaml" <<YAML
model:
  vocab_size: 320
  dim: 32
  n_layers: 1
  n_heads: 4
  n_kv_heads: 2
  head_dim: 8
moe:
  n_experts: 4
  top_k: 2
  hidden: 48
train:
  seq_len: 32
  micro_batch: 4
  steps: 40
  log_every: 10
  eval_every: 20
  eval_batches: 2
optim:
  lr: 3e-3
  warmup_steps: 5
  min_lr: 3e-4
data:
  tokenizer: $TMP/tok.bpe
  text: [$TMP/corpus.txt]
run:
  dir: $TMP/run
YAML

# Bad configs: each names FILE:LINE:COL and the key, exits 1, and trains nothing.
sed 's/^  n_experts: 4/  n_expert: 4/' "$TMP/small.yaml" > "$TMP/typo.yaml"
expect_fail "unknown key" 1 "typo.yaml:9:3: moe.n_expert.*" -- "$BIN" "$TMP/typo.yaml"
grep -q "hint: .*n_experts" "$TMP/err" && ok || bad "did-you-mean hint"
sed 's/^  dim: 32/  dim: wide/' "$TMP/small.yaml" > "$TMP/type.yaml"
expect_fail "wrong type" 1 "type.yaml:3:8: model.dim" -- "$BIN" "$TMP/type.yaml"
sed 's/^  top_k: 2/  top_k: 9/' "$TMP/small.yaml" > "$TMP/range.yaml"
expect_fail "top_k > n_experts" 1 "range.yaml:10:10: .*top_k" -- "$BIN" "$TMP/range.yaml"
sed 's/^  n_kv_heads: 2/  n_kv_heads: 3/' "$TMP/small.yaml" > "$TMP/kv.yaml"
expect_fail "kv heads" 1 "kv.yaml:6:15: .*n_kv_heads" -- "$BIN" "$TMP/kv.yaml"
printf 'model:\n  dim: [1, 2\n' > "$TMP/syntax.yaml"
expect_fail "yaml syntax" 1 "syntax.yaml:[0-9]+:[0-9]+" -- "$BIN" "$TMP/syntax.yaml"
expect_fail "missing file" 1 "nope.yaml" -- "$BIN" "$TMP/nope.yaml"
expect_fail "--set typo" 1 "--set train.stepz=3" -- "$BIN" "$TMP/small.yaml" --set train.stepz=3
expect_fail "--set range" 1 "train.micro_batch" -- "$BIN" "$TMP/small.yaml" --set train.micro_batch=0
[ ! -e "$TMP/run" ] && ok || bad "a bad config created the run directory"

# Data errors: a missing corpus, a corpus shorter than one sequence.
expect_fail "missing corpus" 1 "missing.txt" -- "$BIN" "$TMP/small.yaml" --set "data.text=[$TMP/missing.txt]" --set "data.tokenizer=$TMP/t2.bpe"
head -c 200 "$SRC/data/tinyshakespeare.txt" > "$TMP/short.txt"
expect_fail "short corpus" 1 "seq_len|tokens" -- "$BIN" "$TMP/small.yaml" --set "data.text=[$TMP/short.txt]" --set "data.tokenizer=$TMP/tok.bpe" --set train.seq_len=512 --set "run.dir=$TMP/run_short"

# A real short training run: must exit 0, loss must fall, metrics must be complete.
if "$BIN" "$TMP/small.yaml" >"$TMP/train.log" 2>&1; then ok; else bad "training run failed"; cat "$TMP/train.log"; fi
M="$TMP/run/metrics.jsonl"
steps=$(grep -c '"lm_loss"' "$M" 2>/dev/null || echo 0)
[ "$steps" = 40 ] && ok || bad "metrics.jsonl has $steps step lines, want 40"
for k in step loss lm_loss aux_loss z_loss lr grad_norm tokens_per_s expert_load; do
  head -1 "$M" | grep -q "\"$k\":" && ok || bad "metrics.jsonl lacks $k"
done
grep -q '"val_loss"' "$TMP/run/eval.jsonl" && ok || bad "eval.jsonl has no val_loss"
first=$(head -1 "$M" | sed 's/.*"lm_loss":\([0-9.e+-]*\).*/\1/')
last_val=$(tail -1 "$TMP/run/eval.jsonl" | sed 's/.*"val_loss":\([0-9.e+-]*\).*/\1/')
# ln(320) = 5.77 at random init; 40 steps at lr 3e-3 must get clearly below it.
if awk -v a="$first" -v b="$last_val" 'BEGIN{exit !(b < a - 0.5)}'; then ok
else bad "validation loss $last_val did not fall below first loss $first - 0.5"; fi
[ -f "$TMP/tok.bpe" ] && ok || bad "tokenizer file was not written"

# Outputs never destroy inputs (train/outguard.h): an output that is one of the command's
# inputs (however spelled: ./x, a hard link) is refused even with --force, an existing
# output needs --force; both exit 2 and leave every file as it was.
cp "$TMP/corpus.txt" "$TMP/keep.txt"; ln -f "$TMP/corpus.txt" "$TMP/hardlink.txt"
for out in "$TMP/corpus.txt" "$TMP/./corpus.txt" "$TMP/hardlink.txt"; do
  for force in "" --force; do
    expect_fail "tokenizer --out = input ($out $force)" 2 "is also an input.*corpus.txt" -- \
      "$BIN" tokenizer train --vocab 300 $force --out "$out" "$TMP/corpus.txt"
  done
done
cmp -s "$TMP/corpus.txt" "$TMP/keep.txt" && ok || bad "tokenizer train overwrote its input"
grep -q "hint: choose another --out" "$TMP/err" && ok || bad "no hint for an input as --out"
cp "$TMP/tok.bpe" "$TMP/tok_keep.bpe"
expect_fail "tokenizer --out exists" 2 "tok.bpe: already exists" -- \
  "$BIN" tokenizer train --vocab 300 --out "$TMP/tok.bpe" "$TMP/corpus.txt"
grep -q "hint: pass --force" "$TMP/err" && ok || bad "no --force hint"
cmp -s "$TMP/tok.bpe" "$TMP/tok_keep.bpe" && ok || bad "a refused tokenizer train changed tok.bpe"
"$BIN" tokenizer train --vocab 300 --out "$TMP/tok.bpe" --force "$TMP/corpus.txt" > "$TMP/out" 2>&1 \
  && ! cmp -s "$TMP/tok.bpe" "$TMP/tok_keep.bpe" && ok || bad "tokenizer train --force did not replace"
cp "$TMP/tok_keep.bpe" "$TMP/tok.bpe"
"$BIN" tokenizer --help | grep -q -- "--force" && ok || bad "tokenizer --help lacks --force"
expect_fail "encode --out = tokenizer" 2 "is also an input.*tok.bpe" -- \
  "$BIN" data encode --tokenizer "$TMP/tok.bpe" --out "$TMP/./tok.bpe" --force "$TMP/corpus.txt"
expect_fail "encode --out = text" 2 "is also an input.*corpus.txt" -- \
  "$BIN" data encode --tokenizer "$TMP/tok.bpe" --out "$TMP/hardlink.txt" "$TMP/corpus.txt"
expect_fail "encode --out = text, --force" 2 "is also an input.*corpus.txt" -- \
  "$BIN" data encode --tokenizer "$TMP/tok.bpe" --out "$TMP/corpus.txt" --force "$TMP/corpus.txt"
cmp -s "$TMP/corpus.txt" "$TMP/keep.txt" && cmp -s "$TMP/tok.bpe" "$TMP/tok_keep.bpe" && ok \
  || bad "data encode overwrote an input"
"$BIN" data encode --tokenizer "$TMP/tok.bpe" --out "$TMP/s.tok" "$TMP/corpus.txt" > "$TMP/out" 2>&1 && ok \
  || bad "data encode to a new shard"
expect_fail "encode --out exists" 2 "s.tok: already exists" -- \
  "$BIN" data encode --tokenizer "$TMP/tok.bpe" --out "$TMP/s.tok" "$TMP/corpus.txt"
"$BIN" data encode --tokenizer "$TMP/tok.bpe" --out "$TMP/s.tok" --force "$TMP/corpus.txt" > "$TMP/out" 2>&1 \
  && ok || bad "data encode --force"
"$BIN" data encode --help | grep -q -- "--force" && ok || bad "data encode --help lacks --force"
# report: its own earlier page is regenerated (its normal use), a foreign file needs
# --force, a file it reads never is replaced
"$BIN" report "$TMP/run" > "$TMP/out" 2>&1 && "$BIN" report "$TMP/run" > "$TMP/out" 2>&1 && ok \
  || { bad "report could not regenerate its report.html"; cat "$TMP/out"; }
"$BIN" report "$TMP/run" --out "$TMP/again.html" > "$TMP/out" 2>&1 && \
  "$BIN" report "$TMP/run" --out "$TMP/again.html" > "$TMP/out" 2>&1 && ok || bad "report --out onto its own page"
echo "my notes" > "$TMP/notes.html"
expect_fail "report --out foreign file" 2 "notes.html: already exists" -- \
  "$BIN" report "$TMP/run" --out "$TMP/notes.html"
[ "$(cat "$TMP/notes.html")" = "my notes" ] && ok || bad "report replaced a foreign file"
"$BIN" report "$TMP/run" --out "$TMP/notes.html" --force > "$TMP/out" 2>&1 && \
  grep -q "<svg" "$TMP/notes.html" && ok || bad "report --force"
cp "$TMP/run/metrics.jsonl" "$TMP/metrics_keep.jsonl"
expect_fail "report --out = metrics.jsonl" 2 "is also an input" -- \
  "$BIN" report "$TMP/run" --out "$TMP/run/metrics.jsonl" --force
cmp -s "$TMP/run/metrics.jsonl" "$TMP/metrics_keep.jsonl" && ok || bad "report overwrote metrics.jsonl"

# --set takes a value whole: ' #' in a path is kept, not read as a YAML comment.
"$BIN" "$TMP/small.yaml" --set "run.dir=$TMP/exp #1" --set train.steps=2 --set train.eval_every=0 \
  > "$TMP/hash.log" 2>&1 || { bad "run with ' #' in run.dir failed"; tail -3 "$TMP/hash.log"; }
[ -s "$TMP/exp #1/metrics.jsonl" ] && [ ! -e "$TMP/exp" ] && ok || bad "run.dir with ' #' was cut"
expect_fail "--set cut scalar" 1 "would be cut before '#2'" -- "$BIN" "$TMP/small.yaml" --set "train.steps=5 #2"

# Memory plan: printed before training; an impossible size is refused with exit 2 before
# anything is allocated (a 2e9-wide model would need terabytes), naming keys and levers.
grep -q "^memory plan per rank" "$TMP/train.log" && grep -q "AdamW moments" "$TMP/train.log" && ok \
  || bad "training printed no memory plan"
t0=$(date +%s%N)
expect_fail "absurd model.dim" 2 "planned memory.*exceeds.*model\.\*" -- \
  "$BIN" "$TMP/small.yaml" --set model.dim=2000000000 --set "run.dir=$TMP/huge"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$ms" -lt 2000 ] && ok || bad "the refusal took $ms ms"
grep -q "hint: .*train.recompute" "$TMP/err" && grep -q "train.global_micro_batch" "$TMP/err" && ok \
  || bad "refusal names no levers"
[ ! -e "$TMP/huge" ] && ok || bad "a refused config created its run directory"
expect_fail "absurd micro_batch" 2 "planned memory" -- \
  "$BIN" "$TMP/small.yaml" --set train.micro_batch=4000000 --set "run.dir=$TMP/huge"
expect_fail "n_heads x head_dim overflow" 1 "n_heads x head_dim = 65536 x 65536" -- \
  "$BIN" "$TMP/small.yaml" --set model.n_heads=65536 --set model.head_dim=65536 --set model.n_kv_heads=1
# the shipped configs are planned and not refused (they then stop at the missing corpus)
for cfg in "$SRC"/configs/*.yaml; do
  data="data.text=[$TMP/no_such_corpus.txt]"   # a fine-tuning-records config: missing records
  grep -q "^  sft: \[" "$cfg" && data="data.sft=[$TMP/no_such_records.jsonl]"
  "$BIN" "$cfg" --set "run.dir=$TMP/cfg_run" --set "data.tokenizer=$TMP/cfg_tok.bpe" \
    --set "$data" > "$TMP/out" 2> "$TMP/err"; rc=$?
  if [ $rc != 2 ] && grep -q "^memory plan per rank" "$TMP/out" && ! grep -q "planned memory" "$TMP/err"; then ok
  else bad "$(basename "$cfg") refused or not planned (exit $rc)"; cat "$TMP/err"; fi
done

# Numerical faults: a diverging run (absurd learning rate) skips its non-finite steps,
# names the tensors, stops after train.max_bad_steps in a row with exit 1 and a checkpoint.
"$BIN" "$TMP/small.yaml" --set "run.dir=$TMP/nan" --set optim.lr=1e30 --set optim.min_lr=0 \
  --set optim.warmup_steps=0 --set train.max_bad_steps=3 > "$TMP/nan.out" 2> "$TMP/nan.err"; rc=$?
[ $rc = 1 ] && ok || bad "diverging run: exit $rc, want 1"
grep -q "non-finite values:.*gradient of model" "$TMP/nan.err" && ok || bad "non-finite report names no tensor"
grep -q "3 non-finite steps in a row" "$TMP/nan.err" && ok || { bad "no stop message"; cat "$TMP/nan.err"; }
ls "$TMP/nan/checkpoints/"step_*.h5 > /dev/null 2>&1 && ok || bad "no checkpoint saved at the stop"
grep -q '"skipped":true' "$TMP/nan/metrics.jsonl" && ok || bad "metrics.jsonl does not mark skipped steps"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
