#!/usr/bin/env bash
# test_tokenizer_hf.sh: a Hugging Face tokenizer.json through the moetrain program.
# - `tokenizer info` names it; `tokenizer encode` prints the hand-derived ids of the
#   fixture (tests/data/test_tokenizer_hf.c derives them); a refused file (unknown pattern)
#   exits 1 naming the file and the pattern.
# - a tiny run with data.tokenizer = the fixture: the log names the tokenizer; a wrong
#   model.vocab_size is refused with the size to set; the checkpoint keeps the file: the HF
#   export's tokenizer.json is the fixture byte for byte; `sample` from the checkpoint, the
#   HF directory and the GGUF file prints the same text; `data encode` with the file makes
#   a shard a run accepts.
# Usage: test_tokenizer_hf.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_tokenizer_hf.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?run through ctest}
. "$SRC/tests/testlib.sh"
FIX=$SRC/tests/data/fixtures/tiny_llama3.json
cp "$FIX" "$TMP/tok.json"

"$BIN" tokenizer info "$TMP/tok.json" > "$TMP/out" 2>&1 \
  && grep -q "tok.json: tokenizer.json (byte-level BPE), 272 tokens, 13 merges, pattern Llama 3 / cl100k, end of text <|end_of_text|> = 271" "$TMP/out" \
  && ok || { bad "tokenizer info"; cat "$TMP/out"; }
# ids derived by hand in test_tokenizer_hf.c (test_fixture_ids)
printf "Hello the world's 12345\n\n  x" > "$TMP/t.txt"
got=$("$BIN" tokenizer encode --tokenizer "$TMP/tok.json" "$TMP/t.txt")
[ "$got" = "39 268 78 263 256 262 220 260 259 258 220 257" ] && ok || bad "tokenizer encode gave '$got'"
got=$(printf "Hell" | "$BIN" tokenizer encode --tokenizer "$TMP/tok.json")
[ "$got" = "266" ] && ok || bad "tokenizer encode (stdin) gave '$got'"
sed 's/p{N}{1,3}/p{N}{1,4}/' "$FIX" > "$TMP/bad.json"
"$BIN" tokenizer info "$TMP/bad.json" > "$TMP/out" 2> "$TMP/err"; rc=$?
[ $rc = 1 ] && grep -q "bad.json: pre_tokenizer Split pattern is not one moetrain knows" "$TMP/err" \
  && grep -q "^hint: " "$TMP/err" && ok || { bad "refused pattern: exit $rc"; cat "$TMP/err"; }
"$BIN" tokenizer encode > "$TMP/out" 2>&1; [ $? = 2 ] && ok || bad "encode without --tokenizer: not exit 2"

head -c 40000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
cat > "$TMP/c.yaml" <<YAML
model: {vocab_size: 272, dim: 16, n_layers: 1, n_heads: 2, n_kv_heads: 1, head_dim: 8}
moe: {n_experts: 2, top_k: 1, hidden: 24}
train: {seq_len: 16, micro_batch: 4, steps: 4, log_every: 2, eval_every: 0, eval_batches: 1}
optim: {lr: 3e-3, warmup_steps: 1, min_lr: 3e-4}
data: {tokenizer: $TMP/tok.json, text: [$TMP/corpus.txt]}
run: {dir: $TMP/run}
YAML
"$BIN" "$TMP/c.yaml" --set model.vocab_size=300 --set run.dir="$TMP/bad" > "$TMP/out" 2> "$TMP/err"
grep -q "tokenizer has 272 tokens but model.vocab_size is 300" "$TMP/err" \
  && grep -q "set model.vocab_size to 272" "$TMP/err" && ok || { bad "vocab mismatch"; cat "$TMP/err"; }
run "$TMP/train.log" "$BIN" "$TMP/c.yaml"
grep -q "^tokenizer: $TMP/tok.json: tokenizer.json (byte-level BPE), 272 tokens" "$TMP/train.log" \
  && ok || { bad "the log does not name the tokenizer"; head -20 "$TMP/train.log"; }
CK=$TMP/run/checkpoints/step_00000004.h5
run "$TMP/export.log" "$BIN" export "$CK" "$TMP/hf" --format hf
cmp -s "$FIX" "$TMP/hf/tokenizer.json" && ok || bad "the HF export's tokenizer.json is not the file trained with"
grep -q '"eos_token": "<|end_of_text|>"' "$TMP/hf/tokenizer_config.json" && ok \
  || bad "tokenizer_config.json does not name <|end_of_text|>"
grep -q '"eos_token_id": 271' "$TMP/hf/config.json" && ok || bad "config.json eos_token_id is not 271"
run "$TMP/export2.log" "$BIN" export "$CK" "$TMP/m.gguf" --format gguf
# the same tokenizer back from the checkpoint, the HF directory and the GGUF file (rebuilt
# from its tokens, types, merges and tokenizer.ggml.pre): the same sampled text
for m in "$CK" "$TMP/hf" "$TMP/m.gguf"; do
  "$BIN" sample "$m" --prompt "Hello the" --max-tokens 8 --seed 1 > "$TMP/s_$(basename "$m")" 2> "$TMP/err" \
    || { bad "sample from $m"; cat "$TMP/err"; }
done
cmp -s "$TMP/s_$(basename "$CK")" "$TMP/s_hf" && cmp -s "$TMP/s_hf" "$TMP/s_m.gguf" && ok \
  || bad "sample from the checkpoint, HF directory and GGUF differ"
run "$TMP/enc.log" "$BIN" data encode --tokenizer "$TMP/tok.json" --out "$TMP/c.tok" "$TMP/corpus.txt"
run "$TMP/train2.log" "$BIN" "$TMP/c.yaml" --set 'data.text=[]' --set "data.shards=[$TMP/c.tok]" \
  --set run.dir="$TMP/run2"

echo "test_tokenizer_hf.sh: $pass passed, $fail failed"
[ "$fail" = 0 ]
