#!/usr/bin/env bash
# bench_parallel.sh: training tokens/s of a config on 1, 2, 4 and 8 ranks (one OpenBLAS
# thread per rank; oversubscribed beyond the core count) and the communication volume per
# step against what the routing predicts. Usage: bench/bench_parallel.sh [BUILD_DIR] [CONFIG]
set -eu
BUILD=${1:-build}
CONFIG=${2:-configs/mixtral_tiny.yaml}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OPENBLAS_NUM_THREADS=1
for R in 1 2 4 8; do
  echo "== mpirun -n $R"
  mpirun -n "$R" "$BUILD/bench_train" "$CONFIG" --steps 8 --warmup 2 2>&1 | grep -E '^(config|sgemm|training|model|least|rank 0)'
done
