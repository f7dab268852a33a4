/* The CUDA executor: a plan's launches and library calls replayed through a
 * CudaApi. Device memory: one arena holding a buffer per graph value that a
 * launch, a library call or the caller touches (a reshape shares its
 * source's), placed by liveness so that values whose lifetimes do not overlap
 * share bytes (arena.h); one buffer per scratch slot (sized for the
 * largest node, reused node after node: the compute stream orders them); and
 * one status word per launch, so a bad-data code names the launch, hence the
 * node, that stored it.
 *
 * Streams: uploads and downloads on a copy stream, kernels and GEMMs on a
 * compute stream; events order them (compute waits for the uploads, the
 * downloads wait for the computation) and time the step. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/arena.h"
#include "cuda_attention.h"
#include "cuda_host_node.h"
#include "cuda_exec.h"

enum { MAX_SCRATCH = 8, MIN_ALLOC = 16 };

struct CudaExec {
    CudaApi *api;
    const Graph *g;
    CudaPlan plan;
    CuModule *modules;
    CuFunction *functions;
    CuPtr *buf;   /* per value: its device address in the arena, 0 when nothing touches it */
    CuPtr arena;  /* every value's buffer */
    size_t *size; /* per value with a buffer of its own (not a reshape's alias): its bytes, else 0 */
    /* The buffers by last use (for poisoning): bucket s holds the values whose last use is node s;
     * params, inputs and graph outputs live to the step's end (bucket nodes.len, never poisoned). */
    ArenaBuckets dead;
    int params_resident; /* the params on the device are those of the last upload (which completed) */
    CuPtr scratch[MAX_SCRATCH];
    int64_t scratch_bytes[MAX_SCRATCH];
    int32_t scratch_zeroed_for[MAX_SCRATCH]; /* the node whose launches the slot currently serves */
    CuPtr status;                            /* one int per launch */
    int *status_host;
    CuStream compute, copy;
    CuEvent start, uploaded, computed, end;
    CudaExecStats stats;
};

/* ---- messages ---- */
/* "embedding (node 12, layers.0.mlp)": where a message points. */
static void node_where(const Graph *g, int32_t node, char *out, size_t n) {
    const Node *nd = &g->nodes.data[node];
    snprintf(out, n, "%s (node %d%s%s)", op_info(nd->op)->name, (int)node, nd->scope && *nd->scope ? ", " : "",
             nd->scope ? nd->scope : "");
}

static const char *const status_meaning[] = {
    [CUDA_STATUS_INDEX] = "an index out of range (a token id outside the vocabulary, a target outside the logits, "
                          "or a routing index outside the experts)",
    [CUDA_STATUS_NAN] = "a NaN where a number is needed (routing scores, or an FP8 operand)",
    [CUDA_STATUS_COUNTS] = "expert row counts that do not fit the rows",
};

/* ---- prepare: checks, kernels, buffers ---- */
static int is_fp8_call(CudaLibKind k) { return k == LIB_FP8_GEMM || k == LIB_FP8_GEMM_WGRAD; }
static int runs_on_host(CudaLibKind k) { return k == LIB_EP_DISPATCH || k == LIB_EP_COMBINE; }
static int has_runner(CudaLibKind k);

/* The table's view of an FP8 call: the forward form as the op has it (its scales re-laid by
 * the plan's launches, FP8_FWD_*); the weight gradient as the TN GEMM of the transposed copies
 * the plan's launches make (codegen/cuda/cuda.h, FP8_WGRAD_*): out[n,k] = qa^T[n,mp] qb^T[k,mp]^T. */
static CudaFp8Gemm fp8_shape(const CudaLibCall *c) {
    if (c->kind == LIB_FP8_GEMM_WGRAD)
        return (CudaFp8Gemm){.both_1x128 = 1, .m = c->n, .n = c->k, .k = fp8_wgrad_tokens(c->m)};
    return (CudaFp8Gemm){.m = c->m, .n = c->n, .k = c->k};
}

/* The precisions the cuBLASLt path computes: f32 x f32 -> f32 (fp32 products);
 * bf16 x bf16 -> bf16 (TF32 products, exact on bf16 values, fp32 sums, then the
 * plan's rounding kernel: the interpreter's one rounding of the sum to bf16, up to
 * the sum's order and precision); e4m3 x e4m3 with f32 scales -> f32 or bf16.
 * Anything else is refused rather than computed in another precision. */
static int call_types_ok(const Graph *g, const CudaLibCall *c) {
    const Node *n = &g->nodes.data[c->node];
    DType out = ir_type(g, n->out[0])->dtype;
    int fp8 = is_fp8_call(c->kind), ok = out == DT_F32 || out == DT_BF16;
    for (int k = 0; k < n->nin && ok; k++) {
        DType dt = ir_type(g, n->in[k])->dtype;
        int counts = (c->kind == LIB_GROUPED_GEMM || c->kind == LIB_GROUPED_WGRAD) && k == 1;
        ok = counts ? dt == DT_I32 || dt == DT_I64 : fp8 ? dt == (k % 2 == 0 ? DT_E4M3 : DT_F32) : dt == out;
    }
    return ok;
}

static int check_call(CudaApi *api, const Graph *g, const CudaLibCall *c, Err *err) {
    char where[256];
    node_where(g, c->node, where, sizeof where);
    if (!has_runner(c->kind))
        return err_set(err, "--backend cuda: %s: the executor does not run %s library calls; run it with --backend cpu",
                       where, cuda_lib_kind_name(c->kind));
    if (runs_on_host(c->kind)) return 0; /* the interpreter's kernel takes every dtype the op does */
    CudaFp8Gemm shape = fp8_shape(c);
    if (is_fp8_call(c->kind) && api->fp8_check && api->fp8_check(api, &shape, err))
        return err_wrap(err, "--backend cuda: %s: ", where);
    if (call_types_ok(g, c)) return 0;
    return err_set(err, "--backend cuda: %s: the cuBLASLt path computes f32 x f32 -> f32, bf16 x bf16 -> bf16, and "
                        "e4m3 x e4m3 with f32 scales -> f32 or bf16 (fp8_matmul); this one has other dtypes",
                   where);
}

static int load_kernels(CudaExec *x, Err *err) {
    int n = (int)x->plan.kernels.len;
    x->modules = xcalloc((size_t)n + 1, sizeof *x->modules);
    x->functions = xcalloc((size_t)n + 1, sizeof *x->functions);
    CudaCubin *images = xcalloc((size_t)n + 1, sizeof *images);
    CudaCompileStats st = {0};
    int rc = x->api->compile(x->api, x->plan.kernels.data, n, images, &st, err);
    for (int i = 0; i < n && rc == 0; i++) {
        rc = x->api->module_load(x->api, &images[i], &x->modules[i], err);
        if (rc == 0) rc = x->api->module_function(x->api, x->modules[i], x->plan.kernels.data[i].name, &x->functions[i], err);
    }
    cuda_cubins_free(images, n);
    x->stats.compiled = st.compiled, x->stats.cached = st.cached;
    return rc;
}

static void mark_args(uint8_t *used, const CudaLaunch *l) {
    for (int a = 0; a < l->nargs; a++)
        if (l->args[a].kind == CARG_VALUE) used[l->args[a].value] = 1;
}

/* Values something reads or writes: launch arguments, library operands (and the
 * arguments of the launches a call makes itself), graph outputs; then, backwards,
 * the source of every used reshape. */
static uint8_t *values_used(const CudaExec *x) {
    const Graph *g = x->g;
    uint8_t *used = xcalloc(g->values.len + 1, 1);
    for (size_t i = 0; i < x->plan.launches.len; i++) mark_args(used, &x->plan.launches.data[i]);
    for (size_t i = 0; i < x->plan.calls.len; i++) {
        const CudaLibCall *c = &x->plan.calls.data[i];
        const Node *n = &g->nodes.data[c->node];
        for (int k = 0; k < n->nin; k++) used[n->in[k]] = 1;
        for (int k = 0; k < n->nout; k++) used[n->out[k]] = 1;
        const CudaLaunch *own[CUDA_CALL_LAUNCHES];
        for (int j = 0, nl = cuda_call_launches(c, own); j < nl; j++) mark_args(used, own[j]);
    }
    for (size_t i = 0; i < g->outputs.len; i++) used[g->outputs.data[i].value] = 1;
    for (size_t i = g->nodes.len; i-- > 0;) {
        const Node *n = &g->nodes.data[i];
        if (n->op == OP_RESHAPE && used[n->out[0]]) used[n->in[0]] = 1;
    }
    return used;
}

static int value_bytes(const CudaExec *x, ValueId v, size_t *bytes, Err *err) {
    int64_t shape[IR_MAX_RANK];
    const Type *ty = ir_type(x->g, v);
    if (type_concrete(ty, x->plan.b, x->plan.t, shape, err)) return -1;
    int64_t numel = 1;
    for (int i = 0; i < ty->rank; i++) numel *= shape[i];
    *bytes = (size_t)numel * dtype_host_size(ty->dtype);
    return 0;
}

static int device_alloc(CudaExec *x, size_t bytes, CuPtr *p, Err *err) {
    size_t n = bytes < MIN_ALLOC ? MIN_ALLOC : bytes;
    if (x->api->mem_alloc(x->api, n, p, err)) return -1;
    x->stats.device_bytes += (int64_t)n;
    return 0;
}

/* A reshape's output is its source's buffer: root[v] is the value whose buffer v uses. */
static ValueId *buffer_roots(const Graph *g) {
    ValueId *root = xcalloc(g->values.len + 1, sizeof *root);
    for (size_t v = 0; v < g->values.len; v++) root[v] = (ValueId)v;
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        if (n->op == OP_RESHAPE) root[n->out[0]] = root[n->in[0]];
    }
    return root;
}

static void touch(ArenaBuffer *iv, ValueId v, int32_t node) {
    if (node < iv[v].first) iv[v].first = node;
    if (node > iv[v].last) iv[v].last = node;
}

static void touch_args(ArenaBuffer *iv, const ValueId *root, const CudaLaunch *l, int32_t node) {
    for (int a = 0; a < l->nargs; a++)
        if (l->args[a].kind == CARG_VALUE) touch(iv, root[l->args[a].value], node);
}

/* Each buffer's lifetime in node positions: from the first to the last node
 * whose launches or library call read or write it (a reshape's uses count for
 * its source), its producer included. Params and inputs are uploaded before
 * the step and graph outputs downloaded after it, so they span 0 .. nodes.len
 * (the step's end). Only roots get intervals; bytes are set by the caller. */
static ArenaBuffer *lifetimes(const CudaExec *x, const ValueId *root, const uint8_t *used) {
    const Graph *g = x->g;
    int32_t end = (int32_t)g->nodes.len;
    ArenaBuffer *iv = xcalloc(g->values.len + 1, sizeof *iv);
    for (size_t v = 0; v < g->values.len; v++) iv[v] = (ArenaBuffer){INT32_MAX, -1, 0};
    for (size_t i = 0; i < x->plan.launches.len; i++)
        touch_args(iv, root, &x->plan.launches.data[i], x->plan.launches.data[i].node);
    for (size_t i = 0; i < x->plan.calls.len; i++) {
        const CudaLibCall *c = &x->plan.calls.data[i];
        const Node *n = &g->nodes.data[c->node];
        for (int k = 0; k < n->nin; k++) touch(iv, root[n->in[k]], c->node);
        for (int k = 0; k < n->nout; k++) touch(iv, root[n->out[k]], c->node);
        const CudaLaunch *own[CUDA_CALL_LAUNCHES];
        for (int j = 0, nl = cuda_call_launches(c, own); j < nl; j++) touch_args(iv, root, own[j], c->node);
    }
    for (size_t i = 0; i < g->outputs.len; i++) touch(iv, root[g->outputs.data[i].value], end);
    for (size_t v = 0; v < g->values.len; v++) {
        if (!used[v] || root[v] != (ValueId)v) continue;
        int32_t producer = g->values.data[v].node;
        OpKind op = g->nodes.data[producer].op;
        if (op == OP_PARAM || op == OP_INPUT) touch(iv, (ValueId)v, 0), touch(iv, (ValueId)v, end);
        else touch(iv, (ValueId)v, producer);
    }
    return iv;
}

/* Sizes of the used roots (an empty tensor still gets an address); the sum is
 * what one buffer per value would take. */
static int size_buffers(CudaExec *x, const ValueId *root, const uint8_t *used, ArenaBuffer *iv, Err *err) {
    for (size_t v = 0; v < x->g->values.len; v++) {
        if (!used[v] || root[v] != (ValueId)v) continue;
        size_t bytes;
        if (value_bytes(x, (ValueId)v, &bytes, err)) return -1;
        x->size[v] = bytes < MIN_ALLOC ? MIN_ALLOC : bytes;
        iv[v].bytes = (int64_t)x->size[v];
        x->stats.values_bytes += iv[v].bytes;
    }
    return 0;
}

static int place_values(CudaExec *x, const ValueId *root, const ArenaBuffer *iv, Err *err) {
    size_t nv = x->g->values.len;
    int64_t *offset = xcalloc(nv + 1, sizeof *offset), arena = 0;
    int rc = arena_pack(iv, nv, (int32_t)x->g->nodes.len + 1, offset, &arena, err);
    if (rc == 0) rc = device_alloc(x, (size_t)arena, &x->arena, err);
    for (size_t v = 0; v < nv && rc == 0; v++)
        if (offset[root[v]] >= 0) x->buf[v] = x->arena + (CuPtr)offset[root[v]];
    x->stats.arena_bytes = arena;
    free(offset);
    return rc;
}

static int alloc_values(CudaExec *x, Err *err) {
    const Graph *g = x->g;
    uint8_t *used = values_used(x);
    ValueId *root = buffer_roots(g);
    ArenaBuffer *iv = lifetimes(x, root, used);
    x->buf = xcalloc(g->values.len + 1, sizeof *x->buf);
    x->size = xcalloc(g->values.len + 1, sizeof *x->size);
    int rc = size_buffers(x, root, used, iv, err);
    if (rc == 0) rc = place_values(x, root, iv, err);
    if (rc == 0) x->dead = arena_buckets(iv, g->values.len, (int32_t)g->nodes.len + 1, 1);
    free(used), free(root), free(iv);
    return rc;
}

static int size_scratch(CudaExec *x, const CudaLaunch *l, Err *err) {
    for (int a = 0; a < l->nargs; a++) {
        const CudaArg *arg = &l->args[a];
        if (arg->kind != CARG_SCRATCH) continue;
        if (arg->scratch < 0 || arg->scratch >= MAX_SCRATCH)
            return err_internal(err, "CUDA plan: scratch slot %d (at most %d)", arg->scratch, MAX_SCRATCH);
        if (arg->bytes > x->scratch_bytes[arg->scratch]) x->scratch_bytes[arg->scratch] = arg->bytes;
    }
    return 0;
}

/* One buffer per scratch slot, as large as any node asks (its launches, or the call's own). */
static int alloc_scratch(CudaExec *x, Err *err) {
    for (size_t i = 0; i < x->plan.launches.len; i++)
        if (size_scratch(x, &x->plan.launches.data[i], err)) return -1;
    for (size_t i = 0; i < x->plan.calls.len; i++) {
        const CudaLaunch *own[CUDA_CALL_LAUNCHES];
        for (int j = 0, nl = cuda_call_launches(&x->plan.calls.data[i], own); j < nl; j++)
            if (size_scratch(x, own[j], err)) return -1;
    }
    for (int s = 0; s < MAX_SCRATCH; s++) {
        x->scratch_zeroed_for[s] = -1;
        if (x->scratch_bytes[s] > 0 && device_alloc(x, (size_t)x->scratch_bytes[s], &x->scratch[s], err)) return -1;
    }
    size_t n = x->plan.launches.len;
    x->status_host = xcalloc(n + 1, sizeof(int));
    return device_alloc(x, (n + 1) * sizeof(int), &x->status, err);
}

static int create_streams(CudaExec *x, Err *err) {
    CudaApi *a = x->api;
    if (a->stream_create(a, &x->compute, err) || a->stream_create(a, &x->copy, err)) return -1;
    CuEvent *events[] = {&x->start, &x->uploaded, &x->computed, &x->end};
    for (size_t i = 0; i < sizeof events / sizeof *events; i++)
        if (a->event_create(a, events[i], err)) return -1;
    return 0;
}

CudaExec *cuda_exec_prepare(CudaApi *api, const Graph *g, const InterpOptions *opt, Err *err) {
    return cuda_exec_prepare_opts(api, g, opt, NULL, err);
}

CudaExec *cuda_exec_prepare_opts(CudaApi *api, const Graph *g, const InterpOptions *opt, const CudaPlanOptions *plan,
                                 Err *err) {
    CudaExec *x = xcalloc(1, sizeof *x);
    x->api = api;
    x->g = g;
    if (api->bind(api, err)) {
        api->close(api);
        free(x);
        return NULL;
    }
    int rc = cuda_plan_build(g, opt->batch, opt->seq, plan, &x->plan, err);
    for (size_t i = 0; i < x->plan.calls.len && rc == 0; i++) rc = check_call(api, g, &x->plan.calls.data[i], err);
    if (rc == 0) rc = load_kernels(x, err);
    if (rc == 0) rc = alloc_values(x, err);
    if (rc == 0) rc = alloc_scratch(x, err);
    if (rc == 0) rc = create_streams(x, err);
    x->stats.kernels = (int64_t)x->plan.kernels.len;
    x->stats.launches = (int64_t)x->plan.launches.len;
    x->stats.library_calls = (int64_t)x->plan.calls.len;
    if (rc) {
        cuda_exec_free(x);
        return NULL;
    }
    return x;
}

/* ---- a step: uploads ---- */
static int feed_one(CudaExec *x, const Node *n, const TensorSet *feeds, Err *err) {
    const char *name = node_str(n, "name", "");
    const Tensor *t = tset_get(feeds, name);
    if (!t) return err_set(err, "no %s named %s", n->op == OP_PARAM ? "weight" : "input", name);
    const Type *ty = ir_type(x->g, n->out[0]);
    int64_t shape[IR_MAX_RANK];
    if (type_concrete(ty, x->plan.b, x->plan.t, shape, err)) return err_wrap(err, "%s: ", name);
    int ok = t->dtype == ty->dtype && t->rank == ty->rank;
    for (int i = 0; ok && i < ty->rank; i++) ok = t->shape[i] == shape[i];
    if (!ok)
        return err_set(err, "%s does not have the type the graph wants, %s (B=%lld, T=%lld)", name, dtype_name(ty->dtype),
                       (long long)x->plan.b, (long long)x->plan.t);
    CuPtr dst = x->buf[n->out[0]];
    size_t bytes = (size_t)t->numel * dtype_host_size(t->dtype);
    if (!dst || bytes == 0) return 0; /* nothing on the device reads it */
    x->stats.last_upload_bytes += (int64_t)bytes;
    return x->api->copy_h2d(x->api, dst, t->data, bytes, x->copy, err);
}

/* Params are uploaded unless the caller vouches for the ones already there;
 * resident is cleared first so that a failed upload is never trusted. */
static int upload(CudaExec *x, const TensorSet *feeds, const CudaStepOptions *o, Err *err) {
    int params = !(o->params_unchanged && x->params_resident);
    if (params) x->params_resident = 0;
    for (size_t i = 0; i < x->g->nodes.len; i++) {
        const Node *n = &x->g->nodes.data[i];
        if ((n->op == OP_INPUT || (n->op == OP_PARAM && params)) && feed_one(x, n, feeds, err)) return -1;
    }
    if (params) x->params_resident = 1;
    return x->api->memset_zero(x->api, x->status, (x->plan.launches.len + 1) * sizeof(int), x->copy, err);
}

/* ---- a step: launches ---- */
static int value_arg(const CudaExec *x, const CudaLaunch *l, const CudaArg *arg, CuPtr *p, Err *err) {
    if (!x->buf[arg->value]) return err_internal(err, "CUDA plan: launch of node %d reads value %%%d, which has no buffer", (int)l->node, (int)arg->value);
    *p = x->buf[arg->value] + (CuPtr)arg->offset;
    return 0;
}

/* A node's scratch starts zeroed, as the plan's kernels expect (the host replay allocates it zeroed). */
static int scratch_arg(CudaExec *x, const CudaLaunch *l, const CudaArg *arg, CuPtr *p, Err *err) {
    int s = arg->scratch;
    if (x->scratch_zeroed_for[s] != l->node) {
        if (x->api->memset_zero(x->api, x->scratch[s], (size_t)x->scratch_bytes[s], x->compute, err)) return -1;
        x->scratch_zeroed_for[s] = l->node;
    }
    *p = x->scratch[s];
    return 0;
}

/* One launch on the compute stream; status is its status word (0: it takes none). */
static int launch(CudaExec *x, const CudaLaunch *l, CuPtr status, Err *err) {
    CuPtr args[CUDA_MAX_PARAMS];
    for (int a = 0; a < l->nargs; a++) {
        const CudaArg *arg = &l->args[a];
        int rc = arg->kind == CARG_VALUE     ? value_arg(x, l, arg, &args[a], err)
                 : arg->kind == CARG_SCRATCH ? scratch_arg(x, l, arg, &args[a], err)
                 : status                    ? (args[a] = status, 0)
                                             : err_internal(err, "CUDA plan: a launch of node %d wants a status word",
                                                            (int)l->node);
        if (rc) return -1;
    }
    const CudaKernel *k = &x->plan.kernels.data[l->kernel];
    unsigned smem = (unsigned)(k->smem_per_thread * l->block);
    if (x->api->launch(x->api, x->functions[l->kernel], (unsigned)l->grid, (unsigned)l->block, smem, x->compute, args,
                       l->nargs, err)) {
        char where[256];
        node_where(x->g, l->node, where, sizeof where);
        return err_wrap(err, "launching %s for %s: ", k->name, where);
    }
    return 0;
}

static int run_launch(CudaExec *x, size_t li, Err *err) {
    return launch(x, &x->plan.launches.data[li], x->status + li * sizeof(int), err);
}

/* ---- a step: library calls ---- */
static CuPtr operand(const CudaExec *x, const Node *n, int k) { return x->buf[n->in[k]]; }

/* The expert row counts live on the device; the grouped GEMMs' shapes need them
 * on the host, so the compute stream is drained to read them (one small copy per grouped call). */
static int read_counts(CudaExec *x, const CudaLibCall *c, int64_t *counts, Err *err) {
    const Node *n = &x->g->nodes.data[c->node];
    DType dt = ir_type(x->g, n->in[1])->dtype;
    size_t each = dtype_host_size(dt), bytes = (size_t)c->groups * each;
    void *raw = xcalloc((size_t)c->groups + 1, each);
    int rc = x->api->copy_d2h(x->api, raw, operand(x, n, 1), bytes, x->compute, err) ||
             x->api->stream_sync(x->api, x->compute, err) ? -1 : 0;
    int64_t sum = 0;
    for (int64_t e = 0; e < c->groups && rc == 0; e++) {
        counts[e] = dt == DT_I64 ? ((const int64_t *)raw)[e] : ((const int32_t *)raw)[e];
        if (counts[e] < 0 || counts[e] > c->m - sum)
            rc = err_set(err, "%s: counts[%lld]=%lld overruns the %lld rows", op_info(n->op)->name, (long long)e,
                         (long long)counts[e], (long long)c->m);
        else
            sum += counts[e];
    }
    if (rc == 0 && sum != c->m)
        rc = err_set(err, "%s: counts sum to %lld but there are %lld rows", op_info(n->op)->name, (long long)sum,
                     (long long)c->m);
    free(raw);
    return rc;
}

/* Operands of a bf16 GEMM (check_call: all of them or none) hold bf16-grid values. */
static int bf16_operands(const CudaExec *x, const Node *n) { return ir_type(x->g, n->in[0])->dtype == DT_BF16; }

static int call_gemm(CudaExec *x, const CudaLibCall *c, const Node *n, Err *err) {
    CuPtr a = operand(x, n, 0), b = operand(x, n, 1), out = x->buf[n->out[0]];
    int bf16 = bf16_operands(x, n);
    CudaGemm gm = c->kind == LIB_GEMM_WGRAD ? cuda_gemm_wgrad(c->m, c->n, c->k, a, b, out, bf16)
                                            : cuda_gemm_linear(c->m, c->n, c->k, a, b, out, bf16);
    return x->api->gemm(x->api, &gm, x->compute, err);
}

/* grouped_linear: x [m,k] rows by expert, w [groups,n,k], y [m,n];
 * grouped_linear_wgrad: g [m,n], x [m,k], dw [groups,n,k] (an expert without rows gets zeros). */
static int call_grouped(CudaExec *x, const CudaLibCall *c, const Node *n, Err *err) {
    int64_t *counts = xcalloc((size_t)c->groups + 1, sizeof *counts);
    int rc = read_counts(x, c, counts, err);
    const CuPtr f = sizeof(float), out = x->buf[n->out[0]];
    int64_t at = 0;
    for (int64_t e = 0; e < c->groups && rc == 0; e++) {
        int64_t rows = counts[e];
        CuPtr slab = out + (CuPtr)(e * c->n * c->k) * f;
        if (c->kind == LIB_GROUPED_GEMM && rows > 0) {
            CudaGemm gm = cuda_gemm_linear(rows, c->n, c->k, operand(x, n, 0) + (CuPtr)(at * c->k) * f,
                                           operand(x, n, 2) + (CuPtr)(e * c->n * c->k) * f,
                                           out + (CuPtr)(at * c->n) * f, bf16_operands(x, n));
            rc = x->api->gemm(x->api, &gm, x->compute, err);
        } else if (c->kind == LIB_GROUPED_WGRAD && rows > 0) {
            CudaGemm gm = cuda_gemm_wgrad(rows, c->n, c->k, operand(x, n, 0) + (CuPtr)(at * c->n) * f,
                                          operand(x, n, 2) + (CuPtr)(at * c->k) * f, slab, bf16_operands(x, n));
            rc = x->api->gemm(x->api, &gm, x->compute, err);
        } else if (c->kind == LIB_GROUPED_WGRAD) {
            rc = x->api->memset_zero(x->api, slab, (size_t)(c->n * c->k) * sizeof(float), x->compute, err);
        }
        at += rows;
    }
    free(counts);
    return rc;
}

/* The weight gradient reads the transposed copies the node's launches left in scratch; the
 * forward reads the op's operands and the scale copies its launches left there. */
static int call_fp8(CudaExec *x, const CudaLibCall *c, const Node *n, Err *err) {
    CudaFp8Gemm gm = fp8_shape(c);
    gm.out = x->buf[n->out[0]];
    if (gm.both_1x128)
        gm.qa = x->scratch[FP8_WGRAD_QA_T], gm.sa = x->scratch[FP8_WGRAD_SA_T], gm.qb = x->scratch[FP8_WGRAD_QB_T],
        gm.sb = x->scratch[FP8_WGRAD_SB_T];
    else
        gm.qa = operand(x, n, 0), gm.sa = x->scratch[FP8_FWD_SA], gm.qb = operand(x, n, 2), gm.sb = x->scratch[FP8_FWD_SB];
    return x->api->fp8_gemm(x->api, &gm, x->compute, err);
}
/* The EP exchanges: rows down, the all-to-all-v over the EP group bound to this
 * thread (exec_step binds it), rows up (runtime/cuda_host_node.h). */
static int call_on_host(CudaExec *x, const CudaLibCall *c, const Node *n, Err *err) {
    (void)c;
    CuPtr in[CUDA_HOST_NODE_MAX_OPERANDS], out[CUDA_HOST_NODE_MAX_OPERANDS];
    if (n->nin > CUDA_HOST_NODE_MAX_OPERANDS || n->nout > CUDA_HOST_NODE_MAX_OPERANDS)
        return err_internal(err, "%s has %d inputs and %d outputs", op_info(n->op)->name, n->nin, n->nout);
    for (int k = 0; k < n->nin; k++) in[k] = x->buf[n->in[k]];
    for (int k = 0; k < n->nout; k++) out[k] = x->buf[n->out[k]];
    CudaHostNode h = {x->api, x->compute, x->g, n, x->plan.b, x->plan.t, in, out};
    return cuda_run_on_host(&h, err);
}

/* Attention on the GEMM path (runtime/cuda_attention.h): its row kernels are launched as the
 * plan's are; its scratch is filled by its GEMMs, so it must not be zeroed as a fresh node's is. */
static int launch_for_call(void *exec, const CudaLaunch *l, Err *err) { return launch(exec, l, 0, err); }

static int call_attention(CudaExec *x, const CudaLibCall *c, const Node *n, Err *err) {
    CuPtr in[CUDA_ATTENTION_OPERANDS], out[CUDA_ATTENTION_OPERANDS];
    size_t out_bytes[CUDA_ATTENTION_OPERANDS];
    if (n->nin > CUDA_ATTENTION_OPERANDS || n->nout > CUDA_ATTENTION_OPERANDS)
        return err_internal(err, "%s has %d inputs and %d outputs", op_info(n->op)->name, n->nin, n->nout);
    for (int k = 0; k < n->nin; k++) in[k] = x->buf[n->in[k]];
    for (int k = 0; k < n->nout; k++) out[k] = x->buf[n->out[k]], out_bytes[k] = x->size[n->out[k]];
    x->scratch_zeroed_for[ATT_P] = x->scratch_zeroed_for[ATT_DS] = c->node;
    CudaAttentionNode a = {x->api, x->compute, c, in, out, out_bytes, x->scratch[ATT_P], x->scratch[ATT_DS],
                           launch_for_call, x};
    return cuda_attention_run(&a, err);
}

typedef int (*CallFn)(CudaExec *x, const CudaLibCall *c, const Node *n, Err *err);
static const CallFn call_fns[LIB_KIND_COUNT] = {
    [LIB_GEMM] = call_gemm, [LIB_GEMM_WGRAD] = call_gemm, [LIB_GROUPED_GEMM] = call_grouped,
    [LIB_GROUPED_WGRAD] = call_grouped, [LIB_FP8_GEMM] = call_fp8, [LIB_FP8_GEMM_WGRAD] = call_fp8,
    [LIB_EP_DISPATCH] = call_on_host, [LIB_EP_COMBINE] = call_on_host, [LIB_ATTENTION] = call_attention,
    [LIB_ATTENTION_GRAD] = call_attention,
};

static int has_runner(CudaLibKind k) { return (unsigned)k < LIB_KIND_COUNT && call_fns[k]; }

static int run_call(CudaExec *x, const CudaLibCall *c, Err *err) {
    if (!has_runner(c->kind)) return err_internal(err, "CUDA plan: library call kind %d", (int)c->kind);
    int rc = call_fns[c->kind](x, c, &x->g->nodes.data[c->node], err);
    if (rc == 0 && c->round.kernel >= 0) rc = launch(x, &c->round, 0, err); /* a bf16 result's rounding */
    if (rc == 0) return 0;
    char where[256];
    node_where(x->g, c->node, where, sizeof where);
    return err_wrap(err, "%s, %s: ", cuda_lib_kind_name(c->kind), where);
}

/* Debug (CudaStepOptions.poison_dead_values): the buffers whose last use is a
 * node before `before` and not yet poisoned get 0xff bytes (NaN as floats), so
 * a read past a value's computed lifetime, or a value placed over one still
 * live, shows in the results. */
static int poison_dead(CudaExec *x, int32_t *poisoned_to, int32_t before, Err *err) {
    for (; *poisoned_to < before; ++*poisoned_to)
        for (size_t j = x->dead.start[*poisoned_to]; j < x->dead.start[*poisoned_to + 1]; j++) {
            size_t v = x->dead.idx[j];
            if (x->api->memset_byte(x->api, x->buf[v], 0xff, x->size[v], x->compute, err)) return -1;
        }
    return 0;
}

/* Launches and library calls are each in node order. A node may have both (an
 * FP8 weight gradient's transposing copies, then its GEMM): its launches run
 * first, as the strict `<` below orders them. */
static int run_plan(CudaExec *x, int poison, Err *err) {
    const CudaPlan *p = &x->plan;
    for (int s = 0; s < MAX_SCRATCH; s++) x->scratch_zeroed_for[s] = -1;
    size_t li = 0, ci = 0;
    int32_t poisoned_to = 0;
    while (li < p->launches.len || ci < p->calls.len) {
        int take_call = ci < p->calls.len && (li == p->launches.len || p->calls.data[ci].node < p->launches.data[li].node);
        int32_t node = take_call ? p->calls.data[ci].node : p->launches.data[li].node;
        if (poison && poison_dead(x, &poisoned_to, node, err)) return -1;
        int rc = take_call ? run_call(x, &p->calls.data[ci++], err) : run_launch(x, li++, err);
        if (rc) return -1;
    }
    return poison ? poison_dead(x, &poisoned_to, (int32_t)x->g->nodes.len, err) : 0;
}

/* ---- a step: downloads and the status words ---- */
static int download(CudaExec *x, const CudaStepOptions *o, Tensor **outs, Err *err) {
    const Graph *g = x->g;
    size_t status_bytes = x->plan.launches.len * sizeof(int);
    if (status_bytes && x->api->copy_d2h(x->api, x->status_host, x->status, status_bytes, x->copy, err)) return -1;
    for (size_t i = 0; i < g->outputs.len; i++) {
        if (o->want_output && !o->want_output[i]) continue;
        ValueId v = g->outputs.data[i].value;
        int64_t shape[IR_MAX_RANK];
        const Type *ty = ir_type(g, v);
        if (type_concrete(ty, x->plan.b, x->plan.t, shape, err)) return -1;
        outs[i] = tensor_new(ty->dtype, ty->rank, shape);
        size_t bytes = (size_t)outs[i]->numel * dtype_host_size(ty->dtype);
        x->stats.last_download_bytes += (int64_t)bytes;
        if (bytes && x->api->copy_d2h(x->api, outs[i]->data, x->buf[v], bytes, x->copy, err)) return -1;
    }
    return 0;
}

/* The first launch (in plan order) that stored a code names the node. */
static int check_status(const CudaExec *x, Err *err) {
    for (size_t li = 0; li < x->plan.launches.len; li++) {
        int code = x->status_host[li];
        if (code == CUDA_STATUS_OK) continue;
        char where[256];
        node_where(x->g, x->plan.launches.data[li].node, where, sizeof where);
        int known = code > 0 && (size_t)code < sizeof status_meaning / sizeof *status_meaning && status_meaning[code];
        return err_set(err, "--backend cuda: %s found %s (status %d)", where,
                       known ? status_meaning[code] : "bad data of an unknown kind", code);
    }
    return 0;
}

/* On a failed step, nothing may still be writing into host memory we free. */
static void drain(CudaExec *x) {
    Err ignored = {0};
    x->api->stream_sync(x->api, x->compute, &ignored);
    x->api->stream_sync(x->api, x->copy, &ignored);
}

/* The copy stream's final synchronize also keeps the next step's uploads from
 * overwriting what this step's kernels still read. */
static int step_on_device(CudaExec *x, const TensorSet *feeds, const CudaStepOptions *o, Tensor **outs, Err *err) {
    CudaApi *a = x->api;
    x->stats.last_upload_bytes = x->stats.last_download_bytes = 0;
    if (a->bind(a, err) || a->event_record(a, x->start, x->copy, err) || upload(x, feeds, o, err) ||
        a->event_record(a, x->uploaded, x->copy, err) || a->stream_wait_event(a, x->compute, x->uploaded, err) ||
        run_plan(x, o->poison_dead_values, err) || a->event_record(a, x->computed, x->compute, err) ||
        a->stream_wait_event(a, x->copy, x->computed, err) || download(x, o, outs, err) ||
        a->event_record(a, x->end, x->copy, err) || a->stream_sync(a, x->copy, err))
        return -1;
    float ms = 0;
    if (a->event_elapsed_ms(a, x->start, x->end, &ms, err)) return -1;
    x->stats.last_step_ms = ms;
    return check_status(x, err);
}

int cuda_exec_step_opts(CudaExec *x, const TensorSet *feeds, const CudaStepOptions *opts, TensorSet *results,
                        Err *err) {
    static const CudaStepOptions everything = {0};
    size_t n = x->g->outputs.len;
    Tensor **outs = xcalloc(n + 1, sizeof *outs);
    int rc = step_on_device(x, feeds, opts ? opts : &everything, outs, err);
    if (rc) drain(x);
    for (size_t i = 0; i < n; i++) {
        if (rc == 0 && outs[i]) tset_put(results, x->g->outputs.data[i].name, outs[i]);
        else tensor_free(outs[i]);
    }
    free(outs);
    return rc;
}

int cuda_exec_step(CudaExec *x, const TensorSet *feeds, TensorSet *results, Err *err) {
    return cuda_exec_step_opts(x, feeds, NULL, results, err);
}

/* ---- teardown ---- */
static void free_streams(CudaExec *x) {
    CudaApi *a = x->api;
    CuEvent events[] = {x->start, x->uploaded, x->computed, x->end};
    for (size_t i = 0; i < sizeof events / sizeof *events; i++)
        if (events[i]) a->event_destroy(a, events[i]);
    if (x->compute) a->stream_destroy(a, x->compute);
    if (x->copy) a->stream_destroy(a, x->copy);
}

static void free_memory(CudaExec *x) {
    CudaApi *a = x->api;
    if (x->arena) a->mem_free(a, x->arena);
    for (int s = 0; s < MAX_SCRATCH; s++)
        if (x->scratch[s]) a->mem_free(a, x->scratch[s]);
    if (x->status) a->mem_free(a, x->status);
}

void cuda_exec_free(CudaExec *x) {
    if (!x) return;
    free_streams(x);
    free_memory(x);
    for (size_t i = 0; x->modules && i < x->plan.kernels.len; i++)
        if (x->modules[i]) x->api->module_unload(x->api, x->modules[i]);
    x->api->close(x->api);
    cuda_plan_free(&x->plan);
    free(x->modules), free(x->functions), free(x->buf), free(x->size), free(x->status_host);
    arena_buckets_free(&x->dead);
    free(x);
}

CudaExecStats cuda_exec_stats(const CudaExec *x) { return x->stats; }
