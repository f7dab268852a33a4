/* libFuzzer target: parse any text as a .v3 program and, if it parses, lower
 * it with the default hyperparameters. Bad input must end in an Err, never a
 * crash or a hang. Limits are lower than the CLI's so that one input stays
 * well inside libFuzzer's time and memory limits (10 s, 2 GiB under ASan). */
#include <stdint.h>
#include <stdlib.h>

#include "../frontend/frontend.h"

enum { MAX_INPUT = 1 << 16, FUZZ_ITERATIONS = 20000, FUZZ_NODES = 100000 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > MAX_INPUT) return 0;
    char *text = xstrndup((const char *)data, size);
    Err err = {0};
    Program *p = program_parse_string(text, "fuzz.v3", &err);
    if (p) {
        program_set_limits(p, FUZZ_ITERATIONS, FUZZ_NODES);
        graph_free(program_lower(p, &err));
        program_free(p);
    }
    free(text);
    return 0;
}
