/* cuda_host_node: see cuda_host_node.h. */
#include "cuda_host_node.h"

#include "../ir/interp.h"


static Tensor *host_tensor(const Graph *g, ValueId v, int64_t b, int64_t t, Err *err) {
    int64_t shape[IR_MAX_RANK];
    const Type *ty = ir_type(g, v);
    return type_concrete(ty, b, t, shape, err) ? NULL : tensor_new(ty->dtype, ty->rank, shape);
}

static size_t bytes_of(const Tensor *x) { return (size_t)x->numel * dtype_host_size(x->dtype); }

static void free_all(Tensor **ts, int n) {
    for (int i = 0; i < n; i++) tensor_free(ts[i]);
}

/* The inputs, once every launch before the node has finished. */
static int copy_down(const CudaHostNode *h, Tensor **in, Err *err) {
    CudaApi *a = h->api;
    if (a->stream_sync(a, h->stream, err)) return -1;
    for (int i = 0; i < h->n->nin; i++) {
        if (!(in[i] = host_tensor(h->g, h->n->in[i], h->b, h->t, err))) return -1;
        if (bytes_of(in[i]) && a->copy_d2h(a, in[i]->data, h->in[i], bytes_of(in[i]), h->stream, err)) return -1;
    }
    return a->stream_sync(a, h->stream, err);
}

/* The results; synchronized before the host tensors they come from are freed. */
static int copy_up(const CudaHostNode *h, Tensor **out, Err *err) {
    CudaApi *a = h->api;
    for (int i = 0; i < h->n->nout; i++)
        if (bytes_of(out[i]) && a->copy_h2d(a, h->out[i], out[i]->data, bytes_of(out[i]), h->stream, err)) return -1;
    return a->stream_sync(a, h->stream, err);
}

int cuda_run_on_host(const CudaHostNode *h, Err *err) {
    const Node *n = h->n;
    if (n->nin > CUDA_HOST_NODE_MAX_OPERANDS || n->nout > CUDA_HOST_NODE_MAX_OPERANDS)
        return err_internal(err, "%s: %d inputs and %d outputs to run on the host", op_info(n->op)->name, n->nin, n->nout);
    Tensor *in[CUDA_HOST_NODE_MAX_OPERANDS] = {0}, *out[CUDA_HOST_NODE_MAX_OPERANDS] = {0};
    int rc = copy_down(h, in, err);
    if (rc == 0) rc = interp_node(h->g, n, (const Tensor *const *)in, h->b, h->t, out, err);
    if (rc == 0) rc = copy_up(h, out, err);
    free_all(in, n->nin);
    free_all(out, n->nout);
    return rc;
}
