/* buildinfo.c: see buildinfo.h. */
#include "train/buildinfo.h"

#include "autograd/gemm.h"

#include <cpuid.h>
#include <hdf5.h>
#include <mpi.h>
#include <string.h>
#include <yaml.h>

#include "checkpoints/json_out.h"

#ifndef MOE_VERSION
#define MOE_VERSION "unknown"
#endif
#ifndef MOE_BUILD_TYPE
#define MOE_BUILD_TYPE "unknown"
#endif

/* The generated moe_commit.c (CMakeLists.txt). */
const char *moe_build_commit(void);
/* OpenBLAS's self-report (cblas.h declares them in some versions only). */
extern char *openblas_get_config(void);
extern char *openblas_get_corename(void);
extern int openblas_get_num_threads(void);

/* cpuid leaf 7 feature bits (Intel SDM vol. 2A, CPUID; the same on AMD) and the brand
 * string (leaves 0x80000002..4). */
static void read_cpu(BuildInfo *bi) {
    unsigned a, b, c, d;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        bi->avx2 = (b >> 5) & 1;
        bi->avx512f = (b >> 16) & 1;
        bi->amx_bf16 = (d >> 22) & 1;
        bi->amx_tile = (d >> 24) & 1;
        bi->amx_int8 = (d >> 25) & 1;
        if (a >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) bi->avx512bf16 = (a >> 5) & 1;
    }
    unsigned brand[12];
    if (__get_cpuid_max(0x80000000u, NULL) >= 0x80000004u) {
        for (unsigned i = 0; i < 3; i++)
            __get_cpuid(0x80000002u + i, &brand[4 * i], &brand[4 * i + 1], &brand[4 * i + 2],
                        &brand[4 * i + 3]);
        char s[49];
        memcpy(s, brand, 48);
        s[48] = 0;
        const char *p = s;
        while (*p == ' ') p++;   /* some CPUs pad the string on the left */
        snprintf(bi->cpu, sizeof bi->cpu, "%s", p);
    }
}

void buildinfo_get(BuildInfo *bi) {
    memset(bi, 0, sizeof *bi);
    snprintf(bi->version, sizeof bi->version, "%s", MOE_VERSION);
    snprintf(bi->commit, sizeof bi->commit, "%s", moe_build_commit());
#if defined(__clang__)
    snprintf(bi->compiler, sizeof bi->compiler, "clang %s", __clang_version__);
#elif defined(__GNUC__)
    snprintf(bi->compiler, sizeof bi->compiler, "gcc %s", __VERSION__);
#else
    snprintf(bi->compiler, sizeof bi->compiler, "unknown C compiler");
#endif
    /* what the compiler was allowed to emit (-march); the kernels' BLAS picks its own */
    snprintf(bi->build, sizeof bi->build, "%s, compiled for %s%s%s%s", MOE_BUILD_TYPE,
#if defined(__AVX2__)
             "AVX2",
#else
             "x86-64 without AVX2",
#endif
#if defined(__AVX512F__)
             " AVX-512",
#else
             "",
#endif
#if defined(__AVX512BF16__)
             " AVX512-BF16",
#else
             "",
#endif
#if defined(__AMX_TILE__)
             " AMX"
#else
             ""
#endif
    );
    const char *cfg = openblas_get_config(), *core = openblas_get_corename();
    snprintf(bi->openblas, sizeof bi->openblas, "%s", cfg ? cfg : "unknown");
    snprintf(bi->openblas_core, sizeof bi->openblas_core, "%s", core ? core : "unknown");
    bi->openblas_threads = openblas_get_num_threads();
    unsigned maj = 0, min = 0, rel = 0;
    if (H5get_libversion(&maj, &min, &rel) >= 0)
        snprintf(bi->hdf5, sizeof bi->hdf5, "%u.%u.%u", maj, min, rel);
    else
        snprintf(bi->hdf5, sizeof bi->hdf5, "unknown");
    char mpi[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    if (MPI_Get_library_version(mpi, &len) == MPI_SUCCESS && len > 0) {
        mpi[len < (int)sizeof mpi ? len : (int)sizeof mpi - 1] = 0;
        mpi[strcspn(mpi, "\r\n")] = 0;   /* the first line */
        snprintf(bi->mpi, sizeof bi->mpi, "%s", mpi);
    } else {
        snprintf(bi->mpi, sizeof bi->mpi, "unknown");
    }
    snprintf(bi->libyaml, sizeof bi->libyaml, "%s", yaml_get_version_string());
    gemm_onednn_version(bi->onednn, sizeof bi->onednn);
    read_cpu(bi);
}

void buildinfo_isa(const BuildInfo *bi, char *out, size_t cap) {
    snprintf(out, cap, "%s%s%s%s", bi->avx2 ? " AVX2" : "", bi->avx512f ? " AVX-512" : "",
             bi->avx512bf16 ? " AVX512-BF16" : "", bi->amx_tile ? " AMX" : "");
    if (!out[0]) snprintf(out, cap, " none of AVX2, AVX-512, AMX");
    memmove(out, out + 1, strlen(out));   /* the leading space */
}

/* " (tile bf16 int8)": the AMX parts, after "AMX". */
static void amx_parts(const BuildInfo *bi, char *out, size_t cap) {
    snprintf(out, cap, "%s%s%s", bi->amx_tile ? " tile" : "", bi->amx_bf16 ? " bf16" : "",
             bi->amx_int8 ? " int8" : "");
}

void buildinfo_print(const BuildInfo *bi, FILE *f) {
    char isa[96], amx[32];
    buildinfo_isa(bi, isa, sizeof isa);
    amx_parts(bi, amx, sizeof amx);
    fprintf(f, "moetrain %s\n", bi->version);
    fprintf(f, "commit:   %s\n", bi->commit);
    fprintf(f, "compiler: %s (%s)\n", bi->compiler, bi->build);
    fprintf(f, "openblas: %s (core %s, %d thread%s)\n", bi->openblas, bi->openblas_core,
            bi->openblas_threads, bi->openblas_threads == 1 ? "" : "s");
    fprintf(f, "hdf5:     %s\n", bi->hdf5);
    fprintf(f, "mpi:      %s\n", bi->mpi);
    fprintf(f, "libyaml:  %s\n", bi->libyaml);
    fprintf(f, "onednn:   %s\n", bi->onednn);
    fprintf(f, "cpu:      %s\n", bi->cpu[0] ? bi->cpu : "unknown");
    fprintf(f, "isa:      %s%s%s%s\n", isa, amx[0] ? " (AMX:" : "", amx, amx[0] ? ")" : "");
}

static void json_member(FILE *f, const char *key, const char *val, bool first) {
    fprintf(f, "%s\"%s\":", first ? "" : ",", key);
    json_out_str(f, val, strlen(val));
}

void buildinfo_json(const BuildInfo *bi, FILE *f) {
    json_member(f, "version", bi->version, true);
    json_member(f, "commit", bi->commit, false);
    json_member(f, "compiler", bi->compiler, false);
    json_member(f, "build", bi->build, false);
    fprintf(f, ",\"libraries\":{");
    json_member(f, "openblas", bi->openblas, true);
    json_member(f, "openblas_core", bi->openblas_core, false);
    fprintf(f, ",\"openblas_threads\":%d", bi->openblas_threads);
    json_member(f, "hdf5", bi->hdf5, false);
    json_member(f, "mpi", bi->mpi, false);
    json_member(f, "libyaml", bi->libyaml, false);
    json_member(f, "onednn", bi->onednn, false);
    fprintf(f, "}");
    json_member(f, "cpu", bi->cpu, false);
    const char *names[6] = {"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"};
    const bool has[6] = {bi->avx2, bi->avx512f, bi->avx512bf16, bi->amx_tile, bi->amx_bf16,
                         bi->amx_int8};
    fprintf(f, ",\"isa\":[");
    for (int i = 0, n = 0; i < 6; i++)
        if (has[i]) fprintf(f, "%s\"%s\"", n++ ? "," : "", names[i]);
    fprintf(f, "]");
}
