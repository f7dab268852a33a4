#include "strmap.h"

#include <stdlib.h>
#include <string.h>

#include "base.h"

void strmap_init(StrMap *m) { memset(m, 0, sizeof *m); }

void strmap_free(StrMap *m) {
    for (size_t i = 0; i < m->len; i++) free(m->keys[i]);
    free(m->keys);
    free(m->vals);
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static size_t slot_of(const StrMap *m, const char *key) {
    size_t mask = m->nslots - 1;
    size_t i = (size_t)hash_bytes(key, strlen(key), 0) & mask;
    while (m->slots[i] >= 0 && strcmp(m->keys[m->slots[i]], key) != 0) i = (i + 1) & mask;
    return i;
}

static void grow_slots(StrMap *m) {
    free(m->slots);
    m->nslots = m->nslots ? m->nslots * 2 : 64;
    m->slots = xmalloc(m->nslots * sizeof *m->slots);
    for (size_t i = 0; i < m->nslots; i++) m->slots[i] = -1;
    for (size_t k = 0; k < m->len; k++) m->slots[slot_of(m, m->keys[k])] = (int32_t)k;
}

int strmap_get(const StrMap *m, const char *key, int64_t *val) {
    if (!m->nslots) return 0;
    int32_t k = m->slots[slot_of(m, key)];
    if (k < 0) return 0;
    if (val) *val = m->vals[k];
    return 1;
}

const char *strmap_put(StrMap *m, const char *key, int64_t val) {
    if ((m->len + 1) * 2 > m->nslots) grow_slots(m);
    size_t s = slot_of(m, key);
    if (m->slots[s] >= 0) {
        m->vals[m->slots[s]] = val;
        return m->keys[m->slots[s]];
    }
    if (m->len == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 16;
        m->keys = xrealloc(m->keys, m->cap * sizeof *m->keys);
        m->vals = xrealloc(m->vals, m->cap * sizeof *m->vals);
    }
    m->keys[m->len] = xstrdup(key);
    m->vals[m->len] = val;
    m->slots[s] = (int32_t)m->len;
    return m->keys[m->len++];
}
