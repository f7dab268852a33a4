/* What the step benchmarks share: the training graph as `v3c train` builds it,
 * a fixed batch of token ids, the clock and the median. */
#ifndef V3C_BENCH_COMMON_H
#define V3C_BENCH_COMMON_H

#include "../ir/interp.h"

double bench_now(void);
/* Prints "v3c: error: ..." and returns 1 (a benchmark's exit status). */
int bench_fail(const Err *e);
/* The model (hyperparameters from a config.json and/or --set, either may be
 * NULL) with the backward graph of its objective, without --recompute or --fp8. */
Graph *bench_training_graph(const char *model, const char *config, const char *sets, Err *e);
/* input_ids [b, t], the same tokens every run. */
void bench_feed_ids(int64_t b, int64_t t, TensorSet *feeds);
/* Sorts v. */
double bench_median(double *v, int n);

/* A step benchmark's command line:
 *   MODEL [--config F] [--set k=v,...] [--batch B] [--seq T] [--iters N] [--precision f32|bf16]
 *         [--attention gemm|exact]
 * bf16: the GEMMs on bf16 operands, as `v3c train --bf16` (passes/bf16.h). exact: the CUDA
 * executor's attention by its fp64 kernels, bit for bit with the interpreter, instead of
 * cuBLASLt GEMMs (codegen/cuda/cuda.h, CudaPlanOptions; ignored by the cpu benchmark). */
typedef struct BenchArgs {
    const char *model, *config, *sets;
    int64_t batch, seq;
    int iters;
    int bf16;
    int exact_attention;
} BenchArgs;
/* Defaults in *a are kept for what argv does not give. An unknown flag, a flag
 * without its value, or a count that is not a whole number in range prints
 * `v3c: error: ...` and exits with status 1. */
void bench_parse_args(int argc, char **argv, BenchArgs *a);
/* The training graph of a's model (in bf16 when asked) and its feeds: seeded weights and the token ids. */
int bench_setup(const BenchArgs *a, Graph **g, TensorSet *feeds, Err *e);

#endif
