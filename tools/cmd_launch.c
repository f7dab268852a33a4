/* v3c launch DIR: runs a bundle written by `v3c aot` (bundle.h) as the
 * training job it plans, one rank per process under mpirun. Nothing is parsed
 * from the model source and no pass runs: each rank reads the stage graphs,
 * renames the experts to its EP rank's, and trains. */
#include <stdlib.h>
#include <string.h>

#include "../runtime/cuda_backend.h"
#include "../runtime/fp8_checkpoint.h"
#include "../runtime/init.h"
#include "bundle.h"

/* Every weight, from the checkpoint or a seeded init (by name, so the same
 * values as `train` gives them), in train's order. */
static int launch_weights(const Options *o, void *ctx, TensorSet *weights, Err *err) {
    const Bundle *b = ctx;
    /* --resume's weights, else --checkpoint's, else those aot was given */
    const char *path = o->resume ? o->resume : o->checkpoint ? o->checkpoint : b->checkpoint[0] ? b->checkpoint : NULL;
    Graph *g = bundle_weight_graph(b, err);
    Checkpoint *c = g && path ? checkpoint_open(path, err) : NULL;
    int rc = !g || (path && !c) ? -1 : 0;
    InitOptions init = {.seed = (uint64_t)o->seed, .std = 0.02};
    if (rc == 0) rc = c ? checkpoint_load_params_fp8_aware(c, g, weights, err) : init_params(g, &init, weights, err);
    if (c) checkpoint_close(c);
    graph_free(g);
    return rc;
}

static int launch_body(const Options *o, Layout *l, Comm *world, void *ctx, Err *err) {
    Bundle *b = ctx;
    if (bundle_rebase_experts(b->split, &b->experts, l->ep_rank, (int)l->ep, err)) return -1;
    bundle_rebase_names(b->weights.data, b->weights.len, &b->experts, l->ep_rank, (int)l->ep);
    TrainJob job = {
        .split = b->split,
        .objective = b->objective,
        .config_json = xstrdup(b->config_json),
        .peak_activation_bytes = b->activation_bytes[l->stage],
        .load_weights = launch_weights,
        .ctx = b,
        .backend = train_job_backend(o, b->fp8),
    };
    int rc = train_job_run(o, l, world, &job, err);
    b->split = NULL; /* the job freed it */
    return rc;
}

/* On a GPU the kernels come from the bundle, compiled for its target. */
static int use_bundle_kernels(const Options *o, const Bundle *b, Err *err) {
    if (strcmp(train_job_backend(o, b->fp8), "cuda") != 0) return 0;
    CudaDevice *d = cuda_device_open(err);
    if (!d) return -1;
    int rc = strcmp(cuda_device_target(d), b->target) == 0
                 ? 0
                 : err_set(err, "the bundle's kernels are for %s, but this GPU (%s) is %s: run v3c aot --target %s",
                           b->target, cuda_device_name(d), cuda_device_target(d), cuda_device_target(d));
    cuda_device_close(d);
    char *kernels = xsprintf("%s/kernels", b->dir);
    /* The bundle must keep every kernel, whatever the user's cache limit. */
    if (rc == 0) setenv("V3C_CACHE_DIR", kernels, 1), setenv("V3C_CACHE_MAX_SIZE", "0", 1);
    free(kernels);
    return rc;
}

int cmd_launch(const Options *o, Err *err) {
    if (train_job_check_options(o, err)) return -1;
    Bundle b;
    int rc = bundle_open(o->model, &b, err);
    Options lo = *o;
    lo.batch = b.batch; /* the plans and kernels are for these */
    lo.seq = b.seq;
    if (rc == 0) rc = use_bundle_kernels(o, &b, err);
    if (rc == 0) rc = train_job_main(&lo, &b.layout, launch_body, &b, err);
    bundle_close(&b);
    return rc;
}
