/* The cpu backend's plan and executor. Nodes run in graph order; a fused group
 * runs at its last member, its rows split across threads (each row is computed
 * by exactly one thread in a fixed order, so results do not depend on the split). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../codegen/cpu.h"
#include "../codegen/fuse.h"
#include "../codegen/kcache.h"
#include "../codegen/kernel.h"
#include "../base/numeric.h"
#include "../base/parallel.h"
#include "cpu_backend.h"
#include "cpu_ops.h"

struct CpuPlan {
    const Graph *g;
    int64_t b, t;
    int threads;
    Fusion fusion;
    KernelDesc *descs; /* per group */
    KernelFn *fns;     /* per group */
    int32_t *last_member; /* per group */
    CpuKernels *kernels;
    struct Profile *profile; /* V3C_PROFILE=1: time per op kind, printed at cpu_plan_free; else NULL */
};

/* ---- V3C_PROFILE: wall time per kind of step (a fused group, a GEMM op, an op on the interpreter) ---- */
enum { PROFILE_FUSED = OP_COUNT, PROFILE_KINDS };

typedef struct Profile {
    double seconds[PROFILE_KINDS];
    int64_t calls[PROFILE_KINDS];
    int64_t runs; /* cpu_plan_run calls: a plan that never ran prints nothing */
} Profile;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static Profile *profile_from_env(void) {
    const char *on = getenv("V3C_PROFILE");
    return on && on[0] && strcmp(on, "0") != 0 ? xcalloc(1, sizeof(Profile)) : NULL;
}

static const char *profile_kind_name(int kind) {
    return kind == PROFILE_FUSED ? "fused group" : op_info((OpKind)kind)->name;
}

/* One line per kind, slowest first, to stderr. */
static void profile_print(const Profile *pr) {
    double total = 0;
    int order[PROFILE_KINDS], n = 0;
    for (int k = 0; k < PROFILE_KINDS; k++)
        if (pr->calls[k]) order[n++] = k, total += pr->seconds[k];
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && pr->seconds[order[j]] > pr->seconds[order[j - 1]]; j--) {
            int tmp = order[j];
            order[j] = order[j - 1], order[j - 1] = tmp;
        }
    fprintf(stderr, "; cpu backend profile: %-22s %10s %8s %6s\n", "op kind", "ms", "calls", "%");
    for (int i = 0; i < n; i++) {
        int k = order[i];
        fprintf(stderr, "; cpu backend profile: %-22s %10.1f %8lld %5.1f%%\n", profile_kind_name(k), 1e3 * pr->seconds[k],
                (long long)pr->calls[k], 100.0 * pr->seconds[k] / (total > 0 ? total : 1));
    }
    fprintf(stderr, "; cpu backend profile: %-22s %10.1f\n", "total", 1e3 * total);
}

/* ---- building ---- */
static int build_kernels(CpuPlan *p, const char *dump_dir, Err *err) {
    int n = (int)p->fusion.groups.len;
    p->descs = xcalloc((size_t)n + 1, sizeof(KernelDesc));
    p->fns = xcalloc((size_t)n + 1, sizeof(KernelFn));
    p->last_member = xcalloc((size_t)n + 1, sizeof(int32_t));
    for (int i = 0; i < n; i++) {
        const FusionGroup *gr = &p->fusion.groups.data[i];
        p->last_member[i] = gr->nodes.data[gr->nodes.len - 1];
        if (kernel_from_group(p->g, &p->fusion, i, p->b, p->t, &p->descs[i], err)) return -1;
    }
    /* Without a cache directory every run compiles: slower, nothing lost. A malformed
     * V3C_CACHE_MAX_SIZE is the user's mistake, though, and said so. */
    if (kcache_max_size(err) < 0) return -1;
    Err no_cache = {0};
    char *cache_dir = kcache_dir(&no_cache);
    CpuCompileOptions o = {.dump_dir = dump_dir, .cache_dir = cache_dir};
    p->kernels = cpu_kernels_compile(p->descs, n, &o, p->fns, err);
    free(cache_dir);
    return p->kernels ? 0 : -1;
}

CpuPlan *cpu_plan_build(const Graph *g, const InterpOptions *opt, const char *dump_dir, Err *err) {
    CpuPlan *p = xcalloc(1, sizeof *p);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = opt->threads > 0 ? opt->threads : (int)(cores > 0 ? cores : 1);
    *p = (CpuPlan){.g = g, .b = opt->batch, .t = opt->seq, .threads = threads, .profile = profile_from_env()};
    gemm_use_own_threads();
    if (fusion_plan(g, p->b, p->t, &p->fusion, err) || build_kernels(p, dump_dir, err)) {
        cpu_plan_free(p);
        return NULL;
    }
    return p;
}

void cpu_plan_free(CpuPlan *p) {
    if (!p) return;
    if (p->profile && p->profile->runs) profile_print(p->profile);
    free(p->profile);
    for (size_t i = 0; p->descs && i < p->fusion.groups.len; i++) kernel_desc_free(&p->descs[i]);
    free(p->descs);
    free(p->fns);
    free(p->last_member);
    cpu_kernels_free(p->kernels);
    fusion_free(&p->fusion);
    free(p);
}

/* ---- GEMM ops ---- */
static int64_t leading_rows(const Tensor *x) {
    int64_t m = 1;
    for (int d = 0; d + 1 < x->rank; d++) m *= x->shape[d];
    return m;
}

static int run_linear(const Tensor *const *in, Tensor *out, int threads, Err *err) {
    (void)err;
    gemm_xwt(tensor_f32(in[0]), tensor_f32(in[1]), tensor_f32(out), leading_rows(in[0]), in[1]->shape[0], in[1]->shape[1],
             threads);
    return 0;
}

/* linear_wgrad(g[...,N], x[...,K]) -> [N,K]: g^T x over the flattened leading dims. */
static int run_linear_wgrad(const Tensor *const *in, Tensor *out, int threads, Err *err) {
    (void)err;
    gemm_dyt_x(tensor_f32(in[0]), tensor_f32(in[1]), tensor_f32(out), leading_rows(in[0]), out->shape[0], out->shape[1],
               threads);
    return 0;
}

typedef int (*GemmFn)(const Tensor *const *in, Tensor *out, int threads, Err *err);
static const GemmFn gemm_fns[OP_COUNT] = {
    [OP_LINEAR] = run_linear, [OP_LINEAR_WGRAD] = run_linear_wgrad};

/* bf16 GEMMs too: products of bf16 values are exact in f32, so BLAS's f32 sum
 * is a bf16 GEMM's fp32 accumulation; run_native rounds the result to bf16. */
static int is_gemm(const Graph *g, const Node *n) {
    DType t = ir_type(g, n->out[0])->dtype;
    return gemm_fns[n->op] && (t == DT_F32 || t == DT_BF16);
}

/* ---- running ---- */
typedef struct Run {
    const CpuPlan *p;
    Tensor **vals;
    char *borrowed;
    int64_t *last_use; /* per value: the last step (node index) reading it */
} Run;

static int64_t step_of(const CpuPlan *p, int32_t node) {
    int gid = p->fusion.group_of[node];
    return gid >= 0 ? p->last_member[gid] : node;
}

static void compute_last_use(const CpuPlan *p, int64_t *last_use) {
    const Graph *g = p->g;
    for (size_t v = 0; v < g->values.len; v++) last_use[v] = step_of(p, g->values.data[v].node);
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        for (int k = 0; k < n->nin; k++) {
            int64_t s = step_of(p, (int32_t)i);
            if (s > last_use[n->in[k]]) last_use[n->in[k]] = s;
        }
    }
    for (size_t i = 0; i < g->outputs.len; i++) last_use[g->outputs.data[i].value] = INT64_MAX;
}

static Tensor *new_tensor(const Run *r, ValueId v, Err *err) {
    int64_t shape[IR_MAX_RANK];
    const Type *ty = ir_type(r->p->g, v);
    if (type_concrete(ty, r->p->b, r->p->t, shape, err)) return NULL;
    return tensor_new(ty->dtype, ty->rank, shape);
}

static int feed(Run *r, const Node *n, const TensorSet *feeds, Err *err) {
    const char *name = node_str(n, "name", "");
    Tensor *x = tset_get(feeds, name);
    if (!x) return err_set(err, "no %s named %s", n->op == OP_PARAM ? "weight" : "input", name);
    int64_t shape[IR_MAX_RANK];
    const Type *ty = ir_type(r->p->g, n->out[0]);
    if (type_concrete(ty, r->p->b, r->p->t, shape, err)) return -1;
    int ok = x->dtype == ty->dtype && x->rank == ty->rank;
    for (int i = 0; ok && i < ty->rank; i++) ok = x->shape[i] == shape[i];
    if (!ok) return err_set(err, "%s does not have the type the graph wants (B=%lld, T=%lld)", name, (long long)r->p->b, (long long)r->p->t);
    r->vals[n->out[0]] = x;
    r->borrowed[n->out[0]] = 1;
    return 0;
}

static int gather_inputs(const Run *r, const Node *n, const Tensor **in, Err *err) {
    if (n->nin > 64 || n->nout > 4) return err_internal(err, "%s has too many operands", op_info(n->op)->name);
    for (int k = 0; k < n->nin; k++)
        if (!(in[k] = r->vals[n->in[k]])) return err_internal(err, "%s reads a value that is not live", op_info(n->op)->name);
    return 0;
}

static int new_outputs(const Run *r, const Node *n, Tensor **out, Err *err) {
    for (int k = 0; k < n->nout; k++)
        if (!(out[k] = new_tensor(r, n->out[k], err))) {
            for (int j = 0; j < k; j++) tensor_free(out[j]);
            return -1;
        }
    return 0;
}

static void free_outputs(const Node *n, Tensor **out) {
    for (int k = 0; k < n->nout; k++) tensor_free(out[k]);
}

/* Native kernels compute in f32; a bf16 result is held as float on bf16's grid, as the interpreter holds it. */
static void round_bf16_outputs(const Graph *g, const Node *n, Tensor **out) {
    for (int k = 0; k < n->nout; k++) {
        if (ir_type(g, n->out[k])->dtype != DT_BF16) continue;
        round_to_bf16_array(tensor_f32(out[k]), out[k]->numel);
    }
}

/* A GEMM or one of the backend's own kernels (cpu_ops.h) into freshly allocated outputs. */
static int run_native(Run *r, const Node *n, const Tensor **in, Tensor **out, Err *err) {
    if (new_outputs(r, n, out, err)) return -1;
    CpuOpFn own = is_gemm(r->p->g, n) ? NULL : cpu_op_for(r->p->g, n);
    CpuOpCall call = {n, in, out, r->p->threads};
    int rc = own ? own(&call, err) : gemm_fns[n->op](in, out[0], r->p->threads, err);
    if (rc) free_outputs(n, out);
    else round_bf16_outputs(r->p->g, n, out);
    return rc;
}

/* A reshape that is its input's last reader takes the input's buffer instead of copying it
 * (the same elements in the same order); 1 when it did. */
static int reshape_in_place(Run *r, const Node *n, int64_t i) {
    ValueId x = n->in[0];
    if (n->op != OP_RESHAPE || r->borrowed[x] || r->last_use[x] != i || !r->vals[x]) return 0;
    const Type *ty = ir_type(r->p->g, n->out[0]);
    Tensor *t = r->vals[x];
    int64_t shape[IR_MAX_RANK];
    Err not_here = {0}; /* the interpreter's kernel then reports it */
    if (type_concrete(ty, r->p->b, r->p->t, shape, &not_here) || ty->dtype != t->dtype) return 0;
    int64_t numel = 1;
    for (int d = 0; d < ty->rank; d++) numel *= shape[d];
    if (numel != t->numel) return 0;
    t->rank = ty->rank;
    memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ty->rank);
    r->vals[x] = NULL;
    r->vals[n->out[0]] = t;
    return 1;
}

static int run_node(Run *r, const Node *n, int64_t i, Err *err) {
    const Tensor *in[64];
    Tensor *out[4];
    if (gather_inputs(r, n, in, err)) return -1;
    if (reshape_in_place(r, n, i)) return 0;
    if (is_gemm(r->p->g, n) || cpu_op_for(r->p->g, n)) {
        if (run_native(r, n, in, out, err)) return -1;
    } else if (interp_node(r->p->g, n, in, r->p->b, r->p->t, out, err)) {
        return -1;
    }
    for (int k = 0; k < n->nout; k++) r->vals[n->out[k]] = out[k];
    return 0;
}

typedef struct RowJob {
    KernelFn fn;
    float *const *bufs;
} RowJob;

static void run_rows(void *ctx, int64_t lo, int64_t hi) {
    const RowJob *j = ctx;
    j->fn(j->bufs, lo, hi);
}

/* Rows in contiguous ranges, one per thread (at most p->threads), when there is enough work. */
static void run_split(const CpuPlan *p, KernelFn fn, float *const *bufs, const KernelDesc *k) {
    RowJob job = {fn, bufs};
    parallel_for_capped(k->rows, k->cols ? k->cols : 1, p->threads, run_rows, &job);
}

static int run_group(Run *r, int gid, Err *err) {
    const KernelDesc *k = &r->p->descs[gid];
    size_t nin = k->inputs.len, nbufs = nin + k->outputs.len;
    float **bufs = xcalloc(nbufs + 1, sizeof(float *));
    int rc = 0;
    for (size_t i = 0; i < nin && rc == 0; i++) {
        Tensor *x = r->vals[k->inputs.data[i]];
        if (!x) rc = err_internal(err, "a fused kernel reads a value that is not live");
        else bufs[i] = tensor_f32(x);
    }
    for (size_t i = 0; i < k->outputs.len && rc == 0; i++) {
        Tensor *y = new_tensor(r, k->outputs.data[i], err);
        if (!y) rc = -1;
        else bufs[nin + i] = tensor_f32(r->vals[k->outputs.data[i]] = y);
    }
    if (rc == 0) run_split(r->p, r->p->fns[gid], bufs, k);
    free(bufs);
    return rc;
}

static void release(Run *r, ValueId v) {
    if (!r->borrowed[v]) tensor_free(r->vals[v]);
    r->vals[v] = NULL;
}

/* Frees the values among vs whose last reader was step i. */
static void release_after(Run *r, int64_t i, const ValueId *vs, size_t n) {
    for (size_t k = 0; k < n; k++)
        if (r->vals[vs[k]] && r->last_use[vs[k]] == i) release(r, vs[k]);
}

static int step(Run *r, int32_t i, const TensorSet *feeds, Err *err) {
    const Node *n = &r->p->g->nodes.data[i];
    int gid = r->p->fusion.group_of[i];
    if (gid >= 0 && r->p->last_member[gid] != i) return 0;
    if (gid < 0 && (n->op == OP_INPUT || n->op == OP_PARAM)) return feed(r, n, feeds, err);
    double t0 = r->p->profile ? now_seconds() : 0;
    int rc = gid >= 0 ? run_group(r, gid, err) : run_node(r, n, i, err);
    if (r->p->profile) {
        int kind = gid >= 0 ? PROFILE_FUSED : (int)n->op;
        r->p->profile->seconds[kind] += now_seconds() - t0;
        r->p->profile->calls[kind]++;
    }
    if (rc) return err_wrap(err, "node %d (%s%s%s): ", i, op_info(n->op)->name, n->scope[0] ? " in " : "", n->scope);
    if (gid >= 0) {
        const KernelDesc *k = &r->p->descs[gid];
        release_after(r, i, k->inputs.data, k->inputs.len);
        release_after(r, i, k->outputs.data, k->outputs.len);
    } else {
        release_after(r, i, n->in, (size_t)n->nin);
        release_after(r, i, n->out, (size_t)n->nout);
    }
    return 0;
}

static Tensor *tensor_copy(const Tensor *t) {
    Tensor *c = tensor_new(t->dtype, t->rank, t->shape);
    memcpy(c->data, t->data, (size_t)t->numel * dtype_host_size(t->dtype));
    return c;
}

/* Moves (or, for fed or repeated values, copies) the outputs into results. */
static void collect_outputs(Run *r, TensorSet *results) {
    const Graph *g = r->p->g;
    for (size_t i = 0; i < g->outputs.len; i++) {
        const GraphOutput *o = &g->outputs.data[i];
        int repeated = 0;
        for (size_t j = i + 1; j < g->outputs.len; j++) repeated |= g->outputs.data[j].value == o->value;
        Tensor *t = r->vals[o->value];
        if (r->borrowed[o->value] || repeated) t = tensor_copy(t);
        else r->vals[o->value] = NULL;
        tset_put(results, o->name, t);
    }
}

int cpu_plan_run(const CpuPlan *p, const TensorSet *feeds, TensorSet *results, Err *err) {
    size_t nv = p->g->values.len ? p->g->values.len : 1;
    Run r = {p, xcalloc(nv, sizeof(Tensor *)), xcalloc(nv, 1), xmalloc(nv * sizeof(int64_t))};
    compute_last_use(p, r.last_use);
    if (p->profile) p->profile->runs++;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < p->g->nodes.len; i++) rc = step(&r, (int32_t)i, feeds, err);
    if (rc == 0) collect_outputs(&r, results);
    for (size_t v = 0; v < p->g->values.len; v++)
        if (r.vals[v]) release(&r, (ValueId)v);
    free(r.vals);
    free(r.borrowed);
    free(r.last_use);
    return rc;
}

CpuPlanStats cpu_plan_stats(const CpuPlan *p) {
    CpuPlanStats s = {.groups = (int)p->fusion.groups.len,
                      .kernels = cpu_kernels_count(p->kernels),
                      .cached_kernels = cpu_kernels_cached(p->kernels)};
    for (size_t i = 0; i < p->g->nodes.len; i++) {
        const Node *n = &p->g->nodes.data[i];
        if (p->fusion.group_of[i] >= 0) s.fused_nodes++;
        else if (is_gemm(p->g, n)) s.gemm_nodes++;
        else if (cpu_op_for(p->g, n)) s.native_nodes++;
        else if (n->op != OP_INPUT && n->op != OP_PARAM) s.interp_nodes++;
    }
    return s;
}
