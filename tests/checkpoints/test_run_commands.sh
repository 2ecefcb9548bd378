#!/usr/bin/env bash
# test_run_commands.sh: the commands that read a model take a run directory (RUN_DIR), end
# to end through the moetrain program on a 20-step tiny run (checkpoints at 10 and 20).
# - sample, eval, logits, export and ckpt info with RUN_DIR use its newest valid checkpoint,
#   say which on stderr, and give exactly what they give for that checkpoint file; a
#   damaged newest checkpoint is passed over (said so) for the previous one.
# - A directory with config.json is an HF export even with a checkpoints/ inside; one with
#   neither, a run directory with no checkpoint yet and one whose checkpoints are all bad
#   fail with exit 1, naming the directory, with a hint.
# - eval RUN_DIR --split val scores the windows the trainer validates on: its figure is the
#   val_loss the run logged (at step 20 through RUN_DIR, at step 10 through that
#   checkpoint); --split train and --windows say which windows; a missing token cache is
#   rebuilt, a missing corpus is named; exports and bad command lines are refused.
# - eval --text FILE warns when FILE is (or is a copy of) one of the run's training texts,
#   and not otherwise.
# - Progress: \r lines on stderr on a terminal (script(1) gives one), none in a pipe.
# Tolerance of the val_loss comparison: eval.jsonl prints %.6g (5e-6 at a loss of 5) and
# the trainer's batched float32 forward differs from eval's one window per pass by about
# 1e-6: 2e-5 absolute. Scoring the validation windows one window later moves the figure by
# 1.5e-4 on this run, one token later by 7.5e-4.
# Breaks checked (each made this test fail): validation window w read one window later
# (dataset_window); the trainer's window count without x global_micro_batch; no copy
# detection (same_bytes); progress always on / never on; a directory with config.json
# taken as a run directory; no note for an unreadable newest checkpoint.
# Usage: test_run_commands.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_run_commands.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?run through ctest}
. "$SRC/tests/testlib.sh"
expect_fail() {   # NAME WANT_EXIT PATTERN -- command...
  local name=$1 want=$2 pat=$3; shift 4
  "$@" >"$TMP/out" 2>"$TMP/err"; local rc=$?
  if [ "$rc" != "$want" ]; then bad "$name: exit $rc, want $want"; cat "$TMP/err"; return; fi
  if ! grep -qE -- "$pat" "$TMP/err"; then bad "$name: stderr lacks /$pat/"; cat "$TMP/err"; return; fi
  ok
}
nll() { grep -o 'mean NLL [0-9.]*' "$1" | cut -d' ' -f3; }
close() { awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && d <= 2e-5) }'; }

head -c 60000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
cat > "$TMP/c.yaml" <<YAML
model: {vocab_size: 320, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, head_dim: 8}
moe: {n_experts: 4, top_k: 2, hidden: 48}
train: {seq_len: 32, global_micro_batch: 8, steps: 20, log_every: 10, eval_every: 10, eval_batches: 2}
optim: {lr: 3e-3, warmup_steps: 5, min_lr: 3e-4}
data: {tokenizer: $TMP/tok.bpe, text: [$TMP/corpus.txt]}
checkpoint: {every: 10, keep: 5}
YAML
R=$TMP/run; CK=$R/checkpoints/step_00000020.h5; CK10=$R/checkpoints/step_00000010.h5
run "$TMP/train.log" "$BIN" "$TMP/c.yaml" --set "run.dir=$R"
NOTE="moetrain: note: $R: using its newest valid checkpoint $CK \(step 20\)"

# ---- each command on RUN_DIR = on its newest checkpoint, named on stderr ----
IDS=1,2,300,45,7
"$BIN" logits "$R" --ids $IDS --out "$TMP/l_run.f32" > /dev/null 2> "$TMP/err" && grep -qE "$NOTE" "$TMP/err" \
  && ok || { bad "logits RUN_DIR"; cat "$TMP/err"; }
"$BIN" logits "$CK" --ids $IDS --out "$TMP/l_ck.f32" > /dev/null 2>&1
cmp -s "$TMP/l_run.f32" "$TMP/l_ck.f32" && ok || bad "logits RUN_DIR differ from the checkpoint's"
"$BIN" sample "$R" --prompt "ROMEO:" --max-tokens 20 --seed 3 > "$TMP/s_run" 2> "$TMP/err" && grep -qE "$NOTE" "$TMP/err" \
  && ok || { bad "sample RUN_DIR"; cat "$TMP/err"; }
"$BIN" sample "$CK" --prompt "ROMEO:" --max-tokens 20 --seed 3 > "$TMP/s_ck" 2> /dev/null
cmp -s "$TMP/s_run" "$TMP/s_ck" && ok || bad "sample RUN_DIR differs from the checkpoint's"
"$BIN" ckpt info "$R" > "$TMP/info" 2> "$TMP/err" && grep -q "^step  *20$" "$TMP/info" && grep -qE "$NOTE" "$TMP/err" \
  && ok || { bad "ckpt info RUN_DIR"; cat "$TMP/info" "$TMP/err"; }
"$BIN" export "$R" "$TMP/hf" --format hf > "$TMP/out" 2> "$TMP/err" && grep -qE "$NOTE" "$TMP/err" \
  && grep -q "exported $CK -> $TMP/hf" "$TMP/out" && ok || { bad "export RUN_DIR"; cat "$TMP/out" "$TMP/err"; }
"$BIN" logits "$TMP/hf" --ids $IDS --out "$TMP/l_hf.f32" > /dev/null 2>&1
cmp -s "$TMP/l_hf.f32" "$TMP/l_ck.f32" && ok || bad "the export of RUN_DIR is not the checkpoint's"
"$BIN" eval "$R" --text "$TMP/corpus.txt" --ctx 32 > "$TMP/e_run" 2> "$TMP/err" && grep -qE "$NOTE" "$TMP/err" \
  && ok || { bad "eval RUN_DIR --text"; cat "$TMP/err"; }
"$BIN" eval "$CK" --text "$TMP/corpus.txt" --ctx 32 > "$TMP/e_ck" 2> /dev/null
[ "$(nll "$TMP/e_run")" = "$(nll "$TMP/e_ck")" ] && [ -n "$(nll "$TMP/e_ck")" ] && ok || bad "eval RUN_DIR differs"

# a damaged newest checkpoint is passed over, saying so
cp -r "$R" "$TMP/run2"
head -c 5000 "$CK" > "$TMP/run2/checkpoints/step_00000030.h5"
"$BIN" logits "$TMP/run2" --ids $IDS --out "$TMP/l_run2.f32" > /dev/null 2> "$TMP/err"
grep -q "moetrain: note: $TMP/run2: skipped step_00000030.h5: unreadable" "$TMP/err" \
  && grep -q "using its newest valid checkpoint $TMP/run2/checkpoints/step_00000020.h5 (step 20)" "$TMP/err" \
  && cmp -s "$TMP/l_run2.f32" "$TMP/l_ck.f32" && ok || { bad "damaged newest checkpoint"; cat "$TMP/err"; }

# ---- what a directory is ----
cp -r "$TMP/hf" "$TMP/hfrun"; mkdir "$TMP/hfrun/checkpoints"
"$BIN" logits "$TMP/hfrun" --ids $IDS --out "$TMP/l_hfrun.f32" > /dev/null 2> "$TMP/err" \
  && cmp -s "$TMP/l_hfrun.f32" "$TMP/l_ck.f32" && ! grep -q "note:.*using" "$TMP/err" \
  && ok || { bad "a directory with config.json is an HF export"; cat "$TMP/err"; }
mkdir -p "$TMP/neither" "$TMP/fresh/checkpoints" "$TMP/allbad/checkpoints"
head -c 5000 "$CK" > "$TMP/allbad/checkpoints/step_00000010.h5"
for cmd in "sample X --prompt a" "eval X --split val" "logits X --ids 1" "export X $TMP/x.gguf" "ckpt info X"; do
  expect_fail "$cmd: neither" 1 "neither/?: a directory that is neither a Hugging Face export \(it has no config.json\) nor a run directory \(it has no checkpoints/\)" \
    -- "$BIN" ${cmd/X/$TMP/neither}
  grep -q "^hint: give a run directory" "$TMP/err" && ok || bad "$cmd: neither: no hint"
done
expect_fail "no checkpoint yet" 1 "fresh: run directory without a checkpoint yet" -- "$BIN" sample "$TMP/fresh" --prompt a
grep -q "^hint: wait for the run's first checkpoint" "$TMP/err" && ok || bad "no checkpoint yet: no hint"
expect_fail "all checkpoints bad" 1 "allbad: run directory without a valid checkpoint: step_00000010.h5" -- \
  "$BIN" eval "$TMP/allbad" --split val
[ ! -e "$TMP/x.gguf" ] && ok || bad "a refused export wrote its output"

# ---- eval --split: the run's own windows ----
"$BIN" eval "$R" --split val > "$TMP/v20" 2> "$TMP/err" || { bad "eval --split val"; cat "$TMP/err"; }
want=$(grep '"step":20,' "$R/eval.jsonl" | grep -o '"val_loss":[0-9.]*' | cut -d: -f2)
close "$(nll "$TMP/v20")" "$want" && ok || bad "eval --split val: $(nll "$TMP/v20"), the run logged $want"
grep -q "split val, 16 windows of 32 tokens (the trainer's validation windows: train.eval_batches 2 x train.global_micro_batch 8" "$TMP/v20" \
  && grep -q "windows 16, scored 512 tokens" "$TMP/v20" && ok || { bad "eval --split val does not say which windows"; cat "$TMP/v20"; }
"$BIN" eval "$CK10" --split val > "$TMP/v10" 2> /dev/null
want=$(grep '"step":10,' "$R/eval.jsonl" | grep -o '"val_loss":[0-9.]*' | cut -d: -f2)
close "$(nll "$TMP/v10")" "$want" && ok || bad "eval step 10 --split val: $(nll "$TMP/v10"), the run logged $want"
"$BIN" eval "$R" --split train > "$TMP/t" 2> /dev/null && grep -q "split train, 16 windows of 32 tokens (spread evenly) of its [0-9]* training windows" "$TMP/t" \
  && [ -n "$(nll "$TMP/t")" ] && ok || { bad "eval --split train"; cat "$TMP/t"; }
"$BIN" eval "$R" --split val --windows all > "$TMP/all" 2> /dev/null
n=$(grep -o "of its [0-9]* validation windows" "$TMP/all" | grep -o "[0-9]*")
[ -n "$n" ] && grep -q "split val, $n windows" "$TMP/all" && grep -q "scored $((n * 32)) tokens" "$TMP/all" \
  && ok || { bad "--windows all"; cat "$TMP/all"; }
"$BIN" eval "$R" --split val --windows 3 > "$TMP/w3" 2> /dev/null && grep -q "scored 96 tokens" "$TMP/w3" \
  && ok || { bad "--windows 3"; cat "$TMP/w3"; }
# the token cache is rebuilt when missing (same figure), a missing corpus is named
rm -f "$R"/tokens/text-*.tok
"$BIN" eval "$R" --split val > "$TMP/v20b" 2> "$TMP/err" && grep -q "^encoding $TMP/corpus.txt (.*) -> $R/tokens/text-" "$TMP/err" \
  && [ "$(nll "$TMP/v20b")" = "$(nll "$TMP/v20")" ] && ok || { bad "token cache rebuilt"; cat "$TMP/err"; }
mv "$TMP/corpus.txt" "$TMP/corpus.moved"
expect_fail "corpus missing" 1 "the run's data.text file $TMP/corpus.txt does not exist" -- "$BIN" eval "$R" --split val
grep -q "^hint: .*relative to the directory training ran in" "$TMP/err" && ok || bad "corpus missing: no hint"
mv "$TMP/corpus.moved" "$TMP/corpus.txt"
expect_fail "--split on an export" 1 "hf: --split needs a checkpoint or a run directory" -- "$BIN" eval "$TMP/hf" --split val
expect_fail "--split bogus" 2 "--split must be val or train, got 'test'" -- "$BIN" eval "$R" --split test
expect_fail "--split with --ctx" 2 "apply to --text only" -- "$BIN" eval "$R" --split val --ctx 16
expect_fail "--windows without --split" 2 "--windows applies to --split only" -- "$BIN" eval "$R" --text "$TMP/corpus.txt" --windows 2
expect_fail "--windows 0" 2 "--windows needs an integer >= 1 or all" -- "$BIN" eval "$R" --split val --windows 0
expect_fail "--text and --split" 2 "one of --text FILE or --split" -- "$BIN" eval "$R" --split val --text "$TMP/corpus.txt"
expect_fail "neither --text nor --split" 2 "one of --text FILE or --split" -- "$BIN" eval "$R"

# ---- eval --text on a training text: a warning ----
WARN="moetrain: warning: .* is the run's training text $TMP/corpus.txt .*not a held-out score"
"$BIN" eval "$R" --text "$TMP/corpus.txt" --ctx 32 > /dev/null 2> "$TMP/err"
grep -qE "$WARN" "$TMP/err" && grep -q "^hint: .*--split val" "$TMP/err" && ok || { bad "no warning for the training text"; cat "$TMP/err"; }
cp "$TMP/corpus.txt" "$TMP/copy.txt"
"$BIN" eval "$CK" --text "$TMP/copy.txt" --ctx 32 > /dev/null 2> "$TMP/err"
grep -qE "$WARN" "$TMP/err" && ok || { bad "no warning for a copy of the training text"; cat "$TMP/err"; }
tail -c 20000 "$SRC/data/tinyshakespeare.txt" > "$TMP/other.txt"
"$BIN" eval "$R" --text "$TMP/other.txt" --ctx 32 > /dev/null 2> "$TMP/err"
! grep -q "warning" "$TMP/err" && ok || { bad "a warning for a text the run did not train on"; cat "$TMP/err"; }

# ---- progress: on a terminal only ----
if command -v script > /dev/null; then
  script -qec "'$BIN' eval '$R' --split val --windows all" /dev/null > "$TMP/tty" 2>&1
  grep -q $'\reval: [0-9]*/'"$n"' windows' "$TMP/tty" && grep -q "mean NLL" "$TMP/tty" \
    && ok || { bad "no progress on a terminal"; cat -A "$TMP/tty" | head -5; }
  script -qec "'$BIN' eval '$R' --text '$TMP/other.txt' --ctx 32" /dev/null > "$TMP/tty" 2>&1
  grep -q $'\reval: [0-9]*/[0-9]* windows' "$TMP/tty" && ok || bad "no progress for --text on a terminal"
else
  bad "script(1) is missing (util-linux): the terminal progress is untested"
fi
"$BIN" eval "$R" --split val --windows all > "$TMP/out" 2> "$TMP/err"
! grep -q $'\r' "$TMP/err" "$TMP/out" && ok || bad "\\r progress lines in a pipe"

echo "test_run_commands.sh: $pass passed, $fail failed"
[ "$fail" = 0 ]
