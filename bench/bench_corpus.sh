#!/usr/bin/env bash
# bench_corpus.sh: start-up time and anonymous memory of a training process against the
# corpus size. Synthetic shards of 10^6, 10^8 and 10^9 16-bit tokens (10^9 = 2 GB on disk,
# random ids of a 65536-token vocabulary; written one at a time and deleted after its run)
# each train a tiny model for 8 steps. Per corpus: the seconds from launch to the first
# logged step (set-up: config, memory plan, sgemm probe, opening the data, first step);
# RssAnon (anonymous resident memory, /proc/PID/status, polled every 20 ms) once step 4 is
# logged (training: what the corpus costs) and its peak over the run (the set-up's sgemm
# probe and memory plan may peak higher); the peak RssFile (mapped file pages: the page
# cache of what was read, reclaimable).
# The loader maps the shard and reads only the windows it trains on, so both stay flat.
# Usage: bench/bench_corpus.sh [MOETRAIN] [SIZES...]   (default build/moetrain 1e6 1e8 1e9)
# BENCH_DIR picks the scratch directory (default a new /tmp/moe_bench_corpus.*; removed).
set -euo pipefail
BIN=$(realpath "${1:-build/moetrain}")
shift || true
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(1000000 100000000 1000000000)
W=${BENCH_DIR:-$(mktemp -d /tmp/moe_bench_corpus.XXXXXX)}
mkdir -p "$W"
trap 'rm -rf "$W"' EXIT
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-2}

# A 65536-token byte-level BPE (every byte pair a merge, then the end-of-text token), so
# that any 16-bit value is a valid id; its hash goes into the shards' headers.
awk 'BEGIN { print "moetrain-bpe 1"; print "vocab_size 65536"; print "special 65535 <|endoftext|>";
  print "merges 65279"; for (r = 0; r < 65279; r++) print r % 256, int(r / 256) }' > "$W/tok.bpe"
echo "the header donor" > "$W/h.txt"
"$BIN" data encode --tokenizer "$W/tok.bpe" --out "$W/h.tok" "$W/h.txt" > /dev/null

# le64 N: N as 8 little-endian bytes (printf escapes)
le64() { local n=$1 s=""; for _ in 1 2 3 4 5 6 7 8; do s+=$(printf '\\%03o' $((n & 255))); n=$((n >> 8)); done; printf "$s"; }
# make_shard N PATH: the donor's header with n_tokens = N, then 2N random bytes (the donor
# is format 2, or format 1 when MOETRAIN is an earlier version: then the header ends
# after the hash, so the same script measures both)
ver=$(od -A n -t u4 -j 8 -N 4 "$W/h.tok" | tr -d ' ')
rest=$([ "$ver" = 1 ] && echo 8 || echo 16)
make_shard() {
  { head -c 16 "$W/h.tok"; le64 "$1"; tail -c +25 "$W/h.tok" | head -c "$rest"; head -c $((2 * $1)) /dev/urandom; } > "$2"
}

cat > "$W/c.yaml" <<YAML
model: {vocab_size: 65536, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, head_dim: 8}
moe: {n_experts: 4, top_k: 2, hidden: 64}
train: {seq_len: 64, micro_batch: 8, steps: 8, log_every: 1, eval_every: 0}
optim: {warmup_steps: 1}
data: {tokenizer: $W/tok.bpe, shards: []}
checkpoint: {every: 0}
YAML

printf '%-12s %9s %7s %11s %16s %13s %13s\n' tokens "shard MB" "make s" "start-up s" \
  "RssAnon@step4 MB" "RssAnon peak" "RssFile peak"
for N in "${SIZES[@]}"; do
  N=$(printf '%.0f' "$N")
  t0=$(date +%s.%N)
  make_shard "$N" "$W/s.tok"
  t1=$(date +%s.%N)
  rm -rf "$W/run"
  sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || true   # cold page cache when allowed
  start=$(date +%s.%N)
  "$BIN" "$W/c.yaml" --set "data.shards=[$W/s.tok]" --set "run.dir=$W/run" > "$W/log" 2>&1 &
  pid=$!
  anon=0 file=0 first="" atstep=""
  while kill -0 $pid 2>/dev/null; do
    if [ -r /proc/$pid/status ]; then
      a=$(awk '/^RssAnon/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0)
      f=$(awk '/^RssFile/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0)
      [ "${a:-0}" -gt "$anon" ] && anon=$a
      [ "${f:-0}" -gt "$file" ] && file=$f
    fi
    [ -z "$first" ] && grep -q '^step  *1/' "$W/log" 2>/dev/null && first=$(date +%s.%N)
    [ -z "$atstep" ] && grep -q '^step  *4/' "$W/log" 2>/dev/null && atstep=${a:-0}
    sleep 0.02
  done
  wait $pid || { echo "training on $N tokens failed:"; tail -5 "$W/log"; exit 1; }
  [ -n "$first" ] || first=$(date +%s.%N)
  printf '%-12s %9.0f %7.1f %11.2f %16.1f %13.1f %13.1f\n' "$N" "$(echo "$N * 2 / 1000000" | bc -l)" \
    "$(echo "$t1 - $t0" | bc -l)" "$(echo "$first - $start" | bc -l)" "$(echo "${atstep:-0} / 1024" | bc -l)" \
    "$(echo "$anon / 1024" | bc -l)" "$(echo "$file / 1024" | bc -l)"
  grep -E '^data:' "$W/log" | sed 's/^/    /'
  rm -f "$W/s.tok"
done
