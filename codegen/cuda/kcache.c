/* Cubins in the kernel cache, and the parallel compile driver on top of it. */
#include <stdlib.h>
#include <string.h>

#include "../../base/parallel.h"
#include "kcache.h"

const KcacheFiles cuda_cache_files = {"kernel.cu", "kernel.cubin", "kernel.ptx"};

char *cuda_cache_key(const char *compiler, const char *target, const char *source) {
    char arch[64];
    const char *opts[8];
    nvrtc_options(target, arch, sizeof arch, opts, 8);
    Buf b = {0};
    buf_printf(&b, "%s\n%s\n", compiler, target);
    for (int i = 0; opts[i]; i++) buf_printf(&b, "%s\n", opts[i]);
    buf_puts(&b, source);
    char *key = kcache_hash(b.data, b.len);
    buf_free(&b);
    return key;
}

/* ---- the driver ---- */
typedef struct CompileJob {
    const Nvrtc *nv;
    const CudaKernel *kernels;
    const char *target, *dir;
    CudaCubin *cubins;
    int with_ptx;
    Err *errs;
} CompileJob;

static int compile_one(const CompileJob *j, int i) {
    const CudaKernel *k = &j->kernels[i];
    CudaCubin *out = &j->cubins[i];
    char *key = cuda_cache_key(nvrtc_version_text(j->nv), j->target, k->source), *ptx = NULL;
    int rc = 0;
    /* A hit asked for PTX needs it beside the cubin (an entry from before v3c kept PTX is compiled again). */
    const char *text = j->with_ptx ? cuda_cache_files.aside : NULL;
    out->from_cache = kcache_lookup(j->dir, key, &cuda_cache_files, text, &out->data, &out->len, &out->ptx);
    if (!out->from_cache &&
        (rc = nvrtc_compile(j->nv, k->source, k->name, j->target, &out->data, &out->len, &ptx, &j->errs[i])) == 0) {
        rc = kcache_store(j->dir, key, &cuda_cache_files, k->source, out->data, out->len, ptx, &j->errs[i]);
        if (j->with_ptx) out->ptx = ptx, ptx = NULL;
    }
    free(ptx);
    free(key);
    return rc;
}

static void compile_range(void *ctx, int64_t lo, int64_t hi) {
    const CompileJob *j = ctx;
    for (int64_t i = lo; i < hi; i++) compile_one(j, (int)i);
}

int cuda_compile_kernels(const Nvrtc *nv, const CudaKernel *kernels, int n, const char *target, const char *cache_dir,
                         CudaCubin *cubins, int with_ptx, CudaCompileStats *stats, Err *err) {
    if (cuda_target_check(target, err)) return -1;
    CudaCubin *mine = cubins ? cubins : xcalloc((size_t)n + 1, sizeof *mine);
    memset(mine, 0, sizeof *mine * (size_t)n);
    CompileJob j = {nv, kernels, target, cache_dir, mine, with_ptx && cubins, xcalloc((size_t)n + 1, sizeof(Err))};
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
    if (stats->compiled > 0) kcache_trim_to_limit(cache_dir);
    if (!cubins) cuda_cubins_free(mine, n);
    return rc;
}

void cuda_cubins_free(CudaCubin *cubins, int n) {
    for (int i = 0; i < n; i++) free(cubins[i].data), free(cubins[i].ptx);
    free(cubins);
}
