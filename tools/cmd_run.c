#include <string.h>

#include "../runtime/exec.h"
#include "cli.h"

/* input_ids may be I64 or I32 [B,T]; the graph takes i64. */
static Tensor *read_input_ids(const char *path, Err *err) {
    StFile *f = st_open(path, err);
    if (!f) return NULL;
    Tensor *ids = NULL;
    const StTensor *st = st_find(f, "input_ids");
    if (!st) {
        err_set(err, "%s has no tensor 'input_ids'", path);
    } else if (st->rank != 2 || st->shape[0] < 1 || st->shape[1] < 2) {
        err_set(err, "%s: input_ids must be [B,T] with B >= 1 and T >= 2", path);
    } else if (st->dtype != ST_I64 && st->dtype != ST_I32) {
        err_set(err, "%s: input_ids must be I64 or I32, not %s", path, st_dtype_name(st->dtype));
    } else {
        Tensor *raw = st_to_tensor(st, err);
        if (raw && raw->dtype == DT_I32) {
            ids = tensor_new(DT_I64, 2, raw->shape);
            for (int64_t i = 0; i < raw->numel; i++) ((int64_t *)ids->data)[i] = ((int32_t *)raw->data)[i];
            tensor_free(raw);
        } else {
            ids = raw;
        }
    }
    st_close(f);
    return ids;
}

static int check_run_options(const Options *o, Err *err) {
    if (!o->checkpoint || !o->input || !o->output)
        return err_set(err, "'v3c run' needs --checkpoint DIR, --input IN.safetensors and --output OUT.safetensors");
    return 0;
}

int run_forward(const Options *o, const Model *m, TensorSet *feeds, const Tensor *ids, TensorSet *results,
                Err *err) {
    InterpOptions io = {.batch = ids->shape[0], .seq = ids->shape[1]};
    if (o->dump_kernels && exec_dump_kernels(m->graph, &io, o->dump_kernels, err)) return -1;
    return exec_run(o->backend ? o->backend : exec_default_backend(), m->graph, feeds, &io, results, err);
}

int cmd_run(const Options *o, Err *err) {
    if (check_run_options(o, err)) return -1;
    Model m;
    TensorSet feeds, results;
    tset_init(&feeds);
    tset_init(&results);
    int rc = model_build(o, &m, err);
    Tensor *ids = rc == 0 ? read_input_ids(o->input, err) : NULL;
    if (!ids) rc = -1;
    if (rc == 0) rc = model_weights(o, &m, &feeds, err);
    if (rc == 0) {
        tset_put(&feeds, "input_ids", ids);
        ids = NULL;
        rc = run_forward(o, &m, &feeds, tset_get(&feeds, "input_ids"), &results, err);
    }
    if (rc == 0) rc = st_write(o->output, &results, err);
    tensor_free(ids);
    tset_free(&feeds);
    tset_free(&results);
    model_free(&m);
    return rc;
}
