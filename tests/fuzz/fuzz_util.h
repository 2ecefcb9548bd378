/* fuzz_util.h: helpers shared by the libFuzzer targets in tests/fuzz/ (built only with
 * -DMOE_FUZZ=ON, see CMakeLists.txt and run_fuzz.sh).
 *
 * Every target checks, besides what ASan/UBSan/LSan catch, that one input leaves moetrain's
 * allocator with exactly the live bytes it had before (FUZZ_NO_LEAK): a leak through
 * moe_malloc is then reported on the input that caused it, not at exit.
 *
 * Non-goals: anything beyond what the targets share (temp files, the leak check, a byte
 * reader for structured inputs).
 */
#ifndef MOE_FUZZ_UTIL_H
#define MOE_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "core/common.h"

/* A fresh private directory for the whole run (under /dev/shm when it exists: the targets
 * that need a path write every input to a file). Created on first call; static storage. */
const char *fuzz_tmpdir(void);

/* dir/name into a static buffer of the caller (cap bytes); ASSERTs that it fits. */
void fuzz_path(char *out, size_t cap, const char *name);

/* Write data[0..n) to path (truncating); ASSERTs on any I/O error (a harness bug). */
void fuzz_write_file(const char *path, const uint8_t *data, size_t n);

/* Aborts naming the input's effect when moetrain's allocator holds other live bytes than
 * before (a leak or a double free through moe_malloc/moe_free). */
#define FUZZ_NO_LEAK(before, what) \
    ASSERT(moe_live_bytes() == (before), "%s: moe_malloc live bytes %zu before, %zu after", \
           (what), (size_t)(before), moe_live_bytes())

/* Consumes the fuzzer's bytes from the front; reads past the end give zeros. */
typedef struct FuzzIn { const uint8_t *p; size_t n; } FuzzIn;
uint8_t fuzz_u8(FuzzIn *in);
uint32_t fuzz_u32(FuzzIn *in);
/* Up to max bytes (fewer when the input runs out): a view into the input, *len set. */
const uint8_t *fuzz_bytes(FuzzIn *in, size_t max, size_t *len);

#endif
