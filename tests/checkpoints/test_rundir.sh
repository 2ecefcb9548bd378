#!/usr/bin/env bash
# test_rundir.sh: a run directory belongs to one run (checkpoints/rundir.h), end to end
# through the moetrain program on a tiny model.
# - A fresh start in a run.dir holding another run's files exits 2 naming the run.dir and
#   both ways on, and changes no byte, name or mtime there (also under mpirun -n 2).
# - A second live run in the same run.dir exits 2 naming the first one's pid and host.
# - Branching: --resume of an older checkpoint with --stop-at keeps the abandoned branch's
#   same-step file (set aside), retention (keep 1) keeps the resumed-from, unreadable and
#   other-branch files; --resume auto then takes the branch over the abandoned newer step
#   (saying so), and retention deletes older members of the lineage only.
# - --resume auto skips an unreadable newest checkpoint (truncated; a byte flipped in its data)
#   with the error and continues from the previous one; with only unreadable checkpoints it exits 2 and starts nothing.
# - --stop-at at or below the resumed step exits 2 and writes nothing.
# - The gradient-spike detector's state survives a resume: the same steps are flagged.
# - A failed write to metrics.jsonl / eval.jsonl / config.yaml stops the run at once with the
#   path and the OS reason.
# Usage: test_rundir.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_rundir.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?run through ctest}
. "$SRC/tests/testlib.sh"
expect() {   # NAME WANT_EXIT PATTERN -- command...: exit code and stderr pattern
  local name=$1 want=$2 pat=$3; shift 4
  "$@" > "$TMP/out" 2> "$TMP/err"; local rc=$?
  [ "$rc" = "$want" ] && ok || { bad "$name: exit $rc, want $want"; tail -3 "$TMP/err"; }
  grep -qE -- "$pat" "$TMP/err" && ok || { bad "$name: stderr lacks /$pat/"; tail -3 "$TMP/err"; }
}
# every file and directory under $1 with its checksum, size and mtime
state() { (cd "$1" && find . -printf '%p %s %T@\n' | sort && find . -type f -print0 | sort -z | xargs -0 md5sum); }
gen_of() { h5dump -a "$2" "$1" 2> /dev/null | sed -n 's/^ *(0): //p'; }

head -c 60000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
cat > "$TMP/c.yaml" <<YAML
model: {vocab_size: 320, dim: 32, n_layers: 1, n_heads: 4, n_kv_heads: 2, head_dim: 8}
moe: {n_experts: 4, top_k: 2, hidden: 48}
train: {seq_len: 32, micro_batch: 4, steps: 40, log_every: 10, eval_every: 0, eval_batches: 1}
optim: {lr: 3e-3, warmup_steps: 5, min_lr: 3e-4}
data: {tokenizer: $TMP/tok.bpe, text: [$TMP/corpus.txt]}
checkpoint: {every: 10, keep: 10}
YAML
R=$TMP/run; C=$R/checkpoints
run "$TMP/first.log" "$BIN" "$TMP/c.yaml" --set "run.dir=$R"
[ "$(LC_ALL=C ls "$C" | tr '\n' ' ')" = "step_00000010.h5 step_00000020.h5 step_00000030.h5 step_00000040.h5 " ] \
  && ok || { bad "first run: unexpected checkpoints"; ls "$C"; }

# ---- a fresh start over another run's files: exit 2, nothing touched ----
before=$(state "$R")
expect "fresh start refused" 2 "run.dir $R already holds a run" -- "$BIN" "$TMP/c.yaml" --set "run.dir=$R"
grep -q "hint: .*--resume auto.*--set run.dir=" "$TMP/err" && ok || { bad "refusal: no hint with both ways on"; cat "$TMP/err"; }
expect "fresh start refused (2 ranks)" 2 "already holds a run" -- "$MPIRUN" -n 2 "$BIN" "$TMP/c.yaml" --set "run.dir=$R"
[ "$(grep -c 'moetrain: error' "$TMP/err")" = 1 ] && ok || bad "2 ranks: the refusal is not printed exactly once"
[ "$(state "$R")" = "$before" ] && ok || { bad "a refused fresh start changed the run directory"; diff <(echo "$before") <(state "$R") | head; }

# ---- a second live run: exit 2 naming the holder ----
"$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/live" --set train.steps=1000000 --set checkpoint.every=0 > "$TMP/live.log" 2>&1 &
live=$!
for i in $(seq 1 150); do sleep 0.1; grep -q "^step" "$TMP/live.log" && break; done
expect "second live run" 2 "in use by another training: pid $live on host $(hostname)" -- "$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/live" --resume auto
kill -TERM $live; wait $live; rc=$?
[ $rc = 0 ] && ok || { bad "the first live run did not end cleanly ($rc)"; tail -3 "$TMP/live.log"; }
grep -q "in use" "$TMP/live.log" && bad "the first run was disturbed" || ok

# ---- a branch from an older checkpoint, retention, and --resume auto's choice ----
head -c 3000 "$C/step_00000010.h5" > "$TMP/t.h5" && mv "$TMP/t.h5" "$C/step_00000010.h5"   # unreadable
run "$TMP/branch.log" "$BIN" "$TMP/c.yaml" --set "run.dir=$R" --set checkpoint.keep=1 --resume "$C/step_00000020.h5" --stop-at 30
grep -q "step_00000030.h5 is generation 1's .*kept as .*step_00000030.gen1.h5" "$TMP/branch.log" && ok || bad "branch: no note on the set-aside file"
for f in step_00000010.h5 step_00000020.h5 step_00000030.h5 step_00000030.gen1.h5 step_00000040.h5; do
  [ -f "$C/$f" ] && ok || bad "branch with keep 1: $f is gone (unreadable, resumed-from, or another branch's)"
done
[ "$(gen_of "$C/step_00000030.h5" lineage_gen)" = 2 ] && [ "$(gen_of "$C/step_00000030.h5" parent_step)" = 20 ] \
  && ok || bad "branch: step 30 does not record generation 2 and parent step 20"
run "$TMP/auto.log" "$BIN" "$TMP/c.yaml" --set "run.dir=$R" --set checkpoint.keep=1 --set train.steps=50 --resume auto
grep -q "resumed from $C/step_00000030.h5 at step 30" "$TMP/auto.log" && ok || { bad "--resume auto did not take the branch"; grep resumed "$TMP/auto.log"; }
grep -q "skipped step_00000040.h5 (generation 1): not on the lineage .*abandoned branch" "$TMP/auto.log" && ok || bad "--resume auto: no note on the abandoned step 40"
# retention: 50 is the newest of the lineage, 30 was resumed from; 40 and 20 were older
# lineage members; 10 is unreadable; generation 1's 30 and 40 are another branch
[ "$(LC_ALL=C ls "$C" | tr '\n' ' ')" = "step_00000010.h5 step_00000030.gen1.h5 step_00000030.h5 step_00000040.gen1.h5 step_00000050.h5 " ] \
  && ok || { bad "retention after the branch: unexpected files"; ls "$C"; }

# ---- --resume auto and unreadable checkpoints ----
head -c 3000 "$C/step_00000050.h5" > "$C/step_00000060.h5"
run "$TMP/skip.log" "$BIN" "$TMP/c.yaml" --set "run.dir=$R" --set train.steps=52 --resume auto
grep -q "skipped step_00000060.h5: unreadable: .*step_00000060.h5" "$TMP/skip.log" && ok || bad "no note on the unreadable newest file"
grep -q "resumed from $C/step_00000050.h5 at step 50" "$TMP/skip.log" && ok || bad "did not continue from the previous valid checkpoint"
# a complete newest checkpoint with one byte flipped in its tensor data: the seal refuses it,
# and --resume auto continues from the one before, saying so
F="$TMP/flipped"; cp -r "$R" "$F"; rm -f "$F/.lock"
f52="$F/checkpoints/step_00000052.h5"; sz=$(stat -c %s "$f52"); off=$((sz / 2))
printf "$(printf '\\x%02x' $(( $(od -An -tu1 -j $off -N1 "$f52") ^ 255 )))" |
  dd of="$f52" bs=1 seek=$off conv=notrunc status=none
run "$TMP/flip.log" "$BIN" "$TMP/c.yaml" --set "run.dir=$F" --set train.steps=51 --resume auto --stop-at 51
grep -q "skipped step_00000052.h5: unreadable: .*not what was written: SHA-256" "$TMP/flip.log" && ok || { bad "no note on the flipped newest file"; grep -i skip "$TMP/flip.log"; }
grep -q "resumed from $F/checkpoints/step_00000050.h5 at step 50" "$TMP/flip.log" && ok || bad "flipped tip: did not continue from step 50"
mkdir -p "$TMP/bad/checkpoints"; echo junk > "$TMP/bad/checkpoints/step_00000010.h5"
expect "only unreadable checkpoints" 2 "step_00000010.h5.*will not start from scratch" -- "$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/bad" --resume auto
grep -q "hint: .*--resume PATH" "$TMP/err" && ok || bad "unreadable only: no hint"
[ ! -e "$TMP/bad/metrics.jsonl" ] && [ "$(cat "$TMP/bad/checkpoints/step_00000010.h5")" = junk ] && ok || bad "unreadable only: something was written"

# ---- --stop-at at or below the resumed step ----
n=$(wc -l < "$R/metrics.jsonl")
for s in 30 52; do
  expect "--stop-at $s after step 52" 2 "--stop-at $s is not after step 52" -- "$BIN" "$TMP/c.yaml" --set "run.dir=$R" --set train.steps=60 --resume auto --stop-at $s
done
[ "$(wc -l < "$R/metrics.jsonl")" = "$n" ] && [ ! -e "$C/step_00000053.h5" ] && ok || bad "a refused --stop-at trained"

# ---- the spike detector resumes: the same steps flagged ----
# spike_factor 1 flags every step whose gradient norm exceeds its running mean, so the flags
# after the resume depend on the restored mean and count
SETS=(--set train.steps=30 --set train.spike_factor=1 --set checkpoint.every=0)
RESUME_AT=15 exact_resume sp
SETS=()
flags() { grep '"lm_loss"' "$1/metrics.jsonl" | grep '"grad_spike":true' | grep -o '"step":[0-9]*' | tr '\n' ' '; }
after=$(grep '"lm_loss"' "$TMP/sp-a/metrics.jsonl" | sed -n '16,25p' | grep -c '"grad_spike":true')
[ "$after" -gt 0 ] && ok || bad "spike: no flagged step within 10 steps after the resume point (the test shows nothing)"
[ "$(flags "$TMP/sp-a")" = "$(flags "$TMP/sp-b")" ] && ok || { bad "spike flags differ after resume"; echo "straight: $(flags "$TMP/sp-a")"; echo "resumed:  $(flags "$TMP/sp-b")"; }

# ---- a full disk stops the run at the first failed log write ----
F=$TMP/sp-b
ln -sf /dev/full "$F/metrics.jsonl"
expect "metrics.jsonl full" 1 "$F/metrics.jsonl: write failed: No space left on device" -- "$BIN" "$TMP/c.yaml" --set "run.dir=$F" --set train.steps=40 --set checkpoint.every=1 --resume auto
[ ! -e "$F/checkpoints/step_00000031.h5" ] && ok || bad "metrics.jsonl full: the run went on to a checkpoint"
rm "$F/metrics.jsonl"; ln -sf /dev/full "$F/eval.jsonl"
expect "eval.jsonl full" 1 "$F/eval.jsonl: write failed: No space left on device" -- "$BIN" "$TMP/c.yaml" --set "run.dir=$F" --set train.steps=40 --set checkpoint.every=1 --set train.eval_every=1 --resume auto
[ ! -e "$F/checkpoints/step_00000031.h5" ] && ok || bad "eval.jsonl full: the run went on to a checkpoint"
rm "$F/eval.jsonl"
( ulimit -f 2; "$BIN" "$TMP/c.yaml" --set "run.dir=$F" --set train.steps=40 --set checkpoint.every=1 --resume auto > "$TMP/out" 2> "$TMP/err" ); rc=$?
[ $rc = 1 ] && grep -q "config.yaml.*File too large" "$TMP/err" && ok || { bad "config.yaml over the file-size limit: exit $rc"; cat "$TMP/err"; }

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
