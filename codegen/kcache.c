/* The kernel cache: one directory per kernel, published by rename. */
#include <errno.h>
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
    if (mkdir_p(dir, err)) {
        free(dir);
        return NULL;
    }
    return dir;
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

int kcache_lookup(const char *dir, const char *key, const KcacheFiles *f, char **binary, size_t *len) {
    Err ignored = {0};
    char *bin_path = xsprintf("%s/%s/%s", dir, key, f->binary), *meta_path = xsprintf("%s/%s/kernel.meta", dir, key);
    char *meta = read_file(meta_path, NULL, &ignored), *data = meta ? read_file(bin_path, len, &ignored) : NULL;
    char *want = data ? meta_text(data, *len) : NULL;
    int hit = want && strcmp(want, meta) == 0;
    free(want);
    free(meta);
    free(bin_path);
    free(meta_path);
    if (!hit) {
        free(data);
        return 0;
    }
    *binary = data;
    return 1;
}

char *kcache_text(const char *dir, const char *key, const char *name) {
    Err ignored = {0};
    char *path = xsprintf("%s/%s/%s", dir, key, name);
    char *text = read_file(path, NULL, &ignored);
    free(path);
    return text;
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

static void remove_entry(const char *path, const KcacheFiles *f) {
    const char *const files[] = {f->source, f->binary, "kernel.meta", f->aside};
    for (size_t i = 0; i < sizeof files / sizeof *files && files[i]; i++) {
        char *file = xsprintf("%s/%s", path, files[i]);
        remove(file);
        free(file);
    }
    rmdir(path);
}

/* A stale (corrupt) entry is moved aside first; losing a race to another
 * process publishing the same key is fine: its entry is as good as ours. */
static void publish(const char *tmp, const char *final, const KcacheFiles *f) {
    if (rename(tmp, final) == 0) return;
    char *aside = xsprintf("%s.stale.%ld", final, (long)getpid());
    if (rename(final, aside) == 0) remove_entry(aside, f);
    free(aside);
    if (rename(tmp, final) != 0) remove_entry(tmp, f);
}

int kcache_store(const char *dir, const char *key, const KcacheFiles *f, const char *source, const char *binary,
                 size_t len, const char *aside, Err *err) {
    /* Process and thread: two compile threads may store equal kernels at once. */
    char *tmp = xsprintf("%s/.tmp.%s.%ld.%lx", dir, key, (long)getpid(), (unsigned long)pthread_self());
    char *final = xsprintf("%s/%s", dir, key);
    int rc = 0;
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) rc = err_set(err, "cannot create '%s': %s", tmp, strerror(errno));
    if (rc == 0) rc = write_entry(tmp, f, source, binary, len, aside, err);
    if (rc == 0) publish(tmp, final, f);
    else remove_entry(tmp, f);
    free(tmp);
    free(final);
    return rc;
}
