/* v3c compile: generate every CUDA kernel of a model's graph and compile it with
 * NVRTC (or take it from the kernel cache) without running anything; needs no GPU. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../codegen/cuda/cuda.h"
#include "../codegen/cuda/kcache.h"
#include "../codegen/cuda/nvrtc.h"
#include "cli.h"

/* Shapes are constants in the kernels: compile for one (B, T); DeepSeek-V3 trains at T = 4096. */
enum { DEFAULT_BATCH = 1, DEFAULT_SEQ = 4096 };
static const char default_target[] = "sm_90a";

static int write_text(const char *dir, const char *name, const char *ext, const char *text, Err *err) {
    char *path = xsprintf("%s/%s.%s", dir, name, ext);
    int rc = write_file_atomic(path, text, strlen(text), err);
    free(path);
    return rc;
}

static int dump_sources(const CudaPlan *p, const char *dir, Err *err) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return err_set(err, "cannot create --dump-kernels directory '%s': %s", dir, strerror(errno));
    for (size_t i = 0; i < p->kernels.len; i++)
        if (write_text(dir, p->kernels.data[i].name, "cu", p->kernels.data[i].source, err)) return -1;
    return 0;
}

/* Beside each NAME.cu, the PTX NVRTC assembled its cubin from. */
static int dump_ptx(const CudaPlan *p, const CudaCubin *cubins, const char *dir, Err *err) {
    for (size_t i = 0; i < p->kernels.len; i++)
        if (write_text(dir, p->kernels.data[i].name, "ptx", cubins[i].ptx, err)) return -1;
    return 0;
}

static void print_summary(const CudaPlan *p, const CudaCompileStats *st, const char *target) {
    printf("target: %s (B=%lld, T=%lld)\n", target, (long long)p->b, (long long)p->t);
    printf("kernels: %lld generated, %zu distinct, %lld compiled, %lld from cache\n", (long long)p->generated,
           p->kernels.len, (long long)st->compiled, (long long)st->cached);
    int64_t counts[LIB_KIND_COUNT] = {0}, own = 0;
    for (size_t i = 0; i < p->calls.len; i++) {
        counts[p->calls.data[i].kind]++;
        own += cuda_call_step_launches(&p->calls.data[i]);
    }
    printf("library calls:");
    for (int k = 0; k < LIB_KIND_COUNT; k++) printf("%s %lld %s", k ? "," : "", (long long)counts[k], cuda_lib_kind_name(k));
    /* A bf16 GEMM's rounding kernel and the attention's row kernels are launched from their call
     * records, not the plan's launch list. */
    printf("\nlaunches: %lld kernel launches, %lld nodes without data movement\n", (long long)p->launches.len + own,
           (long long)p->aliases);
}

/* With dump_dir, also writes each kernel's PTX there. */
static int compile_plan(const CudaPlan *p, const char *target, const char *dump_dir, CudaCompileStats *st, Err *err) {
    Nvrtc *nv = nvrtc_open(err);
    if (!nv) return -1;
    char *dir = kcache_dir(err);
    int n = (int)p->kernels.len;
    CudaCubin *cubins = dump_dir ? xcalloc((size_t)n + 1, sizeof *cubins) : NULL;
    int rc = dir ? cuda_compile_kernels(nv, p->kernels.data, n, target, dir, cubins, dump_dir != NULL, st, err) : -1;
    if (rc == 0 && dump_dir) rc = dump_ptx(p, cubins, dump_dir, err);
    if (cubins) cuda_cubins_free(cubins, n);
    free(dir);
    nvrtc_close(nv);
    return rc;
}

int cmd_compile(const Options *o, Err *err) {
    const char *target = o->target ? o->target : default_target;
    if (cuda_target_check(target, err)) return -1;
    if (o->batch == 0 || o->seq == 0) return err_set(err, "--batch and --seq must be at least 1");
    Model m;
    if (model_build(o, &m, err)) {
        model_free(&m);
        return -1;
    }
    CudaPlan p;
    int64_t b = o->batch > 0 ? o->batch : DEFAULT_BATCH, t = o->seq > 0 ? o->seq : DEFAULT_SEQ;
    int rc = cuda_plan_build(m.graph, b, t, NULL, &p, err);
    model_free(&m);
    if (rc) return -1;
    CudaCompileStats st = {0, 0};
    rc = o->dump_kernels ? dump_sources(&p, o->dump_kernels, err) : 0;
    if (rc == 0) rc = compile_plan(&p, target, o->dump_kernels, &st, err);
    if (rc == 0) print_summary(&p, &st, target);
    cuda_plan_free(&p);
    return rc;
}
