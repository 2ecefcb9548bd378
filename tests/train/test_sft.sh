#!/usr/bin/env bash
# test_sft.sh: supervised fine-tuning on JSON Lines records (data.sft) end to end through
# the moetrain program.
# - a tiny base run (30 steps, Shakespeare); LoRA fine-tuning of it on 300 GSM8K records
#   (question -> answer via data.prompt_key / data.completion_key): the start-up line
#   counts the records and the tokens trained on; the validation loss (completion tokens
#   only) falls below the base's at step 0; `eval --split val` reproduces the logged final
#   val_loss (1e-4 relative: the same targets, one window per forward instead of a batch)
#   scoring only the completion tokens (fewer than the windows' targets);
# - mpirun -n 2 and -n 4 (grad_accum 2) give the losses of one rank within 1e-4 relative:
#   the prompt tokens fall unevenly on the ranks, so this holds only because every rank
#   divides by the global count of completion tokens;
# - exact resume (--stop-at 10, --resume auto): losses of steps 11..20 and the final
#   adapters and moments bit-identical, on 1 rank and on -n 2;
# - full fine-tuning (lora_rank 0) on the same records written as conversations
#   ({"messages": [user, assistant]}): the validation loss falls;
# - a global batch without any completion token, and validation windows without one: a
#   warning each, the run goes on, the step losses stay finite;
# - a malformed record: "FILE:LINE: ..." and exit 1; the config refusals (data.sft with
#   data.text or data.val_text, data.prompt_key without data.sft, equal field names, no
#   tokenizer file).
# Usage: test_sft.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_sft.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?run through ctest}
. "$SRC/tests/testlib.sh"
expect_fail() {   # NAME PATTERN -- command...: exit 1 and stderr matching PATTERN
  local name=$1 pat=$2; shift 3
  "$@" > "$TMP/out" 2> "$TMP/err"; local rc=$?
  if [ "$rc" != 1 ]; then bad "$name: exit $rc, want 1"; cat "$TMP/err"; return; fi
  grep -qE -- "$pat" "$TMP/err" && ok || { bad "$name: stderr lacks /$pat/"; cat "$TMP/err"; }
}
losses() { grep '"lm_loss"' "$1/metrics.jsonl" | sed -n "$2,$3p" | grep -o '"loss":[^,]*' | cut -d: -f2; }
val_at() { grep -o "\"step\":$2,[^}]*" "$1/eval.jsonl" | grep -o 'val_loss":[^}]*' | cut -d: -f2; }
close() {   # two columns of numbers agree within $3 relative
  paste <(echo "$1") <(echo "$2") | awk -v tol="$3" '{d=$1-$2; if(d<0)d=-d; m=$1<0?-$1:$1;
    if(NF!=2 || d>tol*m) bad=1; n++} END{exit bad || n==0}'
}

head -c 60000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
head -n 300 "$SRC/data/gsm8k_train.jsonl" > "$TMP/gsm.jsonl"
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
cat > "$TMP/sft.yaml" <<YAML
$model
train: {seq_len: 32, micro_batch: 8, grad_accum: 2, steps: 20, log_every: 5, eval_every: 0, eval_batches: 4}
optim: {lr: 1e-2, warmup_steps: 2, min_lr: 1e-3, weight_decay: 0.0}
data: {tokenizer: $TMP/tok.bpe, sft: [$TMP/gsm.jsonl], prompt_key: question, completion_key: answer, sft_separator: "\n"}
finetune: {init_from: $BASE, lora_rank: 4, lora_alpha: 8}
YAML
run "$TMP/base.log" "$BIN" "$TMP/base.yaml"

# One rank: the record line, a falling completion-only validation loss, eval --split val.
run "$TMP/s1.log" "$BIN" "$TMP/sft.yaml" --set "run.dir=$TMP/s1"
grep -qE "^sft: 300 records \(300 prompt/completion, 0 conversations\) from 1 file\(s\), packed into [0-9]+ tokens, [0-9]+ of them trained on" "$TMP/s1.log" \
  && ok || { bad "no sft line"; grep "^sft:" "$TMP/s1.log"; }
v0=$(val_at "$TMP/s1" 0); v20=$(val_at "$TMP/s1" 20)
[ -n "$v0" ] && [ -n "$v20" ] && awk -v a="$v0" -v b="$v20" 'BEGIN{exit !(b < a - 0.05)}' && ok \
  || bad "completion validation loss did not fall: step 0 '$v0', step 20 '$v20'"
"$BIN" eval "$TMP/s1" --split val > "$TMP/ev" 2>&1 || { bad "eval --split val failed"; cat "$TMP/ev"; }
ev=$(grep -o 'mean NLL [0-9.]*' "$TMP/ev" | cut -d' ' -f3)
close "$v20" "$ev" 1e-4 && ok || bad "eval --split val gives '$ev', the run logged val_loss '$v20'"
grep -q "only completion tokens are scored" "$TMP/ev" && ok || bad "eval does not say it scores completions"
scored=$(grep -o 'scored [0-9]* tokens' "$TMP/ev" | cut -d' ' -f2)
# 4 batches x 8 windows x 32 targets = 1024 targets; the questions' share is masked
[ -n "$scored" ] && [ "$scored" -gt 100 ] && [ "$scored" -lt 1024 ] && ok || bad "eval scored '$scored' of 1024 targets"

# Two and four ranks (expert parallel 2 and 4): the losses of one rank.
for R in 2 4; do
  run "$TMP/s$R.log" timeout 300 "$MPIRUN" -n $R "$BIN" "$TMP/sft.yaml" --set "run.dir=$TMP/s$R"
  close "$(losses "$TMP/s1" 1 20)" "$(losses "$TMP/s$R" 1 20)" 1e-4 && ok \
    || { bad "-n $R losses differ from -n 1"; paste <(losses "$TMP/s1" 1 5) <(losses "$TMP/s$R" 1 5); }
  close "$v20" "$(val_at "$TMP/s$R" 20)" 1e-4 && ok || bad "-n $R: val_loss differs from -n 1"
done

# Exact resume, 1 and 2 ranks.
for R in 1 2; do
  D=$TMP/r$R
  run "$D-a.log" timeout 300 "$MPIRUN" -n $R "$BIN" "$TMP/sft.yaml" --set "run.dir=$D" --stop-at 10
  run "$D-b.log" timeout 300 "$MPIRUN" -n $R "$BIN" "$TMP/sft.yaml" --set "run.dir=$D" --resume auto
  grep -q "resumed from .*step_00000010.h5 at step 10" "$D-b.log" && ok || bad "-n $R: no resume at 10"
  [ -n "$(losses "$TMP/s$R" 11 20)" ] && [ "$(losses "$TMP/s$R" 11 20)" = "$(losses "$D" 11 20)" ] && ok \
    || bad "-n $R: resumed losses of steps 11..20 differ"
  params_equal "$TMP/s$R/checkpoints/step_00000020.h5" "$D/checkpoints/step_00000020.h5" && ok \
    || bad "-n $R: resumed adapters/moments are not bit-identical"
done

# Full fine-tuning on the same records as conversations.
sed -E 's/^\{"question": (.*), "answer": (.*)\}$/{"messages": [{"role": "user", "content": \1}, {"role": "assistant", "content": \2}]}/' \
  "$TMP/gsm.jsonl" > "$TMP/chat.jsonl"
[ "$(grep -c '^{"messages": \[{"role": "user", "content": ".*"}, {"role": "assistant", "content": ".*"}\]}$' "$TMP/chat.jsonl")" = 300 ] \
  || bad "could not write the conversation records"
cat > "$TMP/chat.yaml" <<YAML
$model
train: {seq_len: 32, micro_batch: 8, steps: 20, log_every: 5, eval_every: 0, eval_batches: 4}
optim: {lr: 3e-3, warmup_steps: 2, min_lr: 3e-4}
data: {tokenizer: $TMP/tok.bpe, sft: [$TMP/chat.jsonl]}
finetune: {init_from: $BASE, lora_rank: 0}
YAML
run "$TMP/c.log" "$BIN" "$TMP/chat.yaml" --set "run.dir=$TMP/c"
grep -q "^sft: 300 records (0 prompt/completion, 300 conversations)" "$TMP/c.log" && ok || bad "no conversation count"
grep -q "fine-tuning every weight" "$TMP/c.log" && ok || bad "not a full fine-tuning run"
c0=$(val_at "$TMP/c" 0); c20=$(val_at "$TMP/c" 20)
[ -n "$c0" ] && [ -n "$c20" ] && awk -v a="$c0" -v b="$c20" 'BEGIN{exit !(b < a - 0.05)}' && ok \
  || bad "full fine-tuning: validation loss did not fall: step 0 '$c0', step 20 '$c20'"

# Long prompts, one-token completions, 2 x 16-token windows a step: batches without a
# completion token warn, and the run goes on.
long=$(head -c 3000 "$TMP/corpus.txt" | tr -d '"\\\n' | tr -s ' ')
for i in 1 2 3 4; do printf '{"prompt": "%s", "completion": " ok"}\n' "$long"; done > "$TMP/long.jsonl"
"$BIN" "$TMP/sft.yaml" --set "run.dir=$TMP/long" --set "data.sft=[$TMP/long.jsonl]" \
  --set data.prompt_key=prompt --set data.completion_key=completion --set train.seq_len=16 \
  --set train.micro_batch=2 --set train.grad_accum=1 --set train.eval_batches=1 > "$TMP/long.log" 2>&1 \
  && ok || { bad "the long-prompt run failed"; tail -5 "$TMP/long.log"; }
grep -q "the global batch holds no completion token" "$TMP/long.log" && ok || bad "no warning for a batch without completion tokens"
# its 32 validation targets are the start of the last record's long prompt: nothing to score
grep -q "the validation windows hold no completion token to score" "$TMP/long.log" && ok \
  || bad "no warning for validation windows without completion tokens"
[ "$(losses "$TMP/long" 1 20 | grep -cvE '^[0-9.e+-]+$')" = 0 ] && [ "$(losses "$TMP/long" 1 20 | wc -l)" = 20 ] \
  && ok || bad "non-finite or missing losses in the long-prompt run"

# Malformed records and refused configs.
{ head -n 2 "$TMP/gsm.jsonl"; echo '{"question": "q", "answer": 42}'; } > "$TMP/bad.jsonl"
expect_fail "a number as completion" "bad.jsonl:3: \"answer\" must be a string, got a number" -- \
  "$BIN" "$TMP/sft.yaml" --set "run.dir=$TMP/x1" --set "data.sft=[$TMP/bad.jsonl]"
{ head -n 4 "$TMP/gsm.jsonl"; echo '{"question": "q", "answer": "a"'; } > "$TMP/bad.jsonl"
expect_fail "broken JSON" "bad.jsonl:5:[0-9]+: " -- \
  "$BIN" "$TMP/sft.yaml" --set "run.dir=$TMP/x2" --set "data.sft=[$TMP/bad.jsonl]"
expect_fail "the default field names" "gsm.jsonl:1: the record has neither \"prompt\" and \"completion\" nor \"messages\"" -- \
  "$BIN" "$TMP/chat.yaml" --set "run.dir=$TMP/x3" --set "data.sft=[$TMP/gsm.jsonl]"
expect_fail "sft with text" "data.sft, data.text: fine-tuning records are trained on alone" -- \
  "$BIN" "$TMP/sft.yaml" --set "run.dir=$TMP/x4" --set "data.text=[$TMP/corpus.txt]"
expect_fail "sft with val_text" "data.sft, data.val_text: a fine-tuning run validates on its own last records" -- \
  "$BIN" "$TMP/sft.yaml" --set "run.dir=$TMP/x8" --set "data.val_text=[$TMP/corpus.txt]"
expect_fail "prompt_key without sft" "data.prompt_key applies to data.sft records, and data.sft is empty" -- \
  "$BIN" "$TMP/base.yaml" --set "run.dir=$TMP/x5" --set data.prompt_key=question
expect_fail "equal field names" "data.prompt_key, data.completion_key: both name the field \"answer\"" -- \
  "$BIN" "$TMP/sft.yaml" --set "run.dir=$TMP/x6" --set data.prompt_key=answer
expect_fail "no tokenizer" "fine-tuning records \(data.sft\) do not train a tokenizer" -- \
  "$BIN" "$TMP/base.yaml" --set "run.dir=$TMP/x7" --set "data.tokenizer=$TMP/none.bpe" \
  --set 'data.text=[]' --set "data.sft=[$TMP/chat.jsonl]"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
