/* Expert parallelism: ep_dispatch / ep_combine, the expert_parallel pass and
 * runtime/ep.h. The model checks run the golden tiny model (8 experts) split
 * over 2 and 4 EP ranks, each rank its own sequences, and compare losses,
 * logits, expert loads and every gradient with one rank running all the
 * sequences, for one step and for three SGD steps, and with FP8. The ranks are
 * threads of this process joined by a thread-based Collectives, and
 * (test_mpi_*) processes under mpirun through runtime/ep.c, also as dp 2 x ep 2:
 * under mpirun this executable is the worker (main sees OMPI_COMM_WORLD_SIZE). */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../frontend/frontend.h"
#include "../ir/collective.h"
#include "../ir/interp.h"
#include "../ir/text.h"
#include "../ir/verify.h"
#include "../passes/autodiff.h"
#include "../passes/expert_parallel.h"
#include "../passes/fp8.h"
#include "../runtime/checkpoint.h"
#include "../runtime/ep.h"
#include "testutil.h"

static const char *golden_dir = "../shared/golden/tiny";
enum { EXPERTS = 8, BATCH = 4, MAX_RANKS = 8 };

/* The bound. Every op runs in fp32 with fp64 accumulation; EP changes
 * only where per-rank partial results are rounded to fp32 and summed (the loss
 * seeds 1/(N/ranks) instead of 1/N, rank means averaged, expert rows in another
 * order), each a relative 2^-24 ~ 6e-8 per op. Backward chains of the tiny model
 * are ~100 ops deep: ~6e-6 relative to a tensor's largest element, under 1e-5. */
static const double EP_TOLERANCE = 1e-5;

typedef struct RankJob {
    const Graph *g;
    TensorSet feeds, results;
    Collectives coll;
    InterpOptions opt;
    Err err;
    int rc;
} RankJob;

static void *run_rank(void *p) {
    RankJob *j = p;
    j->rc = interp_run(j->g, &j->feeds, &j->opt, &j->results, &j->err);
    return NULL;
}

/* Runs jobs[0..ranks) concurrently, one thread each, as one EP group. */
static void run_group(RankJob *jobs, int ranks) {
    ThreadGroup *group = thread_group_new(ranks);
    pthread_t threads[MAX_RANKS];
    for (int r = 0; r < ranks; r++) {
        jobs[r].coll = thread_group_member(group, r);
        jobs[r].opt.collectives = &jobs[r].coll;
        ck_assert_int_eq(pthread_create(&threads[r], NULL, run_rank, &jobs[r]), 0);
    }
    for (int r = 0; r < ranks; r++) pthread_join(threads[r], NULL);
    thread_group_free(group);
}

/* ---- the model ---- */
/* The golden tiny model for EP rank `rank` of `ranks` (1: the plain graph),
 * differentiated for total_loss, optionally through the FP8 recipe. */
static Graph *model_graph(const Checkpoint *ck, int ranks, int rank, int fp8, Err *e) {
    Program *p = program_parse_file("models/deepseek_v3.v3", e);
    if (!p) return NULL;
    /* FP8 Wgrad tiles 128 tokens; MTP's B*(T-1) tokens cannot split at 128 on
     * the ranks' boundary while the main model's B*T do (see check_combined). */
    int bad = program_bind_config(p, ck->config, e) || (fp8 && program_bind_sets(p, "num_nextn_predict_layers=0", e));
    Graph *g = bad ? NULL : program_lower(p, e);
    program_free(p);
    EpOptions ep = {.ranks = ranks, .rank = rank, .fp8_dispatch = fp8};
    Fp8Options f = fp8_default_options();
    if (g && (expert_parallel_graph(g, &ep, e) || autodiff_graph(g, "total_loss", e) || (fp8 && fp8_graph(g, &f, e)) ||
              ir_verify(g, e))) {
        graph_free(g);
        g = NULL;
    }
    return g;
}

/* Token ids of sequences [first, first+count): a fixed pseudo-random pattern. */
static Tensor *token_ids(int64_t first, int64_t count, int64_t seq) {
    int64_t shape[2] = {count, seq};
    Tensor *t = tensor_new(DT_I64, 2, shape);
    for (int64_t s = 0; s < count; s++)
        for (int64_t i = 0; i < seq; i++)
            ((int64_t *)t->data)[s * seq + i] = ((first + s) * 7919 + i * 104729 + (i * i) % 13) % 256;
    return t;
}

/* What g names from the checkpoint (a rank's graph names only its own experts),
 * into an initialized set, and the token ids of sequences [first, first+count). */
static int load_feeds(const Checkpoint *ck, const Graph *g, int64_t first, int64_t count, int64_t seq, TensorSet *feeds,
                      Err *e) {
    if (checkpoint_load_params(ck, g, feeds, e)) return -1;
    tset_put(feeds, "input_ids", token_ids(first, count, seq));
    return 0;
}

/* One rank running all BATCH sequences. */
static int single_run(const Checkpoint *ck, int fp8, int64_t seq, TensorSet *ref, Err *e) {
    tset_init(ref);
    Graph *g = model_graph(ck, 1, 0, fp8, e);
    if (!g) return -1;
    TensorSet feeds;
    tset_init(&feeds);
    InterpOptions opt = {.batch = BATCH, .seq = seq};
    int rc = load_feeds(ck, g, 0, BATCH, seq, &feeds, e) || interp_run(g, &feeds, &opt, ref, e) ? -1 : 0;
    tset_free(&feeds);
    graph_free(g);
    return rc;
}

/* ---- comparing with the single rank ---- */
/* Outputs that sum (expert loads) or average (losses, gradients) over the ranks;
 * everything else is per-sequence and compared rank by rank. */
static int is_summed(const char *name) { return starts_with(name, "expert_load."); }
static int is_averaged(const char *name) { return starts_with(name, "grad.") || str_ends_with(name, "loss"); }
static int is_expert_grad(const char *name) { return starts_with(name, "grad.") && ep_expert_of(name) >= 0; }

/* max |got - want| / max |want| over the tensor (exact for integers). */
static double max_rel_error(const Tensor *got, int64_t want_offset, const Tensor *want, int64_t n) {
    double worst = 0, scale = 0;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(tensor_value(want, want_offset + i)));
    for (int64_t i = 0; i < n; i++)
        worst = fmax(worst, fabs(tensor_value(got, i) - tensor_value(want, want_offset + i)));
    return scale > 0 ? worst / scale : worst;
}

/* FP8 expert Wgrad: the fp8 pass quantizes grouped_linear_wgrad's operands in
 * 128-row tiles over all of a rank's expert rows, so a tile can straddle two
 * experts, and which experts share a boundary tile differs between one rank
 * (all E experts' rows) and an EP rank (its L experts' rows): the same GEMM with
 * different E4M3 roundings. Each rounding's relative error has RMS 0.036 on a
 * GEMM with both operands rounded (tests/test_fp8.c derives it), so two
 * independent ones differ by sqrt(2) * 0.036 = 0.051 (relative L2 over the
 * concatenated expert gradients; an RMS estimate). Everything else is
 * quantized per token (1x128) or in token tiles that split at the ranks'
 * boundary (128 tokens per rank) and stays within EP_TOLERANCE. */
static const double FP8_EXPERT_WGRAD_BOUND = 0.051;

/* How the ranks' combined outputs compare with the single rank's. */
typedef struct Report {
    int compared;
    double worst; /* the largest max_rel_error of the exactly compared outputs */
    char worst_name[200];
    double expert_diff2, expert_norm2; /* fp8: squared L2 of the expert gradients' difference and size */
    char missing[200];                 /* an output the ranks did not produce; "" when none */
} Report;

static void compare_one(Report *rep, const char *name, const Tensor *got, const Tensor *want, int fp8) {
    rep->compared++;
    if (fp8 && is_expert_grad(name)) {
        for (int64_t i = 0; i < want->numel; i++) {
            double d = tensor_value(got, i) - tensor_value(want, i);
            rep->expert_diff2 += d * d, rep->expert_norm2 += tensor_value(want, i) * tensor_value(want, i);
        }
        return;
    }
    double err = max_rel_error(got, 0, want, want->numel);
    if (is_summed(name) && err > 0) err = 1; /* expert loads are counts: any difference is a failure */
    if (err >= rep->worst) rep->worst = err, snprintf(rep->worst_name, sizeof rep->worst_name, "%s", name);
}

/* Every averaged or summed output of the single rank against the ranks' combination. */
static Report compare_combined(const TensorSet *ref, const TensorSet *combined, int fp8) {
    Report rep = {0};
    for (size_t i = 0; i < ref->names.len; i++) {
        const char *name = ref->names.data[i];
        if (!is_summed(name) && !is_averaged(name)) continue;
        const Tensor *want = ref->tensors.data[i], *got = tset_get(combined, name);
        if (!got || got->numel != want->numel) {
            snprintf(rep.missing, sizeof rep.missing, "%s", name);
            continue;
        }
        compare_one(&rep, name, got, want, fp8);
    }
    return rep;
}

static double expert_l2(const Report *r) { return sqrt(r->expert_diff2 / (r->expert_norm2 > 0 ? r->expert_norm2 : 1)); }

/* 1 when the report meets the bounds; else 0 and why. */
static int report_ok(const Report *r, char *why, size_t n) {
    if (r->missing[0]) return snprintf(why, n, "no rank produced %s", r->missing), 0;
    if (r->worst > EP_TOLERANCE) return snprintf(why, n, "%s differs by %.3g", r->worst_name, r->worst), 0;
    if (expert_l2(r) > FP8_EXPERT_WGRAD_BOUND)
        return snprintf(why, n, "expert gradients differ by %.3g (relative L2)", expert_l2(r)), 0;
    return 1;
}

/* Per-sequence outputs (logits) of rank r against its rows of the single
 * rank's; the worst error, or 1 with *bad set on a missing or misshapen one. */
static double slice_error(const TensorSet *ref, const TensorSet *mine, int rank, int ranks, const char **bad) {
    double worst = 0;
    *bad = NULL;
    for (size_t i = 0; i < mine->names.len; i++) {
        const char *name = mine->names.data[i];
        if (is_summed(name) || is_averaged(name)) continue;
        const Tensor *got = mine->tensors.data[i], *want = tset_get(ref, name);
        if (!want || want->shape[0] != BATCH || got->shape[0] != BATCH / ranks || want->numel != got->numel * ranks) {
            *bad = name;
            return 1;
        }
        worst = fmax(worst, max_rel_error(got, rank * got->numel, want, got->numel));
    }
    return worst;
}

static void add_scaled(TensorSet *sum, const char *name, const Tensor *t, double scale) {
    Tensor *acc = tset_get(sum, name);
    if (!acc) tset_put(sum, name, acc = tensor_new(t->dtype, t->rank, t->shape));
    for (int64_t i = 0; i < t->numel; i++) {
        if (t->dtype == DT_I32)
            ((int32_t *)acc->data)[i] += ((const int32_t *)t->data)[i];
        else
            tensor_f32(acc)[i] += (float)(tensor_f32(t)[i] * scale);
    }
}

/* Expert gradients come from the expert's rank only, each a sum over all
 * ranks' tokens of their per-rank mean loss: /ranks makes it the mean's. */
static void combine_rank(TensorSet *combined, const TensorSet *mine, int rank, int ranks) {
    for (size_t i = 0; i < mine->names.len; i++) {
        const char *name = mine->names.data[i];
        if (is_expert_grad(name))
            ck_assert_msg(ep_holds(name, EXPERTS, rank, ranks), "rank %d produced %s", rank, name);
        if (is_summed(name)) add_scaled(combined, name, mine->tensors.data[i], 1);
        if (is_averaged(name)) add_scaled(combined, name, mine->tensors.data[i], 1.0 / ranks);
    }
}

/* The ranks of one EP group as threads: a graph and feeds each, kept across steps. */
typedef struct EpRun {
    int ranks, fp8;
    Graph *graphs[MAX_RANKS];
    RankJob jobs[MAX_RANKS];
} EpRun;

static void ep_run_init(EpRun *run, const Checkpoint *ck, int ranks, int fp8, int64_t seq) {
    Err e = {0};
    int64_t local = BATCH / ranks;
    run->ranks = ranks, run->fp8 = fp8;
    for (int r = 0; r < ranks; r++) {
        run->graphs[r] = model_graph(ck, ranks, r, fp8, &e);
        ck_assert_msg(run->graphs[r] != NULL, "%s", e.msg);
        RankJob *j = &run->jobs[r];
        *j = (RankJob){.g = run->graphs[r], .opt = {.batch = local, .seq = seq, .threads = 1}};
        tset_init(&j->feeds);
        tset_init(&j->results);
        ck_assert_msg(load_feeds(ck, run->graphs[r], r * local, local, seq, &j->feeds, &e) == 0, "%s", e.msg);
        for (size_t i = 0; i < j->feeds.names.len; i++)
            ck_assert_msg(ep_holds(j->feeds.names.data[i], EXPERTS, r, ranks), "rank %d loaded %s", r,
                          j->feeds.names.data[i]);
    }
}

static void ep_run_free(EpRun *run) {
    for (int r = 0; r < run->ranks; r++) {
        tset_free(&run->jobs[r].feeds);
        tset_free(&run->jobs[r].results);
        graph_free(run->graphs[r]);
    }
}

/* One forward and backward on every rank; each rank's logits checked against
 * its rows of ref; the ranks' losses, loads and gradients combined into
 * `combined` (initialized here) and compared with ref's. */
static Report ep_run_step(EpRun *run, const TensorSet *ref, TensorSet *combined) {
    int ranks = run->ranks;
    for (int r = 0; r < ranks; r++) {
        tset_free(&run->jobs[r].results);
        tset_init(&run->jobs[r].results);
    }
    run_group(run->jobs, ranks);
    tset_init(combined);
    for (int r = 0; r < ranks; r++) {
        ck_assert_msg(run->jobs[r].rc == 0, "ep=%d rank %d: %s", ranks, r, run->jobs[r].err.msg);
        combine_rank(combined, &run->jobs[r].results, r, ranks);
        const char *bad;
        double err = slice_error(ref, &run->jobs[r].results, r, ranks, &bad);
        ck_assert_msg(!bad, "rank %d's %s does not match the single rank's", r, bad);
        ck_assert_msg(err <= EP_TOLERANCE, "ep=%d: rank %d's logits differ by %.3g", ranks, r, err);
    }
    Report rep = compare_combined(ref, combined, run->fp8);
    char why[300];
    ck_assert_msg(report_ok(&rep, why, sizeof why), "ep=%d%s: %s", ranks, run->fp8 ? " fp8" : "", why);
    ck_assert_int_eq(rep.compared, (int)combined->names.len);
    return rep;
}

static void check_threads(int ranks, int fp8, int64_t seq) {
    Err e = {0};
    Checkpoint *ck = checkpoint_open(golden_dir, &e);
    ck_assert_msg(ck != NULL, "%s", e.msg);
    TensorSet ref, combined;
    ck_assert_msg(single_run(ck, fp8, seq, &ref, &e) == 0, "%s", e.msg);
    EpRun run;
    ep_run_init(&run, ck, ranks, fp8, seq);
    Report rep = ep_run_step(&run, &ref, &combined);
    printf("ep=%d%s: %d outputs within %.3g of one rank's", ranks, fp8 ? " fp8" : "", rep.compared, rep.worst);
    if (fp8) printf("; expert weight gradients within %.3g relative L2", expert_l2(&rep));
    printf("\n");
    /* 130 weight gradients of total_loss (the main model's 89 and MTP's 41), 4
     * losses, 3 MoE layers' loads (MTP's included); without MTP (fp8): 89, 2 and 2. */
    ck_assert_int_eq(rep.compared, fp8 ? 89 + 2 + 2 : 130 + 4 + 3);
    ep_run_free(&run);
    tset_free(&ref);
    tset_free(&combined);
    checkpoint_close(ck);
}

/* w -= lr * grad.w for every weight of `weights` the gradients hold. */
static void sgd_step(TensorSet *weights, const TensorSet *grads, float lr) {
    for (size_t i = 0; i < weights->names.len; i++) {
        char *gname = xsprintf("grad.%s", weights->names.data[i]);
        const Tensor *g = tset_get(grads, gname);
        Tensor *w = weights->tensors.data[i];
        for (int64_t k = 0; g && k < w->numel; k++) tensor_f32(w)[k] -= lr * tensor_f32(g)[k];
        free(gname);
    }
}

/* Three SGD steps: one rank updating with its gradients, the EP ranks each
 * updating its weights (its experts and the replicated rest) with the
 * combined ones; every step's losses and gradients agree. */
START_TEST(test_ep2_three_sgd_steps) {
    Err e = {0};
    Checkpoint *ck = checkpoint_open(golden_dir, &e);
    ck_assert_msg(ck != NULL, "%s", e.msg);
    Graph *one = model_graph(ck, 1, 0, 0, &e);
    ck_assert_msg(one != NULL, "%s", e.msg);
    TensorSet feeds;
    tset_init(&feeds);
    ck_assert_msg(load_feeds(ck, one, 0, BATCH, 16, &feeds, &e) == 0, "%s", e.msg);
    EpRun run;
    ep_run_init(&run, ck, 2, 0, 16);
    InterpOptions opt = {.batch = BATCH, .seq = 16};
    double losses[3];
    for (int step = 0; step < 3; step++) {
        TensorSet ref, combined;
        tset_init(&ref);
        ck_assert_msg(interp_run(one, &feeds, &opt, &ref, &e) == 0, "%s", e.msg);
        Report rep = ep_run_step(&run, &ref, &combined);
        losses[step] = tensor_value(tset_get(&ref, "total_loss"), 0);
        printf("ep=2 SGD step %d: total_loss %.6f, %d outputs within %.3g of one rank's\n", step, losses[step],
               rep.compared, rep.worst);
        sgd_step(&feeds, &ref, 0.5f);
        for (int r = 0; r < 2; r++) sgd_step(&run.jobs[r].feeds, &combined, 0.5f);
        tset_free(&ref);
        tset_free(&combined);
    }
    ck_assert_msg(losses[2] < losses[0] - 1e-3, "the steps did not train: %g, %g", losses[0], losses[2]);
    ep_run_free(&run);
    tset_free(&feeds);
    graph_free(one);
    checkpoint_close(ck);
}
END_TEST

START_TEST(test_ep2_matches_one_rank) { check_threads(2, 0, 16); }
END_TEST

START_TEST(test_ep4_matches_one_rank) { check_threads(4, 0, 16); }
END_TEST

START_TEST(test_ep2_fp8_matches_one_rank_fp8) { check_threads(2, 1, 64); }
END_TEST

/* ---- the ops on hand-made graphs ---- */
/* 3 tokens per rank, K=2 of E=4 experts, 2 ranks: L=2, capacity 2*3*2 = 12. */
static const char *exchange_text =
    "v3ir 1\n"
    "%0 = input {name=\"x\"} : f32[3,4]\n"
    "%1 = input {name=\"idx\"} : i32[3,2]\n"
    "%2, %3 = moe_dispatch %0, %1 {experts=4} : f32[6,4], i32[4]\n"
    "%4, %5, %6 = ep_dispatch %2, %3 {capacity=[CAP], ranks=2} : f32[CAP,4], i32[2], i32[2,2]\n"
    "%7 = ep_combine %4, %6, %3 {ranks=2, rows=[6]} : f32[6,4]\n"
    "output \"xd\" = %2\n"
    "output \"xr\" = %4\n"
    "output \"lcounts\" = %5\n"
    "output \"plan\" = %6\n"
    "output \"back\" = %7\n";

static Graph *exchange_graph(int capacity) {
    char cap[16];
    snprintf(cap, sizeof cap, "%d", capacity);
    Buf text = {0};
    for (const char *p = exchange_text; *p; p++) {
        if (strncmp(p, "CAP", 3) == 0) {
            buf_puts(&text, cap);
            p += 2;
        } else {
            buf_putc(&text, *p);
        }
    }
    char *t = buf_take(&text);
    Graph *g = parse_ir_ok(t, "exchange");
    free(t);
    return g;
}

/* Rank r's token t has every feature 10*r + t + 1, so a row names its origin. */
static void exchange_feeds(RankJob *j, int rank, const int32_t *idx) {
    int64_t xs[2] = {3, 4}, is[2] = {3, 2};
    Tensor *x = tensor_new(DT_F32, 2, xs), *ids = tensor_new(DT_I32, 2, is);
    for (int64_t i = 0; i < 12; i++) tensor_f32(x)[i] = (float)(10 * rank + i / 4 + 1);
    memcpy(ids->data, idx, sizeof(int32_t) * 6);
    tset_init(&j->feeds);
    tset_init(&j->results);
    tset_put(&j->feeds, "x", x);
    tset_put(&j->feeds, "idx", ids);
}

static const int32_t rank_idx[2][6] = {{0, 2, 1, 3, 0, 1}, {3, 2, 1, 0, 2, 3}};

static void run_exchange(Graph *g, RankJob *jobs) {
    for (int r = 0; r < 2; r++) {
        jobs[r] = (RankJob){.g = g, .opt = {.batch = 1, .seq = 1, .threads = 1}};
        exchange_feeds(&jobs[r], r, rank_idx[r]);
    }
    run_group(jobs, 2);
}

static void free_jobs(RankJob *jobs, int ranks) {
    for (int r = 0; r < ranks; r++) {
        tset_free(&jobs[r].feeds);
        tset_free(&jobs[r].results);
    }
}

static void expect_ints(const Tensor *t, const int32_t *want, int n, const char *what) {
    ck_assert_int_eq(t->numel, n);
    for (int i = 0; i < n; i++) ck_assert_msg(((int32_t *)t->data)[i] == want[i], "%s[%d]", what, i);
}

/* Rank 0 (experts 0, 1) gets expert 0: its tokens 0, 2 then rank 1's token 1;
 * expert 1: its tokens 1, 2, rank 1's token 1; then 6 zero rows. Rank 1
 * (experts 2, 3): rank 0's token 0, its tokens 0, 2; rank 0's token 1, its 0, 2. */
START_TEST(test_dispatch_layout_and_round_trip) {
    static const float want_rows[2][12] = {{1, 3, 12, 2, 3, 12}, {1, 11, 13, 2, 11, 13}};
    static const int32_t want_plan[2][4] = {{2, 2, 1, 1}, {1, 1, 2, 2}}, want_lcounts[2] = {3, 9};
    Graph *g = exchange_graph(12);
    RankJob jobs[2];
    run_exchange(g, jobs);
    for (int r = 0; r < 2; r++) {
        ck_assert_msg(jobs[r].rc == 0, "rank %d: %s", r, jobs[r].err.msg);
        const Tensor *xr = tset_get(&jobs[r].results, "xr");
        for (int row = 0; row < 12; row++)
            for (int c = 0; c < 4; c++)
                ck_assert_msg(tensor_f32(xr)[row * 4 + c] == want_rows[r][row], "rank %d row %d", r, row);
        expect_ints(tset_get(&jobs[r].results, "plan"), want_plan[r], 4, "plan");
        expect_ints(tset_get(&jobs[r].results, "lcounts"), want_lcounts, 2, "lcounts");
        ck_assert_double_eq(max_rel_error(tset_get(&jobs[r].results, "back"), 0, tset_get(&jobs[r].results, "xd"), 24),
                            0);
    }
    free_jobs(jobs, 2);
    graph_free(g);
}
END_TEST

/* Each rank receives 6 rows; with room for 5 both fail, and neither hangs. */
START_TEST(test_capacity_overflow_is_an_error) {
    Graph *g = exchange_graph(5);
    RankJob jobs[2];
    run_exchange(g, jobs);
    for (int r = 0; r < 2; r++) { /* each receives 6 rows */
        ck_assert_int_ne(jobs[r].rc, 0);
        ck_assert_msg(strstr(jobs[r].err.msg, "ep_dispatch: 6 rows arrive but the capacity is 5"), "%s",
                      jobs[r].err.msg);
    }
    free_jobs(jobs, 2);
    graph_free(g);
}
END_TEST

static void run_alone(const Graph *g, const Collectives *c, RankJob *j) {
    *j = (RankJob){.g = g, .opt = {.batch = 1, .seq = 1, .threads = 1, .collectives = c}};
    exchange_feeds(j, 0, rank_idx[0]);
    j->rc = interp_run(g, &j->feeds, &j->opt, &j->results, &j->err);
}

START_TEST(test_group_missing_or_mismatched) {
    Graph *g = exchange_graph(12);
    RankJob j;
    run_alone(g, NULL, &j);
    ck_assert_int_ne(j.rc, 0);
    ck_assert_msg(strstr(j.err.msg, "ep_dispatch: no EP group is bound"), "%s", j.err.msg);
    free_jobs(&j, 1);
    ThreadGroup *group = thread_group_new(3);
    Collectives three = thread_group_member(group, 0);
    run_alone(g, &three, &j);
    ck_assert_int_ne(j.rc, 0);
    ck_assert_msg(strstr(j.err.msg, "split for 2 EP ranks but this is rank 0 of 3"), "%s", j.err.msg);
    ck_assert_ptr_null(collectives_current()); /* interp_run restored the binding */
    free_jobs(&j, 1);
    thread_group_free(group);
    graph_free(g);
}
END_TEST

/* A lone rank (a group of one) running a graph on given feeds. */
static void run_solo(const Graph *g, RankJob *j) {
    j->g = g;
    j->opt = (InterpOptions){.batch = 1, .seq = 1, .threads = 1};
    tset_init(&j->results);
    run_group(j, 1);
}

/* FP8 rows arrive as the quantize op's 1x128 tiles dequantize: bit for bit. */
START_TEST(test_fp8_rows_are_quantize_dequantize) {
    Graph *g =
        parse_ir_ok("v3ir 1\n"
                    "%0 = input {name=\"x\"} : f32[3,200]\n"
                    "%1 = input {name=\"idx\"} : i32[3,1]\n"
                    "%2, %3 = moe_dispatch %0, %1 {experts=2} : f32[3,200], i32[2]\n"
                    "%4, %5, %6 = ep_dispatch %2, %3 {capacity=[3], fp8=1, ranks=1} : f32[3,200], i32[2], i32[1,2]\n"
                    "%7, %8 = quantize %2 {tile=\"1x128\"} : e4m3[3,200], f32[3,2]\n"
                    "%9 = dequantize %7, %8 {tile=\"1x128\"} : f32[3,200]\n"
                    "output \"xr\" = %4\noutput \"xd\" = %2\noutput \"dq\" = %9\n",
                    "fp8");
    int64_t xs[2] = {3, 200}, is[2] = {3, 1};
    Tensor *x = tensor_new(DT_F32, 2, xs);
    for (int64_t i = 0; i < x->numel; i++)
        tensor_f32(x)[i] = (float)(sin((double)i * 0.37) * (1 + i % 7) * pow(2, (double)(i % 11) - 5));
    RankJob j = {0};
    tset_init(&j.feeds);
    tset_put(&j.feeds, "x", x);
    tset_put(&j.feeds, "idx", tensor_new(DT_I32, 2, is)); /* every token to expert 0 */
    run_solo(g, &j);
    ck_assert_msg(j.rc == 0, "%s", j.err.msg);
    const Tensor *xr = tset_get(&j.results, "xr"), *xd = tset_get(&j.results, "xd");
    ck_assert_double_eq(max_rel_error(xr, 0, tset_get(&j.results, "dq"), xr->numel), 0);
    ck_assert_double_gt(max_rel_error(xr, 0, xd, xr->numel), 1e-3); /* the rows did travel as FP8 */
    free_jobs(&j, 1);
    graph_free(g);
}
END_TEST

START_TEST(test_bad_counts_are_errors) {
    static const int32_t bad[2][2] = {{1, 1}, {5, -1}};
    Graph *g = parse_ir_ok("v3ir 1\n"
                           "%0 = input {name=\"xd\"} : f32[4,2]\n"
                           "%1 = input {name=\"counts\"} : i32[2]\n"
                           "%2, %3, %4 = ep_dispatch %0, %1 {capacity=[4], ranks=1} : f32[4,2], i32[2], i32[1,2]\n"
                           "output \"xr\" = %2\n",
                           "counts");
    for (int k = 0; k < 2; k++) {
        int64_t xs[2] = {4, 2}, cs[1] = {2};
        Tensor *counts = tensor_new(DT_I32, 1, cs);
        memcpy(counts->data, bad[k], sizeof bad[k]);
        RankJob j = {0};
        tset_init(&j.feeds);
        tset_put(&j.feeds, "xd", tensor_new(DT_F32, 2, xs));
        tset_put(&j.feeds, "counts", counts);
        run_solo(g, &j);
        ck_assert_int_ne(j.rc, 0);
        ck_assert_msg(strstr(j.err.msg, "ep_dispatch: counts must be >= 0 and sum to exactly 4"), "%s", j.err.msg);
        free_jobs(&j, 1);
    }
    graph_free(g);
    /* A plan announcing more rows than yr has. */
    g = parse_ir_ok("v3ir 1\n"
                    "%0 = input {name=\"yr\"} : f32[2,2]\n%1 = input {name=\"plan\"} : i32[1,2]\n"
                    "%2 = input {name=\"counts\"} : i32[2]\n%3 = ep_combine %0, %1, %2 {ranks=1, rows=[3]} : f32[3,2]\n"
                    "output \"y\" = %3\n",
                    "plan");
    int64_t ys[2] = {2, 2}, ps[2] = {1, 2}, cs[1] = {2};
    Tensor *plan = tensor_new(DT_I32, 2, ps), *counts = tensor_new(DT_I32, 1, cs);
    ((int32_t *)plan->data)[0] = 2, ((int32_t *)plan->data)[1] = 1;
    ((int32_t *)counts->data)[0] = 2, ((int32_t *)counts->data)[1] = 1;
    RankJob j = {0};
    tset_init(&j.feeds);
    tset_put(&j.feeds, "yr", tensor_new(DT_F32, 2, ys));
    tset_put(&j.feeds, "plan", plan);
    tset_put(&j.feeds, "counts", counts);
    run_solo(g, &j);
    ck_assert_int_ne(j.rc, 0);
    ck_assert_msg(strstr(j.err.msg, "ep_combine: plan must be >= 0 and sum to at most 2"), "%s", j.err.msg);
    free_jobs(&j, 1);
    graph_free(g);
}
END_TEST

static void expect_parse_error(const char *body, const char *needle) {
    char *text = xsprintf("v3ir 1\n%s", body);
    Err e = {0};
    Graph *g = ir_parse(text, "bad", &e);
    ck_assert_msg(g == NULL && strstr(e.msg, needle), "want '%s', got '%s'", needle, e.msg);
    free(text);
}

START_TEST(test_shape_rules) {
    expect_parse_error("%0 = input {name=\"x\"} : f32[4,2]\n%1 = input {name=\"c\"} : i32[3]\n"
                       "%2, %3, %4 = ep_dispatch %0, %1 {capacity=[4], ranks=2} : f32[4,2], i32[1], i32[2,1]\n",
                       "ep_dispatch: 3 experts do not split evenly over 2 ranks");
    expect_parse_error("%0 = input {name=\"x\"} : i32[4,2]\n%1 = input {name=\"c\"} : i32[2]\n"
                       "%2, %3, %4 = ep_dispatch %0, %1 {capacity=[4], fp8=1, ranks=1} : i32[4,2], i32[2], i32[1,2]\n",
                       "ep_dispatch");
    expect_parse_error("%0 = input {name=\"x\"} : f32[4,2]\n%1 = input {name=\"p\"} : i32[3,2]\n"
                       "%2 = input {name=\"c\"} : i32[4]\n%3 = ep_combine %0, %1, %2 {ranks=2, rows=[4]} : f32[4,2]\n",
                       "plan i32[3,2] must be [ranks=2, E/ranks=2]");
    expect_parse_error("%0 = input {name=\"x\"} : f32[4,2]\n%1 = input {name=\"c\"} : i32[2]\n"
                       "%2, %3, %4 = ep_dispatch %0, %1 {capacity=[4], ranks=0} : f32[4,2], i32[2], i32[1,2]\n",
                       "ranks=0 must be in [1, 2^20]");
    expect_parse_error("%0 = input {name=\"x\"} : f32[4,2]\n%1 = input {name=\"c\"} : i32[2]\n"
                       "%2, %3, %4 = ep_dispatch %0, %1 {capacity=[4,4], ranks=1} : f32[4,2], i32[2], i32[1,2]\n",
                       "ep_dispatch: capacity must be one dim");
    expect_parse_error("%0 = input {name=\"x\"} : f32[4,2]\n%1 = input {name=\"c\"} : i32[2,1]\n"
                       "%2, %3, %4 = ep_dispatch %0, %1 {capacity=[4], ranks=1} : f32[4,2], i32[2], i32[1,2]\n",
                       "counts i32[2,1] must be [E] with E a constant >= 1");
    expect_parse_error("%0 = input {name=\"x\"} : f32[4]\n%1 = input {name=\"c\"} : i32[2]\n"
                       "%2, %3, %4 = ep_dispatch %0, %1 {capacity=[4], ranks=1} : f32[4,2], i32[2], i32[1,2]\n",
                       "ep_dispatch: x f32[4] must be [M,W]");
    expect_parse_error("%0 = input {name=\"x\"} : f32[4]\n%1 = input {name=\"p\"} : i32[1,2]\n"
                       "%2 = input {name=\"c\"} : i32[2]\n%3 = ep_combine %0, %1, %2 {ranks=1, rows=[4]} : f32[4,2]\n",
                       "ep_combine: yr f32[4] must be [R,W]");
}
END_TEST

START_TEST(test_text_round_trip) {
    Graph *g = exchange_graph(12);
    char *once = print_ir(g);
    Graph *again = parse_ir_ok(once, "printed");
    char *twice = print_ir(again);
    ck_assert_str_eq(once, twice);
    ck_assert_ptr_nonnull(strstr(once, "ep_dispatch %2, %3 {capacity=[12], ranks=2}"));
    ck_assert_ptr_nonnull(strstr(once, "ep_combine %4, %6, %3 {ranks=2, rows=[6]}"));
    free(once), free(twice);
    graph_free(g), graph_free(again);
}
END_TEST

/* ---- the pass ---- */
static Graph *lowered_model(const Checkpoint *ck) {
    Err e = {0};
    Program *p = program_parse_file("models/deepseek_v3.v3", &e);
    ck_assert_msg(p && program_bind_config(p, ck->config, &e) == 0, "%s", e.msg);
    Graph *g = program_lower(p, &e);
    ck_assert_msg(g != NULL, "%s", e.msg);
    program_free(p);
    return g;
}

static int count_ops(const Graph *g, OpKind op, unsigned flags) {
    int n = 0;
    for (size_t i = 0; i < g->nodes.len; i++)
        n += g->nodes.data[i].op == op && (g->nodes.data[i].flags & NODE_BACKWARD) == flags;
    return n;
}

/* Rank 1 of 2 names experts 4..7 only, in 3 MoE layers (MTP's included), each
 * with a dispatch and a combine exchange and their reverses in backward. */
START_TEST(test_pass_splits_the_model) {
    Err e = {0};
    Checkpoint *ck = checkpoint_open(golden_dir, &e);
    ck_assert_msg(ck != NULL, "%s", e.msg);
    Graph *g = lowered_model(ck);
    EpOptions opt = {.ranks = 2, .rank = 1};
    ck_assert_msg(expert_parallel_graph(g, &opt, &e) == 0, "%s", e.msg);
    ck_assert_msg(ir_verify(g, &e) == 0, "%s", e.msg);
    int experts = 0, main_caps = 0, mtp_caps = 0;
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        int64_t x = n->op == OP_PARAM ? ep_expert_of(node_str(n, "name", "")) : -1;
        if (x >= 0) ck_assert_msg(x >= 4 && x < 8, "rank 1 names expert %lld", (long long)x), experts++;
        if (n->op == OP_EP_DISPATCH) {
            char cap[64];
            dim_print(node_attr(n, "capacity")->dims[0], cap, sizeof cap);
            /* 2 ranks * N tokens * min(K=2, L=4): N = B*T, and B*(T-1) in MTP's layer */
            main_caps += strcmp(cap, "B*T*4") == 0;
            mtp_caps += strcmp(cap, "B*T*4-B*4") == 0;
            ck_assert_int_eq(n->chunk, CHUNK_DISPATCH);
        }
        if (n->op == OP_EP_COMBINE) ck_assert_int_eq(n->chunk, CHUNK_COMBINE);
        if (n->op == OP_GROUPED_LINEAR) ck_assert_int_eq(g->nodes.data[g->values.data[n->in[2]].node].nin, 4);
    }
    ck_assert_int_eq(experts, 3 * 4 * 3);
    ck_assert_int_eq(main_caps, 2);
    ck_assert_int_eq(mtp_caps, 1);
    ck_assert_int_eq(count_ops(g, OP_EP_DISPATCH, 0), 3);
    ck_assert_int_eq(count_ops(g, OP_EP_COMBINE, 0), 3);
    ck_assert_msg(autodiff_graph(g, "total_loss", &e) == 0, "%s", e.msg);
    ck_assert_int_eq(count_ops(g, OP_EP_DISPATCH, NODE_BACKWARD), 3);
    ck_assert_int_eq(count_ops(g, OP_EP_COMBINE, NODE_BACKWARD), 3);
    graph_free(g);
    checkpoint_close(ck);
}
END_TEST

START_TEST(test_pass_one_rank_changes_nothing) {
    Err e = {0};
    Checkpoint *ck = checkpoint_open(golden_dir, &e);
    ck_assert_msg(ck != NULL, "%s", e.msg);
    Graph *g = lowered_model(ck);
    char *before = print_ir(g);
    EpOptions opt = {.ranks = 1, .rank = 0, .fp8_dispatch = 1};
    ck_assert_msg(expert_parallel_graph(g, &opt, &e) == 0, "%s", e.msg);
    char *after = print_ir(g);
    ck_assert_str_eq(before, after);
    free(before), free(after);
    EpOptions three = {.ranks = 3}, outside = {.ranks = 2, .rank = 2};
    ck_assert_int_ne(expert_parallel_graph(g, &three, &e), 0);
    ck_assert_msg(strstr(e.msg, "8 experts do not split evenly over 3 ranks"), "%s", e.msg);
    ck_assert_int_ne(expert_parallel_graph(g, &outside, &e), 0);
    ck_assert_msg(strstr(e.msg, "rank 2 is not in an EP group of 2"), "%s", e.msg);
    graph_free(g);
    checkpoint_close(ck);
}
END_TEST

/* A small MoE layer: ROWS is what runs on the expert rows, WEIGHTS the experts' weights. */
static const char *moe_text = "v3ir 1\n"
                              "%0 = input {name=\"x\"} : f32[B,4]\n"
                              "%1 = input {name=\"idx\"} : i32[B,2]\n"
                              "%2 = input {name=\"w\"} : f32[B,2]\n"
                              "%3, %4 = moe_dispatch %0, %1 {experts=4} : f32[B*2,4], i32[4]\n"
                              "%5 = param {name=\"e.experts.0.w\"} : f32[4,4]\n"
                              "%6 = param {name=\"e.experts.1.w\"} : f32[4,4]\n"
                              "%7 = param {name=\"e.experts.2.w\"} : f32[4,4]\n"
                              "%8 = param {name=\"e.experts.3.w\"} : f32[4,4]\n"
                              "%9 = WEIGHTS\n"
                              "%10 = ROWS\n"
                              "%11 = grouped_linear %10, %4, %9 : f32[B*2,4]\n"
                              "%12 = moe_combine %11, %1, %2 : f32[B,4]\n"
                              "output \"y\" = %12\n";

static char *moe_variant(const char *weights, const char *rows, const char *extra) {
    char *a = xsprintf("%s", moe_text);
    char *w = strstr(a, "WEIGHTS"), *r = strstr(a, "ROWS");
    char *out = xsprintf("%.*s%s%.*s%s%s%s", (int)(w - a), a, weights, (int)(r - w - 7), w + 7, rows, r + 4, extra);
    free(a);
    return out;
}

static const char *stack_of_4 = "stack %5, %6, %7, %8 : f32[4,4,4]";

static void expect_pass_error(const char *weights, const char *rows, const char *extra, const char *needle) {
    char *text = moe_variant(weights, rows, extra);
    Graph *g = parse_ir_ok(text, "moe");
    Err e = {0};
    EpOptions opt = {.ranks = 2, .rank = 0};
    ck_assert_int_ne(expert_parallel_graph(g, &opt, &e), 0);
    ck_assert_msg(strstr(e.msg, needle), "want '%s', got '%s'", needle, e.msg);
    graph_free(g);
    free(text);
}

START_TEST(test_pass_on_a_small_layer) {
    char *text = moe_variant(stack_of_4, "mul %3, %3 : f32[B*2,4]", "");
    Graph *g = parse_ir_ok(text, "moe");
    Err e = {0};
    EpOptions opt = {.ranks = 2, .rank = 0, .fp8_dispatch = 1};
    ck_assert_msg(expert_parallel_graph(g, &opt, &e) == 0, "%s", e.msg);
    char *out = print_ir(g);
    ck_assert_msg(strstr(out, "{capacity=[B*4], fp8=1, ranks=2} : f32[B*4,4], i32[2], i32[2,2]"), "%s", out);
    ck_assert_msg(strstr(out, "ep_combine") && strstr(out, "rows=[B*2]"), "%s", out);
    ck_assert_msg(strstr(out, "e.experts.1.w") && !strstr(out, "e.experts.2.w"), "%s", out);
    free(out);
    graph_free(g);
    /* A smaller static bound on request: 3 rows per local token. */
    g = parse_ir_ok(text, "moe");
    EpOptions tight = {.ranks = 2, .rank = 1, .rows_per_token = 3};
    ck_assert_msg(expert_parallel_graph(g, &tight, &e) == 0, "%s", e.msg);
    out = print_ir(g);
    ck_assert_msg(strstr(out, "{capacity=[B*3], ranks=2} : f32[B*3,4]"), "%s", out);
    ck_assert_msg(strstr(out, "e.experts.2.w") && !strstr(out, "e.experts.1.w"), "%s", out);
    free(out);
    graph_free(g);
    EpOptions negative = {.ranks = 2, .rows_per_token = -1};
    g = parse_ir_ok(text, "moe");
    ck_assert_int_ne(expert_parallel_graph(g, &negative, &e), 0);
    ck_assert_msg(strstr(e.msg, "rows_per_token=-1 must be >= 0"), "%s", e.msg);
    graph_free(g);
    free(text);
}
END_TEST

START_TEST(test_pass_errors) {
    expect_pass_error(stack_of_4, "sigmoid %3 : f32[B*2,4]", "",
                      "sigmoid in  reads expert rows, which live on other ranks");
    expect_pass_error("param {name=\"packed\"} : f32[4,4,4]", "silu %3 : f32[B*2,4]", "",
                      "the expert weights must be a stack of 4 per-expert weights");
    expect_pass_error(stack_of_4, "silu %3 : f32[B*2,4]", "output \"rows\" = %3\n", "output rows holds expert rows");
    Graph *g = parse_ir_ok("v3ir 1\n"
                           "%0 = input {name=\"x\"} : f32[B,4]\n"
                           "%1 = input {name=\"idx\"} : i32[B,2]\n"
                           "%2 = input {name=\"other\"} : f32[B*2,4]\n"
                           "%3, %4 = moe_dispatch %0, %1 {experts=4} : f32[B*2,4], i32[4]\n"
                           "%5 = mul %3, %2 : f32[B*2,4]\n"
                           "output \"y\" = %5\n",
                           "mixed");
    Err e = {0};
    EpOptions opt = {.ranks = 2, .rank = 0};
    ck_assert_int_ne(expert_parallel_graph(g, &opt, &e), 0);
    ck_assert_msg(strstr(e.msg, "mul in  mixes expert rows with other values"), "%s", e.msg);
    graph_free(g);
    g = parse_ir_ok("v3ir 1\n"
                    "%0 = input {name=\"x\"} : f32[B,4]\n"
                    "%1 = input {name=\"idx\"} : i32[B,T]\n"
                    "%2, %3 = moe_dispatch %0, %1 {experts=4} : f32[B*T,4], i32[4]\n"
                    "output \"load\" = %3\n",
                    "symbolic k");
    ck_assert_int_ne(expert_parallel_graph(g, &opt, &e), 0);
    ck_assert_msg(strstr(e.msg, "needs indices [..., K] with a constant K"), "%s", e.msg);
    graph_free(g);
}
END_TEST

/* ---- runtime/ep.h: names ---- */
/* The registered pass, through the command line: rank 0 of 2. */
START_TEST(test_dump_with_the_registered_pass) {
    CmdResult r = run_v3c("dump models/tiny.v3 --passes expert_parallel,verify");
    ck_assert_msg(r.status == 0, "%s", r.err);
    ck_assert_ptr_nonnull(strstr(r.out, "ep_dispatch"));
    ck_assert_ptr_nonnull(strstr(r.out, "model.layers.1.mlp.experts.3.up_proj.weight"));
    ck_assert_ptr_null(strstr(r.out, "model.layers.1.mlp.experts.4.up_proj.weight"));
    cmd_free(&r);
}
END_TEST

START_TEST(test_expert_names) {
    ck_assert_int_eq(ep_expert_of("model.layers.3.mlp.experts.5.gate_proj.weight"), 5);
    ck_assert_int_eq(ep_expert_of("grad.model.layers.3.mlp.experts.12.down_proj.weight"), 12);
    ck_assert_int_eq(ep_expert_of("experts.7"), 7);
    ck_assert_int_eq(ep_expert_of("model.layers.1.mlp.shared_experts.gate_proj.weight"), -1);
    ck_assert_int_eq(ep_expert_of("model.layers.1.mlp.experts.x.weight"), -1);
    ck_assert_int_eq(ep_expert_of("model.layers.1.mlp.experts.3a.weight"), -1);
    ck_assert_int_eq(ep_expert_of("model.layers.1.mlp.gate.weight"), -1);
    ck_assert(ep_holds("model.layers.1.mlp.experts.5.up_proj.weight", 8, 1, 2));
    ck_assert(!ep_holds("model.layers.1.mlp.experts.5.up_proj.weight", 8, 0, 2));
    ck_assert(ep_holds("model.layers.1.mlp.experts.3.up_proj.weight", 8, 0, 2));
    ck_assert(ep_holds("model.embed_tokens.weight", 8, 1, 2));
}
END_TEST

/* ---- processes under mpirun, through runtime/ep.c ----
 * World = dp x ep ranks; world rank w is ep index w % ep of DP replica w / ep
 * and runs sequence block w. Expert gradients: allgathered over the EP group,
 * summed over the DP replicas; everything else summed over the world. */
typedef struct MpiLayout {
    Comm *world, *ep, *dp;
    int dp_size, ep_size, ep_index;
} MpiLayout;

static int split_layout(Comm *world, int dp, MpiLayout *l, Err *e) {
    int w = comm_rank(world), size = comm_size(world);
    if (dp < 1 || size % dp || BATCH % size)
        return err_set(e, "%d ranks do not split into dp=%d of %d sequences", size, dp, BATCH);
    *l = (MpiLayout){world, NULL, NULL, dp, size / dp, w % (size / dp)};
    l->ep = comm_split(world, w / l->ep_size, l->ep_index, e);
    l->dp = l->ep ? comm_split(world, l->ep_index, w / l->ep_size, e) : NULL;
    return l->dp ? 0 : -1;
}

/* Sums one output over the ranks that share it and scales it to the single rank's. */
static int reduce_output(const MpiLayout *l, const char *name, Tensor *t, Err *e) {
    int expert = is_expert_grad(name), ints = t->dtype == DT_I32;
    if (comm_allreduce_sum(expert ? l->dp : l->world, t->data, (size_t)t->numel, ints ? COMM_I32 : COMM_F32, e))
        return -1;
    float scale = 1.0f / (float)comm_size(l->world);
    for (int64_t i = 0; !ints && is_averaged(name) && i < t->numel; i++) tensor_f32(t)[i] *= scale;
    return 0;
}

static int mpi_combine(const MpiLayout *l, const TensorSet *ref, TensorSet *results, Err *e) {
    if (ep_gather_experts(l->ep, results, EXPERTS, "grad.", e)) return -1;
    for (size_t i = 0; i < ref->names.len; i++) { /* the reference's order: the same on every rank */
        const char *name = ref->names.data[i];
        Tensor *t = tset_get(results, name);
        if (!is_summed(name) && !is_averaged(name)) continue;
        if (!t) return err_set(e, "no %s after gathering", name);
        if (reduce_output(l, name, t, e)) return -1;
    }
    return 0;
}

static int mpi_rank_run(const MpiLayout *l, const Checkpoint *ck, int fp8, int64_t seq, TensorSet *feeds,
                        TensorSet *results, Err *e) {
    int64_t local = BATCH / comm_size(l->world), first = comm_rank(l->world) * local;
    Graph *g = model_graph(ck, l->ep_size, l->ep_index, fp8, e);
    if (!g) return -1;
    EpGroup grp;
    ep_group_init(&grp, l->ep);
    InterpOptions io = {.batch = local, .seq = seq, .threads = 1, .collectives = &grp.collectives};
    int rc = load_feeds(ck, g, first, local, seq, feeds, e) || interp_run(g, feeds, &io, results, e) ? -1 : 0;
    graph_free(g);
    return rc;
}

/* The rank loaded only its experts' weights; gathered, they are the checkpoint's. */
static int check_gathered_weights(const MpiLayout *l, const Checkpoint *ck, TensorSet *feeds, Err *e) {
    if (ep_gather_experts(l->ep, feeds, EXPERTS, "model.", e)) return -1;
    int checked = 0;
    for (size_t i = 0; i < feeds->names.len; i++) {
        const char *name = feeds->names.data[i];
        const StTensor *st = ep_expert_of(name) >= 0 ? checkpoint_find(ck, name) : NULL;
        Tensor *want = st ? st_to_tensor(st, e) : NULL;
        if (ep_expert_of(name) >= 0 && !want) return err_set(e, "%s is not in the checkpoint", name);
        if (!want) continue;
        double err = max_rel_error(feeds->tensors.data[i], 0, want, want->numel);
        tensor_free(want);
        if (err != 0) return err_set(e, "gathered %s differs from the checkpoint's", name);
        checked++;
    }
    /* 3 MoE layers (2 without MTP) x 8 experts x 3 projections */
    return checked % (EXPERTS * 3) == 0 && checked >= 2 * EXPERTS * 3 ? 0 : err_set(e, "%d expert weights", checked);
}

static int mpi_check(const MpiLayout *l, const Checkpoint *ck, int fp8, Err *e) {
    int64_t seq = fp8 ? 64 : 16;
    TensorSet ref, results, feeds;
    tset_init(&results);
    tset_init(&feeds);
    int rc = single_run(ck, fp8, seq, &ref, e) || mpi_rank_run(l, ck, fp8, seq, &feeds, &results, e) ||
             check_gathered_weights(l, ck, &feeds, e);
    const char *bad = NULL;
    double slice = rc ? 0 : slice_error(&ref, &results, comm_rank(l->world), comm_size(l->world), &bad);
    if (!rc) rc = mpi_combine(l, &ref, &results, e);
    Report rep = compare_combined(&ref, &results, fp8);
    char why[300];
    if (!rc && (bad || slice > EP_TOLERANCE)) rc = err_set(e, "logits differ by %.3g (%s)", slice, bad ? bad : "");
    if (!rc && !report_ok(&rep, why, sizeof why)) rc = err_set(e, "%s", why);
    if (!rc && rep.compared != (fp8 ? 89 + 2 + 2 : 130 + 4 + 3)) rc = err_set(e, "compared %d outputs", rep.compared);
    if (!rc)
        printf("rank %d ok: %d outputs within %.3g%s", comm_rank(l->world), rep.compared, rep.worst, fp8 ? "" : "\n");
    if (!rc && fp8) printf(", expert weight gradients within %.3g relative L2\n", expert_l2(&rep));
    tset_free(&ref);
    tset_free(&results);
    tset_free(&feeds);
    return rc;
}

/* argv: [fp8|plain] [dp]. */
static int worker_main(int argc, char **argv) {
    Err e = {0};
    Comm *world = comm_init(&argc, &argv, 120, &e);
    if (!world) return printf("comm_init failed: %s\n", e.msg), 1;
    int fp8 = argc > 1 && strcmp(argv[1], "fp8") == 0, dp = argc > 2 ? atoi(argv[2]) : 1;
    MpiLayout l = {0};
    Checkpoint *ck = checkpoint_open(golden_dir, &e);
    int rc = !ck || split_layout(world, dp, &l, &e) || mpi_check(&l, ck, fp8, &e);
    if (rc) printf("rank %d FAILED: %s\n", comm_rank(world), e.msg);
    fflush(stdout);
    if (l.dp) comm_free(l.dp);
    if (l.ep) comm_free(l.ep);
    if (ck) checkpoint_close(ck);
    comm_free(world);
    return rc;
}

static int mpirun_present(void) { return system("command -v mpirun >/dev/null 2>&1") == 0; }

/* This executable under mpirun -np np with args; its exit status, output in *out. */
static int mpirun_self(int np, const char *args, char **out) {
    char self[4096], cwd[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    ck_assert(len > 0 && getcwd(cwd, sizeof cwd) != NULL);
    self[len] = 0;
    char *dir = make_temp_dir(), *log = path_join(dir, "out");
    /* OpenMPI's plugins leak at MPI_Finalize from modules already unloaded (see
     * tests/test_comm.c): leak checking stays with the thread-based runs. */
    char *cmd =
        xsprintf("cd %s && OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 ASAN_OPTIONS=detect_leaks=0 "
                 "timeout 300 mpirun --oversubscribe -np %d %s %s >%s 2>&1",
                 cwd, np, self, args, log);
    int st = system(cmd);
    Err e = {0};
    *out = read_file(log, NULL, &e);
    if (!*out) *out = xstrdup("");
    free(cmd), free(log), free(dir);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void check_mpi(int np, const char *args) {
    if (!mpirun_present()) return (void)printf("test_ep: skipped mpirun -np %d %s: no mpirun on PATH\n", np, args);
    char *out;
    int st = mpirun_self(np, args, &out);
    ck_assert_msg(st == 0, "mpirun -np %d %s exited %d:\n%s", np, args, st, out);
    int ok = 0;
    for (const char *p = out; (p = strstr(p, " ok: ")) != NULL; p++) ok++;
    ck_assert_msg(ok == np && !strstr(out, "FAILED") && !strstr(out, "Sanitizer"), "%s", out);
    printf("mpirun -np %d %s:\n%s", np, args, out);
    free(out);
}

START_TEST(test_mpi_ep2) { check_mpi(2, "plain 1"); }
END_TEST

START_TEST(test_mpi_ep2_fp8) { check_mpi(2, "fp8 1"); }
END_TEST

START_TEST(test_mpi_dp2_ep2) { check_mpi(4, "plain 2"); }
END_TEST

int main(int argc, char **argv) {
    if (comm_under_mpirun()) return worker_main(argc, argv);
    Suite *s = suite_create("ep");
    TCase *model = tcase_create("model");
    tcase_set_timeout(model, 600);
    tcase_add_test(model, test_ep2_matches_one_rank);
    tcase_add_test(model, test_ep4_matches_one_rank);
    tcase_add_test(model, test_ep2_fp8_matches_one_rank_fp8);
    tcase_add_test(model, test_ep2_three_sgd_steps);
    suite_add_tcase(s, model);
    TCase *ops = tcase_create("ops");
    tcase_set_timeout(ops, 60);
    tcase_add_test(ops, test_dispatch_layout_and_round_trip);
    tcase_add_test(ops, test_capacity_overflow_is_an_error);
    tcase_add_test(ops, test_group_missing_or_mismatched);
    tcase_add_test(ops, test_fp8_rows_are_quantize_dequantize);
    tcase_add_test(ops, test_bad_counts_are_errors);
    tcase_add_test(ops, test_shape_rules);
    tcase_add_test(ops, test_text_round_trip);
    suite_add_tcase(s, ops);
    TCase *pass = tcase_create("pass");
    tcase_set_timeout(pass, 120);
    tcase_add_test(pass, test_pass_splits_the_model);
    tcase_add_test(pass, test_pass_one_rank_changes_nothing);
    tcase_add_test(pass, test_pass_on_a_small_layer);
    tcase_add_test(pass, test_pass_errors);
    tcase_add_test(pass, test_expert_names);
    tcase_add_test(pass, test_dump_with_the_registered_pass);
    suite_add_tcase(s, pass);
    TCase *mpi = tcase_create("mpi");
    tcase_set_timeout(mpi, 600);
    tcase_add_test(mpi, test_mpi_ep2);
    tcase_add_test(mpi, test_mpi_ep2_fp8);
    tcase_add_test(mpi, test_mpi_dp2_ep2);
    suite_add_tcase(s, mpi);
    return run_suite(s);
}
