/* Sources: input and param (fed by interp_run), const and iota. */
#include "ops_internal.h"

/* input/param types are declared by the builder (ir_emit_typed), not inferred. */
int source_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)in, (void)nin, (void)n, (void)out, (void)err;
    return 0;
}

int source_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)in, (void)nin, (void)out;
    return err_internal(err, "%s '%s' has no kernel: interp_run feeds it by name", node_op_name(n),
                        node_str(n, "name", "?"));
}

int const_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)in, (void)nin, (void)n, (void)err;
    *out = (Type){.dtype = DT_F32, .rank = 0};
    return 0;
}

int const_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)in, (void)nin, (void)err;
    tensor_real(out[0])[0] = (real)node_float(n, "value", 0.0);
    return 0;
}

int iota_infer(const Type *in, int nin, const Node *n, Type *out, Err *err) {
    (void)in, (void)nin;
    int64_t len = node_int(n, "n", -1);
    if (len < 0) return err_set(err, "iota: n must be >= 0, got %lld", (long long)len);
    *out = (Type){.dtype = DT_F32, .rank = 1, .dims = {dim_const(len)}};
    return 0;
}

int iota_interp(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err) {
    (void)in, (void)nin, (void)n, (void)err;
    real *o = tensor_real(out[0]);
    for (int64_t i = 0; i < out[0]->numel; i++) o[i] = (real)i;
    return 0;
}
