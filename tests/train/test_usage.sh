#!/usr/bin/env bash
# test_usage.sh: the command line's own messages.
# - Usage errors: for every subcommand, a bad command line prints ONE line on stderr,
#   "moetrain: WHAT (see moetrain[ CMD] --help)", nothing on stdout, and exits 2.
#   (Break seen caught: cmd_infer.c's usage() printing its help text after the line again:
#   the export/sample/eval/logits cases fail on the line count.)
# - moetrain --version: version, the git commit of the build (a commit of the source tree
#   when it is a git checkout, "unknown" otherwise), compiler, OpenBLAS, HDF5, MPI and
#   libyaml versions, and the ISA line agreeing with the kernel's /proc/cpuinfo flags.
#   (Breaks seen caught: AVX512-BF16 read from cpuid leaf 7 subleaf 0 instead of 1; the
#   commit forced to "unknown".)
# Usage: test_usage.sh PATH/TO/moetrain
set -u
BIN=${1:?usage: test_usage.sh MOETRAIN}
SRC=${MOE_SOURCE_DIR:?run through ctest}
. "$SRC/tests/testlib.sh"

# one_line NAME CMD_PATTERN -- command...: exit 2, empty stdout, exactly one stderr line
# "moetrain: ... (see moetrain[ CMD] --help)".
one_line() {
  local name=$1 cmd=$2; shift 3
  "$@" > "$TMP/out" 2> "$TMP/err"; local rc=$?
  local n; n=$(wc -l < "$TMP/err")
  if [ "$rc" = 2 ] && [ "$n" = 1 ] && [ ! -s "$TMP/out" ] &&
     grep -qE "^moetrain: .+ \(see moetrain${cmd:+ $cmd} --help\)$" "$TMP/err"; then ok
  else bad "$name: exit $rc, $n stderr line(s), want 2 and one line"; head -3 "$TMP/err"; fi
}

echo "some text" > "$TMP/t.txt"
one_line "no arguments" "" -- "$BIN"
one_line "unknown command" "" -- "$BIN" trian
one_line "train: unknown option" "" -- "$BIN" "$SRC/configs/mixtral_tiny.yaml" --foo
one_line "train: --resume without value" "" -- "$BIN" "$SRC/configs/mixtral_tiny.yaml" --resume
one_line "train: bad --stop-at" "" -- "$BIN" "$SRC/configs/mixtral_tiny.yaml" --stop-at x
one_line "train: two configs" "" -- "$BIN" a.yaml b.yaml
one_line "--version with arguments" "" -- "$BIN" --version now
one_line "tokenizer: none" "tokenizer" -- "$BIN" tokenizer
one_line "tokenizer: unknown" "tokenizer" -- "$BIN" tokenizer fit
one_line "tokenizer train: unknown option" "tokenizer train" -- "$BIN" tokenizer train --foo
one_line "tokenizer train: missing --vocab value" "tokenizer train" -- "$BIN" tokenizer train --vocab
one_line "tokenizer train: bad --vocab" "tokenizer train" -- "$BIN" tokenizer train --vocab 3 --out x "$TMP/t.txt"
one_line "data: none" "data" -- "$BIN" data
one_line "data encode: unknown option" "data encode" -- "$BIN" data encode --foo
one_line "data encode: missing inputs" "data encode" -- "$BIN" data encode --out x
one_line "ckpt: none" "ckpt" -- "$BIN" ckpt
one_line "ckpt info: no path" "ckpt" -- "$BIN" ckpt info
one_line "config: unknown" "config" -- "$BIN" config list
one_line "config keys: extra" "config" -- "$BIN" config keys x
one_line "report: none" "report" -- "$BIN" report
one_line "report: unknown option" "report" -- "$BIN" report --foo
one_line "export: none" "export" -- "$BIN" export
one_line "export: unknown option" "export" -- "$BIN" export a b --foo
one_line "export: bad format" "export" -- "$BIN" export a b --format onnx
one_line "sample: none" "sample" -- "$BIN" sample
one_line "sample: unknown option" "sample" -- "$BIN" sample m --foo
one_line "eval: unknown option" "eval" -- "$BIN" eval m --foo
one_line "logits: none" "logits" -- "$BIN" logits
one_line "logits: unknown option" "logits" -- "$BIN" logits m --foo
one_line "plan: none" "plan" -- "$BIN" plan
one_line "plan: unknown option" "plan" -- "$BIN" plan a.yaml --foo
one_line "plan: bad --nodes" "plan" -- "$BIN" plan a.yaml --nodes x
one_line "upcycle: none" "upcycle" -- "$BIN" upcycle
one_line "upcycle: unknown option" "upcycle" -- "$BIN" upcycle a b --foo
one_line "upcycle: unknown last option" "upcycle" -- "$BIN" upcycle a b --foo
# help stays available and complete on stdout
"$BIN" --help > "$TMP/out" 2>&1 && [ "$(wc -l < "$TMP/out")" -gt 20 ] && ok || bad "--help"
"$BIN" --help | grep -q -- "--version" && ok || bad "--help does not list --version"

# ---- --version ----
"$BIN" --version > "$TMP/v" 2> "$TMP/err" && [ ! -s "$TMP/err" ] && ok || { bad "--version failed"; cat "$TMP/err"; }
"$BIN" -V > "$TMP/v2" 2>&1 && cmp -s "$TMP/v" "$TMP/v2" && ok || bad "-V differs from --version"
head -1 "$TMP/v" | grep -qE '^moetrain [0-9]+\.[0-9]+\.[0-9]+$' && ok || bad "first line: $(head -1 "$TMP/v")"
field() { sed -n "s/^$1: *//p" "$TMP/v"; }
for k in commit compiler openblas hdf5 mpi libyaml onednn cpu isa; do
  [ -n "$(field $k)" ] && ok || bad "--version has no $k line"
done
if git -C "$SRC" rev-parse --git-dir > /dev/null 2>&1; then
  # a commit of this repository (not necessarily HEAD: the tree may have moved on since
  # the build), 40 hex digits, "-dirty" when the build's tree had changes
  c=$(field commit)
  [[ $c =~ ^[0-9a-f]{40}(-dirty)?$ ]] && git -C "$SRC" cat-file -e "${c%-dirty}^{commit}" 2> /dev/null \
    && ok || bad "commit '$c' is not a commit of $SRC"
else
  [ "$(field commit)" = unknown ] && ok || bad "outside git the commit is '$(field commit)', want unknown"
fi
field openblas | grep -q "OpenBLAS .*(core [A-Za-z0-9]*, [0-9]* thread" && ok || bad "openblas: $(field openblas)"
field hdf5 | grep -qE '^[0-9]+\.[0-9]+\.[0-9]+$' && ok || bad "hdf5: $(field hdf5)"
field mpi | grep -qi "mpi" && ok || bad "mpi: $(field mpi)"
field libyaml | grep -qE '^[0-9]+\.[0-9]+' && ok || bad "libyaml: $(field libyaml)"
# oneDNN: its version and ISA, or why it is not there (a build without libdnnl-dev)
field onednn | grep -qE '^oneDNN [0-9]+\.[0-9]+\.[0-9]+ \(runtime [A-Za-z]+\), ISA |not built in' \
  && ok || bad "onednn: $(field onednn)"
# the ISA as the CPU reports it: each name present exactly when /proc/cpuinfo has the flag
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
isa=" $(field isa | sed 's/(AMX:.*//') "
for pair in avx2:AVX2 avx512f:AVX-512 avx512_bf16:AVX512-BF16 amx_tile:AMX; do
  flag=${pair%%:*}; name=${pair#*:}
  has_flag=no; has_name=no
  [[ $flags == *" $flag "* ]] && has_flag=yes
  [[ $isa == *" $name "* ]] && has_name=yes
  [ $has_flag = $has_name ] && ok || bad "isa '$(field isa)' says $name=$has_name, /proc/cpuinfo $flag=$has_flag"
done

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
