/* The kernel cache (one directory per kernel, published by rename) and the
 * parallel compile driver on top of it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../base/parallel.h"
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
static char *hash128(const char *data, size_t n) {
    return xsprintf("%016llx%016llx", (unsigned long long)hash_bytes(data, n, 0),
                    (unsigned long long)hash_bytes(data, n, 0x9e3779b97f4a7c15ull));
}

char *kcache_key(const char *compiler, const char *target, const char *source) {
    char arch[64];
    const char *opts[8];
    nvrtc_options(target, arch, sizeof arch, opts, 8);
    Buf b = {0};
    buf_printf(&b, "%s\n%s\n", compiler, target);
    for (int i = 0; opts[i]; i++) buf_printf(&b, "%s\n", opts[i]);
    buf_puts(&b, source);
    char *key = hash128(b.data, b.len);
    buf_free(&b);
    return key;
}

static char *meta_text(const char *cubin, size_t len) {
    char *h = hash128(cubin, len);
    char *m = xsprintf("size %zu\nhash %s\n", len, h);
    free(h);
    return m;
}

int kcache_lookup(const char *dir, const char *key, char **cubin, size_t *len) {
    Err ignored = {0};
    char *cubin_path = xsprintf("%s/%s/kernel.cubin", dir, key), *meta_path = xsprintf("%s/%s/kernel.meta", dir, key);
    char *meta = read_file(meta_path, NULL, &ignored), *data = meta ? read_file(cubin_path, len, &ignored) : NULL;
    char *want = data ? meta_text(data, *len) : NULL;
    int hit = want && strcmp(want, meta) == 0;
    free(want);
    free(meta);
    free(cubin_path);
    free(meta_path);
    if (!hit) {
        free(data);
        return 0;
    }
    *cubin = data;
    return 1;
}

static int write_entry(const char *tmp, const char *source, const char *cubin, size_t len, Err *err) {
    char *meta = meta_text(cubin, len);
    char *paths[3] = {xsprintf("%s/kernel.cu", tmp), xsprintf("%s/kernel.cubin", tmp), xsprintf("%s/kernel.meta", tmp)};
    int rc = write_file_atomic(paths[0], source, strlen(source), err) || write_file_atomic(paths[1], cubin, len, err) ||
             write_file_atomic(paths[2], meta, strlen(meta), err);
    for (int i = 0; i < 3; i++) free(paths[i]);
    free(meta);
    return rc ? -1 : 0;
}

static void remove_entry(const char *path) {
    static const char *const files[] = {"kernel.cu", "kernel.cubin", "kernel.meta"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char *f = xsprintf("%s/%s", path, files[i]);
        remove(f);
        free(f);
    }
    rmdir(path);
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

int kcache_store(const char *dir, const char *key, const char *source, const char *cubin, size_t len, Err *err) {
    char *tmp = xsprintf("%s/.tmp.%s.%ld", dir, key, (long)getpid()), *final = xsprintf("%s/%s", dir, key);
    int rc = 0;
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) rc = err_set(err, "cannot create '%s': %s", tmp, strerror(errno));
    if (rc == 0) rc = write_entry(tmp, source, cubin, len, err);
    if (rc == 0) publish(tmp, final);
    else remove_entry(tmp);
    free(tmp);
    free(final);
    return rc;
}

/* ---- the driver ---- */
typedef struct CompileJob {
    const Nvrtc *nv;
    const CudaKernel *kernels;
    const char *target, *dir;
    CudaCubin *cubins;
    Err *errs;
} CompileJob;

static int compile_one(const CompileJob *j, int i) {
    const CudaKernel *k = &j->kernels[i];
    CudaCubin *out = &j->cubins[i];
    char *key = kcache_key(nvrtc_version_text(j->nv), j->target, k->source);
    int rc = 0;
    if (kcache_lookup(j->dir, key, &out->data, &out->len)) {
        out->from_cache = 1;
    } else if ((rc = nvrtc_compile(j->nv, k->source, k->name, j->target, &out->data, &out->len, &j->errs[i])) == 0) {
        rc = kcache_store(j->dir, key, k->source, out->data, out->len, &j->errs[i]);
    }
    free(key);
    return rc;
}

static void compile_range(void *ctx, int64_t lo, int64_t hi) {
    const CompileJob *j = ctx;
    for (int64_t i = lo; i < hi; i++) compile_one(j, (int)i);
}

int cuda_compile_kernels(const Nvrtc *nv, const CudaKernel *kernels, int n, const char *target, const char *cache_dir,
                         CudaCubin *cubins, CudaCompileStats *stats, Err *err) {
    if (cuda_target_check(target, err)) return -1;
    CudaCubin *mine = cubins ? cubins : xcalloc((size_t)n + 1, sizeof *mine);
    memset(mine, 0, sizeof *mine * (size_t)n);
    CompileJob j = {nv, kernels, target, cache_dir, mine, xcalloc((size_t)n + 1, sizeof(Err))};
    /* Each item is a whole NVRTC compile: always worth a thread. */
    parallel_for(n, 1 << 20, compile_range, &j);
    int rc = 0;
    *stats = (CudaCompileStats){0, 0};
    for (int i = 0; i < n; i++) {
        if (j.errs[i].set && rc == 0) {
            *err = j.errs[i];
            rc = -1;
        }
        if (mine[i].from_cache) stats->cached++;
        else if (mine[i].data) stats->compiled++;
    }
    free(j.errs);
    if (!cubins) cuda_cubins_free(mine, n);
    return rc;
}

void cuda_cubins_free(CudaCubin *cubins, int n) {
    for (int i = 0; i < n; i++) free(cubins[i].data);
    free(cubins);
}
