/* The kernel cache: one directory per kernel, published by rename. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kcache.h"

/* ---- the directory ---- */
static int mkdir_p(const char *path, Err *err) {
    char *p = xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) break;
        *s = '/';
    }
    int rc = mkdir(p, 0755) != 0 && errno != EEXIST ? err_set(err, "cannot create cache directory '%s': %s", path, strerror(errno)) : 0;
    free(p);
    return rc;
}

char *kcache_dir(Err *err) {
    const char *v3c = getenv("V3C_CACHE_DIR"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char *dir = v3c && *v3c ? xstrdup(v3c)
                : xdg && *xdg ? xsprintf("%s/v3c", xdg)
                : home && *home ? xsprintf("%s/.cache/v3c", home)
                : NULL;
    if (!dir) {
        err_set(err, "no kernel cache directory: set V3C_CACHE_DIR, XDG_CACHE_HOME or HOME");
        return NULL;
    }
    if (kcache_max_size(err) < 0 || mkdir_p(dir, err)) {
        free(dir);
        return NULL;
    }
    return dir;
}

/* "512M", "2G", "1048576": binary units, as du and ccache read them. */
int64_t kcache_max_size(Err *err) {
    static const char units[] = "KMGT";
    const char *v = getenv("V3C_CACHE_MAX_SIZE");
    if (!v || !*v) return KCACHE_DEFAULT_MAX;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    const char *unit = *end ? strchr(units, toupper((unsigned char)*end)) : NULL;
    int shift = unit ? 10 * (int)(unit - units + 1) : 0;
    if (unit && end[1] == 'i' && end[2] == 'B') end += 2; /* 512MiB */
    else if (unit && end[1] == 'B') end += 1;             /* 512MB */
    int well_formed = end != v && isdigit((unsigned char)*v) && errno == 0 && (unit ? end[1] == 0 : *end == 0);
    if (!well_formed || n > (INT64_MAX >> shift)) {
        err_set(err, "V3C_CACHE_MAX_SIZE='%s' is not a size: bytes, or a number with K, M, G or T (0: no limit)", v);
        return -1;
    }
    return (int64_t)n << shift;
}

/* ---- keys and entries ---- */
char *kcache_hash(const char *data, size_t n) {
    return xsprintf("%016llx%016llx", (unsigned long long)hash_bytes(data, n, 0),
                    (unsigned long long)hash_bytes(data, n, 0x9e3779b97f4a7c15ull));
}

static char *meta_text(const char *binary, size_t len) {
    char *h = kcache_hash(binary, len);
    char *m = xsprintf("size %zu\nhash %s\n", len, h);
    free(h);
    return m;
}

static char *entry_text(const char *dir, const char *key, const char *name) {
    Err ignored = {0};
    char *path = xsprintf("%s/%s/%s", dir, key, name);
    char *text = read_file(path, NULL, &ignored);
    free(path);
    return text;
}

static int binary_intact(const char *dir, const char *key, const KcacheFiles *f, char **binary, size_t *len) {
    Err ignored = {0};
    char *bin_path = xsprintf("%s/%s/%s", dir, key, f->binary), *meta = entry_text(dir, key, "kernel.meta");
    char *data = meta ? read_file(bin_path, len, &ignored) : NULL;
    char *want = data ? meta_text(data, *len) : NULL;
    int hit = want && strcmp(want, meta) == 0;
    free(want);
    free(meta);
    free(bin_path);
    if (!hit) {
        free(data);
        return 0;
    }
    *binary = data;
    return 1;
}

/* A read-only cache (an aot bundle on a shared file system) is fine: its times just stay. */
static void mark_used(const char *dir, const char *key) {
    char *path = xsprintf("%s/%s", dir, key);
    utimensat(AT_FDCWD, path, NULL, 0);
    free(path);
}

int kcache_lookup(const char *dir, const char *key, const KcacheFiles *f, const char *text_name, char **binary,
                  size_t *len, char **text) {
    if (!binary_intact(dir, key, f, binary, len)) return 0;
    if (text_name && !(*text = entry_text(dir, key, text_name))) {
        free(*binary);
        *binary = NULL;
        return 0;
    }
    mark_used(dir, key);
    return 1;
}

static int write_text_file(const char *dir, const char *name, const char *text, Err *err) {
    char *path = xsprintf("%s/%s", dir, name);
    int rc = write_file_atomic(path, text, strlen(text), err);
    free(path);
    return rc;
}

/* The meta file last: an entry is whole once its binary checks against it. */
static int write_entry(const char *tmp, const KcacheFiles *f, const char *source, const char *binary, size_t len,
                       const char *aside, Err *err) {
    char *meta = meta_text(binary, len), *bin_path = xsprintf("%s/%s", tmp, f->binary);
    int rc = write_text_file(tmp, f->source, source, err) || write_file_atomic(bin_path, binary, len, err) ||
             (aside && f->aside && write_text_file(tmp, f->aside, aside, err)) ||
             write_text_file(tmp, "kernel.meta", meta, err);
    free(bin_path);
    free(meta);
    return rc ? -1 : 0;
}

/* Calls fn on each regular file in path (an entry); the sum of their sizes. */
static int64_t entry_files(const char *path, int (*fn)(const char *file)) {
    DIR *d = opendir(path);
    int64_t bytes = 0;
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        char *file = xsprintf("%s/%s", path, e->d_name);
        struct stat st;
        if (lstat(file, &st) == 0 && S_ISREG(st.st_mode)) {
            bytes += (int64_t)st.st_size;
            if (fn) fn(file);
        }
        free(file);
    }
    if (d) closedir(d);
    return bytes;
}

static int remove_file(const char *file) { return remove(file); }

/* Every file of an entry, then the entry: 0 when it is gone. */
static int remove_entry(const char *path) {
    entry_files(path, remove_file);
    return rmdir(path);
}

/* A stale (corrupt) entry is moved aside first; losing a race to another
 * process publishing the same key is fine: its entry is as good as ours. */
static void publish(const char *tmp, const char *final) {
    if (rename(tmp, final) == 0) return;
    char *aside = xsprintf("%s.stale.%ld", final, (long)getpid());
    if (rename(final, aside) == 0) remove_entry(aside);
    free(aside);
    if (rename(tmp, final) != 0) remove_entry(tmp);
}

int kcache_store(const char *dir, const char *key, const KcacheFiles *f, const char *source, const char *binary,
                 size_t len, const char *aside, Err *err) {
    /* Process and thread: two compile threads may store equal kernels at once. */
    char *tmp = xsprintf("%s/.tmp.%s.%ld.%lx", dir, key, (long)getpid(), (unsigned long)pthread_self());
    char *final = xsprintf("%s/%s", dir, key);
    int rc = 0;
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) rc = err_set(err, "cannot create '%s': %s", tmp, strerror(errno));
    if (rc == 0) rc = write_entry(tmp, f, source, binary, len, aside, err);
    if (rc == 0) publish(tmp, final);
    else remove_entry(tmp);
    free(tmp);
    free(final);
    return rc;
}

/* ---- scanning and clearing ---- */
static int is_key(const char *name, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)name[i]) || isupper((unsigned char)name[i])) return 0;
    return 1;
}

/* KEY, .tmp.KEY.PID.THREAD (an interrupted writer) or KEY.stale.PID (an interrupted replace). */
static int is_entry_name(const char *name, int *complete) {
    size_t len = strlen(name);
    *complete = len == 32 && is_key(name, 32);
    if (*complete) return 1;
    if (strncmp(name, ".tmp.", 5) == 0) return len > 37 && is_key(name + 5, 32) && name[37] == '.';
    return len > 39 && is_key(name, 32) && strncmp(name + 32, ".stale.", 7) == 0;
}

static int has_file(const char *path, const char *name) {
    char *file = xsprintf("%s/%s", path, name);
    int yes = access(file, F_OK) == 0;
    free(file);
    return yes;
}

/* Calls visit on each entry directory of dir (complete: a published one). */
static int for_each_entry(const char *dir, void (*visit)(const char *path, int complete, void *ctx), void *ctx,
                          Err *err) {
    DIR *d = opendir(dir);
    if (!d) return err_set(err, "cannot read cache directory '%s': %s", dir, strerror(errno));
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        int complete;
        if (!is_entry_name(e->d_name, &complete)) continue;
        char *path = xsprintf("%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) visit(path, complete, ctx);
        free(path);
    }
    closedir(d);
    return 0;
}

static void count_entry(const char *path, int complete, void *ctx) {
    KcacheCounts *c = ctx;
    c->bytes += entry_files(path, NULL);
    if (!complete) return;
    c->entries++;
    c->cuda += has_file(path, "kernel.cubin");
    c->cpu += has_file(path, "kernel.o");
}

int kcache_scan(const char *dir, KcacheCounts *c, Err *err) {
    *c = (KcacheCounts){0};
    return for_each_entry(dir, count_entry, c, err);
}

static void remove_entry_dir(const char *path, int complete, void *ctx) {
    if (remove_entry(path) == 0 && complete) (*(int64_t *)ctx)++;
}

int kcache_clear(const char *dir, int64_t *removed, Err *err) {
    *removed = 0;
    return for_each_entry(dir, remove_entry_dir, removed, err);
}

/* ---- the size limit ---- */
typedef struct Used {
    char *path;
    int64_t bytes;
    struct timespec when;
} Used;

typedef struct Usage {
    VEC(Used) entries;
    int64_t bytes;
} Usage;

static void note_entry(const char *path, int complete, void *ctx) {
    Usage *u = ctx;
    struct stat st;
    int64_t bytes = entry_files(path, NULL);
    u->bytes += bytes;
    /* Half-written entries belong to writers that may still be running: never trimmed. */
    if (complete && stat(path, &st) == 0) VEC_PUSH(u->entries, ((Used){xstrdup(path), bytes, st.st_mtim}));
}

/* Oldest first; equal times by path, so the order does not depend on readdir's. */
static int older_first(const void *pa, const void *pb) {
    const Used *a = pa, *b = pb;
    if (a->when.tv_sec != b->when.tv_sec) return a->when.tv_sec < b->when.tv_sec ? -1 : 1;
    if (a->when.tv_nsec != b->when.tv_nsec) return a->when.tv_nsec < b->when.tv_nsec ? -1 : 1;
    return strcmp(a->path, b->path);
}

int kcache_trim(const char *dir, int64_t max, int64_t *removed, Err *err) {
    *removed = 0;
    if (max <= 0) return 0;
    Usage u = {{0}, 0};
    int rc = for_each_entry(dir, note_entry, &u, err);
    if (rc == 0 && u.bytes > max) {
        qsort(u.entries.data, u.entries.len, sizeof *u.entries.data, older_first);
        int64_t target = max - max / 10;
        for (size_t i = 0; i < u.entries.len && u.bytes > target; i++)
            if (remove_entry(u.entries.data[i].path) == 0) u.bytes -= u.entries.data[i].bytes, (*removed)++;
    }
    for (size_t i = 0; i < u.entries.len; i++) free(u.entries.data[i].path);
    VEC_FREE(u.entries);
    return rc;
}

void kcache_trim_to_limit(const char *dir) {
    Err ignored = {0};
    int64_t max = kcache_max_size(&ignored), removed;
    if (max > 0) kcache_trim(dir, max, &removed, &ignored);
}
