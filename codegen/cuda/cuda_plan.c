/* The CUDA plan of a graph: fused groups rendered from their loop
 * descriptions, other nodes from templates or library calls, in graph order
 * (a group runs at its last member, as on the cpu backend). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda.h"

enum { MAX_GRID = 1 << 20 };

static const char *const lib_kind_names[LIB_KIND_COUNT] = {
    [LIB_GEMM] = "gemm", [LIB_GEMM_WGRAD] = "gemm_wgrad", [LIB_GROUPED_GEMM] = "grouped_gemm",
    [LIB_GROUPED_WGRAD] = "grouped_wgrad", [LIB_FP8_GEMM] = "fp8_gemm", [LIB_FP8_GEMM_WGRAD] = "fp8_gemm_wgrad",
    [LIB_EP_DISPATCH] = "ep_dispatch", [LIB_EP_COMBINE] = "ep_combine", [LIB_ATTENTION] = "attention",
    [LIB_ATTENTION_GRAD] = "attention_grad",
};

const char *cuda_lib_kind_name(CudaLibKind k) { return (unsigned)k < LIB_KIND_COUNT ? lib_kind_names[k] : "?"; }

static int is_attention(const CudaLibCall *c) { return c->kind == LIB_ATTENTION || c->kind == LIB_ATTENTION_GRAD; }

int cuda_call_launches(const CudaLibCall *c, const CudaLaunch **out) {
    const CudaLaunch *all[CUDA_CALL_LAUNCHES] = {&c->round, &c->att.softmax, &c->att.dscores, &c->att.round_rest[0],
                                                 &c->att.round_rest[1]};
    int n = 0;
    for (int i = 0; i < CUDA_CALL_LAUNCHES; i++)
        if ((i == 0 || is_attention(c)) && all[i]->kernel >= 0) out[n++] = all[i];
    return n;
}

int64_t cuda_attention_rounds(const CudaAttention *a) {
    return a->heads_per_round > 0 ? a->batch * (a->heads / a->heads_per_round) : 0;
}

int64_t cuda_call_step_launches(const CudaLibCall *c) {
    const CudaLaunch *own[CUDA_CALL_LAUNCHES];
    int64_t n = 0, rounds = is_attention(c) ? cuda_attention_rounds(&c->att) : 0;
    for (int i = 0, nl = cuda_call_launches(c, own); i < nl; i++)
        n += own[i] == &c->att.softmax || own[i] == &c->att.dscores ? rounds : 1;
    return n;
}

/* ---- kernels: naming and deduplication ---- */
static char *kernel_name(const char *family, const char *text) {
    size_t n = strlen(text);
    /* Two FNV-1a hashes with different seeds: a 128-bit name, so distinct texts never share one in practice. */
    return xsprintf("v3c_%s_%016llx%016llx", family, (unsigned long long)hash_bytes(text, n, 0),
                    (unsigned long long)hash_bytes(text, n, 0x9e3779b97f4a7c15ull));
}

static int64_t grid_for(int64_t threads, int64_t blocks) {
    int64_t g = blocks > 0 ? blocks : (threads + CUDA_BLOCK - 1) / CUDA_BLOCK;
    if (g < 1) g = 1;
    return g > MAX_GRID ? MAX_GRID : g;
}

static int add_kernel(CudaPlan *p, KernelText *kt) {
    char *name = kernel_name(kt->family, kt->body.data ? kt->body.data : "");
    int64_t at;
    p->generated++;
    if (strmap_get(&p->by_name, name, &at)) {
        free(name);
        return (int)at;
    }
    CudaKernel k = {.name = name, .family = kt->family, .nparams = kt->nparams, .smem_per_thread = kt->smem_per_thread};
    memcpy(k.param_types, kt->param_types, sizeof k.param_types);
    k.source = xsprintf("#define KNAME %s\n%s%s", name, cuda_prelude(), kt->body.data ? kt->body.data : "");
    VEC_PUSH(p->kernels, k);
    strmap_put(&p->by_name, name, (int64_t)p->kernels.len - 1);
    return (int)p->kernels.len - 1;
}

int cuda_emit_kernel(CudaEmit *em, KernelText *kt, const CudaArg *args, int nargs, int64_t threads, int64_t blocks) {
    int kernel = add_kernel(em->plan, kt);
    buf_free(&kt->body);
    CudaLaunch l = {.kernel = kernel, .node = em->node, .grid = grid_for(threads, blocks), .block = CUDA_BLOCK,
                    .nargs = nargs};
    memcpy(l.args, args, sizeof(CudaArg) * (size_t)nargs);
    VEC_PUSH(em->plan->launches, l);
    return 0;
}

/* ---- nodes ---- */
static int is_alias(OpKind op) { return op == OP_INPUT || op == OP_PARAM || op == OP_RESHAPE; }

static int plan_group(CudaPlan *p, const Graph *g, const Fusion *f, int group, int32_t node, Err *err) {
    KernelDesc k;
    if (kernel_from_group(g, f, group, p->b, p->t, &k, err)) return -1;
    KernelText kt = {0};
    int rc = cuda_render_fused(&k, &kt, err);
    if (rc == 0) {
        CudaArg args[CUDA_MAX_PARAMS];
        int nargs = 0;
        for (size_t i = 0; i < k.inputs.len; i++) args[nargs++] = carg_value(k.inputs.data[i]);
        for (size_t i = 0; i < k.outputs.len; i++) args[nargs++] = carg_value(k.outputs.data[i]);
        CudaEmit em = {p, node};
        cuda_emit_kernel(&em, &kt, args, nargs, 0, k.rows);
    }
    buf_free(&kt.body);
    kernel_desc_free(&k);
    return rc;
}

static int plan_node(CudaPlan *p, const Graph *g, const Node *n, int32_t i, Err *err) {
    if (is_alias(n->op)) {
        p->aliases++;
        return 0;
    }
    int rc = cuda_library_node(p, g, n, p->b, p->t, err);
    if (rc <= 0) return rc;
    CudaEmit em = {p, i};
    rc = cuda_template_node(&em, g, n, p->b, p->t, err);
    if (rc == 1)
        return err_set(err, "op '%s' (node %d%s%s) has no CUDA kernel template and no library mapping",
                       op_info(n->op)->name, (int)i, n->scope && *n->scope ? " in " : "", n->scope ? n->scope : "");
    return rc;
}

static int is_last_member(const Fusion *f, int32_t i) {
    const FusionGroup *gr = &f->groups.data[f->group_of[i]];
    return gr->nodes.data[gr->nodes.len - 1] == i;
}

static int plan_all(CudaPlan *p, const Graph *g, const Fusion *f, Err *err) {
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        int gid = f->group_of[i];
        int rc = gid < 0 ? plan_node(p, g, n, (int32_t)i, err)
                         : is_last_member(f, (int32_t)i) ? plan_group(p, g, f, gid, (int32_t)i, err) : 0;
        if (rc) return err_wrap(err, "CUDA codegen, %s: ", op_info(n->op)->name);
    }
    return 0;
}

int cuda_plan_build(const Graph *g, int64_t b, int64_t t, const CudaPlanOptions *opts, CudaPlan *p, Err *err) {
    memset(p, 0, sizeof *p);
    p->b = b, p->t = t;
    if (opts) p->opts = *opts;
    strmap_init(&p->by_name);
    Fusion f;
    if (fusion_plan(g, b, t, &f, err)) return -1;
    int rc = plan_all(p, g, &f, err);
    fusion_free(&f);
    if (rc) cuda_plan_free(p);
    return rc;
}

void cuda_plan_free(CudaPlan *p) {
    for (size_t i = 0; i < p->kernels.len; i++) {
        free(p->kernels.data[i].name);
        free(p->kernels.data[i].source);
    }
    VEC_FREE(p->kernels);
    VEC_FREE(p->launches);
    VEC_FREE(p->calls);
    strmap_free(&p->by_name);
    memset(p, 0, sizeof *p);
}
