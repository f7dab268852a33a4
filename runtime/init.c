#include "init.h"

#include <math.h>
#include <string.h>

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *state) { return ((double)(splitmix64(state) >> 11) + 0.5) / 9007199254740992.0; }

static double normal(uint64_t *state) {
    double u = uniform01(state), v = uniform01(state);
    return sqrt(-2.0 * log(u)) * cos(2.0 * 3.141592653589793 * v);
}

static void fill(Tensor *t, const char *name, const InitOptions *opt) {
    float *x = tensor_f32(t);
    if (t->rank == 1) {
        float v = str_ends_with(name, "norm.weight") ? 1.0f : 0.0f;
        for (int64_t i = 0; i < t->numel; i++) x[i] = v;
        return;
    }
    uint64_t state = hash_bytes(name, strlen(name), opt->seed);
    for (int64_t i = 0; i < t->numel; i++) x[i] = (float)(opt->std * normal(&state));
}

int init_params(const Graph *g, const InitOptions *opt, TensorSet *out, Err *err) {
    for (size_t n = 0; n < g->nodes.len; n++) {
        const Node *nd = &g->nodes.data[n];
        if (nd->op != OP_PARAM) continue;
        const char *name = node_str(nd, "name", "");
        int64_t shape[IR_MAX_RANK];
        const Type *ty = ir_type(g, nd->out[0]);
        if (type_concrete(ty, 1, 1, shape, err)) return -1;
        if (!dtype_is_float(ty->dtype)) return err_set(err, "cannot initialise non-float weight '%s'", name);
        Tensor *t = tensor_new(DT_F32, ty->rank, shape);
        fill(t, name, opt);
        tset_put(out, name, t);
    }
    return 0;
}
