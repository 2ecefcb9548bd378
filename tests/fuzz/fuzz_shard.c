/* fuzz_shard.c: libFuzzer target for data/shard.c (shard_open: header and size validated
 * before use, in both formats; shard_check_ids and shard_read: the ids).
 *
 * Input: the bytes of a token shard file. shard_open only takes a path (it maps the file),
 * so each input is written to a file in a private temporary directory first. Invariants on
 * acceptance: the file is exactly header + width*n_tokens bytes (32 and 2 for format 1, 40
 * and the header's width, 2 or 4, for format 2), vocab_size in [1, 65536] (format 1) or
 * [1, 2^31] (format 2, width 2 only up to 65536); shard_check_ids accepts exactly when every
 * id (read here through the mapping, so ASan sees any bad view) is below vocab_size, and
 * shard_read stops at the first id that is not; the Shard is zeroed after shard_close and
 * after a failed open; no moe_malloc'ed byte outlives the input.
 */
#include <string.h>

#include "data/shard.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[256];
    if (!path[0]) fuzz_path(path, sizeof path, "input.tok");
    fuzz_write_file(path, data, size);
    size_t live = moe_live_bytes();
    Shard s, zero;
    memset(&zero, 0, sizeof zero);
    MoeErr err;
    if (shard_open(&s, path, &err) == 0) {
        const size_t head = s.version == 1 ? SHARD_V1_HEADER_BYTES : SHARD_HEADER_BYTES;
        ASSERT(s.version == 1 || s.version == 2, "version %d", s.version);
        ASSERT(s.width == 2 || (s.width == 4 && s.version == 2), "width %d (format %d)", s.width,
               s.version);
        ASSERT(size == head + (size_t)s.width * s.n_tokens, "accepted %zu bytes for %zu tokens",
               size, s.n_tokens);
        ASSERT(s.vocab_size >= 1 && s.vocab_size <= (s.width == 2 ? SHARD_MAX_VOCAB16
                                                                   : SHARD_MAX_VOCAB),
               "vocab %u for width %d", s.vocab_size, s.width);
        size_t first_bad = s.n_tokens;
        for (size_t i = 0; i < s.n_tokens && first_bad == s.n_tokens; i++)
            if (shard_token(&s, i) >= s.vocab_size) first_bad = i;
        MoeErr e2;
        ASSERT((shard_check_ids(&s, &e2) == 0) == (first_bad == s.n_tokens),
               "shard_check_ids disagrees (first bad id at %zu of %zu)", first_bad, s.n_tokens);
        int32_t buf[64];
        size_t k = s.n_tokens < 64 ? s.n_tokens : 64;
        size_t got = shard_read(&s, 0, k, buf);
        ASSERT(got == (first_bad < k ? first_bad : k), "shard_read stopped at %zu", got);
        ASSERT(memcmp(s.tokens, data + head, (size_t)s.width * s.n_tokens) == 0,
               "tokens differ from the file");
        shard_close(&s);
    } else {
        ASSERT(err.msg[0] != 0, "shard_open failed without a message");
    }
    ASSERT(memcmp(&s, &zero, sizeof s) == 0, "Shard not zeroed after close / failed open");
    FUZZ_NO_LEAK(live, "shard_open");
    return 0;
}
