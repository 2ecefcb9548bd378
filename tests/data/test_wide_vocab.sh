#!/usr/bin/env bash
# test_wide_vocab.sh: a vocabulary above 65536 tokens trains end to end with 32-bit ids.
# A byte-level BPE tokenizer of 65993 tokens is written by hand (its 65736 merges: every
# byte pair, then 200 three-byte tokens), so "!\xff" encodes to id 65569. `data encode`
# writes a shard of 32-bit ids (its header says width 4) holding that id; a tiny model
# trains 3 steps on it, from data.shards and from data.text, starting near the uniform loss
# ln(65993) = 11.10.
# Usage: test_wide_vocab.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_wide_vocab.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?run through ctest}
. "$SRC/tests/testlib.sh"

M=65736; V=$((256 + M + 1))
awk -v M=$M 'BEGIN { print "moetrain-bpe 1"; print "vocab_size " 256 + M + 1;
  print "special " 256 + M " <|endoftext|>"; print "merges " M;
  for (r = 0; r < M; r++) if (r < 65536) print r % 256, int(r / 256); else print 256 + r - 65536, r % 256 }' \
  > "$TMP/wide.bpe"
for i in $(seq 1 2000); do printf 'word%d!\xff\nthe cat;\xfe\n' "$i"; done > "$TMP/w.txt"
run "$TMP/enc.log" "$BIN" data encode --tokenizer "$TMP/wide.bpe" --out "$TMP/w.tok" "$TMP/w.txt"
grep -q "32-bit ids" "$TMP/enc.log" && ok || bad "encode did not report 32-bit ids"
# header: version 2 at byte 8, vocab at 12, width 4 at 32
read -r ver vocab <<< "$(od -A n -t u4 -j 8 -N 8 "$TMP/w.tok")"
width=$(od -A n -t u4 -j 32 -N 4 "$TMP/w.tok" | tr -d ' ')
[ "$ver" = 2 ] && [ "$vocab" = $V ] && [ "$width" = 4 ] && ok || bad "header: version $ver vocab $vocab width $width"
n65569=$(od -A n -t u4 -j 40 -v "$TMP/w.tok" | tr -s ' ' '\n' | grep -cx 65569)
[ "$n65569" = 2000 ] && ok || bad "id 65569 appears $n65569 times, want 2000"

cat > "$TMP/c.yaml" <<YAML
model: {vocab_size: $V, dim: 16, n_layers: 1, n_heads: 2, n_kv_heads: 1, head_dim: 8}
moe: {n_experts: 2, top_k: 1, hidden: 16}
train: {seq_len: 16, micro_batch: 4, steps: 3, log_every: 1, eval_every: 3, eval_batches: 1}
optim: {warmup_steps: 1}
data: {tokenizer: $TMP/wide.bpe, shards: [$TMP/w.tok]}
YAML
first_loss() { grep -o '"loss":[0-9.]*' "$1/metrics.jsonl" | head -1 | cut -d: -f2; }
run "$TMP/t1.log" "$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/r1"
run "$TMP/t2.log" "$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/r2" --set 'data.shards=[]' \
  --set "data.text=[$TMP/w.txt]"
for r in r1 r2; do
  l=$(first_loss "$TMP/$r")
  # the first loss of a freshly initialised model is about ln(V) (init_std 0.02 logits)
  awk -v l="${l:-0}" 'BEGIN { exit !(l > 10.9 && l < 11.3) }' && ok || bad "$r: first loss $l, want ~11.10"
  grep -q '"step":3' "$TMP/$r/metrics.jsonl" && ok || bad "$r: did not reach step 3"
done
# the text run encoded a 32-bit cache of its own
w2=$(od -A n -t u4 -j 32 -N 4 "$TMP"/r2/tokens/text-*.tok | tr -d ' ')
[ "$w2" = 4 ] && ok || bad "the cached text shard has width $w2"
echo "test_wide_vocab: $pass passed, $fail failed"
[ $fail = 0 ]
