/* Helpers shared by the Check suites. */
#ifndef V3C_TESTUTIL_H
#define V3C_TESTUTIL_H

#include <check.h>

#include "../ir/collective.h"
#include "../ir/ir.h"

/* Runs the v3c binary with a shell-quoted argument string; captures output. */
typedef struct CmdResult {
    int status; /* exit code, or 128+signal */
    char *out;  /* stdout */
    char *err;  /* stderr */
} CmdResult;

CmdResult run_v3c(const char *args_fmt, ...) __attribute__((format(printf, 1, 2)));
/* The same for another program (a path). */
CmdResult run_program(const char *program, const char *args_fmt, ...) __attribute__((format(printf, 2, 3)));
void cmd_free(CmdResult *r);
/* Multi-rank runs: `ENV mpirun --oversubscribe MPIRUN_OPTS -np N v3c ARGS`
 * (root allowed), output captured, leak checking off (OpenMPI's plugins leak at
 * MPI_Finalize from modules already unloaded, which no suppression can name);
 * seconds, when not NULL, gets the wall time. */
CmdResult run_mpirun_v3c(int np, const char *env, const char *mpirun_opts, const char *args, double *seconds);
/* 1 (and a line saying what is skipped) when mpirun is not on PATH. */
int skip_without_mpirun(const char *what);

/* Asserts that dir_a/NAME and dir_b/NAME hold the same bytes for each of the n names. */
void expect_same_files(const char *dir_a, const char *dir_b, const char *const *names, int n);

/* Asserts exit 1 with exactly one "v3c: error: " line on stderr containing every needle. */
void assert_user_error(const CmdResult *r, const char *needle);

/* A fresh temporary directory (removed by the OS's tmp cleanup; tests keep it for inspection). */
char *make_temp_dir(void);
char *path_join(const char *dir, const char *name);
void write_text(const char *path, const char *text);

/* Element i of a float or integer tensor, as a double. */
double tensor_value(const Tensor *t, int64_t i);
/* Relative L2 error |got - want| / |want| in double (absolute when want is 0). */
double rel_l2(const Tensor *got, const Tensor *want);
int starts_with(const char *s, const char *prefix);

/* IR text read back (asserting success; what names it in the message) and printed. */
Graph *parse_ir_ok(const char *text, const char *what);
char *print_ir(const Graph *g);

/* Calls check(dir) for every tests/data/variants/NAME (reference data for configs
 * the golden does not cover), asserting each compared at least min_each tensors;
 * returns the number of variants. */
int for_each_variant(int (*check)(const char *dir), int min_each);

/* How to fill one named input: floats in [-1, 1] (or [0.5, 1.5] when positive,
 * for log and sqrt), integers in [0, range). */
typedef struct InputFill {
    const char *name;
    int positive;
    int64_t range;
} InputFill;

struct TensorSet;
/* Feeds every input of g, at batch b and sequence t, with pseudo-random values
 * drawn from seed in node order: an input named in fills (a list ending in {0},
 * or NULL) as it says, any other as fallback; e4m3/u8 bytes stay below 0x7e
 * (no NaN pattern). */
void feed_random_inputs(const Graph *g, const InputFill *fills, InputFill fallback, int64_t b, int64_t t,
                        uint64_t seed, struct TensorSet *feeds);
/* An EP group whose ranks are threads of this process (ir/collective.h): a
 * rank's all-to-all-v copies straight from its peers' send buffers between
 * two barriers. At most THREAD_GROUP_MAX ranks. */
enum { THREAD_GROUP_MAX = 8 };
typedef struct ThreadGroup ThreadGroup;
ThreadGroup *thread_group_new(int size);
void thread_group_free(ThreadGroup *g);
/* Rank r's table (valid while g lives). */
Collectives thread_group_member(ThreadGroup *g, int r);

/* Fills an f32 tensor with the floats where rounding to bf16 is delicate (ties
 * both ways, overflow to inf, NaN payloads, signed zeros, subnormals), cycling,
 * the sign flipped on alternate cycles. */
void fill_bf16_rounding_cases(Tensor *t);

/* ---- CUDA without a GPU (codegen/cuda/host_emu.h) ---- */
struct CudaKernel;
struct CudaApi;

/* "g++" or "clang++" when one is on PATH, else NULL. */
const char *host_cxx(void);
/* Compiles kernels (CUDA C) with cxx and host_emu.h into one shared object in a
 * fresh temporary directory and returns its path. Each kernel K gets an entry
 * `extern "C" void v3c_entry_<K's name>(void **args)`; `v3c_emu_launch` runs one. */
char *build_host_kernels(const char *cxx, const struct CudaKernel *kernels, size_t n);

/* The executor's table (runtime/cuda_api.h) emulated on the host: memory is
 * malloc (filled with 0xff bytes, NaN as floats, so a read of memory nothing
 * wrote shows), a module is the kernels compiled by build_host_kernels, a
 * launch runs at most max_grid blocks of `block` threads whatever the plan
 * asks (the generated kernels are grid-stride loops and read blockDim, so any
 * shape computes the same values; one thread per block makes every block
 * reduction the left-to-right sum), streams hold their work until something
 * needs it, as a GPU orders it (tests/emu_streams.h: a missing wait between
 * streams shows), waiting on an event never recorded is an error, and the GEMMs
 * are host loops in the interpreter's order (fp64 sums, one rounding;
 * fp8_matmul as ir/ops/fp8.c), run from their stream like the launches.
 * NULL, with the reason printed, when there is no host C++ compiler. */
struct CudaApi *cuda_emu_open(unsigned block, unsigned max_grid);
/* What the emulated device was asked to do, for tests of the executor's bookkeeping. */
typedef struct CudaEmuCounts {
    int64_t launches, gemms, fp8_gemms, compiles, live_allocations, stream_waits;
} CudaEmuCounts;
CudaEmuCounts cuda_emu_counts(const struct CudaApi *api);

/* Runs a suite, prints Check's summary, returns the process exit code. */
int run_suite(Suite *s);

#endif
