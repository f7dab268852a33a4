/* The pipeline stage split (passes/pipeline_split.h) and executor
 * (runtime/pipeline.h): per-stage graphs run over micro-batches give the
 * whole training graph's losses and gradients, in one process and across
 * `mpirun` ranks under the 1F1B, ZB1P and DualPipe schedules.
 *
 * Run with `--mpi-driver SCHEDULE MICROBATCHES [fp8]` (under mpirun) this
 * executable is the distributed check itself: every rank trains 3 steps of
 * plain SGD both through the pipeline and on the whole graph and compares. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../frontend/frontend.h"
#include "../passes/autodiff.h"
#include "../passes/fp8.h"
#include "../passes/passes.h"
#include "../passes/pipeline_split.h"
#include "../runtime/init.h"
#include "../runtime/pipeline.h"
#include "testutil.h"

_Static_assert((int)PIPE_PARTS == (int)PIPE_PART_COUNT, "runtime and passes agree on the stage graph parts");

/* A 4-layer tiny model (1 dense + 3 MoE layers, MTP depth 1), small enough to
 * run many steps in a test. */
static const char *const model_path = "models/tiny.v3";
static const char *const small_sets =
    "hidden_size=32,intermediate_size=48,moe_intermediate_size=16,vocab_size=64,num_attention_heads=2,"
    "q_lora_rank=16,kv_lora_rank=16,qk_nope_head_dim=8,qk_rope_head_dim=4,v_head_dim=8";

/* Sums of float32 terms reordered (per-micro-batch means, then their mean,
 * instead of one mean over every token; partial weight gradients added in
 * another order) differ by a few float32 roundings of the largest partial sum,
 * ~1e-7 relative for these sizes; 1e-5 (the bound) leaves two decades
 * for cancellation in small gradients. */
static const double tolerance = 1e-5;

/* ---- the model ---- */

/* The training graph as `v3c train` builds it (autodiff of total_loss, then
 * FP8 when asked, then dce); NULL with err set on failure. */
static Graph *build_training_graph(int fp8, const char *more_sets, Err *err) {
    Program *p = program_parse_file(model_path, err);
    if (!p) return NULL;
    int bound = program_bind_sets(p, small_sets, err) == 0 && (!more_sets || program_bind_sets(p, more_sets, err) == 0);
    Graph *g = bound ? program_lower(p, err) : NULL;
    program_free(p);
    Fp8Options f8 = fp8_default_options();
    PipelineOptions sweep = {.passes = "dce,verify", .log = stderr};
    if (g && (autodiff_graph(g, "total_loss", err) || (fp8 && fp8_graph(g, &f8, err)) || run_pipeline(g, &sweep, err))) {
        graph_free(g);
        return NULL;
    }
    return g;
}

static Graph *training_graph(int fp8, const char *more_sets) {
    Err err = {0};
    Graph *g = build_training_graph(fp8, more_sets, &err);
    ck_assert_msg(g, "%s", err.msg);
    return g;
}

static int make_weights(const Graph *g, TensorSet *w, Err *err) {
    tset_init(w);
    InitOptions init = {.seed = 7, .std = 0.02};
    return init_params(g, &init, w, err);
}

static void init_weights(const Graph *g, TensorSet *w) {
    Err err = {0};
    ck_assert_msg(make_weights(g, w, &err) == 0, "%s", err.msg);
}

/* Deterministic ids below the vocabulary (64), the same on every rank. */
static Tensor *make_ids(int64_t b, int64_t t, int step) {
    int64_t shape[2] = {b, t};
    Tensor *ids = tensor_new(DT_I64, 2, shape);
    uint64_t x = 0x9e3779b97f4a7c15ull * (uint64_t)(step + 1);
    for (int64_t i = 0; i < ids->numel; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ((int64_t *)ids->data)[i] = (int64_t)(x % 64);
    }
    return ids;
}

static Tensor *copy_tensor(const Tensor *t) {
    Tensor *c = tensor_new(t->dtype, t->rank, t->shape);
    memcpy(c->data, t->data, (size_t)t->numel * dtype_host_size(t->dtype));
    return c;
}

/* The whole graph on the whole batch: the reference. */
static int reference_step(const Graph *g, const TensorSet *w, const Tensor *ids, TensorSet *out, Err *err) {
    TensorSet feeds;
    tset_init(&feeds);
    for (size_t i = 0; i < w->names.len; i++) tset_put(&feeds, w->names.data[i], copy_tensor(w->tensors.data[i]));
    tset_put(&feeds, "input_ids", copy_tensor(ids));
    InterpOptions io = {.batch = ids->shape[0], .seq = ids->shape[1]};
    tset_init(out);
    int rc = exec_run("interp", g, &feeds, &io, out, err);
    tset_free(&feeds);
    return rc;
}

/* The whole graph once per micro-batch (rows [g*b, (g+1)*b)), float results
 * averaged and integer ones summed: one rank accumulating gradients. FP8's
 * reference: its weight-gradient GEMMs quantize activations in 128x1 tiles
 * along the tokens, so which tokens share a scale depends on the micro-batch
 * and only a rank running the same micro-batches can agree to 1e-5. */
static int accumulated_step(const Graph *g, const TensorSet *w, const Tensor *ids, int microbatches, TensorSet *out,
                            Err *err) {
    int64_t rows = ids->shape[0] / microbatches, shape[2] = {rows, ids->shape[1]};
    size_t bytes = (size_t)(rows * ids->shape[1]) * sizeof(int64_t);
    tset_init(out);
    for (int m = 0; m < microbatches; m++) {
        Tensor *part = tensor_new(DT_I64, 2, shape);
        memcpy(part->data, (const char *)ids->data + (size_t)m * bytes, bytes);
        TensorSet r;
        int rc = reference_step(g, w, part, &r, err);
        tensor_free(part);
        for (size_t i = 0; rc == 0 && i < r.names.len; i++) {
            Tensor *t = r.tensors.data[i], *acc = tset_get(out, r.names.data[i]);
            if (!acc) tset_put(out, r.names.data[i], acc = tensor_new(t->dtype, t->rank, t->shape));
            for (int64_t k = 0; k < t->numel; k++) {
                if (t->dtype == DT_I32) ((int32_t *)acc->data)[k] += ((int32_t *)t->data)[k];
                else if (t->dtype == DT_F32) tensor_f32(acc)[k] += tensor_f32(t)[k] / (float)microbatches;
            }
        }
        tset_free(&r);
        if (rc) return -1;
    }
    return 0;
}

/* Largest relative L2 error over the pipeline's results; -1 if one differs
 * in kind (missing, other shape, unequal integers). Counts compared tensors. */
static double compare(const TensorSet *want, const TensorSet *got, int *count, char *worst, size_t n) {
    double max = 0.0;
    *count = 0;
    for (size_t i = 0; i < got->names.len; i++) {
        const char *name = got->names.data[i];
        const Tensor *g = got->tensors.data[i], *w = tset_get(want, name);
        if (!w || w->numel != g->numel || w->dtype != g->dtype) {
            snprintf(worst, n, "%s missing or of another shape", name);
            return -1;
        }
        double e = rel_l2(g, w);
        if (g->dtype == DT_I32 && e != 0.0) {
            snprintf(worst, n, "%s differs", name);
            return -1;
        }
        if (e > max || isnan(e)) {
            max = e;
            snprintf(worst, n, "%s", name);
        }
        (*count)++;
    }
    return max;
}

static int count_grads(const TensorSet *s) {
    int n = 0;
    for (size_t i = 0; i < s->names.len; i++) n += starts_with(s->names.data[i], "grad.");
    return n;
}

/* ---- one process: every stage in turn ---- */

typedef struct LocalCase {
    int stages, microbatches, split_weights, overlap;
} LocalCase;

static void check_local(const Graph *g, LocalCase c) {
    Err err = {0};
    TensorSet w, want, got;
    init_weights(g, &w);
    Tensor *ids = make_ids(4, 8, 0);
    ck_assert_msg(reference_step(g, &w, ids, &want, &err) == 0, "%s", err.msg);
    PipelineSplitOptions so = {.stages = c.stages, .split_weights = c.split_weights};
    PipelineSplit *ps = pipeline_split(g, &so, &err);
    ck_assert_msg(ps, "%s", err.msg);
    PipeRunOptions ro = {.batch = 4, .seq = 8, .microbatches = c.microbatches, .overlap = c.overlap};
    PipeRunner *r = pipe_runner_new(ps->stages, ps->graphs, NULL, NULL, &ro, &err);
    ck_assert_msg(r, "%s", err.msg);
    tset_init(&got);
    ck_assert_msg(pipeline_train_step(r, &w, ids, &got, &err) == 0, "%s", err.msg);
    int n;
    char worst[256] = "";
    double e = compare(&want, &got, &n, worst, sizeof worst);
    ck_assert_msg(e >= 0 && e <= tolerance, "P=%d M=%d split=%d: %s: error %g", c.stages, c.microbatches,
                  c.split_weights, worst, e);
    ck_assert_int_eq(count_grads(&got), count_grads(&want));
    ck_assert_ptr_nonnull(tset_get(&got, "total_loss"));
    ck_assert_ptr_nonnull(tset_get(&got, "mtp_loss"));
    ck_assert_ptr_nonnull(tset_get(&got, "expert_load.model.layers.1.mlp"));
    /* The same micro-batches through the whole graph, averaged: bit for bit. */
    TensorSet accumulated;
    ck_assert_msg(accumulated_step(g, &w, ids, c.microbatches, &accumulated, &err) == 0, "%s", err.msg);
    e = compare(&accumulated, &got, &n, worst, sizeof worst);
    ck_assert_msg(e == 0.0, "P=%d M=%d: %s differs from gradient accumulation by %g", c.stages, c.microbatches, worst, e);
    tset_free(&accumulated);
    pipe_runner_free(r);
    pipeline_split_free(ps);
    tset_free(&got);
    tset_free(&want);
    tset_free(&w);
    tensor_free(ids);
}

START_TEST(stages_match_whole_graph) {
    Graph *g = training_graph(0, NULL);
    const LocalCase cases[] = {{1, 1, 0, 0}, {2, 2, 0, 0}, {2, 4, 1, 1}, {4, 2, 0, 1}, {4, 4, 1, 0}, {3, 1, 1, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_local(g, cases[i]);
    graph_free(g);
}
END_TEST

/* A schedule on one rank (the world-size-1 communicator, no MPI): the
 * instruction list's order, bit-identical to gradient accumulation. */
START_TEST(a_one_rank_schedule_needs_no_mpi) {
    Graph *g = training_graph(0, NULL);
    Err err = {0};
    Comm *c = comm_init(NULL, NULL, 10, &err);
    ck_assert_msg(c && comm_size(c) == 1, "%s", err.msg);
    for (int kind = 0; kind < SCHED_KIND_COUNT; kind++) {
        if (kind == SCHED_DUALPIPE) continue; /* needs an even number of ranks */
        Schedule *s = schedule_build((SchedKind)kind, 1, 2, &err);
        ck_assert_msg(s, "%s", err.msg);
        PipelineSplitOptions so = {.stages = 1, .split_weights = kind != SCHED_1F1B};
        PipelineSplit *ps = pipeline_split(g, &so, &err);
        PipeRunOptions ro = {.batch = 4, .seq = 8};
        PipeRunner *r = ps ? pipe_runner_new(1, ps->graphs, s, c, &ro, &err) : NULL;
        ck_assert_msg(r, "%s", err.msg);
        TensorSet w, got, want;
        init_weights(g, &w);
        tset_init(&got);
        Tensor *ids = make_ids(4, 8, 1);
        ck_assert_msg(pipeline_train_step(r, &w, ids, &got, &err) == 0, "%s", err.msg);
        ck_assert_msg(accumulated_step(g, &w, ids, 2, &want, &err) == 0, "%s", err.msg);
        int n;
        char worst[256] = "";
        ck_assert_msg(compare(&want, &got, &n, worst, sizeof worst) == 0.0, "%s: %s", sched_kind_name(s->kind), worst);
        ck_assert_int_eq(count_grads(&got), count_grads(&want));
        tset_free(&w);
        tset_free(&got);
        tset_free(&want);
        tensor_free(ids);
        pipe_runner_free(r);
        pipeline_split_free(ps);
        schedule_free(s);
    }
    comm_free(c);
    graph_free(g);
}
END_TEST

/* The sequence-wise balance loss adds one term per MoE layer into total_loss:
 * a chain of unscoped adds crossing every stage, and its gradient sent from
 * the last stage straight to each MoE layer's stage. */
START_TEST(balance_loss_chain_crosses_stages) {
    Graph *g = training_graph(0, "aux_loss_alpha=0.01");
    ck_assert_int_ge(ir_find_output(g, "aux_loss"), 0);
    const LocalCase cases[] = {{4, 2, 1, 0}, {3, 4, 0, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_local(g, cases[i]);
    graph_free(g);
}
END_TEST

/* ---- the split's structure ---- */

START_TEST(layers_go_to_stages_in_contiguous_runs) {
    const struct {
        int layers, stages, want[6];
    } cases[] = {{4, 2, {0, 0, 1, 1}}, {4, 4, {0, 1, 2, 3}}, {5, 2, {0, 0, 1, 1, 1}}, {4, 3, {0, 1, 2, 2}},
                 {6, 1, {0, 0, 0, 0, 0, 0}}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int l = 0; l < cases[i].layers; l++)
            ck_assert_int_eq(pipeline_layer_stage(l, cases[i].layers, cases[i].stages), cases[i].want[l]);
}
END_TEST

static int has_param(const Graph *g, const char *name) {
    int64_t v;
    return strmap_get(&g->names, name, &v) && g->nodes.data[g->values.data[v].node].op == OP_PARAM;
}

static int any_param_with_prefix(const Graph *g, const char *prefix) {
    for (size_t i = 0; i < g->nodes.len; i++)
        if (g->nodes.data[i].op == OP_PARAM && starts_with(node_str(&g->nodes.data[i], "name", ""), prefix)) return 1;
    return 0;
}

static int outputs(const Graph *g, const char *name) { return ir_find_output(g, name) >= 0; }

START_TEST(two_stages_hold_their_layers_and_the_ends) {
    Graph *g = training_graph(0, NULL);
    Err err = {0};
    PipelineSplitOptions so = {.stages = 2, .split_weights = 1};
    PipelineSplit *ps = pipeline_split(g, &so, &err);
    ck_assert_msg(ps, "%s", err.msg);
    ck_assert_int_eq(ps->layers, 4);
    Graph *f0 = ps->graphs[0][PIPE_FORWARD], *f1 = ps->graphs[1][PIPE_FORWARD];
    ck_assert(has_param(f0, "model.embed_tokens.weight") && !has_param(f0, "lm_head.weight"));
    ck_assert(any_param_with_prefix(f0, "model.layers.1.") && !any_param_with_prefix(f0, "model.layers.2."));
    ck_assert(has_param(f1, "lm_head.weight") && has_param(f1, "model.norm.weight"));
    ck_assert(any_param_with_prefix(f1, "model.layers.4.") && !any_param_with_prefix(f1, "model.layers.0."));
    ck_assert(outputs(f1, "total_loss") && !outputs(f0, "total_loss") && !outputs(f1, "logits"));
    /* The embedding is read on stage 0 and by the MTP module on stage 1: both output a partial gradient. */
    int embed_partials = 0;
    for (int s = 0; s < 2; s++)
        for (int q = 0; q < PIPE_PART_COUNT; q++) embed_partials += outputs(ps->graphs[s][q], "grad.model.embed_tokens.weight");
    ck_assert_int_eq(embed_partials, 2);
    int forward_sends = 0, backward_sends = 0;
    for (int i = 0; i < ps->nmessages; i++) {
        const PipeMessage *m = &ps->messages[i];
        ck_assert(outputs(ps->graphs[m->src_stage][m->src_part], m->name));
        forward_sends += m->src_part == PIPE_FORWARD && m->dst_part == PIPE_FORWARD;
        backward_sends += m->src_part == PIPE_BACKWARD && m->dst_part == PIPE_BACKWARD;
        if (m->src_part == m->dst_part) ck_assert_int_eq(m->src_stage + (m->src_part == PIPE_FORWARD ? 1 : -1), m->dst_stage);
    }
    ck_assert_int_ge(forward_sends, 1);
    ck_assert_int_ge(backward_sends, 1);
    for (int s = 0; s < 2; s++) {
        const Graph *b = ps->graphs[s][PIPE_BACKWARD], *w = ps->graphs[s][PIPE_WEIGHT];
        ck_assert_int_gt(w->nodes.len, 0);
        for (size_t i = 0; i < b->nodes.len; i++) ck_assert(!(b->nodes.data[i].flags & NODE_WGRAD));
        for (size_t i = 0; i < w->nodes.len; i++) {
            const Node *n = &w->nodes.data[i];
            ck_assert(n->op == OP_PARAM || n->op == OP_INPUT || !(n->flags & NODE_BACKWARD) ||
                      (n->flags & NODE_WGRAD));
        }
    }
    pipeline_split_free(ps);
    graph_free(g);
}
END_TEST

START_TEST(bad_splits_are_errors) {
    Graph *g = training_graph(0, NULL);
    Err err = {0};
    PipelineSplitOptions so = {.stages = 5};
    ck_assert_ptr_null(pipeline_split(g, &so, &err));
    ck_assert_msg(strstr(err.msg, "5 pipeline stages need at least as many decoder layers") && strstr(err.msg, "has 4"),
                  "%s", err.msg);
    so.stages = 0;
    err = (Err){0};
    ck_assert_ptr_null(pipeline_split(g, &so, &err));
    ck_assert_msg(strstr(err.msg, "at least 1 stage"), "%s", err.msg);
    graph_free(g);

    Program *p = program_parse_file(model_path, &err);
    ck_assert(p && program_bind_sets(p, small_sets, &err) == 0);
    Graph *forward = program_lower(p, &err);
    program_free(p);
    so.stages = 2;
    err = (Err){0};
    ck_assert_ptr_null(pipeline_split(forward, &so, &err));
    ck_assert_msg(strstr(err.msg, "no backward nodes"), "%s", err.msg);
    graph_free(forward);
}
END_TEST

START_TEST(bad_steps_are_errors) {
    Graph *g = training_graph(0, NULL);
    Err err = {0};
    PipelineSplitOptions so = {.stages = 2};
    PipelineSplit *ps = pipeline_split(g, &so, &err);
    ck_assert_msg(ps, "%s", err.msg);
    PipeRunOptions ro = {.batch = 4, .seq = 8, .microbatches = 3};
    ck_assert_ptr_null(pipe_runner_new(2, ps->graphs, NULL, NULL, &ro, &err));
    ck_assert_msg(strstr(err.msg, "batch 4 cannot be cut into 3 equal micro-batches"), "%s", err.msg);
    ro.microbatches = 2;
    err = (Err){0};
    PipeRunner *r = pipe_runner_new(2, ps->graphs, NULL, NULL, &ro, &err);
    ck_assert_msg(r, "%s", err.msg);
    TensorSet w, out;
    init_weights(g, &w);
    tset_init(&out);
    Tensor *wrong = make_ids(2, 8, 0);
    ck_assert_int_ne(pipeline_train_step(r, &w, wrong, &out, &err), 0);
    ck_assert_msg(strstr(err.msg, "input_ids must be i64 [4, 8]"), "%s", err.msg);
    Tensor *ids = make_ids(4, 8, 0);
    TensorSet none;
    tset_init(&none);
    err = (Err){0};
    ck_assert_int_ne(pipeline_train_step(r, &none, ids, &out, &err), 0);
    ck_assert_msg(strstr(err.msg, "needs weight 'model.embed_tokens.weight'"), "%s", err.msg);
    ck_assert_int_eq(out.names.len, 0);
    /* A failed step leaves the runner usable. */
    err = (Err){0};
    ck_assert_msg(pipeline_train_step(r, &w, ids, &out, &err) == 0, "%s", err.msg);
    ck_assert_ptr_nonnull(tset_get(&out, "total_loss"));
    Schedule *s = schedule_build(SCHED_1F1B, 2, 2, &err);
    ck_assert_ptr_nonnull(s);
    ck_assert_ptr_null(pipe_runner_new(2, ps->graphs, s, NULL, &ro, &err));
    ck_assert_msg(strstr(err.msg, "the 1f1b schedule has 2 ranks but the communicator 1"), "%s", err.msg);
    schedule_free(s);
    tset_free(&none);
    tset_free(&out);
    tset_free(&w);
    tensor_free(ids);
    tensor_free(wrong);
    pipe_runner_free(r);
    pipeline_split_free(ps);
    graph_free(g);
}
END_TEST

/* ---- across ranks: the driver mpirun starts, and the suite's cases that start it ---- */

enum { DRIVER_STEPS = 3, DRIVER_SEQ = 8 };
static const double driver_lr = 0.5;

static void sgd(TensorSet *w, const TensorSet *grads) {
    for (size_t i = 0; i < w->names.len; i++) {
        char *gname = xsprintf("grad.%s", w->names.data[i]);
        const Tensor *g = tset_get(grads, gname);
        Tensor *t = w->tensors.data[i];
        if (g && g->numel == t->numel)
            for (int64_t k = 0; k < t->numel; k++) tensor_f32(t)[k] -= (float)driver_lr * tensor_f32(g)[k];
        free(gname);
    }
}

typedef struct Driver {
    Comm *comm;
    Schedule *sched;
    Graph *graph;
    PipelineSplit *split;
    PipeRunner *runner;
    TensorSet piped, whole; /* the two copies of the weights, each trained its own way */
    int fp8, overlap;
    int fail; /* rank 1 is given no weights: its step fails, and the others must not hang */
} Driver;

static int driver_setup(Driver *d, const char *schedule, int microbatches, int fp8, Err *err) {
    int kind = sched_kind_parse(schedule);
    if (kind < 0) return err_set(err, "unknown schedule '%s'", schedule);
    if (!(d->sched = schedule_build((SchedKind)kind, comm_size(d->comm), microbatches, err))) return -1;
    if (!(d->graph = build_training_graph(fp8, NULL, err))) return -1;
    PipelineSplitOptions so = {.stages = comm_size(d->comm), .split_weights = kind != SCHED_1F1B};
    if (!(d->split = pipeline_split(d->graph, &so, err))) return -1;
    PipeRunOptions ro = {.batch = microbatches, .seq = DRIVER_SEQ, .overlap = d->overlap};
    if (!(d->runner = pipe_runner_new(d->split->stages, d->split->graphs, d->sched, d->comm, &ro, err))) return -1;
    if (make_weights(d->graph, &d->piped, err) || make_weights(d->graph, &d->whole, err)) return -1;
    return 0;
}

static void driver_free(Driver *d) {
    pipe_runner_free(d->runner);
    pipeline_split_free(d->split);
    graph_free(d->graph);
    schedule_free(d->sched);
    tset_free(&d->piped);
    tset_free(&d->whole);
}

/* One step both ways; prints the comparison on rank 0; 1 when within tolerance. */
static int driver_step(Driver *d, int step, int microbatches, Err *err) {
    Tensor *ids = make_ids(microbatches, DRIVER_SEQ, step);
    TensorSet got, want;
    tset_init(&got);
    tset_init(&want);
    TensorSet none;
    tset_init(&none);
    int rc = pipeline_train_step(d->runner, d->fail && comm_rank(d->comm) == 1 ? &none : &d->piped, ids, &got, err);
    if (rc == 0) rc = d->fp8 ? accumulated_step(d->graph, &d->whole, ids, microbatches, &want, err)
                             : reference_step(d->graph, &d->whole, ids, &want, err);
    int ok = 0;
    if (rc == 0) {
        int n;
        char worst[256] = "(all equal)";
        double e = compare(&want, &got, &n, worst, sizeof worst);
        ok = e >= 0 && e <= tolerance && count_grads(&got) == count_grads(&want);
        PipeStepTimes t = pipe_runner_times(d->runner);
        printf("rank %d step %d: total_loss %.9g (whole graph %.9g), %d tensors, worst %s %.3g; "
               "%.3f s (compute %.3f, waiting %.3f)\n",
               comm_rank(d->comm), step + 1, tensor_f32(tset_get(&got, "total_loss"))[0],
               tensor_f32(tset_get(&want, "total_loss"))[0], n, worst, e, t.total, t.compute, t.wait_recv);
        sgd(&d->piped, &got);
        sgd(&d->whole, &want);
    }
    tset_free(&got);
    tset_free(&want);
    tset_free(&none);
    tensor_free(ids);
    return rc ? -1 : ok;
}

static int mpi_driver(int argc, char **argv) {
    Err err = {0};
    if (argc < 4) {
        fprintf(stderr, "usage: %s --mpi-driver 1f1b|zb1p|dualpipe MICROBATCHES [fp8] [overlap] [fail]\n", argv[0]);
        return 2;
    }
    const char *schedule = argv[2];
    int microbatches = atoi(argv[3]), fp8 = 0, overlap = 0, fail = 0;
    for (int i = 4; i < argc; i++) {
        fp8 |= strcmp(argv[i], "fp8") == 0;
        overlap |= strcmp(argv[i], "overlap") == 0;
        fail |= strcmp(argv[i], "fail") == 0;
    }
    Driver d = {.fp8 = fp8, .overlap = overlap, .fail = fail};
    tset_init(&d.piped);
    tset_init(&d.whole);
    /* A failing run waits out the timeout once: keep it short there. */
    if (!(d.comm = comm_init(&argc, &argv, fail ? 5 : 120, &err))) {
        fprintf(stderr, "pipeline driver: %s\n", err.msg);
        return 2;
    }
    int all_ok = driver_setup(&d, schedule, microbatches, fp8, &err) == 0;
    for (int step = 0; all_ok && step < DRIVER_STEPS; step++) all_ok = driver_step(&d, step, microbatches, &err) == 1;
    if (!all_ok && err.set) fprintf(stderr, "rank %d: %s\n", comm_rank(d.comm), err.msg);
    /* Wait (bounded) for the others, so each rank reports its own outcome
     * instead of mpirun killing the ranks still waiting on one that failed.
     * A rank that failed first waits longer than the others' own timeout: they
     * may have started waiting on it after it failed. */
    if (!all_ok) comm_set_timeout(d.comm, 3 * comm_timeout(d.comm));
    Err ignored = {0};
    comm_barrier(d.comm, &ignored);
    if (all_ok) printf("rank %d: pipeline ok\n", comm_rank(d.comm));
    fflush(stdout);
    driver_free(&d);
    comm_free(d.comm);
    return all_ok ? 0 : 1;
}

static int have_mpirun(void) { return system("command -v mpirun >/dev/null 2>&1") == 0; }

/* Starts this executable as the driver on np ranks; returns its exit status
 * and (in *text) everything the ranks printed. 0 when mpirun is missing. */
static int run_driver(int np, const char *schedule, int microbatches, const char *extra, char **text) {
    *text = NULL;
    if (!have_mpirun()) {
        printf("skipped: mpirun not found (pipeline over %d ranks, %s %s)\n", np, schedule, extra);
        return 0;
    }
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    ck_assert_int_gt(n, 0);
    self[n] = 0;
    char *cmd = xsprintf("OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 ASAN_OPTIONS=detect_leaks=0 "
                         "mpirun -np %d --oversubscribe %s --mpi-driver %s %d %s 2>&1",
                         np, self, schedule, microbatches, extra);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    Buf out = {0};
    buf_printf(&out, "%s\n", cmd);
    char line[4096];
    while (fgets(line, sizeof line, p)) buf_puts(&out, line);
    int status = pclose(p);
    *text = buf_take(&out);
    free(cmd);
    return status;
}

/* Asserts every rank agrees with the whole graph on every step. */
static void check_mpi(int np, const char *schedule, int microbatches, const char *extra) {
    char *text;
    int status = run_driver(np, schedule, microbatches, extra, &text);
    if (!text) return;
    int oks = 0;
    for (const char *at = text; (at = strstr(at, "pipeline ok")); at++) oks++;
    ck_assert_msg(status == 0 && oks == np, "exit %d, %d of %d ranks ok:\n%s", status, oks, np, text);
    free(text);
}

START_TEST(one_f_one_b_on_two_ranks) { check_mpi(2, "1f1b", 4, ""); }
END_TEST
START_TEST(one_f_one_b_on_four_ranks) { check_mpi(4, "1f1b", 4, "overlap"); }
END_TEST
START_TEST(zero_bubble_on_two_ranks) { check_mpi(2, "zb1p", 4, ""); }
END_TEST
START_TEST(dualpipe_on_two_ranks) { check_mpi(2, "dualpipe", 4, "overlap"); }
END_TEST
START_TEST(dualpipe_on_four_ranks) { check_mpi(4, "dualpipe", 8, "overlap"); }
END_TEST
/* Rank 1 fails its first graph; rank 0, waiting for rank 1's activations or
 * gradients, stops with an error after the timeout instead of hanging. */
START_TEST(a_failing_rank_stops_the_others) {
    char *text;
    int status = run_driver(2, "1f1b", 4, "fail", &text);
    if (!text) return;
    ck_assert_msg(status != 0 && !strstr(text, "pipeline ok"), "%s", text);
    ck_assert_msg(strstr(text, "rank 1: pipeline stage 1 (forward part), micro-batch 0: needs weight 'model."), "%s",
                  text);
    ck_assert_msg(strstr(text, "rank 0: pipeline stage 0 (backward part), micro-batch 0: ") && strstr(text, "recv with tag"),
                  "%s", text);
    free(text);
}
END_TEST
START_TEST(fp8_one_f_one_b_on_two_ranks) { check_mpi(2, "1f1b", 4, "fp8"); }
END_TEST
START_TEST(fp8_dualpipe_on_four_ranks) { check_mpi(4, "dualpipe", 8, "fp8 overlap"); }
END_TEST

static Suite *pipeline_suite(void) {
    Suite *s = suite_create("pipeline");
    TCase *split = tcase_create("split");
    tcase_set_timeout(split, 300);
    tcase_add_test(split, layers_go_to_stages_in_contiguous_runs);
    tcase_add_test(split, two_stages_hold_their_layers_and_the_ends);
    tcase_add_test(split, bad_splits_are_errors);
    tcase_add_test(split, bad_steps_are_errors);
    tcase_add_test(split, stages_match_whole_graph);
    tcase_add_test(split, balance_loss_chain_crosses_stages);
    tcase_add_test(split, a_one_rank_schedule_needs_no_mpi);
    suite_add_tcase(s, split);
    TCase *mpi = tcase_create("mpi");
    tcase_set_timeout(mpi, 600);
    tcase_add_test(mpi, one_f_one_b_on_two_ranks);
    tcase_add_test(mpi, one_f_one_b_on_four_ranks);
    tcase_add_test(mpi, zero_bubble_on_two_ranks);
    tcase_add_test(mpi, dualpipe_on_two_ranks);
    tcase_add_test(mpi, dualpipe_on_four_ranks);
    tcase_add_test(mpi, fp8_one_f_one_b_on_two_ranks);
    tcase_add_test(mpi, fp8_dualpipe_on_four_ranks);
    tcase_add_test(mpi, a_failing_rank_stops_the_others);
    suite_add_tcase(s, mpi);
    return s;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--mpi-driver") == 0) return mpi_driver(argc, argv);
    return run_suite(pipeline_suite());
}
