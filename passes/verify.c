/* verify: ir_verify as a pass, so a pipeline can check between any two steps. */
#include "../ir/verify.h"
#include "passes.h"

int pass_verify(Graph *g, PassContext *ctx, Err *err) {
    (void)ctx;
    return ir_verify(g, err);
}
