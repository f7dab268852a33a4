/* codegen: the on-disk kernel cache, shared by the CUDA (cubins) and CPU (object
 * files) code generators.
 *
 * Layout: DIR/KEY/{SOURCE, BINARY, kernel.meta[, ASIDE]}, KEY = a 128-bit hash of
 * everything the binary depends on (compiler version, target, options, the full
 * input); the file names come from the generator (KcacheFiles). An entry is
 * written into a temporary directory and renamed into place, so concurrent
 * processes sharing DIR never see half an entry; kernel.meta records the
 * binary's size and hash, so a truncated or corrupted entry is detected and
 * compiled again. */
#ifndef V3C_CODEGEN_KCACHE_H
#define V3C_CODEGEN_KCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "../base/base.h"

/* The names of an entry's text (what the binary was made from, for reading),
 * binary (what is loaded), and optionally a text kept aside for reading (the
 * cubin's PTX; NULL: none). */
typedef struct KcacheFiles {
    const char *source, *binary, *aside;
} KcacheFiles;

/* $V3C_CACHE_DIR, else $XDG_CACHE_HOME/v3c, else $HOME/.cache/v3c (created); an error too when
 * $V3C_CACHE_MAX_SIZE is set but is not a size, so a typo is heard of where the cache is used. */
char *kcache_dir(Err *err);

/* The most bytes the cache may hold: $V3C_CACHE_MAX_SIZE (bytes, or a number with K, M, G or T,
 * binary units; 0: no limit), else KCACHE_DEFAULT_MAX. -1 and an error when it is not a size. */
#define KCACHE_DEFAULT_MAX ((int64_t)1 << 30)
int64_t kcache_max_size(Err *err);
/* When dir holds more than max bytes (max > 0), removes the least recently used entries
 * (a hit counts as a use) until it holds at most 90% of max, so that a cache at its
 * limit is not trimmed again on every store. *removed: the entries removed. */
int kcache_trim(const char *dir, int64_t max, int64_t *removed, Err *err);
/* What the compile drivers call after storing: kcache_trim to kcache_max_size, errors ignored
 * (a cache that cannot be trimmed still serves). */
void kcache_trim_to_limit(const char *dir);
/* 32 hex digits naming n bytes of data. */
char *kcache_hash(const char *data, size_t n);
/* 1 and the binary when DIR/KEY is complete and intact, and with text_name (f->source or
 * f->aside; NULL: none) that file's text in *text too; 0 (nothing handed back) otherwise.
 * A hit sets the entry's time to now: kcache_trim removes the least recently used. */
int kcache_lookup(const char *dir, const char *key, const KcacheFiles *f, const char *text_name, char **binary,
                  size_t *len, char **text);
/* aside: the text of f->aside, or NULL. */
int kcache_store(const char *dir, const char *key, const KcacheFiles *f, const char *source, const char *binary,
                 size_t len, const char *aside, Err *err);

/* What a cache directory holds: entries (directories named by a key, 32 hex
 * digits) with a cubin (CUDA) or an object file (CPU), and their bytes. */
typedef struct KcacheCounts {
    int64_t entries, cuda, cpu, bytes;
} KcacheCounts;
int kcache_scan(const char *dir, KcacheCounts *c, Err *err);
/* Removes every entry, and the temporary and stale ones left by interrupted
 * writers, from dir; nothing else. *removed: the entries removed. */
int kcache_clear(const char *dir, int64_t *removed, Err *err);

#endif
