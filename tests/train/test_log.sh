#!/usr/bin/env bash
# test_log.sh: what a training run shows and records (train/logger.h, train/runinfo.h).
# - The terminal, seen through a pseudo-terminal (script(1) from util-linux, as a user sees
#   it: the progress bar redrawn with \r, then cleared): ONE line per log step holding loss
#   (with only the terms that apply), lr, grad norm, tokens/s, the achieved FLOP rate (no
#   MFU), the worst layer's load max/mean and, only when tokens can be dropped, the worst
#   layer's drops; no per-layer block unless train.log_experts.
# - Warnings when they happen, on any step, as clean "warning:" lines: gradient spikes,
#   skipped non-finite steps, drops above train.warn_dropped (once, not every step),
#   train.steps < optim.warmup_steps and a tokenizer trained on other text (at start; a
#   tokenizer file without the record gives none).
# - run.dir/runs.jsonl: one line per process start; a resumed run adds one; the rank
#   layout under mpirun.
# Breaks seen caught (each made once, then undone): logger_warn not clearing the progress
# bar (the warning lines start with the bar); the step's warnings given only on log steps,
# as spikes were before (no warning between log steps); the aux term shown for dense
# models; drops shown for a dropless run; the drop warning without its once-only state
# (one warning a step); the tokenizer comparison by name instead of content (the renamed
# copy warns); a runs.jsonl line written before trainer_init takes the run directory (the
# refused second start adds a line).
# Usage: test_log.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_log.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?run through ctest}
. "$SRC/tests/testlib.sh"
command -v script > /dev/null || { echo "FAIL: script(1) (util-linux) is not installed"; exit 1; }

head -c 60000 "$SRC/data/tinyshakespeare.txt" > "$TMP/a.txt"
tail -c +60001 "$SRC/data/tinyshakespeare.txt" | head -c 60000 > "$TMP/b.txt"
cat > "$TMP/c.yaml" <<YAML
model: {vocab_size: 320, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, head_dim: 8}
moe: {n_experts: 4, top_k: 2, hidden: 48}
train: {seq_len: 32, micro_batch: 4, steps: 30, log_every: 10, eval_every: 0, eval_batches: 1}
data: {tokenizer: $TMP/tok.bpe, text: [$TMP/a.txt]}
run: {dir: $TMP/run}
YAML

# tty NAME args...: run moetrain on a pseudo-terminal; $TMP/NAME.raw is what it wrote,
# $TMP/NAME.screen the lines a terminal shows (each line's text after its last \r, with
# the erase-line sequences removed).
tty() {
  local name=$1; shift
  script -qec "$(printf '%q ' "$BIN" "$@")" /dev/null > "$TMP/$name.raw" 2>&1 ||
    { bad "$name: exit status $?"; tail -5 "$TMP/$name.raw"; }
  sed 's/\r$//' "$TMP/$name.raw" | awk -F'\r' '{print $NF}' | sed 's/\x1b\[K//g' > "$TMP/$name.screen"
}
# plain NAME args...: run without a terminal; stdout $TMP/NAME.out, stderr $TMP/NAME.err.
plain() {
  local name=$1; shift
  "$BIN" "$@" > "$TMP/$name.out" 2> "$TMP/$name.err" || { bad "$name: exit status $?"; tail -5 "$TMP/$name.err"; }
}
NUM='[0-9.]+'
LINE_HEAD="^step +[0-9]+/30 \| loss $NUM"
LINE_TAIL="\| lr $NUM(e[-+][0-9]+)? \| gnorm $NUM \| [0-9]+ tok/s \| $NUM [GT]FLOP/s"

# ---- the default MoE run on a terminal: spike_factor 1 flags steps between log steps ----
tty moe "$TMP/c.yaml" --set train.spike_factor=1 --set "run.dir=$TMP/moe"
S=$TMP/moe.screen
steps_shown=$(grep -E "^step +[0-9]+/30 \| loss" "$S" | awk '{split($2, a, "/"); printf "%s ", a[1]}')
[ "$steps_shown" = "1 10 20 30 " ] && ok || { bad "step lines at steps '$steps_shown', want '1 10 20 30 '"; cat "$S"; }
grep -qE "$LINE_HEAD \(lm $NUM aux $NUM z $NUM\) $LINE_TAIL \| max/mean $NUM \(L[01]\) \| eta " "$S" \
  && ok || { bad "MoE step line"; grep "^step" "$S" | head -2; }
grep -q "MFU" "$S" && bad "MFU on the terminal" || ok
grep -q "dropped" "$S" && bad "a dropless run shows drops" || ok
grep -q "expert load" "$S" && bad "the per-layer block without train.log_experts" || ok
grep -c "^step .*tok/s" "$S" | grep -qx 4 && ok || bad "lines besides the 4 step lines carry figures"
# every warning is a clean line of its own on the screen (the bar was cleared first)
grep "warning:" "$S" | grep -qv "^warning: " && { bad "a warning shares its line:"; grep "warning:" "$S" | grep -v "^warning: " | head -2; } || ok
# the warmup warning, once, before the first step line
w=$(grep -n "^warning: train.steps = 30 is below optim.warmup_steps = 100" "$S" | cut -d: -f1)
first=$(grep -nE "^step +1/30" "$S" | cut -d: -f1)
[ -n "$w" ] && [ "$(echo "$w" | wc -l)" = 1 ] && [ "$w" -lt "$first" ] && ok \
  || bad "warmup warning at line(s) '$w', first step line $first"
# spikes are warned of at their own step, between the log lines around it
spikes=$(grep -oE "^warning: step [0-9]+: gradient norm $NUM is $NUM" "$S" | awk '{print $3}' | tr -d : | tr '\n' ' ')
off=$(for n in $spikes; do [ $((n % 10)) != 0 ] && echo "$n"; done | head -1)
[ -n "$off" ] && ok || bad "no spike warned between log steps (spikes: '$spikes')"
awk -v want="$off" '
  /^step +[0-9]+\/30 \| loss/ { split($2, a, "/"); last = a[1] + 0; if (seen && !after) after = last }
  $0 ~ "^warning: step " want ": gradient norm" { seen = 1; before = last }
  END { exit !(seen && before < want && (after == 0 || after >= want)) }' "$S" \
  && ok || bad "the spike warning of step $off is not between the log lines around it"
grep -q '"model_tflops":' "$TMP/moe/metrics.jsonl" && grep -q '"mfu":' "$TMP/moe/metrics.jsonl" \
  && ok || bad "metrics.jsonl lacks model_tflops or mfu"

# ---- train.log_experts: the per-layer block under each of the 4 step lines ----
plain experts "$TMP/c.yaml" --set train.log_experts=true --set optim.warmup_steps=5 --set "run.dir=$TMP/experts"
[ "$(grep -c "expert load (share of slots)" "$TMP/experts.out")" = 4 ] && \
  [ "$(grep -cE "^ +L[01]:" "$TMP/experts.out")" = 8 ] && ok || { bad "train.log_experts block"; cat "$TMP/experts.out"; }
[ ! -s "$TMP/experts.err" ] && ok || { bad "warnings with warmup 5 < 30 steps and no spikes"; cat "$TMP/experts.err"; }

# ---- what does not apply is left out ----
plain dense "$TMP/c.yaml" --set moe.n_experts=0 --set optim.warmup_steps=5 --set "run.dir=$TMP/dense"
grep -qE "$LINE_HEAD $LINE_TAIL \| eta " "$TMP/dense.out" && ! grep -qE "aux| z |max/mean|dropped" "$TMP/dense.out" \
  && ok || { bad "dense step line"; grep "^step" "$TMP/dense.out" | head -2; }
plain nocoef "$TMP/c.yaml" --set moe.aux_loss_coef=0 --set moe.z_loss_coef=0 --set optim.warmup_steps=5 --set "run.dir=$TMP/nocoef"
grep -qE "$LINE_HEAD $LINE_TAIL \| max/mean $NUM \(L[01]\) \| eta " "$TMP/nocoef.out" \
  && ok || { bad "MoE without aux and z losses"; grep "^step" "$TMP/nocoef.out" | head -2; }
plain ec "$TMP/c.yaml" --set moe.router=expert_choice --set moe.capacity_factor=0.3 --set optim.warmup_steps=5 --set "run.dir=$TMP/ec"
grep -qE "$LINE_HEAD \(lm $NUM z $NUM\) $LINE_TAIL \| max/mean $NUM \(L[01]\) \| unchosen $NUM% \(L[01]\)" "$TMP/ec.out" \
  && ok || { bad "expert-choice step line"; grep "^step" "$TMP/ec.out" | head -2; }
grep -qE "^warning: step 1: layer [01] left $NUM% of its tokens unchosen" "$TMP/ec.err" && ok || { bad "no unchosen warning"; cat "$TMP/ec.err"; }

# ---- drops: shown with a capacity limit; warned of once above train.warn_dropped ----
# capacity 0.5 of the mean load drops about half the slots on every step: far above 0.05
# and never back under half of it, so exactly one warning
plain cap "$TMP/c.yaml" --set moe.capacity_factor=0.5 --set optim.warmup_steps=5 --set "run.dir=$TMP/cap"
grep -qE "\| max/mean $NUM \(L[01]\) \| dropped $NUM% \(L[01]\) \| eta" "$TMP/cap.out" && ok || { bad "no drops on the step line"; grep "^step" "$TMP/cap.out" | head -2; }
[ "$(grep -cE "^warning: step [0-9]+: layer [01] dropped $NUM% of its routed slots" "$TMP/cap.err")" = 1 ] \
  && grep -qE "^warning: step 1: layer" "$TMP/cap.err" && ok || { bad "want one drop warning, at step 1"; cat "$TMP/cap.err"; }
plain cap1 "$TMP/c.yaml" --set moe.capacity_factor=0.5 --set train.warn_dropped=1 --set optim.warmup_steps=5 --set "run.dir=$TMP/cap1"
grep -q "dropped" "$TMP/cap1.err" && bad "train.warn_dropped=1 still warns" || ok

# ---- skipped non-finite steps: a warning each, when they happen ----
"$BIN" "$TMP/c.yaml" --set optim.lr=1e30 --set optim.min_lr=0 --set optim.warmup_steps=0 \
  --set train.max_bad_steps=3 --set "run.dir=$TMP/nan" > "$TMP/nan.out" 2> "$TMP/nan.err"
for k in 1 2 3; do
  grep -qE "^warning: step $((k + 1)): non-finite values: .*the update is skipped \($k in a row; train.max_bad_steps = 3" "$TMP/nan.err" \
    && ok || { bad "no skip warning for step $((k + 1))"; cat "$TMP/nan.err"; }
done

# ---- the tokenizer's record of what it was trained on ----
"$BIN" tokenizer train --vocab 320 --out "$TMP/tok_a.bpe" "$TMP/a.txt" > /dev/null 2>&1
sum=$(grep -E "^text 60000 [0-9a-f]{16} $TMP/a.txt$" "$TMP/tok_a.bpe")
grep -qx "trained_on 1" "$TMP/tok_a.bpe" && [ -n "$sum" ] && ok || { bad "no trained_on record"; head -6 "$TMP/tok_a.bpe"; }
grep -qE "^text 60000 [0-9a-f]{16} $TMP/a.txt$" "$TMP/tok.bpe" && ok || bad "the tokenizer trained at start records no text"
T2=(--set train.steps=2 --set optim.warmup_steps=0)
plain other "$TMP/c.yaml" "${T2[@]}" --set "data.tokenizer=$TMP/tok_a.bpe" --set "data.text=[$TMP/b.txt]" --set "run.dir=$TMP/other"
[ "$(grep -c "^warning: data.tokenizer $TMP/tok_a.bpe was trained on other text than data.text: it was trained on $TMP/a.txt (60000 bytes); data.text is $TMP/b.txt" "$TMP/other.err")" = 1 ] \
  && ok || { bad "no warning for a tokenizer trained on other text"; cat "$TMP/other.err"; }
cp "$TMP/a.txt" "$TMP/a_copy.txt"
plain same "$TMP/c.yaml" "${T2[@]}" --set "data.tokenizer=$TMP/tok_a.bpe" --set "data.text=[$TMP/a_copy.txt]" --set "run.dir=$TMP/same"
grep -q "trained on other text" "$TMP/same.err" && { bad "the same text under another name warns"; cat "$TMP/same.err"; } || ok
grep -vE "^(trained_on|text) " "$TMP/tok_a.bpe" > "$TMP/tok_old.bpe"
plain old "$TMP/c.yaml" "${T2[@]}" --set "data.tokenizer=$TMP/tok_old.bpe" --set "data.text=[$TMP/b.txt]" --set "run.dir=$TMP/old"
[ ! -s "$TMP/old.err" ] && grep -q "^done" "$TMP/old.out" && ok || { bad "a tokenizer file without the record"; cat "$TMP/old.err"; }

# ---- run.dir/runs.jsonl: a line per process start ----
R=$TMP/rec
plain rec1 "$TMP/c.yaml" --set train.steps=20 --set "run.dir=$R" --stop-at 10
"$BIN" "$TMP/c.yaml" --set train.steps=20 --set "run.dir=$R" > /dev/null 2>&1   # refused: a run is there
plain rec2 "$TMP/c.yaml" --set train.steps=20 --set "run.dir=$R" --resume auto
[ "$(wc -l < "$R/runs.jsonl")" = 2 ] && ok || { bad "runs.jsonl has $(wc -l < "$R/runs.jsonl") lines, want 2 (fresh, resumed)"; cat "$R/runs.jsonl"; }
head -1 "$R/runs.jsonl" | grep -q '"resumed_from":null,"step":0,"ranks":1,' && ok || bad "fresh start line: $(head -1 "$R/runs.jsonl")"
tail -1 "$R/runs.jsonl" | grep -qE "\"argv\":\[[^]]*\"--resume\",\"auto\"\],\"resumed_from\":\"$R/checkpoints/step_00000010.h5\",\"step\":10," \
  && ok || bad "resumed line: $(tail -1 "$R/runs.jsonl")"
for k in time start host pid cwd commit compiler libraries isa; do
  tail -1 "$R/runs.jsonl" | grep -q "\"$k\":" && ok || bad "runs.jsonl lacks $k"
done
"$MPIRUN" -n 2 "$BIN" "$TMP/c.yaml" --set train.steps=2 --set "run.dir=$TMP/mpi" > "$TMP/mpi.out" 2>&1 || { bad "mpirun -n 2"; tail -5 "$TMP/mpi.out"; }
h=$(hostname)
grep -q "\"ranks\":2,\"expert_parallel\":2,\"rank_hosts\":\[\"$h\",\"$h\"\]" "$TMP/mpi/runs.jsonl" \
  && [ "$(wc -l < "$TMP/mpi/runs.jsonl")" = 1 ] && ok || { bad "runs.jsonl under mpirun -n 2"; cat "$TMP/mpi/runs.jsonl"; }

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
