#!/usr/bin/env bash
# check_includes.sh [ROOT]: the folders are floors, and includes point down.
# Reads every `#include "folder/file.h"` line of the C sources under ROOT (default: the
# repository) and fails, naming the file, its line and the two folders, on an include from
# a folder to a folder on a higher floor or to a folder the floors table does not know; and
# on a cycle between modules (a module is a .c/.h pair: a.c including b.h while b.c
# includes a.h is a cycle even inside one folder), found with tsort.
# Floors, lowest first; a folder may include its own floor and any lower one:
#   core          allocator, errors, RNG, thread pool, checked file I/O, JSON
#   autograd      tensors, the tape, the ops, the parameter store
#   data optim parallel   tokenizer and corpora; AdamW; MPI (each uses only the floors below)
#   layers        model pieces built from ops
#   configs       the config reader and the narrow types it makes
#   checkpoints   HDF5 checkpoints, run directories, exports, upcycling, fine-tuning bases
#   train         the programs and the training loop
# tests/ and bench/ may include anything.
set -euo pipefail
ROOT=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
floor_of() {
  case $1 in
    core) echo 0 ;; autograd) echo 1 ;; data|optim|parallel) echo 2 ;; layers) echo 3 ;;
    configs) echo 4 ;; checkpoints) echo 5 ;; train) echo 6 ;; *) echo -1 ;;
  esac
}
bad=0
cd "$ROOT"
while IFS= read -r hit; do
  file=${hit%%:*}; rest=${hit#*:}; line=${rest%%:*}; inc=${rest#*:}
  from=${file%%/*}
  to=$(sed -E 's/.*#include "([^/"]+)\/.*/\1/' <<<"$inc")
  case $from in tests|bench|tools) continue ;; esac
  ff=$(floor_of "$from"); ft=$(floor_of "$to")
  if [ "$ff" -lt 0 ]; then
    echo "$file:$line: folder '$from' is on no floor (add it to tests/layout/check_includes.sh)"
    bad=1
  elif [ "$ft" -lt 0 ]; then
    echo "$file:$line: includes from '$to/', a folder on no floor"
    bad=1
  elif [ "$from" != "$to" ] && [ "$ft" -ge "$ff" ]; then
    echo "$file:$line: '$from' (floor $ff) includes '$to/' (floor $ft): includes point down only"
    bad=1
  fi
done < <(grep -rnE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"[^/"]+/' --include='*.c' --include='*.h' . |
         sed 's|^\./||')
# Module cycles: one edge per include between two different modules, tests and bench aside.
edges=$(grep -rnE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"[^/"]+/' --include='*.c' \
          --include='*.h' . | sed 's|^\./||' | grep -vE '^(tests|bench|tools)/' |
        sed -E 's/^([^:]+)\.[ch]:[0-9]+:.*#include "([^"]+)\.h".*/\1 \2/' |
        awk '$1 != $2' | sort -u)
if ! loop=$(tsort <<<"$edges" 2>&1 >/dev/null) || [ -n "$loop" ]; then
  echo "module include cycle:"
  sed 's/^tsort: //' <<<"$loop"
  bad=1
fi
if [ $bad = 0 ]; then echo "check_includes: every include points down the floors"; fi
exit $bad
