#!/usr/bin/env bash
# test_schedules.sh: learning-rate schedules, token budgets and the batch key's name, end to
# end through the moetrain program on a tiny model.
# - optim.schedule cosine (the default), wsd, linear, constant: the lr logged in
#   metrics.jsonl at chosen steps is the formula's (optim/schedule.h; metrics step s
#   trained with lr_at(s - 1)).
# - Resume keeps the schedule position: a wsd run stopped at step 10 (still stable) and
#   continued with --resume auto logs the same steps 11..20 (lr included) and ends with
#   the same parameters as the run straight through.
# - train.tokens: steps = ceil(tokens / (global_micro_batch x seq_len x grad_accum)),
#   printed at the start, the schedule spans them (min_lr at the derived last step), exact
#   resume; train.tokens with train.steps is refused (exit 1, naming both, nothing made).
# - train.global_micro_batch: an old config (train.micro_batch) trains and its run's
#   config.yaml and checkpoint store the new name only; a config giving both names is
#   refused at the second one; a checkpoint written before the rename (fixture) still
#   reads (ckpt info, sample) and resumes under a config that uses the new name.
# Tolerance: metrics.jsonl prints lr with %.6g (6 significant digits), so a logged value is
# within 5e-6 relative of the float: 1e-5 relative. A one-step shift of the wsd decay here
# moves lr by 18%.
# Breaks checked (each made this test fail): the schedule re-spanned over the steps left at
# a resume (sched.total -= step: both exact resumes fail); steps = tokens / per step rounded
# down (19 steps: the budget checks fail); the old name refused as an unknown key (every
# run and the fixture checks fail).
# Usage: test_schedules.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_schedules.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?run through ctest}
. "$SRC/tests/testlib.sh"
expect_fail() {   # NAME WANT_EXIT PATTERN -- command...
  local name=$1 want=$2 pat=$3; shift 4
  "$@" >"$TMP/out" 2>"$TMP/err"; local rc=$?
  if [ "$rc" != "$want" ]; then bad "$name: exit $rc, want $want"; cat "$TMP/err"; return; fi
  if ! grep -qE -- "$pat" "$TMP/err"; then bad "$name: stderr lacks /$pat/"; cat "$TMP/err"; return; fi
  ok
}
lr_of() { grep "^{\"step\":$2," "$1/metrics.jsonl" | grep -o '"lr":[^,]*' | cut -d: -f2; }
# expect_lr LABEL RUN_DIR STEP WANT: the logged lr of STEP within 1e-5 relative of WANT
expect_lr() {
  local got; got=$(lr_of "$2" "$3")
  if [ -n "$got" ] && awk -v g="$got" -v w="$4" 'BEGIN { d = g - w; if (d < 0) d = -d; exit !(d <= 1e-5 * w) }'
  then ok; else bad "$1: lr at step $3 is '$got', want $4"; fi
}

head -c 60000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
cat > "$TMP/c.yaml" <<YAML
model: {vocab_size: 320, dim: 32, n_layers: 1, n_heads: 4, n_kv_heads: 2, head_dim: 8}
moe: {n_experts: 4, top_k: 2, hidden: 48}
train: {seq_len: 32, micro_batch: 8, steps: 20, log_every: 10, eval_every: 0, eval_batches: 1}
optim: {lr: 3e-3, warmup_steps: 5, min_lr: 3e-4}
data: {tokenizer: $TMP/tok.bpe, text: [$TMP/corpus.txt]}
YAML

# ---- each schedule's lr by formula: lr 3e-3, min_lr 3e-4, warmup 5, 20 steps ----
for s in cosine wsd linear constant; do
  run "$TMP/$s.log" "$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/$s" --set optim.schedule=$s \
    --set optim.decay_fraction=0.25
done
for s in cosine wsd linear constant; do
  expect_lr "$s warmup" "$TMP/$s" 3 1.8e-3          # 3e-3 x 3 / 5
  expect_lr "$s peak" "$TMP/$s" 6 3e-3              # step 5: the first after warmup
done
# cosine and linear decay over steps 5..19 (span 14); step 12 is halfway
expect_lr cosine "$TMP/cosine" 13 1.65e-3           # 3e-4 + 2.7e-3 x (1 + cos(pi/2)) / 2
expect_lr cosine "$TMP/cosine" 9 2.70547e-3         # p = 3/14: 3e-4 + 2.7e-3 x (1 + cos(3 pi/14)) / 2
expect_lr cosine "$TMP/cosine" 20 3e-4
expect_lr linear "$TMP/linear" 13 1.65e-3           # 3e-4 + 2.7e-3 x (1 - 1/2)
expect_lr linear "$TMP/linear" 9 2.42143e-3         # 3e-4 + 2.7e-3 x (1 - 3/14)
expect_lr linear "$TMP/linear" 20 3e-4
# wsd: D = round(0.25 x 20) = 5 decay steps, steps 15..19, p = (step - 14) / 5
expect_lr wsd "$TMP/wsd" 15 3e-3                    # step 14: the last stable one
expect_lr wsd "$TMP/wsd" 16 2.46e-3                 # 3e-4 + 2.7e-3 x 4/5
expect_lr wsd "$TMP/wsd" 18 1.38e-3                 # 3e-4 + 2.7e-3 x 2/5
expect_lr wsd "$TMP/wsd" 20 3e-4
expect_lr constant "$TMP/constant" 20 3e-3
grep -q "schedule: wsd " "$TMP/wsd/config.yaml" && grep -q "decay_fraction: 0.25 " "$TMP/wsd/config.yaml" \
  && ok || bad "config.yaml lacks the schedule"

# ---- resume keeps the schedule position (wsd; the decay comes after the resume) ----
SETS=(--set optim.schedule=wsd --set optim.decay_fraction=0.25)
RESUME_AT=10 exact_resume wsd_resume
SETS=()

# ---- train.tokens: 5000 tokens / (8 x 32 x 1) = 19.5 -> 20 steps ----
sed 's/steps: 20, //; s/^train: {/train: {tokens: 5000, /' "$TMP/c.yaml" > "$TMP/tok.yaml"
run "$TMP/budget.log" "$BIN" "$TMP/tok.yaml" --set "run.dir=$TMP/budget"
grep -q "^budget: train.tokens 5000 = 20 steps of 8 x 32 x 1 = 256 tokens (5120 in all)" "$TMP/budget.log" \
  && ok || { bad "no budget line"; grep -i budget "$TMP/budget.log"; }
[ -s "$TMP/budget/checkpoints/step_00000020.h5" ] && [ ! -e "$TMP/budget/checkpoints/step_00000021.h5" ] \
  && ok || { bad "the budget run did not end at step 20"; ls "$TMP/budget/checkpoints"; }
[ "$(grep -c '"lm_loss"' "$TMP/budget/metrics.jsonl")" = 20 ] && ok || bad "budget run: not 20 step lines"
expect_lr "budget (cosine spans the 20 steps)" "$TMP/budget" 20 3e-4
expect_lr "budget halfway" "$TMP/budget" 13 1.65e-3
grep -q "^  tokens: 5000 " "$TMP/budget/config.yaml" && grep -q "^  # steps: 20 (from train.tokens" "$TMP/budget/config.yaml" \
  && ! grep -q "^  steps:" "$TMP/budget/config.yaml" && ok || bad "budget config.yaml"
# the run's config.yaml reads back (steps derived again, not "both given")
"$BIN" "$TMP/budget/config.yaml" --set "run.dir=$TMP/budget2" --set train.tokens=2560 > "$TMP/b2.log" 2>&1 \
  && grep -q "= 10 steps" "$TMP/b2.log" && ok || { bad "config.yaml of a budget run does not train"; tail -3 "$TMP/b2.log"; }
CFG=$TMP/tok.yaml RESUME_AT=10 exact_resume budget_resume
expect_fail "tokens and steps" 1 "train.tokens, train.steps: both are given" -- \
  "$BIN" "$TMP/tok.yaml" --set "run.dir=$TMP/both" --set train.steps=20
grep -q "hint: remove one of them" "$TMP/err" && [ ! -e "$TMP/both" ] && ok || bad "both given: no hint, or a run dir made"

# ---- the batch key's name ----
C=$TMP/cosine
grep -q "^  global_micro_batch: 8 " "$C/config.yaml" && ! grep -q "^  micro_batch:" "$C/config.yaml" \
  && ok || bad "config.yaml of an old-name config does not use the new name"
h5dump -d /config -b LE -o "$TMP/stored.yaml" "$C/checkpoints/step_00000020.h5" > /dev/null 2>&1
grep -q "^  global_micro_batch: 8 " "$TMP/stored.yaml" && ! grep -q "^  micro_batch:" "$TMP/stored.yaml" \
  && ok || bad "the checkpoint's stored config does not use the new name"
sed 's/micro_batch: 8, /micro_batch: 8, global_micro_batch: 8, /' "$TMP/c.yaml" > "$TMP/twice.yaml"
expect_fail "both batch names" 1 "twice.yaml:3:.*train.global_micro_batch: the same key as train.micro_batch" -- \
  "$BIN" "$TMP/twice.yaml" --set "run.dir=$TMP/twice"
# a checkpoint from before the rename: read, sampled, resumed under the new name
OLD=$SRC/tests/train/fixtures/ckpt_old_micro_batch.h5
h5dump -d /config -b LE -o "$TMP/old.yaml" "$OLD" > /dev/null 2>&1
grep -q "^  micro_batch: 1 " "$TMP/old.yaml" && ok || bad "the fixture no longer stores the old name"
"$BIN" ckpt info "$OLD" > "$TMP/info" 2>&1 && grep -q "^step  *1$" "$TMP/info" && ok || { bad "ckpt info of an old checkpoint"; cat "$TMP/info"; }
"$BIN" sample "$OLD" --prompt "To be" --max-tokens 5 > "$TMP/s" 2> "$TMP/se" && grep -q "^To be" "$TMP/s" \
  && ok || { bad "sample from an old checkpoint"; cat "$TMP/se"; }
mkdir -p "$TMP/old" && head -c 3000 "$SRC/data/tinyshakespeare.txt" > "$TMP/old/text.txt"
cat > "$TMP/old/c.yaml" <<'YAML'
model: {vocab_size: 258, dim: 4, n_layers: 1, n_heads: 1, n_kv_heads: 1, head_dim: 4}
moe: {n_experts: 2, top_k: 1, hidden: 4}
train: {seq_len: 8, global_micro_batch: 1, steps: 3, log_every: 1, eval_every: 0, eval_batches: 1}
data: {tokenizer: tok.bpe, text: [text.txt]}
run: {dir: run}
YAML
(cd "$TMP/old" && "$BIN" tokenizer train --vocab 258 --out tok.bpe text.txt > /dev/null 2>&1 &&
  "$BIN" c.yaml --resume "$OLD" > resume.log 2>&1); rc=$?
[ $rc = 0 ] && grep -q "resumed from .*ckpt_old_micro_batch.h5 at step 1" "$TMP/old/resume.log" \
  && ! grep -q "changed settings:.*micro_batch" "$TMP/old/resume.log" && [ -s "$TMP/old/run/checkpoints/step_00000003.h5" ] \
  && ok || { bad "resume from an old checkpoint (rc $rc)"; tail -5 "$TMP/old/resume.log"; }

echo "test_schedules.sh: $pass passed, $fail failed"
[ "$fail" = 0 ]
