/* cross_entropy: -log softmax(logits)[target], log-sum-exp in fp64. */
#include "ops_internal.h"

int cross_entropy_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)nin;
    const Type *logits = &in[0], *targets = &in[1];
    if (require_real(n, "logits", logits, err) || require_index(n, "targets", targets, err)) return -1;
    int ok = logits->rank == targets->rank + 1;
    for (int i = 0; ok && i < targets->rank; i++) ok = dim_equal(logits->dims[i], targets->dims[i]);
    if (!ok)
        return err_set(err, "cross_entropy: targets %s must match the leading dims of logits %s", TY(targets),
                       TY(logits));
    *out = *targets;
    out->dtype = DT_F32;
    return 0;
}

static double row_loss(const real *x, int64_t v, int64_t target) {
    double m = -INFINITY, s = 0;
    for (int64_t i = 0; i < v; i++) m = x[i] > m ? x[i] : m;
    for (int64_t i = 0; i < v; i++) s += exp((double)x[i] - m);
    return m + log(s) - x[target];
}

int cross_entropy_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)nin, (void)n;
    const Tensor *logits = in[0], *targets = in[1];
    int64_t v = logits->shape[logits->rank - 1];
    for (int64_t r = 0; r < targets->numel; r++) {
        int64_t target = index_at(targets, r);
        if (target < 0 || target >= v)
            return err_set(err, "cross_entropy: target %lld at position %lld is outside [0, %lld)", (long long)target,
                           (long long)r, (long long)v);
        tensor_real(out[0])[r] = (real)row_loss(tensor_real(logits) + r * v, v, target);
    }
    return 0;
}
