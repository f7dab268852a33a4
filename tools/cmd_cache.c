/* v3c cache [--clear]: what the kernel cache holds (CUDA cubins and CPU object
 * files, codegen/kcache.h), or emptying it. Entries are keyed by content, so
 * clearing is always safe: the next run compiles again. */
#include <stdio.h>
#include <stdlib.h>

#include "../codegen/kcache.h"
#include "cli.h"

static void print_limit(int64_t max) {
    if (max == 0) printf("limit: none (V3C_CACHE_MAX_SIZE=0)\n");
    else printf("limit: %lld (%.1f MiB; least recently used entries go beyond it; V3C_CACHE_MAX_SIZE)\n", (long long)max,
                (double)max / (1 << 20));
}

int cmd_cache(const Options *o, Err *err) {
    char *dir = kcache_dir(err);
    if (!dir) return -1;
    int rc;
    if (o->clear) {
        int64_t removed = 0;
        rc = kcache_clear(dir, &removed, err);
        if (rc == 0) printf("removed %lld entries from %s\n", (long long)removed, dir);
    } else {
        KcacheCounts c;
        int64_t max = kcache_max_size(err);
        rc = kcache_scan(dir, &c, err);
        if (rc == 0)
            printf("cache: %s\nentries: %lld (%lld cuda, %lld cpu)\nbytes: %lld (%.1f MiB)\n", dir, (long long)c.entries,
                   (long long)c.cuda, (long long)c.cpu, (long long)c.bytes, (double)c.bytes / (1 << 20));
        if (rc == 0) print_limit(max);
    }
    free(dir);
    return rc;
}
