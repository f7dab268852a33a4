/* StrMap: string -> int64 hash map with insertion order kept (keys() iterate
 * in the order they were first inserted, so output built from it is stable). */
#ifndef V3C_STRMAP_H
#define V3C_STRMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct StrMap {
    char **keys;     /* insertion order */
    int64_t *vals;   /* parallel to keys */
    size_t len, cap; /* of keys/vals */
    int32_t *slots;  /* open addressing: index into keys, -1 empty */
    size_t nslots;
} StrMap;

void strmap_init(StrMap *m);
void strmap_free(StrMap *m);
/* Returns 1 and sets *val if present. */
int strmap_get(const StrMap *m, const char *key, int64_t *val);
/* Inserts or overwrites; returns the stored key (owned by the map). */
const char *strmap_put(StrMap *m, const char *key, int64_t val);

#endif
