#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../runtime/exec.h"
#include "cli.h"

static const char *default_corpus = "data/kjv.txt";

/* B windows of T bytes, evenly spaced through the text: the byte-level tokenizer. */
static Tensor *windows_of_text(const char *path, int64_t batch, int64_t seq, Err *err) {
    size_t len;
    char *text = read_file(path, &len, err);
    if (!text) return NULL;
    if ((int64_t)len < seq) {
        free(text);
        err_set(err, "%s has %zu bytes, fewer than --seq %lld", path, len, (long long)seq);
        return NULL;
    }
    int64_t shape[2] = {batch, seq};
    Tensor *ids = tensor_new(DT_I64, 2, shape);
    int64_t stride = batch > 1 ? ((int64_t)len - seq) / (batch - 1) : 0;
    for (int64_t b = 0; b < batch; b++)
        for (int64_t t = 0; t < seq; t++)
            ((int64_t *)ids->data)[b * seq + t] = (unsigned char)text[b * stride + t];
    free(text);
    return ids;
}

static void print_losses(const TensorSet *results) {
    for (size_t i = 0; i < results->names.len; i++) {
        const char *name = results->names.data[i];
        const Tensor *t = results->tensors.data[i];
        size_t n = strlen(name);
        int is_loss = n >= 4 && strcmp(name + n - 4, "loss") == 0;
        if (is_loss && t->dtype == DT_F32 && t->numel == 1) printf("%s: %.6f\n", name, tensor_f32(t)[0]);
    }
}

/* Compile a model, show what it became, and measure its loss on text. */
int cmd_eval(const Options *o, Err *err) {
    int64_t batch = o->batch > 0 ? o->batch : 4, seq = o->seq > 0 ? o->seq : 64;
    Model m;
    TensorSet feeds, results;
    tset_init(&feeds);
    tset_init(&results);
    clock_t start = clock();
    int rc = model_build(o, &m, err);
    if (rc == 0) {
        printf("compiled %s in %.2f s\n", o->model, (double)(clock() - start) / CLOCKS_PER_SEC);
        print_ir_summary(m.graph, stdout);
        rc = model_weights(o, &m, &feeds, err);
        printf("weights: %s\n", o->checkpoint ? o->checkpoint : "random init (seed --seed, std 0.02)");
    }
    Tensor *ids = rc == 0 ? windows_of_text(o->data ? o->data : default_corpus, batch, seq, err) : NULL;
    if (rc == 0 && !ids) rc = -1;
    if (rc == 0) {
        printf("forward: batch %lld x seq %lld bytes of %s\n", (long long)batch, (long long)seq,
               o->data ? o->data : default_corpus);
        fflush(stdout);
        tset_put(&feeds, "input_ids", ids);
        start = clock();
        rc = run_forward(o, &m, &feeds, ids, &results, err);
        if (rc == 0) {
            print_losses(&results);
            printf("forward took %.2f s (cpu time, backend %s)\n", (double)(clock() - start) / CLOCKS_PER_SEC,
                   o->backend ? o->backend : exec_default_backend());
        }
    }
    tset_free(&feeds);
    tset_free(&results);
    model_free(&m);
    return rc;
}
