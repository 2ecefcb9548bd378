#!/usr/bin/env bash
# test_export.sh: export and inference through the moetrain program, on a 20-step tiny run.
# - export --format hf / gguf (f32): `moetrain logits` from the checkpoint, the HF directory
#   and the GGUF file are byte-identical float32 files; the text dump has one line per id.
# - eval (both protocols) and sample run and print what they promise.
# - a truncated checkpoint, a missing parent directory and an existing output fail with
#   exit 1, "moetrain: error:" and a hint, and leave nothing under the output name.
# - bad command lines exit 2.
# Usage: test_export.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_export.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?run through ctest}
. "$SRC/tests/testlib.sh"
expect_fail() {   # NAME WANT_EXIT PATTERN -- command...
  local name=$1 want=$2 pat=$3; shift 4
  "$@" >"$TMP/out" 2>"$TMP/err"; local rc=$?
  if [ "$rc" != "$want" ]; then bad "$name: exit $rc, want $want"; cat "$TMP/err"; return; fi
  if ! grep -qE -- "$pat" "$TMP/err"; then bad "$name: stderr lacks /$pat/"; cat "$TMP/err"; return; fi
  ok
}

if ! "$BIN" export --help >"$TMP/out" 2>&1 || ! grep -q -- "--format" "$TMP/out"; then
  echo "FAIL: moetrain has no export subcommand (train/main.c must dispatch cmd_export)"
  exit 1
fi

head -c 60000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
cat > "$TMP/c.yaml" <<YAML
model: {vocab_size: 320, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, head_dim: 8}
moe: {n_experts: 4, top_k: 2, hidden: 48}
train: {seq_len: 32, micro_batch: 8, steps: 20, log_every: 10, eval_every: 0, eval_batches: 1}
optim: {lr: 3e-3, warmup_steps: 5, min_lr: 3e-4}
data: {tokenizer: $TMP/tok.bpe, text: [$TMP/corpus.txt]}
run: {dir: $TMP/run}
YAML
"$BIN" "$TMP/c.yaml" > "$TMP/train.log" 2>&1 || { bad "training failed"; tail -5 "$TMP/train.log"; }
CK=$TMP/run/checkpoints/step_00000020.h5

for s in sample eval logits; do
  "$BIN" $s --help >"$TMP/out" 2>&1 && grep -q "usage: moetrain $s" "$TMP/out" && ok || bad "$s --help"
done
expect_fail "bad format" 2 "hf or gguf" -- "$BIN" export "$CK" "$TMP/x" --format onnx
expect_fail "bad dtype" 2 "dtype" -- "$BIN" export "$CK" "$TMP/x.gguf" --format gguf --dtype bf16
expect_fail "bad ids" 2 "ids" -- "$BIN" logits "$CK" --ids 1,x
expect_fail "unknown option" 2 "unknown option" -- "$BIN" eval "$CK" --text "$TMP/corpus.txt" --frob
expect_fail "id out of range" 1 "outside the vocabulary" -- "$BIN" logits "$CK" --ids 1,320

# Exports and logits parity (f32: bit for bit).
"$BIN" export "$CK" "$TMP/hf" --format hf > "$TMP/log" 2>&1 && ok || { bad "export hf"; cat "$TMP/log"; }
"$BIN" export "$CK" "$TMP/hfs" --format hf --max-shard-size 30KB > "$TMP/log" 2>&1 && ok || { bad "export hf sharded"; cat "$TMP/log"; }
"$BIN" export "$CK" "$TMP/m.gguf" --format gguf > "$TMP/log" 2>&1 && ok || { bad "export gguf"; cat "$TMP/log"; }
"$BIN" export "$CK" "$TMP/m8.gguf" --format gguf --dtype q8_0 > "$TMP/log" 2>&1 && ok || { bad "export gguf q8_0"; cat "$TMP/log"; }
for f in config.json generation_config.json tokenizer.json tokenizer_config.json model.safetensors; do
  [ -s "$TMP/hf/$f" ] && ok || bad "hf export lacks $f"
done
ls "$TMP/hfs" | grep -q "^model-00001-of-" && [ -s "$TMP/hfs/model.safetensors.index.json" ] \
  && [ ! -e "$TMP/hfs/model.safetensors" ] && ok || bad "sharded export layout"
IDS=1,2,300,45,7,100,200,319,5,64
for s in "$CK" "$TMP/hf" "$TMP/hfs" "$TMP/m.gguf"; do
  "$BIN" logits "$s" --ids $IDS --out "$TMP/l_$(basename "$s").f32" > "$TMP/log" 2>&1 || { bad "logits $s"; cat "$TMP/log"; }
done
[ "$(stat -c %s "$TMP/l_step_00000020.h5.f32" 2>/dev/null)" = $((10 * 320 * 4)) ] && ok || bad "logits file size"
for s in hf hfs m.gguf; do
  cmp -s "$TMP/l_step_00000020.h5.f32" "$TMP/l_$s.f32" && ok || bad "logits from $s differ from the checkpoint's"
done
[ "$("$BIN" logits "$CK" --ids 1,2,3 | wc -l)" = 3 ] && ok || bad "logits text dump"

# eval and sample.
"$BIN" eval "$CK" --text "$TMP/corpus.txt" --ctx 32 --stride 16 > "$TMP/ev" 2>&1 && grep -q "perplexity" "$TMP/ev" \
  && grep -q "ctx 32, stride 16" "$TMP/ev" && ok || { bad "eval"; cat "$TMP/ev"; }
a=$("$BIN" eval "$CK" --text "$TMP/corpus.txt" --ctx 32 --score-second-half | grep perplexity)
b=$("$BIN" eval "$TMP/m.gguf" --text "$TMP/corpus.txt" --ctx 32 --score-second-half | grep perplexity)
[ -n "$a" ] && [ "$a" = "$b" ] && ok || bad "eval checkpoint vs gguf: '$a' vs '$b'"
expect_fail "half needs stride=ctx" 2 "stride" -- "$BIN" eval "$CK" --text "$TMP/corpus.txt" --ctx 32 --stride 8 --score-second-half
"$BIN" sample "$CK" --prompt "ROMEO:" --max-tokens 20 --seed 3 > "$TMP/s1" 2> "$TMP/s1e" && grep -q "^ROMEO:" "$TMP/s1" \
  && grep -q "tokens/s" "$TMP/s1e" && ok || { bad "sample"; cat "$TMP/s1" "$TMP/s1e"; }
"$BIN" sample "$TMP/hf" --prompt "ROMEO:" --max-tokens 20 --seed 3 > "$TMP/s2" 2>/dev/null
cmp -s "$TMP/s1" "$TMP/s2" && ok || bad "sample from the HF export differs from the checkpoint's"

# Clean failures: nothing left under the output names.
head -c 20000 "$CK" > "$TMP/trunc.h5"
expect_fail "truncated ckpt" 1 "moetrain: error: .*trunc.h5" -- "$BIN" export "$TMP/trunc.h5" "$TMP/out_hf" --format hf
[ ! -e "$TMP/out_hf" ] && ok || bad "truncated export left out_hf"
expect_fail "truncated ckpt gguf" 1 "moetrain: error:" -- "$BIN" export "$TMP/trunc.h5" "$TMP/out.gguf"
[ ! -e "$TMP/out.gguf" ] && ok || bad "truncated export left out.gguf"
expect_fail "missing parent" 1 "hint:" -- "$BIN" export "$CK" "$TMP/no/such/hf" --format hf
expect_fail "existing output" 1 "already exists" -- "$BIN" export "$CK" "$TMP/hf" --format hf
ls -a "$TMP" | grep -q "tmp" && bad "temporaries left: $(ls -a "$TMP" | grep tmp)" || ok
head -c 1000 "$TMP/m.gguf" > "$TMP/cut.gguf"
expect_fail "truncated gguf" 1 "truncated" -- "$BIN" logits "$TMP/cut.gguf" --ids 1,2

echo "test_export.sh: $pass passed, $fail failed"
[ "$fail" = 0 ]
