#!/usr/bin/env bash
# setup.sh [--test]: make this machine ready for moetrain.
#   1. installs the Debian packages that are missing (apt-get, through sudo when not root;
#      nothing is installed, and no password asked, when all are there);
#   2. configures and builds build/ (cmake, two jobs).
# --test: also installs what the test suite needs besides (clang and its sanitizer
# runtime; chromium, in which test_report_browser.sh opens a report), then runs the whole
# suite, tests/run_all.sh, which does its own builds.
set -euo pipefail
cd "$(dirname "$0")"
want=(build-essential cmake pkg-config libopenblas-dev libyaml-dev check libopenmpi-dev
      openmpi-bin libhdf5-dev hdf5-tools libdnnl-dev)
case "${1:-}" in
  "") ;;
  --test) want+=(clang libclang-rt-14-dev chromium) ;;
  -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "setup.sh: unknown option '$1' (use --test or nothing)" >&2; exit 2 ;;
esac
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
    missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then as_root=()
  elif command -v sudo >/dev/null 2>&1; then as_root=(sudo)
  else
    echo "setup.sh: error: these packages are missing and this user is neither root nor" \
         "has sudo: ${missing[*]}" >&2
    echo "hint: ask an administrator to run: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y \
    --no-install-recommends "${missing[@]}"
fi
if [ "${1:-}" = --test ]; then exec tests/run_all.sh; fi
cmake -S . -B build
cmake --build build -j2
