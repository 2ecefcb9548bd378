#!/usr/bin/env bash
# test_faults.sh: bad inputs and faults never crash the trainer or lose work (the cases
# that can be automated here; others live in test_cli.sh, test_resume.sh,
# test_layout.sh and the unit tests). Each case: clear message, non-zero exit, and what was
# on disk before is still loadable.  Usage: test_faults.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_faults.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?run through ctest}
. "$SRC/tests/testlib.sh"
expect() {   # NAME WANT_EXIT PATTERN -- command...
  local name=$1 want=$2 pat=$3; shift 4
  "$@" > "$TMP/out" 2> "$TMP/err"; local rc=$?
  [ "$rc" = "$want" ] && ok || { bad "$name: exit $rc, want $want"; tail -3 "$TMP/err"; }
  grep -qE -- "$pat" "$TMP/err" && ok || { bad "$name: stderr lacks /$pat/"; tail -3 "$TMP/err"; }
}

head -c 60000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
cat > "$TMP/c.yaml" <<YAML
model: {vocab_size: 320, dim: 32, n_layers: 1, n_heads: 4, n_kv_heads: 2, head_dim: 8}
moe: {n_experts: 4, top_k: 2, hidden: 48}
train: {seq_len: 32, micro_batch: 4, steps: 10, log_every: 5, eval_every: 0, eval_batches: 1}
data: {tokenizer: $TMP/tok.bpe, text: [$TMP/corpus.txt]}
run: {dir: $TMP/run}
checkpoint: {every: 5, keep: 3}
YAML
"$BIN" "$TMP/c.yaml" > "$TMP/first.log" 2>&1 && ok || { bad "baseline run failed"; cat "$TMP/first.log"; }
good="$TMP/run/checkpoints/step_00000010.h5"
[ -f "$good" ] && ok || bad "no baseline checkpoint"
sum_before=$(md5sum "$good" | cut -d' ' -f1)

# Empty corpus file.
: > "$TMP/empty.txt"
expect "empty corpus" 1 "empty.txt.*empty" -- "$BIN" "$TMP/c.yaml" --set "data.text=[$TMP/empty.txt]" --set "data.tokenizer=$TMP/t_empty.bpe" --set "run.dir=$TMP/r_empty"
# Tokenizer / model vocabulary mismatch.
expect "vocab mismatch" 1 "tok.bpe: tokenizer has 320 tokens but model.vocab_size is 400" -- "$BIN" "$TMP/c.yaml" --set model.vocab_size=400 --set "run.dir=$TMP/r_vocab"
# A shard whose ids exceed the model's vocabulary (encoded with a bigger tokenizer).
"$BIN" tokenizer train --vocab 600 --out "$TMP/tok600.bpe" "$TMP/corpus.txt" > /dev/null 2>&1
"$BIN" data encode --tokenizer "$TMP/tok600.bpe" --out "$TMP/big.tok" "$TMP/corpus.txt" > /dev/null 2>&1
expect "shard vocab" 1 "big.tok: shard was encoded with a 600-token vocabulary" -- "$BIN" "$TMP/c.yaml" --set "data.text=[]" --set "data.shards=[$TMP/big.tok]" --set "run.dir=$TMP/r_shard"
# Output directory not writable (a regular file where the run directory should be).
: > "$TMP/afile"
expect "run dir not writable" 1 "afile.*(Not a directory|cannot)" -- "$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/afile/run"
# Checkpoint from another model shape.
expect "other shape" 1 "model.n_layers: 1 -> 2" -- "$BIN" "$TMP/c.yaml" --set model.n_layers=2 --resume "$good"
# Bit-flipped checkpoint: flip one byte in the middle of the file.
cp "$good" "$TMP/flip.h5"
size=$(stat -c %s "$TMP/flip.h5"); off=$((size / 2))
printf '\xff' | dd of="$TMP/flip.h5" bs=1 seek=$off count=1 conv=notrunc 2> /dev/null
"$BIN" ckpt info "$TMP/flip.h5" > /dev/null 2> "$TMP/err"; rc=$?
[ $rc = 1 ] && grep -q "flip.h5" "$TMP/err" && ok || { bad "bit flip not detected (rc $rc)"; cat "$TMP/err"; }

# Disk full during a checkpoint write (a 400 KiB file-size limit: the checkpoint does not
# fit): clear error, non-zero exit, no partial file under a final name, the previous
# checkpoint unchanged and loadable.
( ulimit -f 400; "$BIN" "$TMP/c.yaml" --set train.steps=15 --resume auto > "$TMP/out" 2> "$TMP/err" ); rc=$?
[ $rc = 1 ] && ok || { bad "disk full: exit $rc"; tail -3 "$TMP/err"; }
grep -qiE "step_00000015.h5.*(File too large|write|flush|close)" "$TMP/err" && ok || { bad "disk full: message"; cat "$TMP/err"; }
[ ! -e "$TMP/run/checkpoints/step_00000015.h5" ] && ok || bad "disk full: a partial checkpoint under its final name"
[ "$(md5sum "$good" | cut -d' ' -f1)" = "$sum_before" ] && ok || bad "disk full: previous checkpoint changed"
"$BIN" ckpt info "$good" > /dev/null 2>&1 && ok || bad "disk full: previous checkpoint not loadable"

# kill -9 of one rank under mpirun: every rank ends (no hang), then --resume auto continues.
"$MPIRUN" -n 2 "$BIN" "$TMP/c.yaml" --set train.steps=100000 --set checkpoint.every=20 --set "run.dir=$TMP/k" > "$TMP/k.log" 2>&1 &
mp=$!
for i in $(seq 1 150); do sleep 0.2; [ -n "$(ls "$TMP/k/checkpoints" 2>/dev/null | grep -v tmp)" ] && break; done
victim=$(pgrep -f "moetrain $TMP/c.yaml" | grep -v "^$mp\$" | tail -1)
kill -9 "$victim" 2> /dev/null
ended=no
for i in $(seq 1 150); do sleep 0.2; if ! kill -0 $mp 2> /dev/null; then ended=yes; break; fi; done
[ $ended = yes ] && ok || { bad "mpirun still running 30 s after kill -9 of a rank"; kill -9 $mp; pkill -9 -f "moetrain $TMP/c.yaml"; }
wait $mp 2> /dev/null
[ -z "$(pgrep -f "moetrain $TMP/c.yaml")" ] && ok || { bad "ranks left running"; pkill -9 -f "moetrain $TMP/c.yaml"; }
last=$(ls "$TMP/k/checkpoints" | grep -v tmp | sort | tail -1 | sed 's/step_0*\([0-9]*\).h5/\1/')
"$MPIRUN" -n 2 "$BIN" "$TMP/c.yaml" --set train.steps=100000 --set "run.dir=$TMP/k" --resume auto --stop-at $((last + 2)) > "$TMP/k2.log" 2>&1 \
  && grep -q "resumed from" "$TMP/k2.log" && ok || { bad "no resume after kill -9 of a rank"; tail -5 "$TMP/k2.log"; }

# SIGTERM (and SIGINT): finish the step, save a checkpoint, exit 0; --resume auto continues.
for sig in TERM INT; do
  "$BIN" "$TMP/c.yaml" --set train.steps=100000 --set checkpoint.every=0 --set "run.dir=$TMP/s$sig" > "$TMP/s.log" 2>&1 &
  pid=$!
  for i in $(seq 1 100); do sleep 0.1; grep -q "^step" "$TMP/s.log" && break; done
  kill -$sig $pid; wait $pid; rc=$?
  [ $rc = 0 ] && ok || { bad "SIG$sig: exit $rc"; tail -3 "$TMP/s.log"; }
  grep -q "caught signal .*checkpoint saved at step" "$TMP/s.log" && ok || { bad "SIG$sig: no save message"; tail -3 "$TMP/s.log"; }
  "$BIN" ckpt info "$(ls "$TMP/s$sig/checkpoints/"step_*.h5 | tail -1)" > /dev/null 2>&1 && ok || bad "SIG$sig: checkpoint not loadable"
done

# Under mpirun: SIGUSR1 to mpirun (which forwards it to every rank) stops the job cleanly.
"$MPIRUN" -n 2 "$BIN" "$TMP/c.yaml" --set train.steps=100000 --set checkpoint.every=0 --set "run.dir=$TMP/su" > "$TMP/su.log" 2>&1 &
mp=$!
for i in $(seq 1 150); do sleep 0.2; grep -q "^step" "$TMP/su.log" && break; done
kill -USR1 $mp; wait $mp; rc=$?
[ $rc = 0 ] && grep -q "caught signal .*checkpoint saved" "$TMP/su.log" && ok || { bad "mpirun SIGUSR1: exit $rc"; tail -3 "$TMP/su.log"; }

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
