/* arena_pack: see arena.h. Buffers are bucketed by first and by last position
 * (counting sorts), and a sweep over the positions frees and places them with a
 * free list of holes kept sorted by offset and merged on release. */
#include <stdlib.h>
#include <string.h>

#include "arena.h"

typedef struct Hole {
    int64_t off, size;
} Hole;

typedef struct FreeList {
    VEC(Hole) holes; /* sorted by offset, never adjacent (merged on release) */
    int64_t top;     /* the arena's end so far */
} FreeList;

static void remove_hole(FreeList *f, size_t i) {
    memmove(&f->holes.data[i], &f->holes.data[i + 1], sizeof(Hole) * (f->holes.len - i - 1));
    f->holes.len--;
}

/* The smallest hole that fits (the first, hence lowest, of equal ones), else the top. */
static int64_t take(FreeList *f, int64_t size) {
    size_t best = f->holes.len;
    for (size_t i = 0; i < f->holes.len; i++)
        if (f->holes.data[i].size >= size && (best == f->holes.len || f->holes.data[i].size < f->holes.data[best].size))
            best = i;
    if (best < f->holes.len) {
        Hole *h = &f->holes.data[best];
        int64_t off = h->off;
        h->off += size, h->size -= size;
        if (!h->size) remove_hole(f, best);
        return off;
    }
    int64_t off = f->top;
    if (f->holes.len) {
        Hole last = f->holes.data[f->holes.len - 1];
        if (last.off + last.size == f->top) off = last.off, f->holes.len--;
    }
    f->top = off + size;
    return off;
}

static void release(FreeList *f, int64_t off, int64_t size) {
    size_t i = 0;
    while (i < f->holes.len && f->holes.data[i].off < off) i++;
    Hole h = {off, size};
    VEC_PUSH(f->holes, h);
    memmove(&f->holes.data[i + 1], &f->holes.data[i], sizeof(Hole) * (f->holes.len - 1 - i));
    f->holes.data[i] = h;
    if (i + 1 < f->holes.len && off + size == f->holes.data[i + 1].off) {
        f->holes.data[i].size += f->holes.data[i + 1].size;
        remove_hole(f, i + 1);
    }
    if (i > 0 && f->holes.data[i - 1].off + f->holes.data[i - 1].size == off) {
        f->holes.data[i - 1].size += f->holes.data[i].size;
        remove_hole(f, i);
    }
}

static int64_t aligned(int64_t bytes) { return (bytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN; }

static int check_buffers(const ArenaBuffer *b, size_t n, int32_t npos, Err *err) {
    for (size_t i = 0; i < n; i++) {
        if (b[i].bytes < 0) return err_internal(err, "arena_pack: buffer %zu has %lld bytes", i, (long long)b[i].bytes);
        if (b[i].bytes && (b[i].first < 0 || b[i].first > b[i].last || b[i].last >= npos))
            return err_internal(err, "arena_pack: buffer %zu lives from %d to %d, outside 0..%d", i, (int)b[i].first,
                                (int)b[i].last, (int)npos - 1);
        if (b[i].bytes > INT64_MAX - ARENA_ALIGN)
            return err_set(err, "arena_pack: buffer %zu does not fit in 2^63 bytes", i);
    }
    return 0;
}

ArenaBuckets arena_buckets(const ArenaBuffer *b, size_t n, int32_t npos, int by_last) {
    ArenaBuckets k = {xcalloc((size_t)npos + 2, sizeof *k.start), xcalloc(n + 1, sizeof *k.idx)};
    for (size_t i = 0; i < n; i++)
        if (b[i].bytes) k.start[(by_last ? b[i].last : b[i].first) + 1]++;
    for (int32_t s = 0; s < npos; s++) k.start[s + 1] += k.start[s];
    size_t *fill = xcalloc((size_t)npos + 1, sizeof *fill);
    memcpy(fill, k.start, sizeof *fill * ((size_t)npos + 1));
    for (size_t i = 0; i < n; i++)
        if (b[i].bytes) k.idx[fill[by_last ? b[i].last : b[i].first]++] = i;
    free(fill);
    return k;
}

/* Position s: free the buffers last used at s - 1, then place those born at s. */
static int sweep(const ArenaBuffer *b, int32_t npos, const ArenaBuckets *born, const ArenaBuckets *dying, FreeList *f,
                 int64_t *offset, Err *err) {
    for (int32_t s = 0; s < npos; s++) {
        if (s > 0)
            for (size_t j = dying->start[s - 1]; j < dying->start[s]; j++)
                release(f, offset[dying->idx[j]], aligned(b[dying->idx[j]].bytes));
        for (size_t j = born->start[s]; j < born->start[s + 1]; j++) {
            int64_t size = aligned(b[born->idx[j]].bytes);
            if (f->top > INT64_MAX - size) return err_set(err, "arena_pack: the buffers do not fit in 2^63 bytes");
            offset[born->idx[j]] = take(f, size);
        }
    }
    return 0;
}

int arena_pack(const ArenaBuffer *bufs, size_t n, int32_t npos, int64_t *offset, int64_t *arena_bytes, Err *err) {
    if (npos < 0) return err_internal(err, "arena_pack: %d positions", (int)npos);
    if (check_buffers(bufs, n, npos, err)) return -1;
    for (size_t i = 0; i < n; i++) offset[i] = -1;
    ArenaBuckets born = arena_buckets(bufs, n, npos, 0), dying = arena_buckets(bufs, n, npos, 1);
    FreeList f = {0};
    int rc = sweep(bufs, npos, &born, &dying, &f, offset, err);
    *arena_bytes = f.top;
    VEC_FREE(f.holes);
    arena_buckets_free(&born), arena_buckets_free(&dying);
    return rc;
}

void arena_buckets_free(ArenaBuckets *k) {
    free(k->start), free(k->idx);
    k->start = k->idx = NULL;
}
