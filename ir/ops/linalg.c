/* linear (y = x @ w^T) and embedding (rows of a table). */
#include "ops_internal.h"

int linear_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    const Type *x = &in[0], *w = &in[1];
    if (require_real(n, "x", x, err) || require_real(n, "w", w, err)) return -1;
    if (x->dtype != w->dtype) return err_set(err, "linear: dtypes differ: x %s and w %s", TY(x), TY(w));
    if (x->rank < 1 || w->rank != 2)
        return err_set(err, "linear: x %s must have rank >= 1 and w %s rank 2", TY(x), TY(w));
    if (!dim_equal(x->dims[x->rank - 1], w->dims[1])) {
        char xk[64], wk[64];
        dim_print(x->dims[x->rank - 1], xk, sizeof xk);
        dim_print(w->dims[1], wk, sizeof wk);
        return err_set(err, "linear: x %s has %s features but w %s expects %s", TY(x), xk, TY(w), wk);
    }
    *out = *x;
    out->dims[x->rank - 1] = w->dims[0];
    return 0;
}

typedef struct LinearJob {
    const real *x, *w;
    real *y;
    int64_t n, k;
} LinearJob;

/* Rows [lo, hi) of y; each output a fixed-order fp64 dot product. */
static void linear_rows(void *ctx, int64_t lo, int64_t hi) {
    const LinearJob *j = ctx;
    for (int64_t r = lo; r < hi; r++)
        for (int64_t c = 0; c < j->n; c++) {
            const real *xr = j->x + r * j->k, *wc = j->w + c * j->k;
            double s = 0;
            for (int64_t i = 0; i < j->k; i++) s += (double)xr[i] * wc[i];
            j->y[r * j->n + c] = (real)s;
        }
}

int linear_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin, (void)n, (void)err;
    LinearJob j = {tensor_real(in[0]), tensor_real(in[1]), tensor_real(out[0]), in[1]->shape[0], in[1]->shape[1]};
    int64_t rows = shape_product(in[0], 0, in[0]->rank - 1);
    parallel_for(rows, j.n * j.k, linear_rows, &j);
    tensor_round(out[0]);
    return 0;
}

int embedding_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    const Type *w = &in[0], *ids = &in[1];
    if (require_real(n, "table", w, err) || require_index(n, "ids", ids, err)) return -1;
    if (w->rank != 2) return err_set(err, "embedding: table %s must have rank 2", TY(w));
    if (ids->rank + 1 > IR_MAX_RANK) return err_set(err, "embedding: ids %s have too many dims", TY(ids));
    *out = *ids;
    out->dtype = w->dtype;
    out->dims[out->rank++] = w->dims[1];
    return 0;
}

int embedding_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin, (void)n;
    int64_t vocab = in[0]->shape[0], hidden = in[0]->shape[1];
    for (int64_t i = 0; i < in[1]->numel; i++) {
        int64_t id = index_at(in[1], i);
        if (id < 0 || id >= vocab)
            return err_set(err, "embedding: id %lld at position %lld is outside [0, %lld)", (long long)id,
                           (long long)i, (long long)vocab);
        memcpy(tensor_real(out[0]) + i * hidden, tensor_real(in[0]) + id * hidden, sizeof(real) * (size_t)hidden);
    }
    return 0;
}
