#!/usr/bin/env bash
# make_ckpt_raw_seed.sh [MOETRAIN]: (re)writes tests/fuzz/corpus/ckpt_raw/tiny_sealed.h5, the
# seed of fuzz_ckpt_raw: a real sealed checkpoint (format version 2) of a tiny MoE model
# (V=258 C=4 L=1 H=1 D=4 E=2 K=1 F=4, with AdamW moments, about 190 KiB) written by the
# moetrain program after one training step. It runs in a scratch directory with relative
# paths, so the config stored in the file names no machine's directories.
# MOETRAIN defaults to build/moetrain. A dev script: the tests only read the committed file.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$(realpath "${1:-$ROOT/build/moetrain}")
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
head -c 3000 "$ROOT/data/tinyshakespeare.txt" > "$D/text.txt"
cat > "$D/c.yaml" <<'YAML'
model: {vocab_size: 258, dim: 4, n_layers: 1, n_heads: 1, n_kv_heads: 1, head_dim: 4}
moe: {n_experts: 2, top_k: 1, hidden: 4}
train: {seq_len: 8, micro_batch: 1, steps: 1, log_every: 1, eval_every: 0, eval_batches: 1}
data: {tokenizer: tok.bpe, text: [text.txt]}
run: {dir: run}
YAML
(cd "$D" && "$BIN" tokenizer train --vocab 258 --out tok.bpe text.txt > /dev/null &&
  "$BIN" c.yaml > /dev/null && "$BIN" ckpt info run/checkpoints/step_00000001.h5 > /dev/null)
mkdir -p "$ROOT/tests/fuzz/corpus/ckpt_raw"
cp "$D/run/checkpoints/step_00000001.h5" "$ROOT/tests/fuzz/corpus/ckpt_raw/tiny_sealed.h5"
echo "wrote tests/fuzz/corpus/ckpt_raw/tiny_sealed.h5 ($(stat -c %s "$D/run/checkpoints/step_00000001.h5") bytes)"
