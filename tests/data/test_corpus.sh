#!/usr/bin/env bash
# test_corpus.sh: preparing and training on a multi-file corpus, through the program.
# - `data encode`: the shard is byte-identical with 1 and 2 threads and says its MB/s; a
#   progress line (MB/s, ETA) is drawn on a terminal only (script(1) gives one), never in
#   a log; --records jsonl makes one document per record; bad --records / --max-bytes
#   values are refused (exit 2).
# - `tokenizer train --max-bytes`: trains on a sample and says so; the same tokenizer with
#   1 and 2 threads.
# - A format-1 shard (what earlier versions wrote) still trains.
# - A weighted mixture of two text files with a separate validation book: the log names the
#   sources, their shares and the validation tokens; exact resume (losses, parameters and
#   moments bit for bit) on 1 rank and on mpirun -n 2.
# - A second run with the tokenizer file present says it is loaded, not trained.
# Usage: test_corpus.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_corpus.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?run through ctest}
. "$SRC/tests/testlib.sh"

head -c 120000 "$SRC/data/tinyshakespeare.txt" > "$TMP/a.txt"
tail -c 60000 "$SRC/data/tinyshakespeare.txt" > "$TMP/b.txt"
head -c 40000 "$SRC/data/gutenberg/carroll-alice.txt" > "$TMP/book.txt"
run "$TMP/tok.log" "$BIN" tokenizer train --vocab 320 --out "$TMP/tok.bpe" "$TMP/a.txt" "$TMP/b.txt"

# -- encode: threads, rate, progress only on a terminal
OPENBLAS_NUM_THREADS=1 run "$TMP/e1.log" "$BIN" data encode --tokenizer "$TMP/tok.bpe" --out "$TMP/t1.tok" "$TMP/a.txt" "$TMP/b.txt"
OPENBLAS_NUM_THREADS=2 run "$TMP/e2.log" "$BIN" data encode --tokenizer "$TMP/tok.bpe" --out "$TMP/t2.tok" "$TMP/a.txt" "$TMP/b.txt"
cmp -s "$TMP/t1.tok" "$TMP/t2.tok" && ok || bad "the shard differs between 1 and 2 threads"
grep -q "2 document(s), .* MB/s on 2 thread(s)" "$TMP/e2.log" && ok || { bad "encode summary"; cat "$TMP/e2.log"; }
grep -q $'\r' "$TMP/e2.log" && bad "progress drawn into a log (stderr is not a terminal)" || ok
script -qec "'$BIN' data encode --tokenizer '$TMP/tok.bpe' --out '$TMP/t3.tok' '$TMP/a.txt'" /dev/null > "$TMP/tty.log" 2>&1
grep -q $'\rencode: .* MB/s, ETA' "$TMP/tty.log" && ok || { bad "no progress line on a terminal"; cat -A "$TMP/tty.log" | head -3; }
printf '{"text": "one"}\n{"text": "two"}\n\n{"text": "three"}\n' > "$TMP/r.jsonl"
run "$TMP/j.log" "$BIN" data encode --tokenizer "$TMP/tok.bpe" --out "$TMP/j.tok" "$TMP/r.jsonl"
grep -q "3 document(s)" "$TMP/j.log" && ok || bad "jsonl: want 3 documents"
"$BIN" data encode --tokenizer "$TMP/tok.bpe" --out "$TMP/x.tok" --records lines "$TMP/a.txt" > "$TMP/err" 2>&1; rc=$?
[ $rc = 2 ] && grep -q "records must be auto, file, paragraph or jsonl" "$TMP/err" && ok || bad "bad --records: rc $rc"
"$BIN" tokenizer train --vocab 300 --out "$TMP/x.bpe" --max-bytes 10Q "$TMP/a.txt" > "$TMP/err" 2>&1; rc=$?
[ $rc = 2 ] && grep -q "max-bytes" "$TMP/err" && ok || bad "bad --max-bytes: rc $rc"

# -- tokenizer train --max-bytes: a sample, the same for 1 and 2 threads
OPENBLAS_NUM_THREADS=1 run "$TMP/m1.log" "$BIN" tokenizer train --vocab 300 --max-bytes 50k --out "$TMP/m1.bpe" "$TMP/a.txt" "$TMP/b.txt"
OPENBLAS_NUM_THREADS=2 run "$TMP/m2.log" "$BIN" tokenizer train --vocab 300 --max-bytes 50k --out "$TMP/m2.bpe" "$TMP/a.txt" "$TMP/b.txt"
grep -q "a sample of at most 50000 bytes" "$TMP/m1.log" && ok || bad "--max-bytes not reported"
cmp -s "$TMP/m1.bpe" "$TMP/m2.bpe" && ok || bad "--max-bytes tokenizer differs between 1 and 2 threads"
run "$TMP/m3.log" "$BIN" tokenizer train --vocab 300 --out "$TMP/m3.bpe" "$TMP/a.txt" "$TMP/b.txt"
cmp -s "$TMP/m1.bpe" "$TMP/m3.bpe" && bad "the 50 kB sample gave the full corpus' tokenizer" || ok

cat > "$TMP/c.yaml" <<YAML
model: {vocab_size: 320, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, head_dim: 8}
moe: {n_experts: 4, top_k: 2, hidden: 48}
train: {seq_len: 32, micro_batch: 8, steps: 20, log_every: 10, eval_every: 10, eval_batches: 2}
optim: {lr: 3e-3, warmup_steps: 5, min_lr: 3e-4}
data:
  tokenizer: $TMP/tok.bpe
  text: [{path: $TMP/a.txt, weight: 3}, $TMP/b.txt]
  val_text: [$TMP/book.txt]
checkpoint: {every: 0, keep: 2}
YAML

# -- a format-1 shard: the version-2 file's first 32 header bytes with version 1, then ids
{ head -c 8 "$TMP/t1.tok"; printf '\001\000\000\000'; tail -c +13 "$TMP/t1.tok" | head -c 20
  tail -c +41 "$TMP/t1.tok"; } > "$TMP/v1.tok"
[ $(($(stat -c %s "$TMP/v1.tok") + 8)) = "$(stat -c %s "$TMP/t1.tok")" ] && ok || bad "v1 fixture size"
run "$TMP/v1.log" "$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/v1" --set 'data.text=[]' \
  --set "data.shards=[$TMP/v1.tok]" --set 'data.val_text=[]' --set train.steps=2
grep -q '"step":2' "$TMP/v1/metrics.jsonl" 2>/dev/null && ok || bad "a format-1 shard did not train"

# -- the mixture: log lines, then exact resume on 1 and 2 ranks
run "$TMP/mix.log" "$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/mix" --set train.steps=2
grep -q "a mixture of 2 sources: $TMP/a.txt 75.0% (.* tokens), $TMP/b.txt 25.0%" "$TMP/mix.log" && ok \
  || { bad "mixture line"; grep -i "training:" "$TMP/mix.log"; }
grep -q "validation: [0-9]* tokens from data.val_text ($TMP/book.txt)" "$TMP/mix.log" && ok \
  || { bad "validation line"; grep "validation" "$TMP/mix.log"; }
grep -q "tokenizer: $TMP/tok.bpe, loaded (it exists, so it is not trained again" "$TMP/mix.log" && ok \
  || { bad "tokenizer line"; grep "tokenizer" "$TMP/mix.log"; }
RESUME_AT=10 exact_resume mix1
RESUME_AT=10 exact_resume mix2 timeout 300 "$MPIRUN" -n 2
# the two layouts compute the same batches: their first losses agree (float rounding of
# the reductions aside, 1e-5 relative)
l1=$(grep -o '"loss":[0-9.]*' "$TMP/mix1-a/metrics.jsonl" | head -1 | cut -d: -f2)
l2=$(grep -o '"loss":[0-9.]*' "$TMP/mix2-a/metrics.jsonl" | head -1 | cut -d: -f2)
awk -v a="${l1:-0}" -v b="${l2:-1}" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-5 * a) }' && ok \
  || bad "step 1 loss on 1 rank $l1 vs 2 ranks $l2"
echo "test_corpus: $pass passed, $fail failed"
[ $fail = 0 ]
