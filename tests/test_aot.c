/* `v3c aot` bundles and `v3c launch` (docs/aot.md): what a bundle holds, its
 * memory report's accounting, launch training exactly as `train` does in the
 * same layout, the full model's 2048-rank layout, and errors for bad input. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../base/json.h"
#include "../ir/text.h"
#include "testutil.h"

#define TINY "models/tiny.v3 --batch 8 --seq 16"

/* Runs `v3c aot ARGS -o DIR` into a fresh directory; returns DIR. */
static char *aot_ok(const char *args) {
    char *tmp = make_temp_dir(), *dir = path_join(tmp, "bundle");
    free(tmp);
    CmdResult r = run_v3c("aot %s -o %s", args, dir);
    ck_assert_msg(r.status == 0, "v3c aot %s: exit %d\n%s", args, r.status, r.err);
    cmd_free(&r);
    return dir;
}

static Json *read_json_file(const char *dir, const char *name) {
    char *path = path_join(dir, name);
    size_t len;
    Err err = {0};
    char *text = read_file(path, &len, &err);
    ck_assert_msg(text != NULL, "%s", err.msg);
    Json *j = json_parse(text, len, path, &err);
    ck_assert_msg(j != NULL, "%s", err.msg);
    free(text);
    free(path);
    return j;
}

static int64_t json_int(const Json *obj, const char *key) {
    const Json *j = json_get(obj, key);
    ck_assert_msg(j && j->kind == JSON_NUMBER && j->is_integer, "'%s' is not an integer", key);
    return j->integer;
}

static const Json *json_at(const Json *obj, const char *key, JsonKind kind) {
    const Json *j = json_get(obj, key);
    ck_assert_msg(j && j->kind == kind, "'%s' is missing or not a %s", key, json_kind_name(kind));
    return j;
}

static int64_t pipe_memory(const Json *manifest, int r, const char *key) {
    const Json *ranks = json_at(manifest, "pipe_ranks", JSON_ARRAY);
    ck_assert_int_lt(r, (int64_t)ranks->len);
    return json_int(json_at(ranks->items[r], "memory", JSON_OBJECT), key);
}

static int64_t count_entries(const char *dir) {
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "cannot open %s", dir);
    int64_t n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

/* ---- what a bundle holds ---- */

static void expect_plans_parse(const char *dir, const Json *manifest) {
    const Json *stages = json_at(manifest, "stages", JSON_ARRAY);
    static const char *const parts[] = {"forward", "backward", "weight"};
    for (size_t s = 0; s < stages->len; s++)
        for (int p = 0; p < 3; p++) {
            char *path = path_join(dir, json_at(stages->items[s], parts[p], JSON_STRING)->string);
            Err err = {0};
            size_t len;
            char *text = read_file(path, &len, &err);
            ck_assert_msg(text != NULL, "%s", err.msg);
            Graph *g = ir_parse(text, path, &err);
            ck_assert_msg(g != NULL, "%s", err.msg);
            graph_free(g);
            free(text);
            free(path);
        }
}

START_TEST(test_bundle_contents) {
    char *dir = aot_ok(TINY " --pp 2 --ep 2 --schedule dualpipe");
    Json *m = read_json_file(dir, "manifest.json");
    ck_assert_str_eq(json_at(m, "format", JSON_STRING)->string, "v3c-bundle");
    const Json *l = json_at(m, "layout", JSON_OBJECT);
    ck_assert_int_eq(json_int(l, "pp"), 2);
    ck_assert_int_eq(json_int(l, "ep"), 2);
    ck_assert_int_eq(json_int(l, "world"), 4);
    ck_assert_int_eq(json_int(l, "microbatches"), 4); /* the default, 2P */
    ck_assert_int_eq(json_int(m, "microbatch_rows"), 1); /* 8 rows over 2 data ranks x 4 micro-batches */
    expect_plans_parse(dir, m);
    /* World rank w: pipe rank w / (ep*dp), EP rank w % ep (layout_place). */
    const Json *ranks = json_at(m, "ranks", JSON_ARRAY);
    ck_assert_int_eq((int64_t)ranks->len, 4);
    for (int w = 0; w < 4; w++) {
        ck_assert_int_eq(json_int(ranks->items[w], "pipe_rank"), w / 2);
        ck_assert_int_eq(json_int(ranks->items[w], "ep_rank"), w % 2);
    }
    /* One kernel cache entry per distinct kernel. */
    char *kernels = path_join(dir, "kernels");
    ck_assert_int_eq(count_entries(kernels), json_int(json_at(m, "kernels", JSON_OBJECT), "distinct"));
    /* tiny.v3: 8 routed experts, 3 weights each in each of its 4 MoE layers (3 decoder layers, 1 MTP). */
    Json *ex = read_json_file(dir, "experts.json");
    ck_assert_int_eq(json_int(ex, "experts"), 8);
    ck_assert_int_eq((int64_t)json_at(ex, "stacks", JSON_ARRAY)->len, 12);
    /* DualPipe keeps PP+1 micro-batches' activations (the report, section 3.2.1). */
    for (int r = 0; r < 2; r++) ck_assert_int_eq(pipe_memory(m, r, "inflight_microbatches"), 3);
    json_free(ex);
    json_free(m);
    free(kernels);
    free(dir);
}
END_TEST

static int64_t stats_line(const char *out, const char *key) {
    const char *p = strstr(out, key);
    ck_assert_msg(p != NULL, "no '%s' in: %s", key, out);
    return strtoll(p + strlen(key), NULL, 10);
}

static int64_t bundle_memory(const char *args, int r, const char *key) {
    char *dir = aot_ok(args);
    Json *m = read_json_file(dir, "manifest.json");
    int64_t v = pipe_memory(m, r, key);
    json_free(m);
    free(dir);
    return v;
}

/* The counts follow from the layout: f32 weights and gradients; AdamW's two
 * f32 moments sharded by ZeRO-1, dense ones over ep x dp ranks and experts
 * over dp. With X the expert and D the other parameters: one rank holds
 * 4(D+X) bytes and 8(D+X) of moments; --ep 2 holds 4(D+X/2) and 8(D/2+X/2) =
 * 4(D+X); --dp 2 holds 8(D+X)/2 of moments. */
START_TEST(test_memory_accounting) {
    CmdResult s = run_v3c("stats models/tiny.v3");
    ck_assert_int_eq(s.status, 0);
    int64_t all = 4 * (stats_line(s.out, "parameters: ") + stats_line(s.out, "mtp_parameters: "));
    cmd_free(&s);
    ck_assert_int_eq(bundle_memory(TINY, 0, "parameter_bytes"), all);
    ck_assert_int_eq(bundle_memory(TINY, 0, "gradient_bytes"), all);
    ck_assert_int_eq(bundle_memory(TINY, 0, "optimizer_bytes"), 2 * all);
    ck_assert_int_eq(bundle_memory(TINY " --dp 2", 0, "optimizer_bytes"), all);
    int64_t ep2 = bundle_memory(TINY " --ep 2", 0, "parameter_bytes");
    ck_assert_int_lt(ep2, all);
    ck_assert_int_eq(bundle_memory(TINY " --ep 2", 0, "optimizer_bytes"), all);
    /* 1F1B: stage r keeps P - r micro-batches in flight. */
    ck_assert_int_eq(bundle_memory(TINY " --pp 4", 0, "inflight_microbatches"), 4);
    ck_assert_int_eq(bundle_memory(TINY " --pp 4", 3, "inflight_microbatches"), 1);
}
END_TEST

/* ---- launch ---- */

/* Drops `"key":value` from a JSON log line (at most one occurrence). */
static void drop_field(char *line, const char *key) {
    char *t = strstr(line, key);
    if (!t) return;
    char *end = t + strcspn(t, ",}");
    if (*end == ',') end++;
    else if (t > line && t[-1] == ',') t--;
    memmove(t, end, strlen(end) + 1);
}

/* The JSON log without its timings, one line per step. */
static char *log_without_timing(const char *path) {
    Err err = {0};
    char *text = read_file(path, NULL, &err);
    ck_assert_msg(text != NULL, "%s", err.msg);
    Buf b = {0};
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        drop_field(line, "\"tokens_per_s\":");
        drop_field(line, "\"step_seconds\":");
        buf_printf(&b, "%s\n", line);
    }
    free(text);
    return buf_take(&b);
}

/* launch of `aot ARGS` equals `train ARGS` in the same layout: the same stage
 * graphs, weights and order of work, so logs and checkpoints bit for bit. */
static void expect_launch_equals_train(int np, const char *args) {
    if (skip_without_mpirun("the launch comparison")) return;
    char *bundle = aot_ok(args), *dir = make_temp_dir();
    char *la = path_join(dir, "launch.jsonl"), *tr = path_join(dir, "train.jsonl");
    char *ca = path_join(dir, "launch_ckpt"), *ct = path_join(dir, "train_ckpt");
    char *a1 = xsprintf("launch %s --steps 3 --warmup 1 --log %s --save %s", bundle, la, ca);
    char *a2 = xsprintf("train %s --steps 3 --warmup 1 --log %s --save %s", args, tr, ct);
    CmdResult r1 = run_mpirun_v3c(np, "", "", a1, NULL), r2 = run_mpirun_v3c(np, "", "", a2, NULL);
    ck_assert_msg(r1.status == 0, "launch: %s", r1.err);
    ck_assert_msg(r2.status == 0, "train: %s", r2.err);
    char *l1 = log_without_timing(la), *l2 = log_without_timing(tr);
    ck_assert_str_eq(l1, l2);
    static const char *const files[] = {"model.safetensors", "train_state.safetensors", "train_state.json", "config.json"};
    expect_same_files(ca, ct, files, 4);
    cmd_free(&r1);
    cmd_free(&r2);
    free(l1), free(l2), free(a1), free(a2), free(la), free(tr), free(ca), free(ct), free(dir), free(bundle);
}

START_TEST(test_launch_pipeline_and_experts) { expect_launch_equals_train(4, TINY " --pp 2 --ep 2 --schedule dualpipe"); }
END_TEST

START_TEST(test_launch_fp8_data_and_experts) { expect_launch_equals_train(4, TINY " --ep 2 --dp 2 --fp8"); }
END_TEST

START_TEST(test_launch_one_rank) { expect_launch_equals_train(1, TINY " --microbatches 2 --recompute"); }
END_TEST

/* launch --resume continues a run: 2 steps, then 1 more from the checkpoint,
 * end where 3 steps straight through do, bit for bit. */
START_TEST(test_launch_resume) {
    char *bundle = aot_ok(TINY " --microbatches 2"), *dir = make_temp_dir();
    char *c2 = path_join(dir, "two"), *c3 = path_join(dir, "three"), *resumed = path_join(dir, "resumed");
    CmdResult r = run_v3c("launch %s --steps 2 --save %s", bundle, c2);
    ck_assert_msg(r.status == 0, "%s", r.err);
    cmd_free(&r);
    r = run_v3c("launch %s --steps 3 --save %s", bundle, c3);
    ck_assert_msg(r.status == 0, "%s", r.err);
    cmd_free(&r);
    r = run_v3c("launch %s --resume %s --steps 3 --save %s", bundle, c2, resumed);
    ck_assert_msg(r.status == 0, "%s", r.err);
    cmd_free(&r);
    static const char *const files[] = {"model.safetensors", "train_state.safetensors"};
    expect_same_files(c3, resumed, files, 2);
    free(c2), free(c3), free(resumed), free(dir), free(bundle);
}
END_TEST

/* ---- bad input ---- */

static char *copy_bundle(const char *args) {
    char *src = aot_ok(args), *tmp = make_temp_dir(), *dst = path_join(tmp, "copy");
    free(tmp);
    char *cmd = xsprintf("cp -r %s %s", src, dst);
    ck_assert_int_eq(system(cmd), 0);
    free(cmd);
    free(src);
    return dst;
}

static void expect_launch_error(const char *dir, const char *needle) {
    CmdResult r = run_v3c("launch %s --steps 1", dir);
    assert_user_error(&r, needle);
    cmd_free(&r);
}

START_TEST(test_launch_bad_bundles) {
    char *dir = copy_bundle(TINY);
    char *manifest = path_join(dir, "manifest.json"), *plan = path_join(dir, "plans/stage0.backward.v3ir");
    Err err = {0};
    char *good = read_file(manifest, NULL, &err);
    ck_assert_ptr_nonnull(good);
    expect_launch_error("models", "models/manifest.json");
    write_text(manifest, "{\"format\": \"v3c-bundle\", \"version\": 2,");
    expect_launch_error(dir, "manifest.json");
    char *v2 = xstrdup(good);
    memcpy(strstr(v2, "\"version\": 2") + 11, "9", 1);
    write_text(manifest, v2);
    expect_launch_error(dir, "bundle version 9");
    char *other = xstrdup(good);
    memcpy(strstr(other, "v3c-bundle"), "v3c-bindle", 10);
    write_text(manifest, other);
    expect_launch_error(dir, "not a v3c bundle");
    write_text(manifest, good);
    write_text(plan, "%0 = frobnicate");
    expect_launch_error(dir, "stage0.backward.v3ir:1:");
    remove(plan);
    expect_launch_error(dir, "stage0.backward.v3ir");
    free(v2), free(other), free(good), free(plan), free(manifest), free(dir);
}
END_TEST

START_TEST(test_launch_rank_count) {
    char *dir = aot_ok(TINY " --ep 2 --dp 2");
    expect_launch_error(dir, "the bundle is for 4 ranks (--pp 1 x --ep 2 x --dp 2), but 1 was started");
    CmdResult r = run_v3c("launch %s --batch 4", dir);
    assert_user_error(&r, "'v3c launch' does not take --batch");
    cmd_free(&r);
    free(dir);
}
END_TEST

static void expect_aot_error(const char *args, const char *needle) {
    CmdResult r = run_v3c("aot %s", args);
    assert_user_error(&r, needle);
    cmd_free(&r);
}

START_TEST(test_aot_bad_options) {
    char *dir = make_temp_dir(), *out = path_join(dir, "bundle");
    char *file = path_join(dir, "file"), *full = path_join(dir, "full"), *inside = path_join(full, "keep");
    expect_aot_error(TINY, "needs -o DIR");
    char *args = xsprintf(TINY " --ep 2 --batch 7 -o %s", out);
    expect_aot_error(args, "--batch 7 does not split into 2 data ranks x 1 micro-batches");
    free(args);
    args = xsprintf(TINY " --ep 3 --batch 6 -o %s", out);
    expect_aot_error(args, "8 experts do not split evenly over 3 ranks");
    free(args);
    args = xsprintf(TINY " --target sm_12 -o %s", out);
    expect_aot_error(args, "sm_12");
    free(args);
    ck_assert_msg(access(out, F_OK) != 0, "a failed aot left %s behind", out);
    write_text(file, "x");
    args = xsprintf(TINY " -o %s", file);
    expect_aot_error(args, "is a file");
    free(args);
    ck_assert_int_eq(mkdir(full, 0755), 0);
    write_text(inside, "x");
    args = xsprintf(TINY " -o %s", full);
    expect_aot_error(args, "holds something other than a v3c bundle");
    free(args), free(inside), free(full), free(file), free(out), free(dir);
}
END_TEST

/* A second aot into the same directory replaces the bundle and compiles nothing. */
START_TEST(test_aot_again_uses_cache) {
    char *cache = make_temp_dir();
    setenv("V3C_CACHE_DIR", cache, 1);
    char *dir = aot_ok(TINY " --pp 2");
    CmdResult r = run_v3c("aot " TINY " --pp 2 -o %s", dir);
    ck_assert_msg(r.status == 0, "%s", r.err);
    ck_assert_msg(strstr(r.out, " 0 compiled,") != NULL, "%s", r.out);
    cmd_free(&r);
    unsetenv("V3C_CACHE_DIR");
    free(dir);
    free(cache);
}
END_TEST

/* --ep-capacity bounds the rows an EP rank receives: one row per token cannot
 * hold tiny.v3's two experts per token, and the step says so. */
START_TEST(test_ep_capacity_overflow) {
    if (skip_without_mpirun("the capacity test")) return;
    CmdResult r = run_mpirun_v3c(2, "", "", "train " TINY " --ep 2 --ep-capacity 1 --steps 1", NULL);
    ck_assert_int_ne(r.status, 0);
    ck_assert_msg(strstr(r.err, "rows arrive but the capacity is") != NULL, "%s", r.err);
    cmd_free(&r);
}
END_TEST

/* The report's layout for the full model: 16 stages, 64-way EP, 2-way DP. */
START_TEST(test_aot_deepseek_v3_2048_ranks) {
    char *dir = aot_ok("models/deepseek_v3.v3 --pp 16 --ep 64 --dp 2 --schedule dualpipe --target sm_90a");
    Json *m = read_json_file(dir, "manifest.json");
    ck_assert_int_eq(json_int(json_at(m, "layout", JSON_OBJECT), "world"), 2048);
    ck_assert_int_eq((int64_t)json_at(m, "ranks", JSON_ARRAY)->len, 2048);
    for (int r = 0; r < 16; r++) ck_assert_int_eq(pipe_memory(m, r, "inflight_microbatches"), 17);
    json_free(m);
    free(dir);
}
END_TEST

static Suite *aot_suite(void) {
    Suite *s = suite_create("aot");
    TCase *t = tcase_create("bundle");
    tcase_set_timeout(t, 600);
    tcase_add_test(t, test_bundle_contents);
    tcase_add_test(t, test_memory_accounting);
    tcase_add_test(t, test_launch_pipeline_and_experts);
    tcase_add_test(t, test_launch_fp8_data_and_experts);
    tcase_add_test(t, test_launch_one_rank);
    tcase_add_test(t, test_launch_resume);
    tcase_add_test(t, test_launch_bad_bundles);
    tcase_add_test(t, test_launch_rank_count);
    tcase_add_test(t, test_aot_bad_options);
    tcase_add_test(t, test_aot_again_uses_cache);
    tcase_add_test(t, test_ep_capacity_overflow);
    tcase_add_test(t, test_aot_deepseek_v3_2048_ranks);
    suite_add_tcase(s, t);
    return s;
}

int main(void) { return run_suite(aot_suite()); }
