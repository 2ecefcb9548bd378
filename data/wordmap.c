/* wordmap.c: byte-string hash map, array growth, FNV-1a. See wordmap.h. */
#include "data/wordmap.h"

#include <string.h>

void wordmap_grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return;
    size_t nc = *cap ? *cap : 16;
    while (nc < need) nc *= 2;
    *p = moe_realloc(*p, *cap * elem, nc * elem);
    *cap = nc;
}

uint64_t wordmap_fnv1a(uint64_t h, const void *data, size_t n) {
    const uint8_t *s = data;
    for (size_t i = 0; i < n; i++) { h ^= s[i]; h *= 0x100000001b3ULL; }
    return h;
}

void wordmap_free(WordMap *m) {
    moe_free(m->slots); moe_free(m->hash); moe_free(m->key_off); moe_free(m->key_len);
    moe_free(m->val); moe_free(m->arena);
    memset(m, 0, sizeof *m);
}

static void wordmap_rehash(WordMap *m, size_t cap) {
    moe_free(m->slots);
    m->slots = moe_calloc(cap * sizeof(uint32_t));
    m->cap = cap;
    for (size_t e = 0; e < m->n; e++) {
        size_t s = m->hash[e] & (cap - 1);
        while (m->slots[s]) s = (s + 1) & (cap - 1);
        m->slots[s] = (uint32_t)(e + 1);
    }
}

size_t wordmap_get(WordMap *m, const uint8_t *key, size_t len, bool *added) {
    if (2 * (m->n + 1) > m->cap) wordmap_rehash(m, m->cap ? 2 * m->cap : 1024);
    uint64_t h = wordmap_fnv1a(WORDMAP_FNV_OFFSET, key, len);
    size_t s = h & (m->cap - 1);
    while (m->slots[s]) {
        size_t e = m->slots[s] - 1;
        if (m->hash[e] == h && m->key_len[e] == len &&
            memcmp(m->arena + m->key_off[e], key, len) == 0) {
            *added = false;
            return e;
        }
        s = (s + 1) & (m->cap - 1);
    }
    ASSERT(m->n < UINT32_MAX && len <= UINT32_MAX, "word map overflow (%zu entries)", m->n);
    if (m->n == m->ecap) {
        size_t old = m->ecap, nc = old ? 2 * old : 1024;
        m->hash = moe_realloc(m->hash, old * sizeof *m->hash, nc * sizeof *m->hash);
        m->key_off = moe_realloc(m->key_off, old * sizeof *m->key_off, nc * sizeof *m->key_off);
        m->key_len = moe_realloc(m->key_len, old * sizeof *m->key_len, nc * sizeof *m->key_len);
        m->val = moe_realloc(m->val, old * sizeof *m->val, nc * sizeof *m->val);
        m->ecap = nc;
    }
    wordmap_grow((void **)&m->arena, &m->arena_cap, m->arena_n + len, 1);
    memcpy(m->arena + m->arena_n, key, len);
    size_t e = m->n++;
    m->hash[e] = h; m->key_off[e] = m->arena_n; m->key_len[e] = (uint32_t)len; m->val[e] = 0;
    m->arena_n += len;
    m->slots[s] = (uint32_t)(e + 1);
    *added = true;
    return e;
}
