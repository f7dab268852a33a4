#include "data.h"

#include <stdlib.h>
#include <string.h>

int corpus_open(Corpus *c, const char *path, int64_t seq, Err *err) {
    memset(c, 0, sizeof *c);
    size_t len;
    char *text = read_file(path, &len, err);
    if (!text) return err_wrap(err, "training data: ");
    if (len == 0) {
        free(text);
        return err_set(err, "training data %s is empty", path);
    }
    if ((uint64_t)len < (uint64_t)seq) {
        free(text);
        return err_set(err, "training data %s has %zu bytes, fewer than one sequence of %lld (--seq)", path, len,
                       (long long)seq);
    }
    c->path = xstrdup(path);
    c->bytes = (unsigned char *)text;
    c->len = len;
    return 0;
}

void corpus_close(Corpus *c) {
    free(c->path);
    free(c->bytes);
    memset(c, 0, sizeof *c);
}

/* splitmix64's finaliser: a well-mixed 64-bit value from any input. */
static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t window_start(uint64_t seed, int64_t step, int64_t row, uint64_t windows) {
    uint64_t h = mix64(seed + 0x9e3779b97f4a7c15ull);
    h = mix64(h ^ (uint64_t)step);
    h = mix64(h ^ ((uint64_t)row * 0x9e3779b97f4a7c15ull));
    return h % windows; /* the modulo bias is below windows / 2^64: negligible */
}

Tensor *corpus_batch(const Corpus *c, uint64_t seed, int64_t step, int64_t batch, int64_t seq) {
    int64_t shape[2] = {batch, seq};
    Tensor *ids = tensor_new(DT_I64, 2, shape);
    int64_t *out = ids->data;
    uint64_t windows = (uint64_t)c->len - (uint64_t)seq + 1;
    for (int64_t r = 0; r < batch; r++) {
        const unsigned char *src = c->bytes + window_start(seed, step, r, windows);
        for (int64_t t = 0; t < seq; t++) out[r * seq + t] = src[t];
    }
    return ids;
}
