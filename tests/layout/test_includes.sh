#!/usr/bin/env bash
# test_includes.sh: the floors hold (tests/layout/check_includes.sh passes on the
# repository), and the check can fail: on a copy of the sources with an upward include
# planted (autograd/ including train/), with a same-floor include between two folders
# (optim/ including data/), and with a module cycle inside one folder (layers/lora.c
# including layers/model.h, which includes layers/lora.h).
# Usage: test_includes.sh [MOETRAIN] (the argument ctest passes is not used)
set -u
SRC=${MOE_SOURCE_DIR:?run through ctest}
BIN=unused
. "$SRC/tests/testlib.sh"
CHECK="$SRC/tests/layout/check_includes.sh"

if bash "$CHECK" "$SRC" > "$TMP/repo.log" 2>&1; then ok
else bad "the repository breaks the floors:"; cat "$TMP/repo.log"; fi

plant() {   # NAME FILE LINE EXPECTED-MESSAGE
  local name=$1 file=$2 line=$3 want=$4 copy="$TMP/$1"
  mkdir -p "$copy"
  (cd "$SRC" && git ls-files '*.c' '*.h' 2>/dev/null || find . -name '*.[ch]' -not -path './build*') |
    (cd "$SRC" && xargs cp --parents -t "$copy")
  printf '%s\n' "$line" >> "$copy/$file"
  if bash "$CHECK" "$copy" > "$TMP/$name.log" 2>&1; then bad "$name: the check passed"
  elif grep -q "$want" "$TMP/$name.log"; then ok
  else bad "$name: the message lacks '$want'"; cat "$TMP/$name.log"; fi
}
plant upward autograd/tensor.c '#include "train/train.h"' "autograd/tensor.c:.*'autograd' (floor 1) includes 'train/'"
plant same_floor optim/adamw.c '#include "data/loader.h"' "optim/adamw.c:.*'optim' (floor 2) includes 'data/'"
plant cycle layers/lora.c '#include "layers/model.h"' "module include cycle"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
