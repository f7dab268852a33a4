/* libFuzzer target: safetensors headers and the JSON reader behind them must
 * reject any input with an error, never crash, hang or read out of bounds. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "../base/json.h"
#include "../runtime/safetensors.h"

/* Converting every tensor reads every byte the header claims, so a bounds
 * mistake in validation shows up as an ASan report here. */
static void convert_all(const StFile *f) {
    for (size_t i = 0; i < f->tensors.len; i++) {
        Err e = {0};
        Tensor *t = st_to_tensor(&f->tensors.data[i], &e);
        if (!t) abort(); /* a validated tensor must always convert */
        tensor_free(t);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Err e = {0};
    StFile *f = st_open_memory(data, size, "fuzz.safetensors", &e);
    if (f) convert_all(f);
    else if (!e.set) abort(); /* failure without a message */
    st_close(f);

    Err je = {0};
    Json *j = json_parse((const char *)data, size, "fuzz.json", &je);
    if (!j && !je.set) abort();
    json_free(j);
    return 0;
}
