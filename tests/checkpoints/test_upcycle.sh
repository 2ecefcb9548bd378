#!/usr/bin/env bash
# test_upcycle.sh: sparse upcycling end to end through the moetrain program.
# - a tiny dense run (30 steps) writes its final checkpoint;
# - `moetrain upcycle` writes an MoE checkpoint from it: no optimizer state, step 0
#   (`ckpt info`); bad command lines exit 2, a checkpoint that does not fit exits 1 naming
#   the mismatch (an MoE checkpoint, a hidden width not divisible by the granularity);
#   OUT_CKPT = DENSE_CKPT (./ spelling, hard link) exits 2 even with --force, an existing
#   OUT_CKPT exits 2 without --force, and neither changes a file;
# - init.upcycle_from: the MoE config continues from the dense checkpoint on 1 rank and under
#   mpirun -n 2 (expert parallel 2: each rank fills its own experts by global index); the
#   first training losses agree between the layouts (1e-4 relative) and the first loss is the
#   dense model's (the upcycled model computes what the dense one did, up to router noise:
#   K = G = 2 with the virtual-group router), far below a fresh model's ~ln(V);
# - the upcycled file loads into the 2-rank layout through --resume once the trainer
#   accepts checkpoints without optimizer state (fresh moments).
# Usage: test_upcycle.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_upcycle.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?run through ctest}
. "$SRC/tests/testlib.sh"
expect_exit() {   # $1 wanted status, $2 log, rest: command
  local want=$1 log=$2; shift 2
  "$@" > "$log" 2>&1; local got=$?
  [ "$got" = "$want" ] && ok || { bad "exit $got (wanted $want): $*"; tail -3 "$log"; }
}

head -c 60000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
common="train: {seq_len: 32, micro_batch: 8, steps: 30, log_every: 1, eval_every: 0, eval_batches: 1}
optim: {lr: 3e-3, warmup_steps: 2, min_lr: 3e-4}
data: {tokenizer: $TMP/tok.bpe, text: [$TMP/corpus.txt]}
checkpoint: {every: 0, keep: 1}"
model="model: {vocab_size: 320, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, head_dim: 8}"
cat > "$TMP/dense.yaml" <<YAML
$model
moe: {n_experts: 0, hidden: 96}
$common
run: {dir: $TMP/dense}
YAML
cat > "$TMP/moe.yaml" <<YAML
$model
moe: {n_experts: 4, top_k: 2, hidden: 48, router_noise: false}
$common
init: {upcycle_from: $TMP/dense/checkpoints/step_00000030.h5, granularity: 2}
YAML
DENSE=$TMP/dense/checkpoints/step_00000030.h5

run "$TMP/dense.log" "$BIN" "$TMP/dense.yaml"
[ -f "$DENSE" ] && ok || bad "dense run wrote no $DENSE"

# ---- the subcommand ----
expect_exit 0 "$TMP/help.log" "$BIN" upcycle --help
grep -q "usage: moetrain upcycle DENSE_CKPT OUT_CKPT" "$TMP/help.log" && ok || bad "upcycle --help"
"$BIN" --help | grep -q "upcycle" && ok || bad "moetrain --help does not list upcycle"
expect_exit 2 "$TMP/e1.log" "$BIN" upcycle "$DENSE" "$TMP/up.h5" --top-k 2
expect_exit 2 "$TMP/e2.log" "$BIN" upcycle "$DENSE" "$TMP/up.h5" --experts 4 --top-k 5
expect_exit 2 "$TMP/e3.log" "$BIN" upcycle "$DENSE" "$TMP/up.h5" --experts 4 --top-k 2 --granularity 3
expect_exit 1 "$TMP/e4.log" "$BIN" upcycle "$DENSE" "$TMP/up.h5" --experts 5 --top-k 2 --granularity 5
grep -q "moetrain: error: .*moe.hidden = 96 is not divisible by the granularity 5" "$TMP/e4.log" \
  && grep -q "^hint: " "$TMP/e4.log" && ok || { bad "granularity mismatch not named"; cat "$TMP/e4.log"; }
[ ! -e "$TMP/up.h5" ] && ok || bad "a refused upcycle left $TMP/up.h5"

expect_exit 0 "$TMP/up.log" "$BIN" upcycle "$DENSE" "$TMP/up.h5" --experts 4 --top-k 2 --granularity 2
# OUT_CKPT never replaces DENSE_CKPT, however spelled (./, a hard link), not even with
# --force; an existing OUT_CKPT needs --force (exit 2, files unchanged)
d_sum=$(sha256sum "$DENSE" | cut -d' ' -f1); u_sum=$(sha256sum "$TMP/up.h5" | cut -d' ' -f1)
ln -f "$DENSE" "$TMP/dense_link.h5"
for out in "$DENSE" "$TMP/dense/checkpoints/./step_00000030.h5" "$TMP/dense_link.h5"; do
  for force in "" --force; do
    expect_exit 2 "$TMP/e7.log" "$BIN" upcycle "$DENSE" "$out" --experts 4 --top-k 2 $force
    grep -q "is also an input" "$TMP/e7.log" && ok || { bad "OUT_CKPT = DENSE_CKPT ($out $force) not named"; cat "$TMP/e7.log"; }
  done
done
expect_exit 2 "$TMP/e8.log" "$BIN" upcycle "$DENSE" "$TMP/up.h5" --experts 4 --top-k 2 --granularity 2 --seed 9
grep -q "up.h5: already exists" "$TMP/e8.log" && grep -q "hint: pass --force" "$TMP/e8.log" && ok \
  || { bad "existing OUT_CKPT not refused"; cat "$TMP/e8.log"; }
[ "$(sha256sum "$DENSE" | cut -d' ' -f1)" = "$d_sum" ] && [ "$(sha256sum "$TMP/up.h5" | cut -d' ' -f1)" = "$u_sum" ] \
  && ok || bad "a refused upcycle changed a checkpoint"
expect_exit 0 "$TMP/up9.log" "$BIN" upcycle "$DENSE" "$TMP/up9.h5" --experts 4 --top-k 2 --granularity 2
expect_exit 0 "$TMP/up9.log" "$BIN" upcycle "$DENSE" "$TMP/up9.h5" --experts 4 --top-k 2 --granularity 2 --seed 9 --force
"$BIN" upcycle --help | grep -q -- "--force" && ok || bad "upcycle --help lacks --force"
expect_exit 0 "$TMP/info.log" "$BIN" ckpt info "$TMP/up.h5"
grep -q "^step  *0$" "$TMP/info.log" && grep -q "optimizer state no" "$TMP/info.log" \
  && grep -q "n_experts 4, top_k 2, hidden 48" "$TMP/info.log" && ok \
  || { bad "ckpt info of the upcycled file"; cat "$TMP/info.log"; }
expect_exit 1 "$TMP/e5.log" "$BIN" upcycle "$TMP/up.h5" "$TMP/up2.h5" --experts 8 --top-k 2
grep -q "not a dense checkpoint: its config has moe.n_experts = 4" "$TMP/e5.log" && ok \
  || { bad "MoE checkpoint not refused by name"; cat "$TMP/e5.log"; }

# ---- init.upcycle_from on 1 and 2 ranks ----
losses() { grep '"lm_loss"' "$1/metrics.jsonl" | grep -o '"lm_loss":[^,]*' | cut -d: -f2; }
run "$TMP/i1.log" "$BIN" "$TMP/moe.yaml" --set "run.dir=$TMP/i1"
run "$TMP/i2.log" timeout 300 "$MPIRUN" -n 2 "$BIN" "$TMP/moe.yaml" --set "run.dir=$TMP/i2"
grep -q "upcycled from $DENSE" "$TMP/i2.log" && ok || { bad "no 'upcycled from' line"; tail -3 "$TMP/i2.log"; }
a=$(losses "$TMP/i1"); b=$(losses "$TMP/i2")
if [ "$(echo "$a" | wc -l)" = 30 ] && paste <(echo "$a") <(echo "$b") | awk '{d=$1-$2; if(d<0)d=-d; if(d>1e-4*$1) bad=1} END{exit bad}'; then ok
else bad "1 rank and 2 ranks differ after upcycling"; paste <(echo "$a") <(echo "$b") | head -3; fi
# step 1 of the upcycled run sees the dense model's function: its loss is near the dense
# run's last losses, far below a fresh model's ln(320) = 5.77
d_last=$(losses "$TMP/dense" | tail -1); u_first=$(echo "$a" | head -1)
awk -v d="$d_last" -v u="$u_first" 'BEGIN{ exit !(u < d + 0.5 && u < 5.0) }' && ok \
  || bad "upcycled first loss $u_first is not near the dense loss $d_last"
# a config whose model.* differs from the dense checkpoint is refused naming the key
expect_exit 1 "$TMP/e6.log" "$BIN" "$TMP/moe.yaml" --set "run.dir=$TMP/e6" --set model.dim=48 --set model.head_dim=12
grep -q "model.dim: 32 in the dense checkpoint, 48 in the MoE config" "$TMP/e6.log" && ok \
  || { bad "model.dim mismatch not named"; tail -3 "$TMP/e6.log"; }

# ---- the upcycled file through --resume, 2 ranks (fresh AdamW moments) ----
run "$TMP/r2.log" timeout 300 "$MPIRUN" -n 2 "$BIN" "$TMP/moe.yaml" --set "run.dir=$TMP/r2" --resume "$TMP/up.h5"
c=$(losses "$TMP/r2")
if [ "$(echo "$c" | wc -l)" = 30 ] && paste <(echo "$a") <(echo "$c") | awk '{d=$1-$2; if(d<0)d=-d; if(d>1e-4*$1) bad=1} END{exit bad}'; then ok
else bad "--resume of the upcycled file differs from init.upcycle_from"; paste <(echo "$a") <(echo "$c") | head -3; fi

echo "test_upcycle.sh: $pass passed, $fail failed"
[ "$fail" = 0 ] && [ "$pass" -gt 0 ]
