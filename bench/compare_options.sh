#!/usr/bin/env bash
# compare_options.sh: the architecture options (docs/architecture.md) against the
# default mixtral_tiny at equal steps: trains each variant for STEPS steps on the bundled
# corpus (same seed and data order; the cosine schedule ends at STEPS, the warmup stays
# optim.warmup_steps) in runs/compare/<variant>/, and prints one table row per variant:
# the validation loss at STEPS and the median training tokens/s. One process; tokens/s
# mean something only on an otherwise idle machine.
# A variant whose overrides begin with @CONFIG trains that config instead (deepseek_tiny:
# its own model, at mixtral_tiny's active parameters), with the same STEPS and schedule.
# ONLY=name,name,... runs just those variants.
# Usage: [ONLY=...] bench/compare_options.sh [BUILD_DIR] [STEPS]   (minutes per variant)
set -eu
BUILD=${1:-build}
STEPS=${2:-200}
OUT=runs/compare
mkdir -p "$OUT"
# name | --set overrides
VARIANTS=(
  "default|"
  "shared_expert|moe.n_shared_experts=1"
  "fine_grained_shared|moe.n_experts=16 moe.top_k=3 moe.hidden=256 moe.n_shared_experts=1"
  "sliding_window_64|model.sliding_window=64"
  "top_p|moe.router=topp"
  "expert_choice|moe.router=expert_choice"
  "aux_loss_free|moe.bias_update_rate=1e-3 moe.aux_loss_coef=0"
  "sigmoid|moe.score=sigmoid"
  "group_limited|moe.n_groups=4 moe.topk_groups=2"
  "sequence_aux|moe.aux_scope=sequence"
  "deepseek_tiny|@configs/deepseek_tiny.yaml"
)
printf '| variant | overrides | val loss @%s | tokens/s (median) |\n|---|---|---|---|\n' "$STEPS"
for v in "${VARIANTS[@]}"; do
  name=${v%%|*}; sets=${v#*|}
  case ",${ONLY:-$name}," in *",$name,"*) ;; *) continue ;; esac
  cfg=configs/mixtral_tiny.yaml
  case $sets in @*) cfg=${sets#@}; sets="" ;; esac
  args=()
  for s in $sets; do args+=(--set "$s"); done
  dir=$OUT/$name
  rm -rf "$dir"
  "$BUILD/moetrain" "$cfg" --set train.steps="$STEPS" \
    --set train.eval_every="$STEPS" --set checkpoint.every=0 --set checkpoint.keep=1 \
    --set run.dir="$dir" "${args[@]}" > "$dir.log" 2>&1 || { echo "| $name | $sets | FAILED (see $dir.log) | |"; continue; }
  val=$(tail -1 "$dir/eval.jsonl" | sed -E 's/.*"val_loss":([0-9.eE+-]+).*/\1/')
  tps=$(grep -F '"tokens_per_s"' "$dir/metrics.jsonl" | sed -E 's/.*"tokens_per_s":([0-9.eE+-]+).*/\1/' | sort -g |
        awk '{a[NR]=$1} END {print int(a[int((NR+1)/2)])}')
  [ "$cfg" = configs/mixtral_tiny.yaml ] || sets="($cfg)"
  printf '| %s | %s | %.3f | %s |\n' "$name" "${sets:-(none)}" "$val" "$tps"
done
