/* Helpers shared by the Check suites. */
#ifndef V3C_TESTUTIL_H
#define V3C_TESTUTIL_H

#include <check.h>

#include "../ir/ir.h"

/* Runs the v3c binary with a shell-quoted argument string; captures output. */
typedef struct CmdResult {
    int status; /* exit code, or 128+signal */
    char *out;  /* stdout */
    char *err;  /* stderr */
} CmdResult;

CmdResult run_v3c(const char *args_fmt, ...) __attribute__((format(printf, 1, 2)));
void cmd_free(CmdResult *r);
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

/* Runs a suite, prints Check's summary, returns the process exit code. */
int run_suite(Suite *s);

#endif
