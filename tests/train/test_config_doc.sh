#!/usr/bin/env bash
# test_config_doc.sh: docs/configuration.md is exactly what `moetrain config keys` prints
# from the key table (configs/config_keys.c), so the reference cannot drift from the reader:
# a changed key, default, range or doc line fails here until the file is regenerated.
# Also: `config keys --help` explains the command, a bad subcommand exits 2.
# Usage: test_config_doc.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_config_doc.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?MOE_SOURCE_DIR must be set (run through ctest)}
. "$SRC/tests/testlib.sh"

if "$BIN" config keys > "$TMP/ref.md" 2> "$TMP/err"; then ok
else bad "config keys failed"; cat "$TMP/err"; fi
if diff -u "$SRC/docs/configuration.md" "$TMP/ref.md" > "$TMP/diff"; then ok
else
  bad "docs/configuration.md is out of date; regenerate it with
  moetrain config keys > docs/configuration.md"
  head -40 "$TMP/diff"
fi
grep -q 'moetrain config keys > docs/configuration.md' "$TMP/ref.md" && ok ||
  bad "no generated-by line"

"$BIN" config keys --help > "$TMP/help" 2>&1 &&
  grep -q "usage: moetrain config keys" "$TMP/help" && ok || bad "config keys --help"
"$BIN" config frobnicate > /dev/null 2> "$TMP/err"; rc=$?
[ "$rc" = 2 ] && grep -q "unknown config command" "$TMP/err" && ok || bad "bad subcommand: exit $rc"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
