/* libFuzzer target: read any text as the IR text form (ir/text.h). Bad input
 * must end in an Err, never a crash or a hang; what reads must verify, and
 * print and read back to the same text (the round-trip contract). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../ir/text.h"

static void check_round_trip(const Graph *g) {
    PrintOptions po = {0};
    Buf once = {0}, twice = {0};
    ir_print(g, &po, &once);
    Err err = {0};
    Graph *again = ir_parse(once.data, "fuzz round trip", &err);
    if (!again) abort(); /* printed text must read back */
    ir_print(again, &po, &twice);
    if (strcmp(once.data, twice.data) != 0) abort();
    graph_free(again);
    free(once.data), free(twice.data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0;
    Err err = {0};
    Graph *g = ir_parse(text, "fuzz", &err);
    if (g) {
        check_round_trip(g);
        graph_free(g);
    }
    free(text);
    return 0;
}
