# testlib.sh: what every program-level test (tests/*/test_*.sh) shares. Source it after
# setting BIN and SRC:  . "$SRC/tests/testlib.sh"
# - Open MPI may run as root (CI does) and oversubscribe the 2 cores; one OpenBLAS thread.
# - TMP: a scratch directory removed at exit.
# - pass/fail counters with ok, bad MESSAGE, and run LOG command... (counts a failure and
#   shows the log's tail when the command exits non-zero).
# - steps RUN_DIR FIRST LAST: the loss..grad_norm fields of those step lines of
#   metrics.jsonl (what exact resume compares as strings); params_equal A.h5 B.h5: /params
#   and /optim identical (h5diff).
# - exact_resume LABEL [launcher...]: RESUME_AT steps, stop, --resume auto, RESUME_AT more,
#   against 2 x RESUME_AT steps straight: resumed at the right step, identical step lines
#   after it, identical final parameters and moments. Config CFG (default $TMP/c.yaml),
#   extra arguments in the array SETS (default none), RESUME_AT default 20.
MPIRUN=${MPIEXEC:-mpirun}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OPENBLAS_NUM_THREADS=1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0; fail=0
ok() { pass=$((pass+1)); }
bad() { fail=$((fail+1)); echo "FAIL: $*"; }
run() { local log=$1; shift; "$@" > "$log" 2>&1 || { bad "command failed: $*"; tail -5 "$log"; }; }
steps() { grep '"lm_loss"' "$1/metrics.jsonl" | sed -n "$2,$3p" | grep -o '"loss":[^,]*,"lm_loss":[^,]*,.*"grad_norm":[^,]*'; }
params_equal() { h5diff -q "$1" "$2" /params /params && h5diff -q "$1" "$2" /optim /optim; }
SETS=()
exact_resume() {
  local label=$1 cfg=${CFG:-$TMP/c.yaml} at=${RESUME_AT:-20}; shift
  local end=$((2 * at)) s1 s2
  s1=$(printf 'step_%08d.h5' "$at"); s2=$(printf 'step_%08d.h5' "$end")
  run "$TMP/$label-a.log" "$@" "$BIN" "$cfg" "${SETS[@]}" --set "run.dir=$TMP/$label-a"
  run "$TMP/$label-b1.log" "$@" "$BIN" "$cfg" "${SETS[@]}" --set "run.dir=$TMP/$label-b" --stop-at "$at"
  run "$TMP/$label-b2.log" "$@" "$BIN" "$cfg" "${SETS[@]}" --set "run.dir=$TMP/$label-b" --resume auto
  grep -q "resumed from .*$s1 at step $at" "$TMP/$label-b2.log" && ok || bad "$label: did not resume from step $at"
  if [ -n "$(steps "$TMP/$label-a" $((at + 1)) "$end")" ] &&
     [ "$(steps "$TMP/$label-a" $((at + 1)) "$end")" = "$(steps "$TMP/$label-b" $((at + 1)) "$end")" ]; then ok
  else bad "$label: steps $((at + 1))..$end differ"
       diff <(steps "$TMP/$label-a" $((at + 1)) "$end") <(steps "$TMP/$label-b" $((at + 1)) "$end") | head -4; fi
  params_equal "$TMP/$label-a/checkpoints/$s2" "$TMP/$label-b/checkpoints/$s2" && ok \
    || bad "$label: final parameters/moments are not bit-identical"
}
