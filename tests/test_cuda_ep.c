/* Expert parallelism on the CUDA executor: two EP ranks as two threads, each
 * running its rank's graph (passes/expert_parallel.h) on its own emulated
 * device (tests/testutil.c, cuda_emu_open), the exchanges staged through the
 * host over a thread-based EP group (runtime/cuda_host_node.h). Each rank must
 * give, bit for bit, what the interpreter gives for the same rank graph in the
 * same group: the emulated device computes as the interpreter does, so any
 * difference is the executor's (a buffer, a copy, an order). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../frontend/frontend.h"
#include "../ir/interp.h"
#include "../passes/autodiff.h"
#include "../passes/expert_parallel.h"
#include "../runtime/checkpoint.h"
#include "../runtime/cuda_exec.h"
#include "testutil.h"

enum { RANKS = 2, ROWS = 2, SEQ = 8, EMU_BLOCK = 3, EMU_MAX_GRID = 2 };

static const char *golden_dir = "../shared/golden/tiny";

/* The golden tiny model as EP rank `rank` of RANKS runs it, with the backward of total_loss. */
static Graph *rank_graph(const Checkpoint *ck, int rank) {
    Err e = {0};
    Program *p = program_parse_file("models/deepseek_v3.v3", &e);
    ck_assert_msg(p != NULL, "%s", e.msg);
    Graph *g = program_bind_config(p, ck->config, &e) ? NULL : program_lower(p, &e);
    program_free(p);
    ck_assert_msg(g != NULL, "%s", e.msg);
    EpOptions ep = {.ranks = RANKS, .rank = rank};
    ck_assert_msg(expert_parallel_graph(g, &ep, &e) == 0 && autodiff_graph(g, "total_loss", &e) == 0, "%s", e.msg);
    return g;
}

static Tensor *token_ids(int rank) {
    int64_t shape[2] = {ROWS, SEQ};
    Tensor *t = tensor_new(DT_I64, 2, shape);
    for (int64_t i = 0; i < t->numel; i++) ((int64_t *)t->data)[i] = (rank * 131 + i * 7919 + (i * i) % 13) % 256;
    return t;
}

typedef struct Rank {
    Graph *g;
    TensorSet feeds, want, got;
    Collectives coll;
    CudaApi *api; /* NULL: run the interpreter */
    Err err;
    int rc;
} Rank;

static void *run_interpreter(Rank *r) {
    InterpOptions io = {.batch = ROWS, .seq = SEQ, .threads = 1, .collectives = &r->coll};
    r->rc = interp_run(r->g, &r->feeds, &io, &r->want, &r->err);
    return NULL;
}

/* Prepare, then two steps (the second proves the staged buffers are not left stale). */
static void *run_device(Rank *r) {
    InterpOptions io = {.batch = ROWS, .seq = SEQ, .collectives = &r->coll};
    CudaPlanOptions exact = {.exact_attention = 1}; /* bit for bit (the GEMM attention: test_cuda_attention) */
    CudaExec *x = cuda_exec_prepare_opts(r->api, r->g, &io, &exact, &r->err);
    r->rc = -1;
    if (!x) return NULL;
    const Collectives *prev = collectives_bind(&r->coll);
    TensorSet first;
    tset_init(&first);
    r->rc = cuda_exec_step(x, &r->feeds, &first, &r->err) || cuda_exec_step(x, &r->feeds, &r->got, &r->err) ? -1 : 0;
    collectives_bind(prev);
    tset_free(&first);
    cuda_exec_free(x);
    return NULL;
}

static void *run_rank(void *p) {
    Rank *r = p;
    return r->api ? run_device(r) : run_interpreter(r);
}

static void run_group(Rank *ranks) {
    ThreadGroup *group = thread_group_new(RANKS);
    pthread_t threads[RANKS];
    for (int i = 0; i < RANKS; i++) {
        ranks[i].coll = thread_group_member(group, i);
        ck_assert_int_eq(pthread_create(&threads[i], NULL, run_rank, &ranks[i]), 0);
    }
    for (int i = 0; i < RANKS; i++) pthread_join(threads[i], NULL);
    thread_group_free(group);
    for (int i = 0; i < RANKS; i++) ck_assert_msg(ranks[i].rc == 0, "rank %d: %s", i, ranks[i].err.msg);
}

static void expect_identical(const Rank *r, int rank) {
    int compared = 0;
    for (size_t i = 0; i < r->g->outputs.len; i++) {
        const char *name = r->g->outputs.data[i].name;
        const Tensor *a = tset_get(&r->got, name), *b = tset_get(&r->want, name);
        ck_assert_msg(a && b, "rank %d: %s missing", rank, name);
        ck_assert_int_eq(a->numel, b->numel);
        ck_assert_msg(memcmp(a->data, b->data, (size_t)a->numel * dtype_host_size(a->dtype)) == 0,
                      "rank %d: %s differs from the interpreter", rank, name);
        compared++;
    }
    ck_assert_int_gt(compared, 10);
}

START_TEST(test_ep2_on_the_emulated_device_equals_the_interpreter) {
    Err e = {0};
    Checkpoint *ck = checkpoint_open(golden_dir, &e);
    ck_assert_msg(ck != NULL, "%s", e.msg);
    Rank ranks[RANKS] = {0};
    for (int i = 0; i < RANKS; i++) {
        ranks[i].g = rank_graph(ck, i);
        tset_init(&ranks[i].feeds), tset_init(&ranks[i].want), tset_init(&ranks[i].got);
        ck_assert_msg(checkpoint_load_params(ck, ranks[i].g, &ranks[i].feeds, &e) == 0, "%s", e.msg);
        tset_put(&ranks[i].feeds, "input_ids", token_ids(i));
    }
    run_group(ranks);
    for (int i = 0; i < RANKS; i++)
        if (!(ranks[i].api = cuda_emu_open(EMU_BLOCK, EMU_MAX_GRID))) break;
    if (ranks[RANKS - 1].api) {
        run_group(ranks);
        for (int i = 0; i < RANKS; i++) expect_identical(&ranks[i], i);
    } else if (ranks[0].api) {
        ranks[0].api->close(ranks[0].api);
    }
    for (int i = 0; i < RANKS; i++) {
        tset_free(&ranks[i].feeds), tset_free(&ranks[i].want), tset_free(&ranks[i].got);
        graph_free(ranks[i].g);
    }
    checkpoint_close(ck);
}
END_TEST

int main(void) {
    Suite *s = suite_create("cuda_ep");
    TCase *tc = tcase_create("ep");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_ep2_on_the_emulated_device_equals_the_interpreter);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
