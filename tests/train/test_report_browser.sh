#!/usr/bin/env bash
# test_report_browser.sh: the report page in a real browser (headless Chromium, Debian
# package `chromium`; setup.sh --test installs it). Skipped (exit 77, which ctest shows as
# skipped) when no Chromium is installed.
# For a one-run page and a three-run page (the recorded fixture, a copy of it with the
# wall-clock time and another learning rate, a dense run): the page loads, its script ran
# and its self-check passed (data-report="ok" on <html>: hovering the first visible plot
# showed values), no console message at all (the script logs nothing: any message is an
# error), the #fragment picks the view (#x=time;ema: the first visible plot is the time
# one, and EMA values are shown too: 2 values where the raw curve alone gives 1), and a
# screenshot is made.
# Breaks seen caught: an `undefinedFn()` call put in the script (data-report="error:
# ReferenceError ..."; outside the try block: the console check); the CSS rule that hides
# the other x variants removed (the first visible plot was loss@step, not loss@tokens);
# restore() ignoring "ema" in the fragment (view x=time, 1 value hovered).
# Usage: test_report_browser.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_report_browser.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?run through ctest}
CHROME=""
for c in chromium chromium-browser google-chrome; do
  command -v "$c" > /dev/null 2>&1 && { CHROME=$c; break; }
done
if [ -z "$CHROME" ]; then
  echo "SKIP: no Chromium installed (apt-get install chromium, or setup.sh --test)"
  exit 77
fi
. "$SRC/tests/testlib.sh"
FIX="$SRC/tests/train/fixtures/mixtral_tiny"

# browse URL OUT_PREFIX [extra flags]: --dump-dom into OUT.dom, browser log into OUT.log
browse() {
  local url=$1 out=$2; shift 2
  local profile; profile=$(mktemp -d "$TMP/profile.XXXXXX")
  local root=(); [ "$(id -u)" = 0 ] && root=(--no-sandbox)
  timeout 120 "$CHROME" --headless "${root[@]}" --disable-gpu --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --enable-logging=stderr --v=0 "$@" "$url" \
    > "$out.dom" 2> "$out.log"
  local rc=$?
  rm -rf "$profile"
  return $rc
}

# check NAME OUT WANT_HOVERED: the page's self-check and the console
check() {
  local name=$1 out=$2 want=$3
  grep -q 'data-report="ok"' "$out.dom" && ok \
    || { bad "$name: the script did not report ok: $(grep -o '<html[^>]*>' "$out.dom")"; }
  grep -q 'data-report-error="' "$out.dom" && bad "$name: an uncaught error: $(grep -o 'data-report-error="[^"]*"' "$out.dom")" || ok
  grep -q ":CONSOLE" "$out.log" && { bad "$name: console messages:"; grep ":CONSOLE" "$out.log" | head -3; } || ok
  grep -q "data-hovered=\"$want" "$out.dom" && ok \
    || bad "$name: hovered $(grep -o 'data-hovered="[^"]*"' "$out.dom"), want $want"
}

# runs: the fixture; a copy with wall-clock times (30 s a step) and another lr; a dense run
mkdir "$TMP/timed" "$TMP/dense"
awk '{ t = 1700000000 + 30 * NR; sub(/"tokens":[0-9]+,/, "&\"time\":" t ","); print }' \
  "$FIX/metrics.jsonl" > "$TMP/timed/metrics.jsonl"
sed 's/^  lr: 0.001 /  lr: 0.003 /' "$FIX/config.yaml" > "$TMP/timed/config.yaml"
awk 'BEGIN { for (s = 1; s <= 50; s++)
  printf "{\"step\":%d,\"tokens\":%d,\"time\":%d,\"loss\":%g,\"lm_loss\":%g,\"aux_loss\":0,\"z_loss\":0,\"lr\":0.001,\"grad_norm\":1.5,\"tokens_per_s\":2000,\"mfu\":0,\"step_time\":0.25,\"skipped\":false}\n", s, s * 2048, 1700000000 + 20 * s, 8 - s * 0.1, 8 - s * 0.1 }' \
  > "$TMP/dense/metrics.jsonl"

run "$TMP/r1.log" "$BIN" report "$FIX" --out "$TMP/one.html"
run "$TMP/r3.log" "$BIN" report "$FIX" "$TMP/timed" "$TMP/dense" --out "$TMP/three.html"

browse "file://$TMP/one.html" "$TMP/one" --dump-dom || bad "chromium failed on one.html"
# mid-axis is step ~131: the train loss; the validation points (steps 100, 200) are too far
check "one run" "$TMP/one" "loss@tokens: 1 values"
browse "file://$TMP/three.html" "$TMP/three" --dump-dom || bad "chromium failed on three.html"
check "three runs" "$TMP/three" "loss@tokens:"
grep -q 'data-view="x=tokens"' "$TMP/three.dom" && ok || bad "three runs: view is not tokens"
# the view from the #fragment: wall-clock time with EMA: mid-axis (~66 min) only the timed
# copy has a point (the dense run ends at 17 min): its loss and its EMA
browse "file://$TMP/three.html#x=time;ema" "$TMP/time" --dump-dom || bad "chromium failed on #x=time;ema"
check "#x=time;ema" "$TMP/time" "loss@time: 2 values"
grep -q 'data-view="x=time;ema"' "$TMP/time.dom" && ok || bad "#x=time;ema: view $(grep -o 'data-view="[^"]*"' "$TMP/time.dom")"
# a screenshot renders (a blank or failed page gives a tiny file)
browse "file://$TMP/three.html" "$TMP/shot" --screenshot="$TMP/three.png" --window-size=1200,2000 \
  || bad "chromium --screenshot failed"
size=$(stat -c %s "$TMP/three.png" 2>/dev/null || echo 0)
[ "$size" -gt 50000 ] && ok || bad "screenshot is $size bytes"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
