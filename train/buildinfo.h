/* buildinfo.h: what this program is and what it runs on: its version and git commit, the
 * compiler, the libraries as they report themselves at run time (OpenBLAS, HDF5, MPI,
 * libyaml) and the vector instruction sets the CPU reports. Printed by `moetrain --version`
 * and recorded in run.dir/runs.jsonl (train/runinfo.h).
 *
 * The version is MOE_VERSION and the commit the build's `git describe --always --dirty`
 * (CMakeLists.txt, looked up at every build; "unknown" outside a git checkout). The ISA is
 * read with cpuid: what the CPU reports, whether or not the kernel enabled the register
 * state (Linux's /proc/cpuinfo flags agree unless it did not).
 * Non-goals: benchmarking the machine (train/mfu.h); other BLAS libraries' self-reports.
 */
#ifndef MOE_BUILDINFO_H
#define MOE_BUILDINFO_H

#include <stdbool.h>
#include <stdio.h>

typedef struct BuildInfo {
    char version[32];        /* MOE_VERSION, e.g. "0.1.0" */
    char commit[64];         /* 40 hex digits [+ "-dirty"], or "unknown" */
    char compiler[160];      /* "gcc 12.2.0" */
    char build[160];         /* build type and the ISA compiled for */
    char openblas[256];      /* openblas_get_config() */
    char openblas_core[64];  /* openblas_get_corename(): the kernel set in use */
    int openblas_threads;
    char hdf5[32];           /* H5get_libversion, "1.10.8" */
    char mpi[256];           /* the first line of MPI_Get_library_version */
    char libyaml[32];        /* yaml_get_version_string() */
    char onednn[192];        /* gemm_onednn_version(): version, runtime, ISA */
    char cpu[64];            /* the CPU's brand string (cpuid), "" when it has none */
    bool avx2, avx512f, avx512bf16, amx_tile, amx_bf16, amx_int8;   /* as cpuid reports */
} BuildInfo;

/* Fill bi (overwritten). Never fails: what cannot be read is "unknown". Calls no MPI
 * function but MPI_Get_library_version (allowed before MPI_Init). */
void buildinfo_get(BuildInfo *bi);

/* "AVX2 AVX-512 AVX512-BF16 AMX" (the ones the CPU has; "none of AVX2, AVX-512, AMX" when it
 * has none of them) into out (cap bytes; 64 suffice). */
void buildinfo_isa(const BuildInfo *bi, char *out, size_t cap);

/* The `moetrain --version` text: the version line, then one "name: value" line each. */
void buildinfo_print(const BuildInfo *bi, FILE *f);

/* The same as JSON object members ("version":"0.1.0","commit":...,"isa":[...], the ISA
 * names those of /proc/cpuinfo: avx2 avx512f avx512_bf16 amx_tile amx_bf16 amx_int8), without
 * the braces, for a caller that writes the object around them. */
void buildinfo_json(const BuildInfo *bi, FILE *f);

#endif
