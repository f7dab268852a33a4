/* Training: the optimizer, LR schedule and clipping, the data batches, the
 * balance update, checkpoints and resume, and `v3c train` end to end with its errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../frontend/frontend.h"
#include "../runtime/checkpoint.h"
#include "../runtime/train.h"
#include "testutil.h"

/* A model small enough that a step takes milliseconds under the sanitizers. */
#define SMALL "--set num_hidden_layers=2,hidden_size=32,intermediate_size=64,moe_intermediate_size=16," \
              "num_attention_heads=2,q_lora_rank=16,kv_lora_rank=16,qk_nope_head_dim=8,qk_rope_head_dim=8,v_head_dim=8"
#define FAST SMALL " --batch 2 --seq 16"

static Tensor *vector_of(int64_t n, const float *values) {
    Tensor *t = tensor_new(DT_F32, 1, &n);
    memcpy(t->data, values, (size_t)n * sizeof(float));
    return t;
}

/* ---- schedule, clipping, AdamW ---- */

START_TEST(test_lr_schedule) {
    OptimConfig c = optim_defaults(1e-3, 110);
    c.warmup = 10;
    c.min_lr = 1e-4;
    ck_assert_double_eq_tol(optim_lr(&c, 0), 1e-4, 1e-15);   /* (0+1)/10 of the peak */
    ck_assert_double_eq_tol(optim_lr(&c, 9), 1e-3, 1e-15);   /* warmup reaches the peak */
    ck_assert_double_eq_tol(optim_lr(&c, 10), 1e-3, 1e-15);  /* cosine starts at the peak */
    ck_assert_double_eq_tol(optim_lr(&c, 60), 5.5e-4, 1e-15); /* halfway: the mean of peak and floor */
    ck_assert_double_eq_tol(optim_lr(&c, 110), 1e-4, 1e-15);
    ck_assert_double_eq_tol(optim_lr(&c, 500), 1e-4, 1e-15);
    ck_assert(optim_lr(&c, 30) > optim_lr(&c, 31));
}
END_TEST

START_TEST(test_clipping) {
    float a[] = {3.0f}, b[] = {0.0f, 4.0f};
    Tensor *ga = vector_of(1, a), *gb = vector_of(2, b);
    ParamGrad p[2] = {{"a", ga, ga}, {"b", gb, gb}};
    ck_assert_double_eq(grad_global_norm(p, 2), 5.0); /* 3-4-5: exact in double */
    ck_assert_double_eq(clip_scale(1.0, 5.0), 0.2);
    ck_assert_double_eq(clip_scale(10.0, 5.0), 1.0);
    ck_assert_double_eq(clip_scale(0.0, 5.0), 1.0);
    tensor_free(ga);
    tensor_free(gb);
}
END_TEST

/* The first AdamW step moves each weight by lr * g/(|g| + eps) (bias correction
 * makes m/(1-b1) = g and v/(1-b2) = g^2), plus lr*wd*w for matrices only. Each
 * result is one float rounding of a double expression: tolerance 1 ulp at 1. */
START_TEST(test_adamw_first_step) {
    const double lr = 0.01, ulp = 1.2e-7;
    OptimConfig c = optim_defaults(lr, 10);
    float one[] = {1.0f, 1.0f}, grad[] = {2.0f, -0.5f};
    Tensor *vec = vector_of(2, one), *gvec = vector_of(2, grad);
    int64_t shape[2] = {1, 2};
    Tensor *mat = tensor_new(DT_F32, 2, shape), *gmat = tensor_new(DT_F32, 2, shape);
    memcpy(mat->data, one, sizeof one);
    memcpy(gmat->data, grad, sizeof grad);
    ParamGrad p[2] = {{"norm.weight", vec, gvec}, {"proj.weight", mat, gmat}};
    AdamW a;
    adamw_init(&a);
    adamw_step(&a, &c, p, 2, lr, 1.0);
    ck_assert_double_eq_tol(tensor_f32(vec)[0], 1.0 - lr, ulp);
    ck_assert_double_eq_tol(tensor_f32(vec)[1], 1.0 + lr, ulp);
    ck_assert_double_eq_tol(tensor_f32(mat)[0], 1.0 - lr - lr * 0.1, ulp);
    ck_assert_double_eq_tol(tensor_f32(mat)[1], 1.0 + lr - lr * 0.1, ulp);
    ck_assert_int_eq(a.updates, 1);
    ck_assert_double_eq_tol(tensor_f32(tset_get(&a.m, "proj.weight"))[0], 0.1 * 2.0, ulp);
    ck_assert_double_eq_tol(tensor_f32(tset_get(&a.v, "proj.weight"))[0], 0.05 * 4.0, ulp);
    adamw_free(&a);
    tensor_free(vec);
    tensor_free(gvec);
    tensor_free(mat);
    tensor_free(gmat);
}
END_TEST

/* adamw_update_span splits a span over threads and vectorizes (runtime/optim.c): each
 * element must still be the one double expression, rounded once, so equal bits to the
 * formula evaluated here element by element, over three steps. */
START_TEST(test_adamw_span_is_the_formula_per_element) {
    enum { N = 100003 };
    OptimConfig c = optim_defaults(0.01, 10);
    float *w = xmalloc(sizeof(float) * N), *m = xcalloc(N, sizeof(float)), *v = xcalloc(N, sizeof(float));
    float *g = xmalloc(sizeof(float) * N), *ww = xmalloc(sizeof(float) * N), *wm = xcalloc(N, sizeof(float));
    float *wv = xcalloc(N, sizeof(float));
    srand(3);
    for (int k = 0; k < N; k++) ww[k] = w[k] = (float)rand() / RAND_MAX - 0.5f;
    for (int step = 1; step <= 3; step++) {
        for (int k = 0; k < N; k++) g[k] = ldexpf((float)rand() / RAND_MAX - 0.5f, rand() % 20 - 10);
        double lr = 0.01 / step, scale = 0.75, decay = 0.1;
        double c1 = adamw_correction(c.beta1, step), c2 = adamw_correction(c.beta2, step);
        AdamwSpan s = {w, m, v, g, N};
        adamw_update_span(&c, &s, lr, scale, decay, c1, c2);
        for (int k = 0; k < N; k++) {
            double gk = (double)g[k] * scale;
            wm[k] = (float)(c.beta1 * wm[k] + (1.0 - c.beta1) * gk);
            wv[k] = (float)(c.beta2 * wv[k] + (1.0 - c.beta2) * gk * gk);
            double upd = (wm[k] / c1) / (sqrt(wv[k] / c2) + c.eps);
            ww[k] = (float)(ww[k] - lr * (upd + decay * ww[k]));
        }
        ck_assert_msg(memcmp(w, ww, sizeof(float) * N) == 0 && memcmp(m, wm, sizeof(float) * N) == 0 &&
                          memcmp(v, wv, sizeof(float) * N) == 0,
                      "step %d differs from the formula", step);
    }
    free(w), free(m), free(v), free(g), free(ww), free(wm), free(wv);
}
END_TEST

/* ---- the balance update ---- */

START_TEST(test_balance_bias_and_cv) {
    float bias[4] = {0.5f, 0.0f, 0.0f, 0.0f};
    int32_t load[4] = {10, 2, 2, 2}; /* mean 4 */
    balance_bias(bias, load, 4, 0.25);
    ck_assert_float_eq(bias[0], 0.25f); /* overloaded: down by gamma */
    ck_assert_float_eq(bias[1], 0.25f); /* underloaded: up by gamma */
    int32_t even[4] = {3, 3, 3, 3};
    balance_bias(bias, even, 4, 0.25);
    ck_assert_float_eq(bias[0], 0.25f); /* at the mean: unchanged */
    ck_assert_double_eq(load_cv(even, 4), 0.0);
    /* {10,2,2,2}: mean 4, variance (36+4+4+4)/4 = 12, cv = sqrt(12)/4 */
    ck_assert_double_eq_tol(load_cv(load, 4), sqrt(12.0) / 4.0, 1e-15);
    int32_t none[2] = {0, 0};
    ck_assert_double_eq(load_cv(none, 2), 0.0);
}
END_TEST

/* ---- data ---- */

static char *corpus_file(const char *text) {
    char *dir = make_temp_dir();
    char *path = path_join(dir, "corpus.txt");
    write_text(path, text);
    free(dir);
    return path;
}

static int same_tensor(const Tensor *a, const Tensor *b) {
    return a->numel == b->numel && memcmp(a->data, b->data, (size_t)a->numel * dtype_host_size(a->dtype)) == 0;
}

START_TEST(test_batches_deterministic) {
    const char *text = "In the beginning God created the heaven and the earth. And the earth was without form.";
    char *path = corpus_file(text);
    Corpus c;
    Err e = {0};
    ck_assert_msg(corpus_open(&c, path, 8, &e) == 0, "%s", e.msg);
    Tensor *a = corpus_batch(&c, 7, 3, 4, 8), *again = corpus_batch(&c, 7, 3, 4, 8);
    Tensor *next = corpus_batch(&c, 7, 4, 4, 8), *other_seed = corpus_batch(&c, 8, 3, 4, 8);
    ck_assert(same_tensor(a, again));
    ck_assert(!same_tensor(a, next));
    ck_assert(!same_tensor(a, other_seed));
    /* Every row is a window of the text, byte for byte. */
    for (int r = 0; r < 4; r++) {
        char row[9] = {0};
        for (int t = 0; t < 8; t++) row[t] = (char)((int64_t *)a->data)[r * 8 + t];
        ck_assert_msg(strstr(text, row) != NULL, "row %d '%s' is not in the text", r, row);
    }
    tensor_free(a);
    tensor_free(again);
    tensor_free(next);
    tensor_free(other_seed);
    corpus_close(&c);
    free(path);
}
END_TEST

START_TEST(test_corpus_errors) {
    Corpus c;
    Err e = {0};
    ck_assert_int_eq(corpus_open(&c, "/nonexistent/corpus.txt", 8, &e), -1);
    ck_assert_msg(strstr(e.msg, "/nonexistent/corpus.txt"), "%s", e.msg);
    char *empty = corpus_file("");
    memset(&e, 0, sizeof e);
    ck_assert_int_eq(corpus_open(&c, empty, 8, &e), -1);
    ck_assert_msg(strstr(e.msg, "is empty"), "%s", e.msg);
    char *shortfile = corpus_file("abc");
    memset(&e, 0, sizeof e);
    ck_assert_int_eq(corpus_open(&c, shortfile, 8, &e), -1);
    ck_assert_msg(strstr(e.msg, "3 bytes, fewer than one sequence of 8"), "%s", e.msg);
    /* A corpus exactly one sequence long has one window. */
    memset(&e, 0, sizeof e);
    ck_assert_int_eq(corpus_open(&c, shortfile, 3, &e), 0);
    Tensor *b = corpus_batch(&c, 1, 0, 2, 3);
    ck_assert_int_eq(((int64_t *)b->data)[3], 'a');
    tensor_free(b);
    corpus_close(&c);
    free(empty);
    free(shortfile);
}
END_TEST

/* ---- checkpoints ---- */

static void fill_weights(TensorSet *w, float base) {
    float v[3] = {base, base + 1, base + 2};
    tset_put(w, "model.norm.weight", vector_of(3, v));
    tset_put(w, "lm_head.weight", vector_of(3, v));
}

static TrainProgress sample_progress(void) {
    TrainProgress pr = {.step = 12, .seed = 5, .batch = 3, .seq = 17, .gamma = 0.002};
    pr.optim = optim_defaults(0.003, 40);
    pr.optim.warmup = 4;
    pr.optim.min_lr = 1.0 / 3.0; /* not a short decimal: checks the exact round trip */
    return pr;
}

static void save_sample(const char *dir, float base, const char *config) {
    TensorSet w;
    tset_init(&w);
    fill_weights(&w, base);
    AdamW a;
    adamw_init(&a);
    float m[3] = {0.1f, 0.2f, 0.3f};
    tset_put(&a.m, "lm_head.weight", vector_of(3, m));
    tset_put(&a.v, "lm_head.weight", vector_of(3, m));
    TrainProgress pr = sample_progress();
    Err e = {0};
    ck_assert_msg(save_checkpoint(dir, &w, config, &a, &pr, &e) == 0, "%s", e.msg);
    adamw_free(&a);
    tset_free(&w);
}

START_TEST(test_save_load_round_trip) {
    char *root = make_temp_dir();
    char *dir = path_join(root, "ckpt");
    save_sample(dir, 1.0f, "{\"hidden_size\": 3}");
    save_sample(dir, 7.0f, "{\"hidden_size\": 3}"); /* over an existing checkpoint */
    Err e = {0};
    Checkpoint *c = checkpoint_open(dir, &e);
    ck_assert_msg(c != NULL, "%s", e.msg);
    ck_assert_ptr_nonnull(json_get(c->config, "hidden_size"));
    const StTensor *st = checkpoint_find(c, "lm_head.weight");
    ck_assert_ptr_nonnull(st);
    Tensor *w0 = st_to_tensor(st, &e);
    ck_assert_float_eq(tensor_f32(w0)[2], 9.0f); /* the second save's weights */
    tensor_free(w0);
    checkpoint_close(c);
    TensorSet w;
    tset_init(&w);
    fill_weights(&w, 0.0f);
    AdamW a;
    adamw_init(&a);
    TrainProgress pr, want = sample_progress();
    ck_assert_msg(load_train_state(dir, &w, &a, &pr, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(pr.step, 12);
    ck_assert_int_eq(a.updates, 12);
    ck_assert_int_eq(pr.seed, 5);
    ck_assert_int_eq(pr.seq, 17);
    ck_assert_int_eq(pr.optim.warmup, 4);
    ck_assert(pr.optim.min_lr == want.optim.min_lr && pr.gamma == want.gamma && pr.optim.lr == want.optim.lr);
    ck_assert_float_eq(tensor_f32(tset_get(&a.v, "lm_head.weight"))[1], 0.2f);
    ck_assert_ptr_null(tset_get(&a.m, "model.norm.weight"));
    /* No temporary directory is left beside it. */
    char *tmp = xsprintf("%s.tmp.%ld", dir, (long)getpid());
    struct stat sb;
    ck_assert_int_ne(stat(tmp, &sb), 0);
    free(tmp);
    adamw_free(&a);
    tset_free(&w);
    free(dir);
    free(root);
}
END_TEST

static void expect_load_error(const char *dir, const char *needle) {
    TensorSet w;
    tset_init(&w);
    fill_weights(&w, 0.0f);
    AdamW a;
    adamw_init(&a);
    TrainProgress pr;
    Err e = {0};
    ck_assert_int_eq(load_train_state(dir, &w, &a, &pr, &e), -1);
    ck_assert_msg(strstr(e.msg, needle), "want '%s' in '%s'", needle, e.msg);
    adamw_free(&a);
    tset_free(&w);
}

START_TEST(test_load_corrupt_state) {
    char *root = make_temp_dir();
    char *dir = path_join(root, "ckpt");
    expect_load_error(dir, "no such directory");
    save_sample(dir, 1.0f, NULL);
    char *state = path_join(dir, "train_state.json"), *moments = path_join(dir, "train_state.safetensors");
    write_text(moments, "garbage");
    expect_load_error(dir, "train_state.safetensors");
    write_text(state, "{\"format\": \"v3c-train-state\", \"step\": -1}");
    expect_load_error(dir, "\"step\" must be an integer >= 0");
    write_text(state, "{\"format\": \"something else\"}");
    expect_load_error(dir, "not a v3c training state");
    write_text(state, "{\"format\": ");
    expect_load_error(dir, "train_state.json");
    remove(state);
    expect_load_error(dir, "not a training checkpoint");
    free(state);
    free(moments);
    free(dir);
    free(root);
}
END_TEST

START_TEST(test_save_target_checked) {
    char *root = make_temp_dir();
    Err e = {0};
    char *fresh = path_join(root, "new");
    ck_assert_msg(save_check_writable(fresh, &e) == 0, "%s", e.msg);
    char *orphan = path_join(root, "missing/new");
    ck_assert_int_eq(save_check_writable(orphan, &e), -1);
    ck_assert_msg(strstr(e.msg, "parent directory"), "%s", e.msg);
    char *file = path_join(root, "file");
    write_text(file, "x");
    ck_assert_int_eq(save_check_writable(file, &e), -1);
    ck_assert_msg(strstr(e.msg, "is a file"), "%s", e.msg);
    char *other = path_join(root, "other");
    mkdir(other, 0777);
    char *inside = path_join(other, "notes.txt");
    write_text(inside, "mine");
    ck_assert_int_eq(save_check_writable(other, &e), -1);
    ck_assert_msg(strstr(e.msg, "not a v3c training checkpoint"), "%s", e.msg);
    free(fresh);
    free(orphan);
    free(file);
    free(other);
    free(inside);
    free(root);
}
END_TEST

/* config.json of the bound hyperparameters reads back to the same values. */
START_TEST(test_hypers_json_round_trip) {
    Err e = {0};
    Program *p = program_parse_file("models/tiny.v3", &e);
    ck_assert_msg(p != NULL, "%s", e.msg);
    ck_assert_msg(program_bind_sets(p, "hidden_size=48,rope_scaling.factor=2.5,mtp_loss_weight=0.1", &e) == 0, "%s", e.msg);
    char *text = program_hypers_json(p);
    Json *j = json_parse(text, strlen(text), "config.json", &e);
    ck_assert_msg(j != NULL, "%s\n%s", e.msg, text);
    ck_assert_ptr_nonnull(json_get(json_get(j, "rope_scaling"), "factor"));
    Program *q = program_parse_file("models/tiny.v3", &e);
    ck_assert_msg(q && program_bind_config(q, j, &e) == 0, "%s", e.msg);
    ck_assert_int_gt(program_hyper_count(p), 20);
    for (int i = 0; i < program_hyper_count(p); i++) {
        const char *name = program_hyper_name(p, i);
        char a[256], b[256];
        ck_assert_str_eq(program_hyper_text(p, name, a, sizeof a), program_hyper_text(q, name, b, sizeof b));
    }
    char v[64];
    ck_assert_str_eq(program_hyper_text(q, "hidden_size", v, sizeof v), "48");
    ck_assert_ptr_null(program_hyper_name(p, program_hyper_count(p)));
    json_free(j);
    free(text);
    program_free(p);
    program_free(q);
}
END_TEST

/* ---- v3c train ---- */

static char *slurp_file(const char *path) {
    Err e = {0};
    size_t len;
    char *text = read_file(path, &len, &e);
    ck_assert_msg(text != NULL, "%s", e.msg);
    return text;
}

/* The text of `key`'s value in the log line of `step` (numbers are written so
 * that equal text means bit-identical values). */
static char *log_value(const char *log, int64_t step, const char *key) {
    char *line_key = xsprintf("{\"step\":%lld,", (long long)step), *field = xsprintf("\"%s\":", key);
    const char *line = strstr(log, line_key);
    ck_assert_msg(line != NULL, "no step %lld in the log", (long long)step);
    const char *end = strchr(line, '\n'), *at = strstr(line, field);
    ck_assert_msg(at && (!end || at < end), "step %lld has no %s", (long long)step, key);
    at += strlen(field);
    size_t n = strcspn(at, ",}");
    char *value = xstrndup(at, n);
    free(line_key);
    free(field);
    return value;
}

static double log_number(const char *log, int64_t step, const char *key) {
    char *text = log_value(log, step, key);
    double v = strtod(text, NULL);
    free(text);
    return v;
}

START_TEST(test_cli_data_errors) {
    char *dir = make_temp_dir();
    char *empty = path_join(dir, "empty.txt"), *tiny = path_join(dir, "tiny.txt");
    write_text(empty, "");
    write_text(tiny, "0123456789");
    CmdResult r = run_v3c("train models/tiny.v3 " FAST " --steps 1 --data %s/missing.txt", dir);
    assert_user_error(&r, "missing.txt");
    cmd_free(&r);
    r = run_v3c("train models/tiny.v3 " FAST " --steps 1 --data %s", empty);
    assert_user_error(&r, "is empty");
    cmd_free(&r);
    r = run_v3c("train models/tiny.v3 " FAST " --steps 1 --data %s", tiny);
    assert_user_error(&r, "10 bytes, fewer than one sequence of 16");
    cmd_free(&r);
    r = run_v3c("train models/tiny.v3 " FAST " --steps 1 --lr fast");
    assert_user_error(&r, "--lr expects a number");
    cmd_free(&r);
    free(empty);
    free(tiny);
    free(dir);
}
END_TEST

START_TEST(test_cli_save_and_resume_errors) {
    char *dir = make_temp_dir();
    char *log = path_join(dir, "log.jsonl");
    CmdResult r = run_v3c("train models/tiny.v3 " FAST " --steps 1 --log %s --save %s/no/such/dir", log, dir);
    assert_user_error(&r, "parent directory is missing or not writable");
    cmd_free(&r);
    struct stat sb;
    ck_assert_msg(stat(log, &sb) != 0, "training started before the --save check");
    r = run_v3c("train models/tiny.v3 " FAST " --steps 1 --resume %s/none", dir);
    assert_user_error(&r, "no such directory");
    cmd_free(&r);
    char *bad = path_join(dir, "bad");
    mkdir(bad, 0777);
    char *model = path_join(bad, "model.safetensors");
    write_text(model, "not safetensors");
    r = run_v3c("train models/tiny.v3 " FAST " --steps 1 --resume %s", bad);
    assert_user_error(&r, "--resume");
    cmd_free(&r);
    free(model);
    free(bad);
    free(log);
    free(dir);
}
END_TEST

/* A saved checkpoint is a model checkpoint: eval reads its config.json and weights. */
START_TEST(test_cli_checkpoint_runs) {
    char *dir = make_temp_dir();
    CmdResult r = run_v3c("train models/tiny.v3 " FAST " --steps 2 --save %s/ck", dir);
    ck_assert_msg(r.status == 0, "%s", r.err);
    ck_assert_msg(strstr(r.out, "trained 2 steps"), "%s", r.out);
    cmd_free(&r);
    r = run_v3c("eval models/tiny.v3 --checkpoint %s/ck --batch 2 --seq 16", dir);
    ck_assert_msg(r.status == 0, "%s", r.err);
    ck_assert_msg(strstr(r.out, "loss: "), "%s", r.out);
    cmd_free(&r);
    free(dir);
}
END_TEST

static char *train_log(const char *dir, const char *name, const char *opts) {
    CmdResult r = run_v3c("train models/tiny.v3 " FAST " --steps 2 %s --log %s/%s.jsonl", opts, dir, name);
    ck_assert_msg(r.status == 0, "%s", r.err);
    cmd_free(&r);
    char *path = xsprintf("%s/%s.jsonl", dir, name);
    char *log = slurp_file(path);
    free(path);
    return log;
}

/* --recompute re-emits the same ops in backward: the same losses bit for bit,
 * fewer activation bytes held at the peak. */
START_TEST(test_cli_recompute) {
    char *dir = make_temp_dir();
    char *plain = train_log(dir, "plain", ""), *re = train_log(dir, "re", "--recompute");
    char *a = log_value(plain, 2, "loss"), *b = log_value(re, 2, "loss");
    ck_assert_str_eq(a, b);
    double peak_plain = log_number(plain, 1, "peak_activation_bytes"), peak_re = log_number(re, 1, "peak_activation_bytes");
    printf("peak_activation_bytes: %.0f, with --recompute %.0f\n", peak_plain, peak_re);
    ck_assert(peak_re > 0 && peak_re < peak_plain);
    free(a);
    free(b);
    free(plain);
    free(re);
    free(dir);
}
END_TEST

/* --mtp-lambda binds the DSL's mtp_loss_weight: mtp_loss scales with it (the same
 * forward, so exactly 2x up to a few f32 roundings). */
START_TEST(test_cli_mtp_lambda) {
    char *dir = make_temp_dir();
    char *one = train_log(dir, "one", "--mtp-lambda 0.1"), *two = train_log(dir, "two", "--mtp-lambda 0.2");
    double m1 = log_number(one, 1, "mtp_loss"), m2 = log_number(two, 1, "mtp_loss");
    ck_assert_double_eq_tol(m2, 2.0 * m1, 4.0 * m1 * 1.2e-7);
    ck_assert_double_eq(log_number(one, 1, "loss"), log_number(two, 1, "loss"));
    CmdResult r = run_v3c("train models/tiny.v3 " FAST " --steps 1 --mtp-lambda much");
    assert_user_error(&r, "--mtp-lambda expects a number");
    cmd_free(&r);
    free(one);
    free(two);
    free(dir);
}
END_TEST

/* --alpha binds aux_loss_alpha: the sequence-wise balance loss joins total_loss
 * (and so the objective) while the next-token loss stays the same. */
START_TEST(test_cli_alpha_adds_balance_loss) {
    char *dir = make_temp_dir();
    char *off = train_log(dir, "off", ""), *on = train_log(dir, "on", "--alpha 0.5");
    ck_assert_double_eq(log_number(on, 1, "loss"), log_number(off, 1, "loss"));
    double without = log_number(off, 1, "total_loss"), with = log_number(on, 1, "total_loss");
    ck_assert_msg(with > without, "total_loss %g with --alpha 0.5, %g without", with, without);
    CmdResult r = run_v3c("train models/tiny.v3 " FAST " --steps 1 --alpha lots");
    assert_user_error(&r, "--alpha expects a number");
    cmd_free(&r);
    free(off);
    free(on);
    free(dir);
}
END_TEST

/* Copies checkpoint `from` to `to`, applying edit(name, tensor) to every weight. */
static void copy_checkpoint(const char *from, const char *to, void (*edit)(const char *, Tensor *)) {
    mkdir(to, 0777);
    char *src = path_join(from, "model.safetensors"), *dst = path_join(to, "model.safetensors");
    Err e = {0};
    StFile *f = st_open(src, &e);
    ck_assert_msg(f != NULL, "%s", e.msg);
    TensorSet set;
    tset_init(&set);
    for (size_t i = 0; i < f->tensors.len; i++) {
        Tensor *t = st_to_tensor(&f->tensors.data[i], &e);
        edit(f->tensors.data[i].name, t);
        tset_put(&set, f->tensors.data[i].name, t);
    }
    ck_assert_msg(st_write(dst, &set, &e) == 0, "%s", e.msg);
    char *cfg_from = path_join(from, "config.json"), *cfg_to = path_join(to, "config.json");
    char *cfg = slurp_file(cfg_from);
    write_text(cfg_to, cfg);
    free(cfg);
    free(cfg_from);
    free(cfg_to);
    tset_free(&set);
    st_close(f);
    free(src);
    free(dst);
}

static uint64_t file_hash(const char *path) {
    Err e = {0};
    size_t len;
    char *data = read_file(path, &len, &e);
    ck_assert_msg(data != NULL, "%s", e.msg);
    uint64_t h = hash_bytes(data, len, 0);
    free(data);
    return h;
}

static void poison_norm(const char *name, Tensor *t) {
    if (strcmp(name, "model.norm.weight") == 0) tensor_f32(t)[0] = NAN;
}

/* A NaN loss stops training, names the step, exits 1 and leaves the previous
 * checkpoint in --save untouched. */
START_TEST(test_cli_nan_loss_keeps_checkpoint) {
    char *dir = make_temp_dir();
    CmdResult r = run_v3c("train models/tiny.v3 " FAST " --steps 1 --save %s/good", dir);
    ck_assert_msg(r.status == 0, "%s", r.err);
    cmd_free(&r);
    char *good = path_join(dir, "good"), *nan = path_join(dir, "nan"), *weights = path_join(good, "model.safetensors");
    copy_checkpoint(good, nan, poison_norm);
    uint64_t before = file_hash(weights);
    r = run_v3c("train models/tiny.v3 --batch 2 --seq 16 --steps 3 --checkpoint %s --save %s", nan, good);
    assert_user_error(&r, "is nan at step 1");
    cmd_free(&r);
    ck_assert_msg(file_hash(weights) == before, "the good checkpoint changed");
    r = run_v3c("train models/tiny.v3 --batch 2 --seq 16 --steps 2 --resume %s", good);
    ck_assert_msg(r.status == 0, "the kept checkpoint does not resume: %s", r.err);
    cmd_free(&r);
    free(weights);
    free(good);
    free(nan);
    free(dir);
}
END_TEST

/* Stopping after step 3 and resuming gives the uninterrupted run's losses bit for
 * bit. The learning rate is constant after a 2-step warmup (min-lr = lr) so that
 * the first leg's shorter --steps does not change its schedule. */
START_TEST(test_cli_resume_bit_identical) {
    char *dir = make_temp_dir();
    const char *opts = FAST " --lr 0.003 --min-lr 0.003 --warmup 2 --gamma 0.01 --seed 11";
    CmdResult r = run_v3c("train models/tiny.v3 %s --steps 6 --log %s/whole.jsonl", opts, dir);
    ck_assert_msg(r.status == 0, "%s", r.err);
    cmd_free(&r);
    r = run_v3c("train models/tiny.v3 %s --steps 3 --save %s/ck --log %s/legs.jsonl", opts, dir, dir);
    ck_assert_msg(r.status == 0, "%s", r.err);
    cmd_free(&r);
    r = run_v3c("train models/tiny.v3 --steps 6 --resume %s/ck --log %s/legs.jsonl", dir, dir);
    ck_assert_msg(r.status == 0, "%s", r.err);
    ck_assert_msg(strstr(r.out, "trained 3 steps (to step 6)"), "%s", r.out);
    cmd_free(&r);
    char *whole_path = path_join(dir, "whole.jsonl"), *legs_path = path_join(dir, "legs.jsonl");
    char *whole = slurp_file(whole_path), *legs = slurp_file(legs_path);
    const char *keys[] = {"loss", "mtp_loss", "grad_norm", "expert_load_cv", "lr"};
    for (int64_t step = 1; step <= 6; step++)
        for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
            char *a = log_value(whole, step, keys[k]), *b = log_value(legs, step, keys[k]);
            ck_assert_msg(strcmp(a, b) == 0, "step %lld %s: %s uninterrupted, %s resumed", (long long)step, keys[k], a, b);
            free(a);
            free(b);
        }
    /* The steps differ from one another: the comparison could fail. */
    ck_assert_double_ne(log_number(whole, 5, "loss"), log_number(whole, 6, "loss"));
    free(whole);
    free(legs);
    free(whole_path);
    free(legs_path);
    free(dir);
}
END_TEST

/* Every MoE layer's routing bias starts with a lead of 0.3 for experts 0 and 1
 * (one group): more than the sigmoid affinities differ between experts, so
 * top-2 routing sends every token there (cv sqrt(3) = 1.73, against 0 for
 * uniform loads). */
static void skew_router(const char *name, Tensor *t) {
    const char *suffix = ".gate.e_score_correction_bias";
    size_t n = strlen(name), k = strlen(suffix);
    if (n < k || strcmp(name + n - k, suffix) != 0) return;
    for (int64_t i = 0; i < t->numel; i++) tensor_f32(t)[i] = i < 2 ? 0.3f : 0.0f;
}

enum { BALANCE_STEPS = 60, BALANCE_TAIL = 10 };

/* The mean expert_load_cv of the last BALANCE_TAIL steps: the sign update makes
 * single steps oscillate around balance. */
static double final_cv(const char *dir, const char *from, double gamma) {
    CmdResult r = run_v3c("train models/tiny.v3 --batch 4 --seq 32 --steps %d --gamma %g --checkpoint %s --log %s/g%g.jsonl",
                          BALANCE_STEPS, gamma, from, dir, gamma);
    ck_assert_msg(r.status == 0, "%s", r.err);
    cmd_free(&r);
    char *path = xsprintf("%s/g%g.jsonl", dir, gamma);
    char *log = slurp_file(path);
    double tail = 0.0;
    for (int step = BALANCE_STEPS - BALANCE_TAIL + 1; step <= BALANCE_STEPS; step++)
        tail += log_number(log, step, "expert_load_cv") / BALANCE_TAIL;
    printf("balance (gamma %g): expert_load_cv step 1 %.3f, mean of the last %d steps %.3f\n", gamma,
           log_number(log, 1, "expert_load_cv"), BALANCE_TAIL, tail);
    free(log);
    free(path);
    return tail;
}

START_TEST(test_cli_bias_update_balances) {
    char *dir = make_temp_dir();
    CmdResult r = run_v3c("train models/tiny.v3 " FAST " --steps 1 --gamma 0 --save %s/init", dir);
    ck_assert_msg(r.status == 0, "%s", r.err);
    cmd_free(&r);
    char *init = path_join(dir, "init"), *skewed = path_join(dir, "skewed");
    copy_checkpoint(init, skewed, skew_router);
    /* gamma 0.005 can undo the 0.3 lead in 60 steps; much larger gammas overshoot
     * and oscillate (0.02 ends near cv 0.8 in this setting). */
    double off = final_cv(dir, skewed, 0.0), on = final_cv(dir, skewed, 0.005);
    ck_assert_msg(off > 1.5, "the skewed router is not skewed: cv %.3f", off);
    ck_assert_msg(on < 0.5 * off, "balancing left cv %.3f (without: %.3f)", on, off);
    free(init);
    free(skewed);
    free(dir);
}
END_TEST

/* The 300-step runs' logs, kept for the whole suite (made in main, before Check
 * forks a process per test): test_cli_tiny_learns's run at the defaults is the
 * FP8 comparison's seed-1 full-precision run, so it runs once. */
static char *long_runs_dir;

/* The log of `train models/tiny.v3 --steps 300 --seed SEED FLAGS` (FLAGS one
 * word or none), run at most once per suite; a failed run leaves no log behind. */
static char *log_of_300_steps(const char *flags, int seed) {
    char *path = xsprintf("%s/seed%d%s.jsonl", long_runs_dir, seed, flags), *part = xsprintf("%s.part", path);
    if (access(path, F_OK) != 0) {
        CmdResult r = run_v3c("train models/tiny.v3 --steps 300 --seed %d %s --log %s", seed, flags, part);
        ck_assert_msg(r.status == 0, "%s", r.err);
        cmd_free(&r);
        ck_assert_int_eq(rename(part, path), 0);
    }
    char *log = slurp_file(path);
    free(path), free(part);
    return log;
}

/* The README's claim: 300 steps of the bundled model at the defaults (seed 1 is
 * the default) lower the loss by at least 40% from step 1 (~ln 256 = 5.5). The
 * end is the mean of the last 10 steps, since one batch's loss varies by a few
 * percent. Takes minutes. */
START_TEST(test_cli_tiny_learns) {
    char *log = log_of_300_steps("", 1);
    double first = log_number(log, 1, "loss"), end = 0.0;
    for (int64_t step = 291; step <= 300; step++) end += log_number(log, step, "loss") / 10.0;
    printf("tiny.v3: loss step 1 %.4f, mean of steps 291-300 %.4f (%.1f%% lower)\n", first, end,
           100.0 * (1.0 - end / first));
    ck_assert_msg(end <= 0.6 * first, "loss %.4f -> %.4f: less than 40%% lower", first, end);
    free(log);
}
END_TEST

/* The mean training loss of the last 30 steps of a 300-step run (one batch's
 * loss varies by a few percent). */
static double tail_loss_after_300_steps(const char *flags, int seed) {
    char *log = log_of_300_steps(flags, seed);
    double tail = 0.0;
    for (int64_t step = 271; step <= 300; step++) tail += log_number(log, step, "loss") / 30.0;
    free(log);
    return tail;
}

/* Issue 4's claim: FP8 training follows the full-precision run. Paired runs
 * draw the same batches (same seed), so their difference is FP8's, but after 300
 * steps any perturbation is amplified: two full-precision runs whose learning
 * rates differ by 1e-4 end -0.5% to +0.8% apart, and FP8 runs -1.9% to +1.8%
 * (seeds 1-3, docs/training.md). One seed's difference is therefore mostly that
 * noise; the mean over three seeds is the systematic part, and that is what
 * must stay within 1%. */
START_TEST(test_cli_fp8_tracks_full_precision) {
    double sum = 0.0;
    for (int seed = 1; seed <= 3; seed++) {
        double plain = tail_loss_after_300_steps("", seed), fp8 = tail_loss_after_300_steps("--fp8", seed);
        double rel = (fp8 - plain) / plain;
        printf("tiny.v3 seed %d, mean loss of steps 271-300: %.4f full precision, %.4f fp8 (%+.2f%%)\n", seed, plain,
               fp8, 100.0 * rel);
        sum += rel;
    }
    printf("tiny.v3: fp8 vs full precision over 3 seeds: %+.2f%% on average\n", 100.0 * sum / 3);
    ck_assert_msg(fabs(sum / 3) <= 0.01, "fp8 differs by %+.2f%% on average, more than 1%%", 100.0 * sum / 3);
}
END_TEST

/* The 300-step run takes ~3 minutes in a release build but ~20 under
 * AddressSanitizer, past ctest's 15-minute limit: sanitized builds run it only
 * with V3C_SLOW_TESTS=1. */
static int slow_tests_wanted(void) {
#if defined(__SANITIZE_ADDRESS__)
    const char *env = getenv("V3C_SLOW_TESTS");
    if (!env || strcmp(env, "1") != 0) {
        printf("test_cli_tiny_learns, test_cli_fp8_tracks_full_precision skipped: sanitized build (set V3C_SLOW_TESTS=1 to run it, ~20 min)\n");
        return 0;
    }
#endif
    return 1;
}

static Suite *train_suite(void) {
    Suite *s = suite_create("train");
    TCase *units = tcase_create("units");
    tcase_add_test(units, test_lr_schedule);
    tcase_add_test(units, test_clipping);
    tcase_add_test(units, test_adamw_first_step);
    tcase_add_test(units, test_adamw_span_is_the_formula_per_element);
    tcase_add_test(units, test_balance_bias_and_cv);
    tcase_add_test(units, test_batches_deterministic);
    tcase_add_test(units, test_corpus_errors);
    tcase_add_test(units, test_save_load_round_trip);
    tcase_add_test(units, test_load_corrupt_state);
    tcase_add_test(units, test_save_target_checked);
    tcase_add_test(units, test_hypers_json_round_trip);
    suite_add_tcase(s, units);
    TCase *cli = tcase_create("cli");
    tcase_set_timeout(cli, 120);
    tcase_add_test(cli, test_cli_data_errors);
    tcase_add_test(cli, test_cli_save_and_resume_errors);
    tcase_add_test(cli, test_cli_checkpoint_runs);
    tcase_add_test(cli, test_cli_recompute);
    tcase_add_test(cli, test_cli_mtp_lambda);
    tcase_add_test(cli, test_cli_alpha_adds_balance_loss);
    tcase_add_test(cli, test_cli_nan_loss_keeps_checkpoint);
    tcase_add_test(cli, test_cli_resume_bit_identical);
    tcase_add_test(cli, test_cli_bias_update_balances);
    suite_add_tcase(s, cli);
    if (slow_tests_wanted()) {
        TCase *slow = tcase_create("slow");
        tcase_set_timeout(slow, 1800);
        tcase_add_test(slow, test_cli_tiny_learns);
        tcase_add_test(slow, test_cli_fp8_tracks_full_precision);
        suite_add_tcase(s, slow);
    }
    return s;
}

int main(void) {
    long_runs_dir = make_temp_dir();
    int rc = run_suite(train_suite());
    free(long_runs_dir);
    return rc;
}
