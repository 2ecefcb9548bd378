#!/usr/bin/env bash
# test_report_watch.sh: `moetrain report RUN_DIR --watch` (train/report_watch.h) against a
# run that is being written. A training holds RUN_DIR/.lock for its whole life; here flock(1)
# stands in for it, and lines of the recorded fixture run are appended by hand.
#   1. live run: the page is written at once with the reload tag, rewritten as lines come,
#      and the watch keeps going while the lock is held even when nothing changes; once the
#      lock is free and nothing changed for the quiet time (3 intervals, at least 2 s) it
#      stops by itself (exit 0) and the final page has no reload tag;
#   2. a run that has not logged a step: the watch waits, writes the page at the first step,
#      and SIGINT stops it at once with the final page;
#   3. a free lock is not enough: while lines keep coming (a writer without the lock) the
#      watch goes on, and stops once they stop.
# Breaks seen caught: rundir_is_locked always false (case 1 stopped while the lock was held);
# the quiet time ignored (case 3 stopped while lines came); the final page written with
# the reload tag; SIGINT handler not installed (case 2: killed, exit 130, live page left).
# Usage: test_report_watch.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_report_watch.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?run through ctest}
. "$SRC/tests/testlib.sh"
FIX="$SRC/tests/train/fixtures/mixtral_tiny"
LIVE='<meta name="moetrain-watch"'

# wait_for SECONDS COMMAND...: polls COMMAND every 0.1 s; fails after SECONDS.
wait_for() {
  local t=$1; shift
  local end=$(( $(date +%s%N) + t * 1000000000 ))
  until "$@"; do
    [ "$(date +%s%N)" -lt "$end" ] || return 1
    sleep 0.1
  done
}
alive() { kill -0 "$1" 2>/dev/null; }
dead() { ! kill -0 "$1" 2>/dev/null; }
# hold_lock DIR: a stand-in training holds DIR/.lock until release_lock DIR.
hold_lock() {
  mkfifo "$1/release"
  flock -o "$1/.lock" cat "$1/release" > /dev/null &
  LOCKER=$!
  wait_for 5 bash -c "! flock -n -s '$1/.lock' true" || bad "the stand-in did not take the lock"
}
release_lock() { timeout 5 bash -c "echo done > '$1/release'"; wait "$LOCKER"; }
# stop W: after a failed check, so that the test never hangs on a watch that goes on.
stop() { kill -TERM "$1" 2>/dev/null; wait_for 5 dead "$1" || kill -KILL "$1" 2>/dev/null; }

# ---- 1. a live run ----------------------------------------------------------------------
R=$TMP/live; mkdir "$R"
cp "$FIX/config.yaml" "$R/"
head -n 20 "$FIX/metrics.jsonl" > "$R/metrics.jsonl"
hold_lock "$R"
"$BIN" report "$R" --watch --interval 0.2 > "$TMP/w1.log" 2>&1 &
W=$!
wait_for 10 grep -q "live: 20 steps" "$TMP/w1.log" && ok || { bad "no page for 20 steps"; cat "$TMP/w1.log"; }
grep -q "$LIVE" "$R/report.html" && ok || bad "the live page has no reload tag"
grep -q '<p class="live">' "$R/report.html" && ok || bad "the live page does not say it is live"
sed -n 21,60p "$FIX/metrics.jsonl" >> "$R/metrics.jsonl"
n=$(grep -c '"loss"' "$R/metrics.jsonl")
wait_for 10 grep -q "live: $n steps" "$TMP/w1.log" && ok || { bad "not rewritten after new lines"; cat "$TMP/w1.log"; }
grep -q "<td>$n</td>" "$R/report.html" && ok || bad "the page does not show $n steps"
# the lock is held: nothing changes for longer than the quiet time, the watch goes on
sleep 3
alive "$W" && ok || { bad "the watch stopped while the run held its lock"; cat "$TMP/w1.log"; }
release_lock "$R"
wait_for 10 dead "$W" && ok || { bad "the watch did not stop after the run ended"; stop "$W"; }
wait "$W"; rc=$?
[ "$rc" = 0 ] && ok || bad "watch exit $rc, want 0"
grep -q "the run finished" "$TMP/w1.log" && ok || { bad "no 'finished' message"; cat "$TMP/w1.log"; }
grep -q "$LIVE" "$R/report.html" && bad "the final page still reloads itself" || ok
grep -q "<td>$n</td>" "$R/report.html" && ok || bad "the final page lost steps"
grep -q 'data-plot="expert_load"' "$R/report.html" && ok || bad "the final page has no heatmaps"

# ---- 2. before the first step; SIGINT ----------------------------------------------------
R=$TMP/early; mkdir "$R"
hold_lock "$R"
"$BIN" report "$R" --watch --interval 0.2 > "$TMP/w2.log" 2>&1 &
W=$!
wait_for 10 grep -q "waiting for the first step" "$TMP/w2.log" && ok || { bad "no waiting message"; cat "$TMP/w2.log"; }
[ ! -e "$R/report.html" ] && ok || bad "a page was written before any step"
head -n 3 "$FIX/metrics.jsonl" > "$R/metrics.jsonl"
wait_for 10 grep -q "early: 3 steps" "$TMP/w2.log" && ok || { bad "no page at the first steps"; cat "$TMP/w2.log"; }
grep -q "$LIVE" "$R/report.html" && ok || bad "the live page has no reload tag"
kill -INT "$W"
wait_for 5 dead "$W" && ok || { bad "SIGINT did not stop the watch"; stop "$W"; }
wait "$W"; rc=$?
[ "$rc" = 0 ] && ok || bad "watch exit $rc after SIGINT, want 0"
grep -q "stopped; final page" "$TMP/w2.log" && ok || { bad "no 'stopped' message"; cat "$TMP/w2.log"; }
grep -q "$LIVE" "$R/report.html" && bad "the page after SIGINT still reloads itself" || ok
release_lock "$R"

# ---- 3. no lock, but lines keep coming ----------------------------------------------------
R=$TMP/nolock; mkdir "$R"
head -n 5 "$FIX/metrics.jsonl" > "$R/metrics.jsonl"
"$BIN" report "$R" --watch --interval 0.2 > "$TMP/w3.log" 2>&1 &
W=$!
for i in 6 7 8 9 10 11 12 13; do   # a line every 0.5 s for 4 s: longer than the quiet 2 s
  sleep 0.5
  sed -n "${i}p" "$FIX/metrics.jsonl" >> "$R/metrics.jsonl"
done
alive "$W" && ok || { bad "the watch stopped while lines were still coming"; cat "$TMP/w3.log"; }
wait_for 10 dead "$W" && ok || { bad "the watch did not stop once the lines stopped"; stop "$W"; }
wait "$W"; rc=$?
[ "$rc" = 0 ] && ok || bad "watch exit $rc, want 0"
grep -q "<td>13</td>" "$R/report.html" && ok || bad "the final page does not have all 13 steps"

# ---- errors -------------------------------------------------------------------------------
"$BIN" report "$TMP/missing" --watch --interval 0.2 > "$TMP/out" 2> "$TMP/err"; rc=$?
[ "$rc" = 1 ] && grep -q "no such run directory" "$TMP/err" && grep -q "^hint:" "$TMP/err" && ok \
  || { bad "missing run dir with --watch: exit $rc"; cat "$TMP/err"; }
"$BIN" report "$TMP/live" --interval 1 > "$TMP/out" 2> "$TMP/err"; rc=$?
[ "$rc" = 2 ] && grep -q -- "--interval applies to --watch only" "$TMP/err" && ok \
  || bad "--interval without --watch: exit $rc"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
