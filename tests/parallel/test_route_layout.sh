#!/usr/bin/env bash
# test_route_layout.sh: the routing options of moe.score, route_scale, n_groups/topk_groups
# and aux_scope are layout invariant: the first 12 step losses of `mpirun -n R` (R = 2, 4;
# expert parallel R; the global micro-batch split over the ranks; grad_accum 2) match one
# process within 1e-4 relative (the tolerance of test_layout.sh: the ranks' float sums are
# ordered differently), for
#   g: sigmoid scores, route scale 2.5, 4 groups of 2 experts with 2 kept, the aux-loss-free
#      bias, and the global load-balancing scope (counts over ranks and micro-batches);
#   s: softmax scores and the sequence-wise scope (per-sequence counts, rank-local).
# And the global scope is not the batch scope with two micro-batches (the aux losses of step
# 1 differ), so the comparison above exercises the step-wide counts.
# Usage: test_route_layout.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_route_layout.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?run through ctest}
. "$SRC/tests/testlib.sh"

head -c 40000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
cat > "$TMP/c.yaml" <<YAML
model: {vocab_size: 300, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, head_dim: 8}
moe: {n_experts: 8, top_k: 2, hidden: 24, router_noise: true, capacity_factor: 0, aux_loss_coef: 0.05}
train: {seq_len: 16, micro_batch: 8, grad_accum: 2, steps: 12, log_every: 6, eval_every: 0, eval_batches: 1}
optim: {lr: 3e-3, warmup_steps: 3, min_lr: 3e-4}
data: {tokenizer: $TMP/tok.bpe, text: [$TMP/corpus.txt]}
YAML
losses() { grep -o '"loss":[-0-9.e+]*' "$1/metrics.jsonl" | cut -d: -f2; }
auxs() { grep -o '"aux_loss":[-0-9.e+]*' "$1/metrics.jsonl" | cut -d: -f2; }
aux1() { grep -o '"aux_loss":[-0-9.e+]*' "$1/metrics.jsonl" | head -1 | cut -d: -f2; }

compare() {   # $1 label; rest: --set overrides
  local lb=$1; shift
  run "$TMP/${lb}1.log" "$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/${lb}1" "$@"
  losses "$TMP/${lb}1" > "$TMP/${lb}l1"; auxs "$TMP/${lb}1" > "$TMP/${lb}a1"
  [ "$(wc -l < "$TMP/${lb}l1")" = 12 ] && ok || bad "$lb 1 rank: $(wc -l < "$TMP/${lb}l1") losses"
  for R in 2 4; do
    run "$TMP/${lb}$R.log" timeout 300 "$MPIRUN" -n "$R" "$BIN" "$TMP/c.yaml" \
      --set "run.dir=$TMP/$lb$R" --set parallel.expert_parallel=$R "$@"
    losses "$TMP/$lb$R" > "$TMP/${lb}l$R"
    if paste "$TMP/${lb}l1" "$TMP/${lb}l$R" | awk -v R="$R" '
        { n++; d = $1 - $2; if (d < 0) d = -d; if (d > 1e-4 * $1) { print "step " NR ": " $1 " vs " $2 " (-n " R ")"; b++ } }
        END { exit !(n == 12 && b == 0) }'; then ok
    else bad "$lb: -n $R losses differ from -n 1"; fi
    # the aux loss itself, closer: its terms are float sums of O(1) shares (ordered
    # differently per layout: ~1e-7 relative); 1e-5 catches a scope that counts other
    # tokens (the batch scope instead of the global one moves it by 5e-5 to 1.3e-4
    # relative on this run) which the total loss would hide
    auxs "$TMP/$lb$R" > "$TMP/${lb}a$R"
    if paste "$TMP/${lb}a1" "$TMP/${lb}a$R" | awk '
        { n++; d = $1 - $2; if (d < 0) d = -d; if (d > 1e-5 * $1) b++ } END { exit !(n == 12 && b == 0) }'; then ok
    else bad "$lb: -n $R aux losses differ from -n 1"; fi
  done
}
G=(--set moe.score=sigmoid --set moe.route_scale=2.5 --set moe.n_groups=4 --set moe.topk_groups=2
   --set moe.bias_update_rate=0.001)
compare g "${G[@]}" --set moe.aux_scope=global
compare s --set moe.aux_scope=sequence

run "$TMP/b.log" "$BIN" "$TMP/c.yaml" --set "run.dir=$TMP/b" "${G[@]}" --set moe.aux_scope=batch
a_g=$(aux1 "$TMP/g1"); a_b=$(aux1 "$TMP/b")
[ -n "$a_g" ] && [ "$a_g" != "$a_b" ] && ok || bad "global and batch scopes give the same aux ($a_g, $a_b)"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
