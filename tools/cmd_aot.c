/* v3c aot: compiles a training job ahead of time for a cluster layout into a
 * bundle (bundle.h, docs/aot.md) that `v3c launch` runs without the model
 * source, the passes or NVRTC. Needs no GPU and no ranks. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../base/json.h"
#include "../codegen/cuda/cuda.h"
#include "../codegen/cuda/kcache.h"
#include "../codegen/cuda/nvrtc.h"
#include "../ir/text.h"
#include "bundle.h"

enum { DEFAULT_SEQ = 4096 }; /* DeepSeek-V3's pretraining length, as `compile` */
static const char default_target[] = "sm_90a";

typedef struct Aot {
    const Options *o;
    const char *target;
    Layout l;
    int64_t batch, seq, rows; /* global batch, sequence, one micro-batch's rows on one data rank */
    Model m;
    const char *objective;
    ExpertStacks experts;
    PipelineSplit *split;
    Schedule *sched;
    char *tmp;          /* the bundle while it is written */
    RankMemory *memory; /* per pipe rank */
    VEC(CudaKernel) kernels; /* distinct over every stage graph (names and sources owned) */
    StrMap kernel_index;
    int64_t generated, launches, library_calls;
    CudaCompileStats compile;
    double seconds[4]; /* build, plans, kernels, memory */
} Aot;

/* ---- options ---- */

static int check_batch(Aot *a, Err *err) {
    int64_t per_step = layout_data_ranks(&a->l) * a->l.microbatches;
    if (a->o->seq == 0 || a->o->batch == 0) return err_set(err, "--batch and --seq must be at least 1");
    a->seq = a->o->seq > 0 ? a->o->seq : DEFAULT_SEQ;
    a->batch = a->o->batch > 0 ? a->o->batch : per_step; /* one sequence per micro-batch */
    if (a->seq < 2) return err_set(err, "--seq must be at least 2 (one next-token target)");
    if (a->batch % per_step)
        return err_set(err, "--batch %lld does not split into %lld data ranks x %lld micro-batches (give a multiple of %lld)",
                       (long long)a->batch, (long long)layout_data_ranks(&a->l), (long long)a->l.microbatches,
                       (long long)per_step);
    a->rows = a->batch / per_step;
    return 0;
}

/* -o DIR: absent, empty, or an earlier bundle (replaced whole at the end). */
static int check_out_dir(const char *dir, Err *err) {
    struct stat st;
    if (stat(dir, &st) != 0) return 0;
    if (!S_ISDIR(st.st_mode)) return err_set(err, "-o %s is a file, not a directory", dir);
    char *manifest = xsprintf("%s/manifest.json", dir);
    int bundle = access(manifest, F_OK) == 0;
    free(manifest);
    if (bundle) return 0;
    if (rmdir(dir) == 0 || errno == ENOENT) return 0;
    return err_set(err, "-o %s is a directory that holds something other than a v3c bundle; give a new or empty one", dir);
}

static int check_options(Aot *a, Err *err) {
    const Options *o = a->o;
    if (!o->out_file) return err_set(err, "'v3c aot' needs -o DIR (where to write the bundle)");
    a->target = o->target ? o->target : default_target;
    if (cuda_target_check(a->target, err) || layout_configure(o, -1, &a->l, err) || check_batch(a, err)) return -1;
    if (a->l.pp > 1 && !(a->sched = schedule_build(a->l.schedule, (int)a->l.pp, (int)a->l.microbatches, err)))
        return -1;
    layout_place(&a->l, 0); /* the plans are EP rank 0's (bundle.h) */
    return check_out_dir(o->out_file, err);
}

/* ---- the stage graphs ---- */

static int build_plans(Aot *a, Err *err) {
    if (train_build_model(a->o, &a->m, err)) return -1;
    if (a->l.ep > 1 && expert_stacks_collect(a->m.graph, &a->experts, err)) return -1;
    if (train_prepare_graph(a->o, &a->l, a->m.graph, &a->objective, err)) return -1;
    PipelineSplitOptions so = {.stages = (int)a->l.pp, .split_weights = a->l.pp > 1 && a->l.schedule != SCHED_1F1B};
    a->split = pipeline_split(a->m.graph, &so, err);
    return a->split ? 0 : -1;
}

static int write_text(const char *dir, const char *name, const char *text, size_t len, Err *err) {
    char *path = xsprintf("%s/%s", dir, name);
    int rc = write_file_atomic(path, text, len, err);
    free(path);
    return rc;
}

static int make_dir(const char *dir, const char *name, Err *err) {
    char *path = name ? xsprintf("%s/%s", dir, name) : xstrdup(dir);
    int rc = mkdir(path, 0755) == 0 ? 0 : err_set(err, "cannot create %s: %s", path, strerror(errno));
    free(path);
    return rc;
}

static int write_plans(Aot *a, Err *err) {
    if (make_dir(a->tmp, "plans", err)) return -1;
    for (int s = 0; s < a->split->stages; s++)
        for (int part = 0; part < PIPE_PART_COUNT; part++) {
            Buf b = {0};
            ir_print(a->split->graphs[s][part], NULL, &b);
            char *name = bundle_plan_path(s, (PipePart)part);
            int rc = write_text(a->tmp, name, b.data ? b.data : "", b.len, err);
            free(name);
            buf_free(&b);
            if (rc) return -1;
        }
    return 0;
}

static int write_experts(Aot *a, Err *err) {
    if (a->l.ep == 1) return 0;
    Buf b = {0};
    buf_printf(&b, "{\"experts\": %lld, \"stacks\": [", (long long)a->experts.experts);
    for (size_t s = 0; s < a->experts.stacks.len; s++) {
        buf_puts(&b, s ? ",\n  [" : "\n  [");
        for (int64_t e = 0; e < a->experts.experts; e++) {
            if (e) buf_puts(&b, ", ");
            json_write_string(&b, a->experts.stacks.data[s][e]);
        }
        buf_putc(&b, ']');
    }
    buf_puts(&b, "\n]}\n");
    int rc = write_text(a->tmp, "experts.json", b.data, b.len, err);
    buf_free(&b);
    return rc;
}

/* ---- kernels ---- */

static void take_kernels(Aot *a, CudaPlan *p) {
    for (size_t i = 0; i < p->kernels.len; i++) {
        CudaKernel k = p->kernels.data[i];
        if (strmap_get(&a->kernel_index, k.name, NULL)) continue;
        strmap_put(&a->kernel_index, k.name, (int64_t)a->kernels.len);
        k.name = xstrdup(k.name);
        k.source = xstrdup(k.source);
        VEC_PUSH(a->kernels, k);
    }
    a->generated += p->generated;
    a->launches += (int64_t)p->launches.len;
    a->library_calls += (int64_t)p->calls.len;
}

static int plan_kernels(Aot *a, Err *err) {
    strmap_init(&a->kernel_index);
    for (int s = 0; s < a->split->stages; s++)
        for (int part = 0; part < PIPE_PART_COUNT; part++) {
            CudaPlan p;
            if (cuda_plan_build(a->split->graphs[s][part], a->rows, a->seq, NULL, &p, err))
                return err_wrap(err, "stage %d %s: ", s, pipe_part_name((PipePart)part));
            take_kernels(a, &p);
            cuda_plan_free(&p);
        }
    return 0;
}

/* Compiles through the user's kernel cache (so a second aot compiles nothing),
 * then stores every cubin in the bundle's own cache directory. */
static int compile_kernels(Aot *a, Err *err) {
    Nvrtc *nv = nvrtc_open(err);
    char *user = nv ? kcache_dir(err) : NULL, *dir = xsprintf("%s/kernels", a->tmp);
    int n = (int)a->kernels.len, rc = user && make_dir(dir, NULL, err) == 0 ? 0 : -1;
    CudaCubin *cubins = xcalloc((size_t)n + 1, sizeof *cubins);
    if (rc == 0) rc = cuda_compile_kernels(nv, a->kernels.data, n, a->target, user, cubins, 0, &a->compile, err);
    for (int i = 0; rc == 0 && i < n; i++) {
        char *key = cuda_cache_key(nvrtc_version_text(nv), a->target, a->kernels.data[i].source);
        rc = kcache_store(dir, key, &cuda_cache_files, a->kernels.data[i].source, cubins[i].data, cubins[i].len, NULL, err);
        free(key);
    }
    cuda_cubins_free(cubins, n);
    free(dir);
    free(user);
    nvrtc_close(nv);
    return rc;
}

static void free_kernels(Aot *a) {
    for (size_t i = 0; i < a->kernels.len; i++) {
        free(a->kernels.data[i].name);
        free(a->kernels.data[i].source);
    }
    VEC_FREE(a->kernels);
    strmap_free(&a->kernel_index);
}

/* ---- memory and manifest ---- */

static int plan_memory(Aot *a, Err *err) {
    a->memory = xcalloc((size_t)a->l.pp, sizeof *a->memory);
    for (int r = 0; r < a->l.pp; r++)
        if (bundle_rank_memory(a->split, a->sched, &a->l, &a->experts, a->m.graph, r, a->rows, a->seq,
                               &a->memory[r], err))
            return -1;
    return 0;
}

static void memory_json(Buf *b, const RankMemory *m) {
    buf_printf(b,
               "{\"parameter_bytes\": %lld, \"gradient_bytes\": %lld, \"optimizer_bytes\": %lld, "
               "\"activation_bytes\": %lld, \"total_bytes\": %lld, \"inflight_microbatches\": %lld, "
               "\"weight_derived_bytes\": %lld}",
               (long long)m->parameters, (long long)m->gradients, (long long)m->optimizer, (long long)m->activations,
               (long long)rank_memory_total(m), (long long)m->inflight, (long long)m->weight_derived);
}

static void pipe_ranks_json(const Aot *a, Buf *b) {
    buf_puts(b, ",\n \"pipe_ranks\": [");
    for (int r = 0; r < a->l.pp; r++) {
        int stages[2], n = bundle_rank_stages(&a->l, r, stages);
        buf_printf(b, "%s\n  {\"pipe_rank\": %d, \"stages\": [%d%s", r ? "," : "", r, stages[0], n > 1 ? ", " : "");
        if (n > 1) buf_printf(b, "%d", stages[1]);
        buf_puts(b, "], \"memory\": ");
        memory_json(b, &a->memory[r]);
        buf_putc(b, '}');
    }
    buf_puts(b, "\n ]");
}

/* World rank w: its pipe rank (stage), EP rank and replica; layout_place's rule. */
static void ranks_json(const Aot *a, Buf *b) {
    buf_puts(b, ",\n \"ranks\": [");
    Layout l = a->l;
    for (int64_t w = 0; w < layout_world(&a->l); w++) {
        layout_place(&l, (int)w);
        buf_printf(b, "%s\n  {\"rank\": %lld, \"pipe_rank\": %d, \"ep_rank\": %d, \"replica\": %d}", w ? "," : "",
                   (long long)w, l.stage, l.ep_rank, l.replica);
    }
    buf_puts(b, "\n ]");
}

static void stages_json(const Aot *a, Buf *b) {
    buf_puts(b, ",\n \"stages\": [");
    for (int s = 0; s < a->split->stages; s++) {
        buf_printf(b, "%s\n  {\"stage\": %d", s ? "," : "", s);
        for (int part = 0; part < PIPE_PART_COUNT; part++) {
            char *path = bundle_plan_path(s, (PipePart)part);
            buf_printf(b, ", \"%s\": ", pipe_part_name((PipePart)part));
            json_write_string(b, path);
            free(path);
        }
        buf_putc(b, '}');
    }
    buf_puts(b, "\n ]");
}

static void head_json(const Aot *a, Buf *b, const char *hypers) {
    const Options *o = a->o;
    buf_printf(b, "{\"format\": \"%s\", \"version\": %d,\n \"model\": ", BUNDLE_FORMAT, BUNDLE_VERSION);
    json_write_string(b, o->model);
    buf_puts(b, ",\n \"checkpoint\": ");
    json_write_string(b, o->checkpoint ? o->checkpoint : "");
    buf_printf(b, ",\n \"hyperparameters\": %s,\n \"objective\": \"%s\"", hypers, a->objective);
    buf_printf(b, ",\n \"layout\": {\"pp\": %lld, \"ep\": %lld, \"dp\": %lld, \"world\": %lld, \"schedule\": \"%s\", "
                  "\"microbatches\": %lld}",
               (long long)a->l.pp, (long long)a->l.ep, (long long)a->l.dp, (long long)layout_world(&a->l),
               sched_kind_name(a->l.schedule), (long long)a->l.microbatches);
    buf_printf(b, ",\n \"batch\": %lld, \"seq\": %lld, \"microbatch_rows\": %lld, \"fp8\": %s, \"bf16\": %s, \"recompute\": %s, "
                  "\"ep_capacity\": %lld",
               (long long)a->batch, (long long)a->seq, (long long)a->rows, o->fp8 ? "true" : "false",
               o->bf16 ? "true" : "false", o->recompute ? "true" : "false", (long long)o->ep_capacity);
    buf_printf(b, ",\n \"target\": \"%s\", \"kernels\": {\"dir\": \"kernels\", \"generated\": %lld, \"distinct\": %zu, "
                  "\"launches\": %lld, \"library_calls\": %lld}",
               a->target, (long long)a->generated, a->kernels.len, (long long)a->launches,
               (long long)a->library_calls);
}

/* The training graph's params in its order (bundle.h: Bundle.weights). */
static void weights_json(const Aot *a, Buf *b) {
    buf_puts(b, ",\n \"weights\": [");
    int first = 1;
    for (size_t i = 0; i < a->m.graph->nodes.len; i++) {
        const Node *n = &a->m.graph->nodes.data[i];
        if (n->op != OP_PARAM) continue;
        buf_puts(b, first ? "\n  " : ",\n  ");
        json_write_string(b, node_str(n, "name", "?"));
        first = 0;
    }
    buf_puts(b, "\n ]");
}

static int write_manifest(Aot *a, Err *err) {
    char *hypers = a->m.program ? program_hypers_json(a->m.program) : xstrdup("{}");
    Buf b = {0};
    head_json(a, &b, hypers);
    stages_json(a, &b);
    pipe_ranks_json(a, &b);
    ranks_json(a, &b);
    weights_json(a, &b);
    buf_puts(&b, "\n}\n");
    int rc = write_text(a->tmp, "hyperparameters.json", hypers, strlen(hypers), err);
    if (rc == 0) rc = write_text(a->tmp, "manifest.json", b.data, b.len, err);
    buf_free(&b);
    free(hypers);
    return rc;
}

/* ---- output ---- */

static void print_memory_row(int r, const RankMemory *m, double unit) {
    printf("%-9d %10.2f %10.2f %10.2f %12.2f %10.2f %9lld\n", r, m->parameters / unit, m->gradients / unit,
           m->optimizer / unit, m->activations / unit, rank_memory_total(m) / unit, (long long)m->inflight);
}

static void print_memory(const Aot *a) {
    int64_t most = 0;
    for (int r = 0; r < a->l.pp; r++)
        if (rank_memory_total(&a->memory[r]) > most) most = rank_memory_total(&a->memory[r]);
    int gib = most >= (int64_t)1 << 30;
    printf("memory per rank (%s; every rank of a pipe rank alike):\n", gib ? "GiB" : "MiB");
    printf("%-9s %10s %10s %10s %12s %10s %9s\n", "pipe_rank", "params", "grads", "optimizer", "activations", "total",
           "in_flight");
    for (int r = 0; r < a->l.pp; r++) print_memory_row(r, &a->memory[r], gib ? 1073741824.0 : 1048576.0);
}

static void print_summary(const Aot *a) {
    printf("bundle: %s (%lld ranks: pp %lld x ep %lld x dp %lld, %s, %lld micro-batches of %lld x %lld)\n",
           a->o->out_file, (long long)layout_world(&a->l), (long long)a->l.pp, (long long)a->l.ep, (long long)a->l.dp,
           sched_kind_name(a->l.schedule), (long long)a->l.microbatches, (long long)a->rows, (long long)a->seq);
    printf("kernels: %lld generated, %zu distinct, %lld compiled, %lld from cache (%s)\n", (long long)a->generated,
           a->kernels.len, (long long)a->compile.compiled, (long long)a->compile.cached, a->target);
    print_memory(a);
    printf("time: build %.1f s, plans %.1f s, kernels %.1f s, memory %.1f s\n", a->seconds[0], a->seconds[1],
           a->seconds[2], a->seconds[3]);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int write_bundle(Aot *a, Err *err) {
    double t0 = now();
    if (build_plans(a, err)) return -1;
    double t1 = now();
    a->tmp = xsprintf("%s.tmp.%ld", a->o->out_file, (long)getpid());
    if (make_dir(a->tmp, NULL, err) || write_plans(a, err) || write_experts(a, err)) return -1;
    double t2 = now();
    if (plan_kernels(a, err) || compile_kernels(a, err)) return -1;
    double t3 = now();
    if (plan_memory(a, err) || write_manifest(a, err)) return -1;
    double t4 = now();
    double marks[5] = {t0, t1, t2, t3, t4};
    for (int i = 0; i < 4; i++) a->seconds[i] = marks[i + 1] - marks[i];
    return dir_publish(a->tmp, a->o->out_file, "write the bundle", dir_remove_tree, err);
}

static void aot_free(Aot *a) {
    if (a->tmp) dir_remove_tree(a->tmp); /* gone already when published */
    free(a->tmp);
    free(a->memory);
    free_kernels(a);
    schedule_free(a->sched);
    pipeline_split_free(a->split);
    expert_stacks_free(&a->experts);
    model_free(&a->m);
}

int cmd_aot(const Options *o, Err *err) {
    Aot a = {.o = o};
    int rc = check_options(&a, err);
    if (rc == 0) rc = write_bundle(&a, err);
    if (rc == 0) print_summary(&a);
    aot_free(&a);
    return rc;
}
