/* The table of passes. Adding a pass: write passes/<name>.c defining
 * int pass_<name>(Graph *, PassContext *, Err *), and add one PASS line here. */
#include <string.h>

#include "passes.h"

#define PASS_LIST(PASS)                                                                        \
    PASS(verify, "check the graph's invariants (ir_verify); changes nothing")                 \
    PASS(shapes, "re-run every node's shape rule on its inputs and fail on any type mismatch") \
    PASS(dce, "delete nodes, params and inputs no graph output depends on")                   \
    PASS(cse, "merge nodes with the same op, inputs and attributes (scope and chunk ignored)") \
    PASS(autodiff, "append the backward graph of total_loss (else loss) and grad.<param> outputs")    \
    PASS(recompute, "backward nodes re-emit the !recompute forward nodes they read instead of keeping them") \
    PASS(memplan, "report peak activation bytes and a best-fit arena size at B=1, T=4096; changes nothing") \
    PASS(fp8, "DeepSeek-V3 FP8 recipe: Linear GEMMs as quantize (1x128 / 128x128) + fp8_matmul")        \
    PASS(bf16, "GEMMs on f32 operands run in bf16 (cast in, cast out); the MoE router and FP8 operands stay as they are") \
    PASS(expert_parallel, "experts split over 2 EP ranks as rank 0 runs them: ep_dispatch/ep_combine around its experts") \
    PASS(fuse, "record fusion groups (^N): elementwise chains with last-axis reductions, softmax and row sums, one kernel each")

#define DECLARE(name, doc) int pass_##name(Graph *g, PassContext *ctx, Err *err);
PASS_LIST(DECLARE)
#undef DECLARE

static const Pass registry[] = {
#define ROW(name, doc) {#name, pass_##name, doc},
    PASS_LIST(ROW)
#undef ROW
};

const Pass *pass_registry(int *count) {
    *count = (int)(sizeof registry / sizeof registry[0]);
    return registry;
}

const Pass *pass_lookup(const char *name) {
    for (size_t i = 0; i < sizeof registry / sizeof registry[0]; i++)
        if (strcmp(registry[i].name, name) == 0) return &registry[i];
    return NULL;
}
