/* Training data: a corpus file read as bytes (the byte-level tokenizer: token =
 * byte value, vocabulary 256) and batches that are a pure function of
 * (seed, step), so a resumed run sees exactly the batches the uninterrupted run saw. */
#ifndef V3C_DATA_H
#define V3C_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "../ir/interp.h"

typedef struct Corpus {
    char *path;
    unsigned char *bytes;
    size_t len;
} Corpus;

/* Reads the whole file. Errors: missing/unreadable, empty, or shorter than one
 * sequence of seq tokens ("... has N bytes, fewer than one sequence of T"). */
int corpus_open(Corpus *c, const char *path, int64_t seq, Err *err);
void corpus_close(Corpus *c);

/* input_ids i64 [batch, seq] for training step `step` (0-based): row r starts at
 * an offset drawn from a stream seeded by (seed, step, r), uniform over every
 * window that fits in the corpus. */
Tensor *corpus_batch(const Corpus *c, uint64_t seed, int64_t step, int64_t batch, int64_t seq);

#endif
