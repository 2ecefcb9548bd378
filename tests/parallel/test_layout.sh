#!/usr/bin/env bash
# test_layout.sh: layout invariance, the property that proves the expert exchange and the
# gradient reductions are right: with dropless routing and router noise on, the first 20
# step losses of `mpirun -n R` (R = 2, 4, 8; the global micro-batch split over the ranks)
# match one process on the same global batch within 1e-4 relative; the same with
# aux-loss-free balancing on (moe.bias_update_rate, load-balancing loss off), whose bias
# update reads the global loads, so the final biases of -n 1 and -n R agree too. Also:
# impossible layouts fail from rank 0 with a clear message and a non-zero exit, without
# hanging. parallel.a2a_chunks gives bit-identical weights to the blocking exchange, flat and
# two-stage (parallel.hierarchical under MOE_NODE_MAP). Fine-tuning records (data.sft, prompt
# tokens LOSS_IGNORE): -n 2 and -n 4 match -n 1 the same way, since every rank divides by the
# global count of completion tokens.
# Usage: test_layout.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_layout.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?run through ctest}
. "$SRC/tests/testlib.sh"

head -c 60000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
cat > "$TMP/layout.yaml" <<YAML
model: {vocab_size: 320, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, head_dim: 8}
moe: {n_experts: 8, top_k: 2, hidden: 48, router_noise: true, capacity_factor: 0}
train: {seq_len: 32, micro_batch: 8, grad_accum: 2, steps: 20, log_every: 10, eval_every: 0, eval_batches: 1}
optim: {lr: 3e-3, warmup_steps: 5, min_lr: 3e-4}
data: {tokenizer: $TMP/tok.bpe, text: [$TMP/corpus.txt]}
YAML

losses() { grep -o '"loss":[-0-9.e+]*' "$1/metrics.jsonl" | cut -d: -f2; }

compare_layouts() {   # $1 label; rest: --set overrides
  local lb=$1; shift
  "$BIN" "$TMP/layout.yaml" --set "run.dir=$TMP/${lb}1" "$@" > "$TMP/${lb}log1" 2>&1 || { bad "$lb: 1 rank run failed"; cat "$TMP/${lb}log1"; }
  losses "$TMP/${lb}1" > "$TMP/${lb}l1"
  [ "$(wc -l < "$TMP/${lb}l1")" = 20 ] && ok || bad "$lb 1 rank: $(wc -l < "$TMP/${lb}l1") losses"
  for R in ${RS:-2 4 8}; do
    if timeout 300 "$MPIRUN" -n "$R" "$BIN" "$TMP/layout.yaml" --set "run.dir=$TMP/$lb$R" "$@" > "$TMP/${lb}log$R" 2>&1; then ok
    else bad "$lb: mpirun -n $R failed"; tail -20 "$TMP/${lb}log$R"; continue; fi
    grep -q "layout: $R rank(s)" "$TMP/${lb}log$R" && ok || bad "$lb -n $R: no layout line"
    losses "$TMP/$lb$R" > "$TMP/${lb}l$R"
    if paste "$TMP/${lb}l1" "$TMP/${lb}l$R" | awk -v R="$R" '
        { n++; d = $1 - $2; if (d < 0) d = -d; if (d > 1e-4 * $1) { print "step " NR ": " $1 " vs " $2 " (-n " R ")"; bad++ } }
        END { exit !(n == 20 && bad == 0) }'; then ok
    else bad "$lb: -n $R losses differ from -n 1"; fi
  done
}
compare_layouts r
# The pipelined expert exchange (parallel.a2a_chunks) only reorders the work and the
# messages: after 20 steps the weights and AdamW moments equal the blocking exchange's bit
# for bit: flat against run r4 above; as two "nodes" of 2 ranks (MOE_NODE_MAP, the EP group
# of 4 spanning both: the two-stage route) against the blocking two-stage run n1, since the
# node layout also makes the gradient reduction sum node by node (parallel/reduce.h), a
# different rounding from r4's flat order. (Two-stage against flat, exchange alone, bit for
# bit: mpi_pipe_n4_ep4_nodes.)
pipe_run() {   # $1 label; $2 reference run; rest: --set overrides
  local lb=$1 ref=$2; shift 2
  if timeout 300 "$MPIRUN" -n 4 "$BIN" "$TMP/layout.yaml" --set "run.dir=$TMP/$lb" "$@" > "$TMP/${lb}log" 2>&1; then ok
  else bad "$lb: mpirun -n 4 failed"; tail -20 "$TMP/${lb}log"; return; fi
  [ "$ref" = none ] && return
  h5diff -q "$TMP/$ref/checkpoints/step_00000020.h5" "$TMP/$lb/checkpoints/step_00000020.h5" /params /params \
    && h5diff -q "$TMP/$ref/checkpoints/step_00000020.h5" "$TMP/$lb/checkpoints/step_00000020.h5" /optim /optim \
    && ok || bad "$lb: final weights or moments differ from run $ref's (blocking exchange)"
}
pipe_run c4 r4 --set parallel.a2a_chunks=4
grep -q "expert exchange: 2 chunk(s) of local experts (parallel.a2a_chunks 4)$" "$TMP/c4log" && ok || bad "c4: no chunked exchange line"
MOE_NODE_MAP=0,0,1,1 pipe_run n1 none --set parallel.a2a_chunks=1
MOE_NODE_MAP=0,0,1,1 pipe_run h4 n1 --set parallel.a2a_chunks=2
grep -q "two stages: within each node" "$TMP/h4log" && ok || bad "h4: the two-stage route was not used"
"$BIN" "$TMP/layout.yaml" --set parallel.a2a_chunks=0 --set "run.dir=$TMP/bad0" > "$TMP/out" 2> "$TMP/err" \
  && bad "a2a_chunks 0 accepted" || ok
grep -q "parallel.a2a_chunks" "$TMP/err" && ok || { bad "a2a_chunks 0: message does not name the key"; cat "$TMP/err"; }
compare_layouts b --set moe.bias_update_rate=0.01 --set moe.aux_loss_coef=0
# the bias update counts every rank's tokens: the final biases of every layout are
# bit-identical (a rank-local count would make them differ by whole steps of 0.01)
for R in 2 4 8; do
  h5diff -q "$TMP/b1/checkpoints/step_00000020.h5" "$TMP/b$R/checkpoints/step_00000020.h5" \
    /state/router_bias /state/router_bias && ok || bad "bias: -n $R final router bias differs from -n 1"
done

# Fine-tuning records: the prompt tokens are ignored by the loss and fall unevenly on the
# ranks and micro-batches (a per-rank mean would differ by far more than 1e-4).
head -n 200 "$SRC/data/gsm8k_train.jsonl" > "$TMP/sft.jsonl"
RS="2 4" compare_layouts s --set 'data.text=[]' --set "data.sft=[$TMP/sft.jsonl]" \
  --set data.prompt_key=question --set data.completion_key=answer
grep -q "^sft: 200 records" "$TMP/slog1" && ok || bad "sft: the 1-rank run did not train on the records"

# Impossible layouts: message from rank 0 only, non-zero exit, no hang.
expect_layout_error() {
  local name=$1 R=$2 pat=$3; shift 3
  timeout 120 "$MPIRUN" -n "$R" "$BIN" "$TMP/layout.yaml" --set "run.dir=$TMP/bad" "$@" > "$TMP/out" 2> "$TMP/err"
  local rc=$?
  [ "$rc" = 124 ] && { bad "$name: hung"; return; }
  [ "$rc" != 0 ] && ok || bad "$name: exit 0"
  grep -qE -- "$pat" "$TMP/err" && ok || { bad "$name: stderr lacks /$pat/"; cat "$TMP/err"; }
  [ "$(grep -c 'moetrain: error' "$TMP/err")" = 1 ] && ok || bad "$name: error not printed exactly once"
}
expect_layout_error "EP does not divide R" 2 "expert_parallel = 3 must divide" --set parallel.expert_parallel=3
expect_layout_error "EP does not divide E" 4 "expert_parallel = 4 must divide both the rank count \(4\) and moe.n_experts \(6\)" --set moe.n_experts=6 --set parallel.expert_parallel=4
expect_layout_error "batch not divisible" 4 "micro_batch = 6 sequences cannot be split evenly over 4 ranks" --set train.micro_batch=6

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
