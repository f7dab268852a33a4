/* Attention on the GEMM path: see cuda_attention.h. */
#include "cuda_attention.h"

/* One round's operands: heads [h0, h0 + heads_per_round) of batch row b, each matrix
 * one head read in place from [B, len, h, d] (rows h*d apart, heads d apart). */
typedef struct AttRound {
    CuPtr q, k, v, g, out, dq, dk, dv; /* at the round's first head */
    CuPtr p, ds;                       /* scratch ATT_P, ATT_DS: [heads_per_round][T][S] */
} AttRound;

static CudaGemm att_gemm(const CudaAttention *a, int64_t m, int64_t n, int64_t k, float alpha) {
    return (CudaGemm){.m = m, .n = n, .k = k, .batch = a->heads_per_round, .alpha = alpha, .bf16_operands = a->bf16};
}
/* A head of [.., h, d] as a GEMM operand: leading dimension h*d, batch stride d. */
static void att_head(const CudaAttention *a, int64_t d, CuPtr at, CuPtr *ptr, int64_t *ld, int64_t *stride) {
    *ptr = at, *ld = a->heads * d, *stride = d;
}
/* A round's scores [T][S] per head, contiguous. */
static void att_scores(const CudaAttention *a, CuPtr at, CuPtr *ptr, int64_t *ld, int64_t *stride) {
    *ptr = at, *ld = a->s, *stride = a->t * a->s;
}

/* out[t, :] = sum over s of lhs[t or s, s or t] rhs[s, :]: the products that read P or dS (lhs,
 * transposed for the key side) against a head operand. */
static int att_apply(const CudaAttentionNode *x, const CudaAttention *a, CuPtr lhs, int transposed, CuPtr rhs,
                     int64_t rd, CuPtr out, float alpha, Err *err) {
    int64_t rows = transposed ? a->s : a->t, inner = transposed ? a->t : a->s;
    CudaGemm gm = att_gemm(a, rows, rd, inner, alpha);
    gm.trans_a = transposed;
    att_scores(a, lhs, &gm.a, &gm.lda, &gm.stride_a);
    att_head(a, rd, rhs, &gm.b, &gm.ldb, &gm.stride_b);
    att_head(a, rd, out, &gm.c, &gm.ldc, &gm.stride_c);
    return x->api->gemm(x->api, &gm, x->stream, err);
}

/* dst[t, s] = alpha * lhs[t, :] . rhs[s, :] over head dim d: the scores (q, k) and dP (g, v). */
static int att_scores_of(const CudaAttentionNode *x, const CudaAttention *a, CuPtr lhs, CuPtr rhs, int64_t d,
                         CuPtr dst, float alpha, Err *err) {
    CudaGemm gm = att_gemm(a, a->t, a->s, d, alpha);
    gm.trans_b = 1;
    att_head(a, d, lhs, &gm.a, &gm.lda, &gm.stride_a);
    att_head(a, d, rhs, &gm.b, &gm.ldb, &gm.stride_b);
    att_scores(a, dst, &gm.c, &gm.ldc, &gm.stride_c);
    return x->api->gemm(x->api, &gm, x->stream, err);
}

static int att_forward(const CudaAttentionNode *x, const AttRound *r, Err *err) {
    const CudaAttention *a = &x->call->att;
    return att_scores_of(x, a, r->q, r->k, a->dk, r->p, a->scale, err) || x->launch(x->exec, &a->softmax, err) ||
                   att_apply(x, a, r->p, 0, r->v, a->dv, r->out, 1.0f, err)
               ? -1
               : 0;
}

static int att_backward(const CudaAttentionNode *x, const AttRound *r, Err *err) {
    const CudaAttention *a = &x->call->att;
    return att_scores_of(x, a, r->q, r->k, a->dk, r->p, a->scale, err) || x->launch(x->exec, &a->softmax, err) ||
                   att_scores_of(x, a, r->g, r->v, a->dv, r->ds, 1.0f, err) || x->launch(x->exec, &a->dscores, err) ||
                   att_apply(x, a, r->p, 1, r->g, a->dv, r->dv, 1.0f, err) ||
                   att_apply(x, a, r->ds, 0, r->k, a->dk, r->dq, a->scale, err) ||
                   att_apply(x, a, r->ds, 1, r->q, a->dk, r->dk, a->scale, err)
               ? -1
               : 0;
}

static AttRound att_round(const CudaAttentionNode *x, int64_t b, int64_t h0) {
    const CudaAttention *a = &x->call->att;
    const CuPtr f = sizeof(float);
    CuPtr qo = (CuPtr)((b * a->t * a->heads + h0) * a->dk) * f, ko = (CuPtr)((b * a->s * a->heads + h0) * a->dk) * f,
          vo = (CuPtr)((b * a->s * a->heads + h0) * a->dv) * f, oo = (CuPtr)((b * a->t * a->heads + h0) * a->dv) * f;
    AttRound r = {.p = x->scores, .ds = x->dscores};
    int in0 = x->call->kind == LIB_ATTENTION_GRAD; /* sdpa_grad's inputs are g, q, k, v */
    r.q = x->in[in0] + qo, r.k = x->in[in0 + 1] + ko, r.v = x->in[in0 + 2] + vo;
    if (in0)
        r.g = x->in[0] + oo, r.dq = x->out[0] + qo, r.dk = x->out[1] + ko, r.dv = x->out[2] + vo;
    else
        r.out = x->out[0] + oo;
    return r;
}

/* No queries (no batch rows, heads or query positions; no keys is refused at plan time):
 * sdpa_grad's dk and dv are the interpreter's sums over nothing, zeros. */
static int att_zero_outputs(const CudaAttentionNode *x, Err *err) {
    int nout = x->call->kind == LIB_ATTENTION_GRAD ? 3 : 1;
    for (int k = 0; k < nout; k++)
        if (x->out_bytes[k] && x->api->memset_zero(x->api, x->out[k], x->out_bytes[k], x->stream, err)) return -1;
    return 0;
}

static int att_rounds(const CudaAttentionNode *x, Err *err) {
    const CudaAttention *a = &x->call->att;
    if (a->softmax.kernel < 0) return att_zero_outputs(x, err);
    int rc = 0;
    for (int64_t b = 0; b < a->batch && rc == 0; b++)
        for (int64_t h0 = 0; h0 < a->heads && rc == 0; h0 += a->heads_per_round) {
            AttRound r = att_round(x, b, h0);
            rc = x->call->kind == LIB_ATTENTION ? att_forward(x, &r, err) : att_backward(x, &r, err);
        }
    return rc;
}

/* The rounds, then sdpa_grad's bf16 dk and dv onto the bf16 grid (the first result's rounding
 * is the executor's, as for every bf16 GEMM: CudaLibCall.round). */
int cuda_attention_run(const CudaAttentionNode *x, Err *err) {
    if (att_rounds(x, err)) return -1;
    for (int i = 0; i < 2; i++) {
        const CudaLaunch *l = &x->call->att.round_rest[i];
        if (l->kernel >= 0 && x->launch(x->exec, l, err)) return -1;
    }
    return 0;
}
