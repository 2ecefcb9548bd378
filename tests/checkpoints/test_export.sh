#!/usr/bin/env bash
# test_export.sh: export and inference through the moetrain program, on a 20-step tiny run.
# - export --format hf / gguf (f32): `moetrain logits` from the checkpoint, the HF directory
#   and the GGUF file are byte-identical float32 files; the text dump has one line per id.
# - eval (both protocols) and sample run and print what they promise.
# - a truncated checkpoint and a missing parent directory fail with exit 1, "moetrain:
#   error:" and a hint, and leave nothing under the output name.
# - outputs (train/outguard.h): an existing OUT needs --force (gguf file, HF directory,
#   logits --out), --force replaces an earlier HF export but not a directory holding other
#   files, and an output that is the checkpoint, lies around it (HF directory) or inside
#   the HF model read is refused even with --force; all exit 2 and change nothing.
# - eval refuses settings that score no token (--score-second-half with --ctx 2).
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
expect_fail "existing output" 2 "already exists" -- "$BIN" export "$CK" "$TMP/hf" --format hf
grep -q "hint: pass --force" "$TMP/err" && ok || bad "no --force hint"
ls -a "$TMP" | grep -q "tmp" && bad "temporaries left: $(ls -a "$TMP" | grep tmp)" || ok

# Outputs never replace inputs; existing outputs need --force.
sha() { sha256sum "$1" | cut -d' ' -f1; }
ck_sum=$(sha "$CK")
mkdir -p "$TMP/around"; ln -f "$CK" "$TMP/around/ck.h5"
expect_fail "gguf OUT = CKPT" 2 "is also an input" -- "$BIN" export "$CK" "$CK" --format gguf
expect_fail "gguf OUT = CKPT, --force" 2 "is also an input" -- "$BIN" export "$CK" "$CK" --format gguf --force
expect_fail "gguf OUT = CKPT (./, link)" 2 "is also an input" -- \
  "$BIN" export "$TMP/around/ck.h5" "$TMP/run/checkpoints/./step_00000020.h5" --format gguf --force
expect_fail "hf OUT holds CKPT" 2 "ck.h5 lies inside this directory" -- \
  "$BIN" export "$TMP/around/ck.h5" "$TMP/around" --format hf --force
expect_fail "upcycled/peft OUT holds CKPT" 2 "lies inside" -- \
  "$BIN" export "$TMP/around/ck.h5" "$TMP/around" --adapters-only --force
[ "$(sha "$CK")" = "$ck_sum" ] && [ "$(ls "$TMP/around")" = ck.h5 ] && ok || bad "a refused export changed its checkpoint"
g_sum=$(sha "$TMP/m.gguf")
expect_fail "gguf exists" 2 "m.gguf: already exists" -- "$BIN" export "$CK" "$TMP/m.gguf" --dtype f16
[ "$(sha "$TMP/m.gguf")" = "$g_sum" ] && ok || bad "a refused gguf export changed m.gguf"
"$BIN" export "$CK" "$TMP/m.gguf" --dtype f16 --force > "$TMP/log" 2>&1 && [ "$(sha "$TMP/m.gguf")" != "$g_sum" ] \
  && ok || { bad "gguf --force did not replace"; cat "$TMP/log"; }
"$BIN" export "$CK" "$TMP/m.gguf" --force > "$TMP/log" 2>&1 && [ "$(sha "$TMP/m.gguf")" = "$g_sum" ] \
  && ok || bad "gguf --force f32 again differs from the first export"
# --force replaces an earlier HF export whole (the sharded one becomes unsharded), but not a
# directory holding anything an export does not write
"$BIN" export "$CK" "$TMP/hfs" --format hf --force > "$TMP/log" 2>&1 && [ -s "$TMP/hfs/model.safetensors" ] \
  && ! ls "$TMP/hfs" | grep -q "^model-0000" && ok || { bad "hf --force did not replace the export"; cat "$TMP/log"; }
ls -a "$TMP" | grep -q "old-\|tmp-" && bad "replaced export left $(ls -a "$TMP" | grep 'old-\|tmp-')" || ok
mkdir -p "$TMP/mine"; echo keep > "$TMP/mine/notes.txt"; echo '{}' > "$TMP/mine/x.json"
expect_fail "hf --force onto a user's directory" 2 "notes.txt, which an export does not write" -- \
  "$BIN" export "$CK" "$TMP/mine" --format hf --force
[ "$(cat "$TMP/mine/notes.txt")" = keep ] && [ -s "$TMP/mine/x.json" ] && ok || bad "hf --force touched a user's directory"
expect_fail "hf OUT is a file" 2 "exists and is not a directory" -- "$BIN" export "$CK" "$TMP/m8.gguf" --format hf --force
"$BIN" export --help | grep -q -- "--force" && ok || bad "export --help lacks --force"
# logits --out
expect_fail "logits --out = MODEL" 2 "is also an input" -- "$BIN" logits "$CK" --ids 1,2 --out "$CK" --force
expect_fail "logits --out inside the HF model" 2 "inside the input directory" -- \
  "$BIN" logits "$TMP/hf" --ids 1,2 --out "$TMP/hf/config.json" --force
l_sum=$(sha "$TMP/l_hf.f32")
expect_fail "logits --out exists" 2 "already exists" -- "$BIN" logits "$CK" --ids 1,2 --out "$TMP/l_hf.f32"
[ "$(sha "$TMP/l_hf.f32")" = "$l_sum" ] && [ "$(sha "$CK")" = "$ck_sum" ] && ok || bad "a refused logits changed a file"
"$BIN" logits "$CK" --ids 1,2 --out "$TMP/l_hf.f32" --force > "$TMP/log" 2>&1 && \
  [ "$(stat -c %s "$TMP/l_hf.f32")" = $((2 * 320 * 4)) ] && ok || bad "logits --force"
"$BIN" logits --help | grep -q -- "--force" && ok || bad "logits --help lacks --force"

# eval settings that score nothing are refused (each chunk of N scores tokens N/2+1..N-1).
expect_fail "half, ctx 2" 2 "scores no token" -- "$BIN" eval "$CK" --text "$TMP/corpus.txt" --ctx 2 --score-second-half
"$BIN" eval "$CK" --text "$TMP/corpus.txt" --ctx 3 --score-second-half > "$TMP/ev3" 2>&1 && \
  grep -q "perplexity" "$TMP/ev3" && ! grep -qi "nan" "$TMP/ev3" && ok || { bad "eval --ctx 3 --score-second-half"; cat "$TMP/ev3"; }
head -c 1000 "$TMP/m.gguf" > "$TMP/cut.gguf"
expect_fail "truncated gguf" 1 "truncated" -- "$BIN" logits "$TMP/cut.gguf" --ids 1,2

echo "test_export.sh: $pass passed, $fail failed"
[ "$fail" = 0 ]
