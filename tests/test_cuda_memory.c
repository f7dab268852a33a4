/* The CUDA executor's device memory (runtime/cuda_exec.c) on the host-emulated
 * table (tests/testutil.c): buffers shared by liveness in one arena, and the
 * step options (resident params, selected downloads).
 *
 * Liveness is checked by its consequence: every step here runs with
 * poison_dead_values, which fills a buffer with 0xff bytes (NaN) right after
 * the last node the executor thinks uses it. A lifetime computed too short
 * then feeds NaN (or, where the arena placed a younger value over it, that
 * value's numbers) into a later read, and the bit-for-bit comparison with the
 * interpreter fails; so does a buffer shared by two values live at once.
 * The packer itself (runtime/arena.c) is checked on hand-worked lifetimes and
 * random ones. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../frontend/frontend.h"
#include "../ir/interp.h"
#include "../passes/autodiff.h"
#include "../passes/passes.h"
#include "../base/arena.h"
#include "../runtime/cuda_exec.h"
#include "../runtime/init.h"
#include "testutil.h"

enum { BATCH = 2, SEQ = 3, EMU_BLOCK = 1, EMU_MAX_GRID = 2, TINY_VOCAB = 256 };

static Graph *tiny_graph(int grads, Program **prog) {
    Err e = {0};
    *prog = program_parse_file("models/tiny.v3", &e);
    ck_assert_msg(*prog != NULL, "%s", e.msg);
    Graph *g = program_lower(*prog, &e);
    ck_assert_msg(g != NULL, "%s", e.msg);
    if (grads) ck_assert_msg(autodiff_graph(g, "loss", &e) == 0, "%s", e.msg);
    PipelineOptions po = {.log = stderr};
    ck_assert_msg(run_pipeline(g, &po, &e) == 0, "%s", e.msg);
    return g;
}

/* Weights from init_seed, token ids from ids_seed. */
static void tiny_feeds(const Graph *g, uint64_t init_seed, uint64_t ids_seed, TensorSet *feeds) {
    Err e = {0};
    InitOptions init = {.seed = init_seed, .std = 0.02};
    tset_init(feeds);
    ck_assert_msg(init_params(g, &init, feeds, &e) == 0, "%s", e.msg);
    static const InputFill ids[] = {{"input_ids", 0, TINY_VOCAB}, {0}};
    feed_random_inputs(g, ids, (InputFill){"", 0, 4}, BATCH, SEQ, ids_seed, feeds);
}

/* Only the graph's inputs (the token ids) of feeds, copied. */
static void inputs_only(const Graph *g, const TensorSet *feeds, TensorSet *out) {
    tset_init(out);
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        if (n->op != OP_INPUT) continue;
        const Tensor *t = tset_get(feeds, node_str(n, "name", ""));
        ck_assert_ptr_nonnull(t);
        Tensor *copy = tensor_new(t->dtype, t->rank, t->shape);
        memcpy(copy->data, t->data, (size_t)t->numel * dtype_host_size(t->dtype));
        tset_put(out, node_str(n, "name", ""), copy);
    }
}

/* Bytes the feeds of the graph's params (params = 1) or inputs (0) take on the host. */
static int64_t fed_bytes(const Graph *g, const TensorSet *feeds, int params) {
    int64_t sum = 0;
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        if (n->op != (params ? OP_PARAM : OP_INPUT)) continue;
        const Tensor *t = tset_get(feeds, node_str(n, "name", ""));
        ck_assert_ptr_nonnull(t);
        sum += t->numel * (int64_t)dtype_host_size(t->dtype);
    }
    return sum;
}

/* Same dtype, shape and bits (floats: the same value, or both NaN). */
static void assert_same_bits(const char *name, const Tensor *want, const Tensor *got) {
    ck_assert_msg(want && got, "output %s missing", name);
    ck_assert_int_eq(want->dtype, got->dtype);
    ck_assert_int_eq(want->numel, got->numel);
    size_t bytes = (size_t)want->numel * dtype_host_size(want->dtype);
    if (memcmp(want->data, got->data, bytes) == 0) return;
    int floats = want->dtype == DT_F32 || want->dtype == DT_BF16 || want->dtype == DT_F16;
    for (int64_t k = 0; floats && k < want->numel; k++) {
        float w = ((const float *)want->data)[k], r = ((const float *)got->data)[k];
        ck_assert_msg(memcmp(&w, &r, 4) == 0 || (isnan(w) && isnan(r)), "output %s[%lld]: cuda %.9g, interpreter %.9g",
                      name, (long long)k, r, w);
    }
    ck_assert_msg(floats, "output %s differs", name);
}

static void assert_all_outputs(const Graph *g, const TensorSet *want, const TensorSet *got) {
    for (size_t i = 0; i < g->outputs.len; i++)
        assert_same_bits(g->outputs.data[i].name, tset_get(want, g->outputs.data[i].name),
                         tset_get(got, g->outputs.data[i].name));
}

static void interpret(const Graph *g, const TensorSet *feeds, TensorSet *want) {
    InterpOptions io = {.batch = BATCH, .seq = SEQ};
    Err e = {0};
    tset_init(want);
    ck_assert_msg(interp_run(g, feeds, &io, want, &e) == 0, "%s", e.msg);
}

static CudaExec *emulated_exec(const Graph *g) {
    CudaApi *api = cuda_emu_open(EMU_BLOCK, EMU_MAX_GRID);
    if (!api) return NULL;
    InterpOptions io = {.batch = BATCH, .seq = SEQ};
    Err e = {0};
    CudaPlanOptions exact = {.exact_attention = 1}; /* bit for bit (the GEMM attention: test_cuda_attention) */
    CudaExec *x = cuda_exec_prepare_opts(api, g, &io, &exact, &e);
    ck_assert_msg(x != NULL, "%s", e.msg);
    return x;
}

static void step_ok(CudaExec *x, const TensorSet *feeds, const CudaStepOptions *o, TensorSet *got) {
    Err e = {0};
    tset_init(got);
    ck_assert_msg(cuda_exec_step_opts(x, feeds, o, got, &e) == 0, "%s", e.msg);
}

static int64_t output_bytes(const Graph *g, const TensorSet *results) {
    int64_t sum = 0;
    for (size_t i = 0; i < g->outputs.len; i++) {
        const Tensor *t = tset_get(results, g->outputs.data[i].name);
        if (t) sum += t->numel * (int64_t)dtype_host_size(t->dtype);
    }
    return sum;
}

/* Two poisoned steps with other weights and tokens on one executor: every output is the interpreter's. */
static void check_reuse(int grads) {
    Program *prog;
    Graph *g = tiny_graph(grads, &prog);
    CudaExec *x = emulated_exec(g);
    if (x) {
        CudaStepOptions poison = {.poison_dead_values = 1};
        for (uint64_t seed = 1; seed <= 2; seed++) {
            TensorSet feeds, want, got;
            tiny_feeds(g, 6 + seed, 100 + seed, &feeds);
            interpret(g, &feeds, &want);
            step_ok(x, &feeds, &poison, &got);
            assert_all_outputs(g, &want, &got);
            CudaExecStats st = cuda_exec_stats(x);
            ck_assert_int_eq(st.last_upload_bytes, fed_bytes(g, &feeds, 1) + fed_bytes(g, &feeds, 0));
            ck_assert_int_eq(st.last_download_bytes, output_bytes(g, &want));
            tset_free(&feeds), tset_free(&want), tset_free(&got);
        }
        CudaExecStats st = cuda_exec_stats(x);
        printf("tiny%s: arena %lld bytes, one buffer per value %lld bytes\n", grads ? " with grads" : "",
               (long long)st.arena_bytes, (long long)st.values_bytes);
        ck_assert_int_lt(st.arena_bytes, st.values_bytes); /* some memory is shared */
        ck_assert_int_ge(st.device_bytes, st.arena_bytes);
        cuda_exec_free(x);
    }
    graph_free(g);
    program_free(prog);
}

START_TEST(test_reuse_tiny_forward_poisoned) { check_reuse(0); }
END_TEST

START_TEST(test_reuse_tiny_grads_poisoned) { check_reuse(1); }
END_TEST

static int output_index(const Graph *g, const char *name) {
    for (size_t i = 0; i < g->outputs.len; i++)
        if (strcmp(g->outputs.data[i].name, name) == 0) return (int)i;
    ck_abort_msg("no output %s", name);
    return -1;
}

/* Weights A, then tokens only with params_unchanged, the loss alone downloaded. */
static void resident_steps(CudaExec *x, const Graph *g, const TensorSet *a1, const TensorSet *a2,
                           const CudaStepOptions *loss_only) {
    TensorSet want, got, ids;
    interpret(g, a1, &want);
    step_ok(x, a1, loss_only, &got); /* the first step uploads the params whatever the option says */
    ck_assert_int_eq(cuda_exec_stats(x).last_upload_bytes, fed_bytes(g, a1, 1) + fed_bytes(g, a1, 0));
    ck_assert_int_eq(got.tensors.len, 1);
    assert_same_bits("loss", tset_get(&want, "loss"), tset_get(&got, "loss"));
    ck_assert_int_eq(cuda_exec_stats(x).last_download_bytes, output_bytes(g, &got));
    tset_free(&want), tset_free(&got);
    /* other tokens, no weights in the feeds: the resident ones serve */
    inputs_only(g, a2, &ids);
    interpret(g, a2, &want);
    step_ok(x, &ids, loss_only, &got);
    ck_assert_int_eq(cuda_exec_stats(x).last_upload_bytes, fed_bytes(g, a2, 0));
    ck_assert_int_eq(got.tensors.len, 1);
    assert_same_bits("loss", tset_get(&want, "loss"), tset_get(&got, "loss"));
    tset_free(&want), tset_free(&got), tset_free(&ids);
}

/* Params resident across steps, downloads chosen per output, and a failed
 * upload never trusted as resident. */
START_TEST(test_resident_params_and_chosen_outputs) {
    Program *prog;
    Graph *g = tiny_graph(1, &prog);
    CudaExec *x = emulated_exec(g);
    if (x) {
        TensorSet a1, a2, b2, want, got;
        tiny_feeds(g, 7, 101, &a1);  /* weights A, tokens 1 */
        tiny_feeds(g, 7, 102, &a2);  /* weights A, tokens 2 */
        tiny_feeds(g, 8, 102, &b2);  /* weights B, tokens 2 */
        uint8_t *want_out = xcalloc(g->outputs.len, 1);
        want_out[output_index(g, "loss")] = 1;
        CudaStepOptions loss_only = {.params_unchanged = 1, .want_output = want_out, .poison_dead_values = 1};
        resident_steps(x, g, &a1, &a2, &loss_only);
        /* weights B in the feeds but declared unchanged: A is still what runs */
        interpret(g, &a2, &want);
        step_ok(x, &b2, &loss_only, &got);
        assert_same_bits("loss", tset_get(&want, "loss"), tset_get(&got, "loss"));
        tset_free(&want), tset_free(&got);
        /* declared changed: B is uploaded, and every output downloaded */
        CudaStepOptions changed = {.poison_dead_values = 1};
        interpret(g, &b2, &want);
        step_ok(x, &b2, &changed, &got);
        assert_all_outputs(g, &want, &got);
        tset_free(&got);
        /* an upload that fails (no weights fed) leaves no params the next step may trust */
        TensorSet ids;
        inputs_only(g, &b2, &ids);
        Err e = {0};
        tset_init(&got);
        ck_assert_int_eq(cuda_exec_step_opts(x, &ids, &changed, &got, &e), -1);
        ck_assert_msg(e.code == 1 && strstr(e.msg, "no weight named"), "%s", e.msg);
        memset(&e, 0, sizeof e);
        ck_assert_int_eq(cuda_exec_step_opts(x, &ids, &loss_only, &got, &e), -1);
        ck_assert_msg(e.code == 1 && strstr(e.msg, "no weight named"), "%s", e.msg);
        ck_assert_int_eq(got.tensors.len, 0);
        tset_free(&got);
        step_ok(x, &b2, &loss_only, &got);
        assert_same_bits("loss", tset_get(&want, "loss"), tset_get(&got, "loss"));
        tset_free(&want), tset_free(&got), tset_free(&ids);
        tset_free(&a1), tset_free(&a2), tset_free(&b2);
        free(want_out);
        cuda_exec_free(x);
    }
    graph_free(g);
    program_free(prog);
}
END_TEST

/* arena_pack over given lifetimes (positions 0..3); sizes round up to 256:
 *   b0 [0,3] 100 -> 256, b1 [0,1] 300 -> 512, b2 [1,2] 256, b3 [2,3] 500 -> 512, b4 [3,3] 200 -> 256, b5 empty.
 * s0: b0 0, b1 256 (top 768). s1: b2 768 (top 1024). s2: b1 (last 1) frees [256,768): b3 takes it at 256
 * (b2, last used at 2, is not free yet). s3: b2 frees [768,1024): b4 768. Arena 1024 of 1792 summed. */
START_TEST(test_pack_given_lifetimes) {
    ArenaBuffer b[] = {{0, 3, 100}, {0, 1, 300}, {1, 2, 256}, {2, 3, 500}, {3, 3, 200}, {0, 0, 0}};
    int64_t off[6], arena = -1, want[] = {0, 256, 768, 256, 768, -1};
    Err e = {0};
    ck_assert_msg(arena_pack(b, 6, 4, off, &arena, &e) == 0, "%s", e.msg);
    for (int i = 0; i < 6; i++) ck_assert_int_eq(off[i], want[i]);
    ck_assert_int_eq(arena, 1024);
    /* first after last, last past the positions, a negative first or size */
    ArenaBuffer bad[][1] = {{{2, 1, 8}}, {{0, 4, 8}}, {{-1, 0, 8}}, {{0, 0, -8}}};
    for (int i = 0; i < 4; i++) {
        memset(&e, 0, sizeof e);
        ck_assert_int_eq(arena_pack(bad[i], 1, 4, off, &arena, &e), -1);
        ck_assert_msg(strstr(e.msg, "arena_pack"), "%s", e.msg);
    }
    /* an empty buffer's lifetime is not looked at */
    ArenaBuffer empty = {7, 2, 0};
    ck_assert_int_eq(arena_pack(&empty, 1, 1, off, &arena, &e), 0);
    ck_assert_int_eq(off[0], -1);
    ck_assert_int_eq(arena, 0);
}
END_TEST

/* Random lifetimes: aligned offsets, buffers live at a common position never
 * overlap in memory, and the arena covers every buffer. */
START_TEST(test_pack_never_overlaps_live_buffers) {
    enum { N = 300, NPOS = 50 };
    ArenaBuffer b[N];
    int64_t off[N], arena;
    uint64_t r = 12345;
    for (int i = 0; i < N; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        int32_t x = (int32_t)((r >> 33) % NPOS), y = (int32_t)((r >> 17) % NPOS);
        b[i] = (ArenaBuffer){x < y ? x : y, x < y ? y : x, (int64_t)((r >> 40) % 3000)};
    }
    Err e = {0};
    ck_assert_msg(arena_pack(b, N, NPOS, off, &arena, &e) == 0, "%s", e.msg);
    for (int i = 0; i < N; i++) {
        if (!b[i].bytes) continue;
        ck_assert_int_eq(off[i] % ARENA_ALIGN, 0);
        ck_assert_int_le(off[i] + b[i].bytes, arena);
        for (int j = 0; j < i; j++) {
            int live_together = b[j].bytes && b[i].first <= b[j].last && b[j].first <= b[i].last;
            int overlap = off[i] < off[j] + b[j].bytes && off[j] < off[i] + b[i].bytes;
            ck_assert_msg(!(live_together && overlap), "buffers %d and %d", i, j);
        }
    }
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("cuda_memory");
    TCase *tc = tcase_create("emulated_device");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_reuse_tiny_forward_poisoned);
    tcase_add_test(tc, test_reuse_tiny_grads_poisoned);
    tcase_add_test(tc, test_resident_params_and_chosen_outputs);
    suite_add_tcase(s, tc);
    TCase *pack = tcase_create("arena_pack");
    tcase_add_test(pack, test_pack_given_lifetimes);
    tcase_add_test(pack, test_pack_never_overlaps_live_buffers);
    suite_add_tcase(s, pack);
    return s;
}

int main(void) { return run_suite(suite()); }
