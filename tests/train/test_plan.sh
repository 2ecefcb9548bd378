#!/usr/bin/env bash
# test_plan.sh: `moetrain plan` (train/cmd_plan.h): help, bad command lines (exit 2) and
# impossible layouts (exit 1, naming the option or key), and its bytes for mixtral_tiny
# against the formulas of docs/scaling.md evaluated here by shell arithmetic from the
# config's shape (V 4096, C 256, L 4, H 8, Hkv 4, D 32, E 8, K 2, F 512; T 256, B 8), not
# from the program. Whether those formulas are what the ranks really send is checked by
# tests/parallel/mpi_cost.c against the traffic counters.  Usage: test_plan.sh MOETRAIN
set -u
BIN=${1:?usage: test_plan.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?MOE_SOURCE_DIR must be set (run through ctest)}
. "$SRC/tests/testlib.sh"
CFG=$SRC/configs/mixtral_tiny.yaml

expect_fail() {
  local name=$1 want=$2 pat=$3; shift 4
  "$@" >"$TMP/out" 2>"$TMP/err"; local rc=$?
  if [ "$rc" != "$want" ]; then bad "$name: exit $rc, want $want"; cat "$TMP/err"; return; fi
  if ! grep -qE -- "$pat" "$TMP/err"; then bad "$name: stderr lacks /$pat/"; cat "$TMP/err"; return; fi
  ok
}
# bytes LABEL: the byte count of the "  LABEL   N  ..." line of the last plan
bytes() { sed -nE "s/^  $1 +([0-9]+) .*/\1/p" "$TMP/out" | head -1; }

"$BIN" plan --help > "$TMP/out" 2>&1 && grep -q "usage: moetrain plan" "$TMP/out" && ok || bad "plan --help"
"$BIN" --help | grep -q "moetrain plan" && ok || bad "moetrain --help does not list plan"
expect_fail "no config" 2 "plan needs a config" -- "$BIN" plan
expect_fail "unknown option" 2 "unknown option '--frob'.*moetrain plan --help" -- "$BIN" plan "$CFG" --frob
expect_fail "missing value" 2 "missing value after '--ranks'" -- "$BIN" plan "$CFG" --ranks
expect_fail "bad ranks" 2 "--ranks needs an integer" -- "$BIN" plan "$CFG" --ranks 0
expect_fail "bad hidden" 2 "--hidden needs a number in \[0, 1\]" -- "$BIN" plan "$CFG" --hidden 1.5
expect_fail "nodes" 1 "--nodes must divide --ranks" -- "$BIN" plan "$CFG" --ranks 4 --nodes 3
expect_fail "expert parallel" 1 "parallel.expert_parallel = 3 must divide" -- \
  "$BIN" plan "$CFG" --ranks 6 --set parallel.expert_parallel=3 --set train.global_micro_batch=6
expect_fail "batch" 1 "train.global_micro_batch = 8 sequences cannot be split evenly over 3" -- \
  "$BIN" plan "$CFG" --ranks 3
expect_fail "no file" 1 "no_such.yaml" -- "$BIN" plan "$TMP/no_such.yaml"

# the shape's trainable floats: dense = embedding + head + final norm + per layer two norms,
# q, k, v, o and the two routers; one expert = w1, w3, w2
V=4096 C=256 L=4 HD=256 KD=128 E=8 K=2 F=512 T=256 B=8
dense=$(( 2*V*C + C + L*(2*C + 2*C*HD + 2*C*KD + 2*E*C) ))
expert=$(( 3*F*C ))

# 4 ranks, experts spread over all of them (P = 4): the dense block all-reduced over 4
# ranks, 2 (4-1)/4 of its bytes; no expert replica; each rank's N = 2 x 256 tokens route
# N K slots a layer, 3/4 of them to other ranks and as many arrive, each row twice (the
# forward and its gradient) both ways; plus (P-1) E/P int32 counts per layer
"$BIN" plan "$CFG" --ranks 4 > "$TMP/out" 2>&1 || { bad "plan --ranks 4 failed"; cat "$TMP/out"; }
N=$(( B/4*T ))
want=$(( 2*3*4*dense/4 ))
[ "$(bytes 'gradient reduction')" = "$want" ] && ok || bad "ranks 4: gradient $(bytes 'gradient reduction'), want $want"
want=$(( 2*2*L*N*K*3/4*C*4 + L*3*(E/4)*4 ))
[ "$(bytes 'expert all-to-all')" = "$want" ] && ok || bad "ranks 4: all-to-all $(bytes 'expert all-to-all'), want $want"
[ "$(bytes 'parameter all-gather')" = 0 ] && ok || bad "ranks 4: an all-gather without sharding"
grep -q "expert_parallel 4, expert replicas 1" "$TMP/out" && ok || bad "ranks 4: layout"

# P = 2, sharded, recomputation: experts replicated twice; reduce-scatter (G-1)/G of each
# block (no padding at these sizes: both are multiples of 16 G), the same again gathered;
# recomputation sends each row a third time
"$BIN" plan "$CFG" --ranks 4 --set parallel.expert_parallel=2 --set parallel.shard_optimizer=true \
  --set train.recompute=true > "$TMP/out" 2>&1 || bad "plan sharded failed"
[ $(( dense % 64 )) = 0 ] && [ $(( L*4*expert % 32 )) = 0 ] && ok || bad "the sizes need padding"
want=$(( 3*4*dense/4 + 1*4*(L*4*expert)/2 ))
[ "$(bytes 'gradient reduction')" = "$want" ] && ok || bad "sharded: gradient $(bytes 'gradient reduction'), want $want"
[ "$(bytes 'parameter all-gather')" = "$want" ] && ok || bad "sharded: all-gather $(bytes 'parameter all-gather'), want $want"
want=$(( 3*2*L*N*K/2*C*4 + 2*L*1*(E/2)*4 ))
[ "$(bytes 'expert all-to-all')" = "$want" ] && ok || bad "recompute: all-to-all $(bytes 'expert all-to-all'), want $want"

# across nodes: 4 ranks on 2 nodes with P = 2 keep every EP group inside a node (nothing of
# the all-to-all leaves it); P = 4 sends half of each rank's off-rank rows (the 2 peers of
# 3 on the other node: 2/3) out, times the node's 2 ranks. Flat (hierarchical false) the
# rank sends the rows of the single-node case; on the two-stage route (the default
# hierarchical, the EP group = 2 whole nodes of 2) stage 1 sends 1/2 of the slots to the
# node peer and stage 2 forwards 1/2 across: rows M (1/2 + 1/2) instead of M 3/4, while the
# bytes leaving the node stay the flat route's
"$BIN" plan "$CFG" --ranks 4 --nodes 2 --set parallel.expert_parallel=2 > "$TMP/out" 2>&1
grep -q "all-to-all 0 B$" "$TMP/out" && ok || bad "EP inside a node sent rows across: $(grep leaving "$TMP/out")"
"$BIN" plan "$CFG" --ranks 4 --nodes 2 --set parallel.hierarchical=false > "$TMP/out" 2>&1
a2a=$(bytes 'expert all-to-all')
want=$(( 2*2*L*N*K*3/4*C*4 + L*3*(E/4)*4 ))
[ "$a2a" = "$want" ] && ok || bad "flat across nodes: all-to-all $a2a, want $want"
want=$(awk -v a="$a2a" 'BEGIN { printf "%.3f MB", 2 * a * 2 / 3 / 1e6 }')
grep -q "all-to-all $want$" "$TMP/out" && ok || bad "across nodes: $(grep leaving "$TMP/out"), want all-to-all $want"
"$BIN" plan "$CFG" --ranks 4 --nodes 2 > "$TMP/out" 2>&1
want2=$(( 2*2*L*N*K*C*4 + L*3*(E/4)*4 ))
[ "$(bytes 'expert all-to-all')" = "$want2" ] && ok || bad "two-stage: all-to-all $(bytes 'expert all-to-all'), want $want2"
grep -q "two-stage route" "$TMP/out" && ok || bad "two-stage: the plan does not say so"
grep -q "all-to-all $want$" "$TMP/out" && ok || bad "two-stage: $(grep leaving "$TMP/out"), want all-to-all $want (the flat route's)"

# time: everything hidden leaves the larger of compute and communication; doubling the
# node's rate halves the compute
"$BIN" plan "$CFG" --ranks 4 --nodes 2 --hidden 1 > "$TMP/out" 2>&1
awk '/^  compute /{c=$2} /^  step /{s=$2; m=$5} END { exit !(s == (c > m ? c : m)) }' "$TMP/out" \
  && ok || bad "hidden 1: step is not max(compute, communication)"
c1=$("$BIN" plan "$CFG" --ranks 4 --node-tflops 1 | awk '/^  compute /{print $2}')
c2=$("$BIN" plan "$CFG" --ranks 4 --node-tflops 2 | awk '/^  compute /{print $2}')
# (printed to 4 decimals: 0.0170 s carries up to 0.3 % of rounding; 1 % allows it)
awk -v a="$c1" -v b="$c2" 'BEGIN { r = a / b - 2; exit !(a > 0 && r < 0.02 && r > -0.02) }' && ok \
  || bad "compute $c1 s at 1 TFLOP/s against $c2 s at 2"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
