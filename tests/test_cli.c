/* The command line as users drive it: the CONTRACT outputs and every kind of
 * bad input ending in "v3c: error: ..." with exit status 1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../runtime/safetensors.h"
#include "testutil.h"

static const char *golden = "../shared/golden/tiny";

static long long stat_line(const char *out, const char *key) {
    const char *p = strstr(out, key);
    ck_assert_msg(p != NULL, "no '%s' in: %s", key, out);
    return atoll(p + strlen(key));
}

START_TEST(test_stats_deepseek_v3) {
    CmdResult r = run_v3c("stats models/deepseek_v3.v3");
    ck_assert_msg(r.status == 0, "%s", r.err);
    ck_assert_int_eq(stat_line(r.out, "parameters: "), 671026419200LL);
    long long act = stat_line(r.out, "activated: ");
    ck_assert_msg(act >= 36600000000LL && act <= 37600000000LL, "activated %lld", act);
    /* The report: MTP adds 11.6B besides the shared embedding and head. */
    long long mtp = stat_line(r.out, "mtp_parameters: ");
    ck_assert_msg(mtp > 11500000000LL && mtp < 11700000000LL, "mtp %lld", mtp);
    cmd_free(&r);
}
END_TEST

START_TEST(test_stats_v2_lite) {
    /* DeepSeek-V2-Lite: 15.7B parameters, 2.4B activated (without embeddings), no MTP. */
    CmdResult r = run_v3c("stats models/deepseek_v2_lite.v3");
    ck_assert_msg(r.status == 0, "%s", r.err);
    long long total = stat_line(r.out, "parameters: ");
    ck_assert_msg(total > 15600000000LL && total < 15800000000LL, "total %lld", total);
    long long act = stat_line(r.out, "activated: ");
    ck_assert_msg(act > 2400000000LL && act < 2900000000LL, "activated %lld", act);
    ck_assert_int_eq(stat_line(r.out, "mtp_parameters: "), 0);
    cmd_free(&r);
}
END_TEST

START_TEST(test_stats_config_and_set) {
    char *dir = make_temp_dir();
    char *cfg = path_join(dir, "config.json");
    write_text(cfg, "{\"num_hidden_layers\": 4, \"n_routed_experts\": 16, \"q_lora_rank\": null,"
                    " \"rope_scaling\": null, \"unrelated_key\": [1, 2]}");
    CmdResult a = run_v3c("stats models/deepseek_v3.v3 --config %s", cfg);
    ck_assert_msg(a.status == 0, "%s", a.err);
    CmdResult b = run_v3c("stats models/deepseek_v3.v3 --config %s --set num_hidden_layers=5", cfg);
    ck_assert_msg(b.status == 0, "%s", b.err);
    ck_assert(stat_line(b.out, "parameters: ") > stat_line(a.out, "parameters: "));
    cmd_free(&a);
    cmd_free(&b);
    free(cfg);
    free(dir);
}
END_TEST

/* A rope_scaling without mscale keys means mscale 1, mscale_all_dim 0 (HF and
 * DeepSeek's code), so cos/sin get 0.1*ln(4)+1 — not the model file's defaults. */
START_TEST(test_config_rope_scaling_partial) {
    char *dir = make_temp_dir();
    char *cfg = path_join(dir, "config.json");
    write_text(cfg, "{\"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4.0,"
                    " \"original_max_position_embeddings\": 8}}");
    CmdResult r = run_v3c("dump models/deepseek_v3.v3 --config %s --set num_hidden_layers=1", cfg);
    ck_assert_msg(r.status == 0, "%s", r.err);
    ck_assert_msg(strstr(r.out, "rope %") && strstr(r.out, "scale=1.13862943611198"), "%.2000s", r.out);
    cmd_free(&r);
    write_text(cfg, "{\"rope_theta\": 10000.0}");
    r = run_v3c("dump models/deepseek_v3.v3 --config %s --set num_hidden_layers=1", cfg);
    ck_assert_msg(r.status == 0 && strstr(r.out, "rope %") && !strstr(r.out, "scale=1.1386"), "%s", r.err);
    cmd_free(&r);
    free(cfg);
    free(dir);
}
END_TEST

static char *dump_to(const char *dir, const char *name, const char *args) {
    char *path = path_join(dir, name);
    CmdResult r = run_v3c("dump %s -o %s", args, path);
    ck_assert_msg(r.status == 0, "dump %s: %s", args, r.err);
    cmd_free(&r);
    Err e = {0};
    char *text = read_file(path, NULL, &e);
    ck_assert_msg(text != NULL, "%s", e.msg);
    free(path);
    return text;
}

/* CONTRACT: dumping, reading the dump back and dumping again gives identical text. */
START_TEST(test_dump_round_trip_full_model) {
    char *dir = make_temp_dir();
    char *first = dump_to(dir, "a.v3ir", "models/deepseek_v3.v3");
    ck_assert(strstr(first, "model.layers.60.mlp.experts.255.down_proj.weight") != NULL);
    char *path = path_join(dir, "a.v3ir");
    char *second = dump_to(dir, "b.v3ir", path);
    ck_assert_msg(strcmp(first, second) == 0, "round trip changed the text");
    free(first);
    free(second);
    free(path);
    free(dir);
}
END_TEST

START_TEST(test_dump_dot_renders) {
    if (system("command -v dot >/dev/null 2>&1") != 0) {
        printf("skipped: graphviz 'dot' not installed\n");
        return;
    }
    char *dir = make_temp_dir();
    char *dotfile = path_join(dir, "g.dot");
    CmdResult r = run_v3c("dump models/tiny.v3 --format dot -o %s", dotfile);
    ck_assert_msg(r.status == 0, "%s", r.err);
    char *cmd = xsprintf("dot -Tsvg %s -o %s/g.svg", dotfile, dir);
    ck_assert_int_eq(system(cmd), 0);
    free(cmd);
    free(dotfile);
    free(dir);
    cmd_free(&r);
}
END_TEST

START_TEST(test_check_models) {
    const char *models[] = {"models/deepseek_v3.v3", "models/tiny.v3", "models/deepseek_v2_lite.v3"};
    for (int i = 0; i < 3; i++) {
        CmdResult r = run_v3c("check %s", models[i]);
        ck_assert_msg(r.status == 0, "%s: %s", models[i], r.err);
        cmd_free(&r);
    }
}
END_TEST

START_TEST(test_dsl_error_location) {
    char *dir = make_temp_dir();
    char *path = path_join(dir, "bad.v3");
    write_text(path, "hyper n = 4;\nlet x = input(\"input_ids\", \"i64\", [B, T]);\nlet y = frobnicate(x);\n");
    CmdResult r = run_v3c("check %s", path);
    assert_user_error(&r, "bad.v3:3:9: error:");
    ck_assert(strstr(r.err, "frobnicate") != NULL);
    ck_assert(strstr(r.err, "        ^") != NULL);
    cmd_free(&r);
    write_text(path, "hyper n = 4;\nlet x = ;\n");
    r = run_v3c("check %s", path);
    assert_user_error(&r, "bad.v3:2:9: error: syntax error");
    cmd_free(&r);
    free(path);
    free(dir);
}
END_TEST

START_TEST(test_bad_options) {
    CmdResult r = run_v3c("stats models/tiny.v3 --set no_such_hyper=3");
    assert_user_error(&r, "no_such_hyper");
    cmd_free(&r);
    r = run_v3c("frobnicate models/tiny.v3");
    assert_user_error(&r, "unknown command");
    cmd_free(&r);
    r = run_v3c("stats models/tiny.v3 --bogus");
    assert_user_error(&r, "unknown option '--bogus'");
    cmd_free(&r);
    r = run_v3c("stats models/no_such_file.v3");
    assert_user_error(&r, "no_such_file.v3");
    cmd_free(&r);
    r = run_v3c("stats models/tiny.v3 --set num_hidden_layers=-1");
    ck_assert_int_eq(r.status, 1);
    cmd_free(&r);
}
END_TEST

/* A copy of the golden checkpoint with one file replaced. */
static char *checkpoint_copy(void) {
    char *dir = make_temp_dir();
    char *cmd = xsprintf("cp %s/config.json %s/model.safetensors %s/", golden, golden, dir);
    ck_assert_int_eq(system(cmd), 0);
    free(cmd);
    return dir;
}

static CmdResult run_on(const char *ckpt) {
    return run_v3c("run models/deepseek_v3.v3 --checkpoint %s --input %s/expected.safetensors --output %s/out.safetensors",
                   ckpt, golden, ckpt);
}

START_TEST(test_truncated_and_corrupt_checkpoint) {
    char *dir = checkpoint_copy();
    char *cmd = xsprintf("truncate -s 100000 %s/model.safetensors", dir);
    ck_assert_int_eq(system(cmd), 0);
    CmdResult r = run_on(dir);
    assert_user_error(&r, "model.safetensors");
    cmd_free(&r);
    free(cmd);
    char *out = xsprintf("%s/out.safetensors", dir);
    FILE *f = fopen(out, "rb");
    ck_assert_msg(f == NULL, "a failed run must not leave an output file");
    free(out);
    /* Header length far beyond the file. */
    char *st = path_join(dir, "model.safetensors");
    f = fopen(st, "wb");
    unsigned char hdr[16] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, '{', '}'};
    fwrite(hdr, 1, sizeof hdr, f);
    fclose(f);
    r = run_on(dir);
    assert_user_error(&r, "header");
    cmd_free(&r);
    free(st);
    free(dir);
}
END_TEST

START_TEST(test_malformed_config) {
    char *dir = checkpoint_copy();
    char *cfg = path_join(dir, "config.json");
    write_text(cfg, "{\"hidden_size\": 64,\n \"vocab_size\": }");
    CmdResult r = run_on(dir);
    assert_user_error(&r, "config.json:2:");
    cmd_free(&r);
    write_text(cfg, "{\"hidden_size\": \"wide\"}");
    r = run_on(dir);
    assert_user_error(&r, "hidden_size");
    cmd_free(&r);
    free(cfg);
    free(dir);
}
END_TEST

START_TEST(test_missing_and_misshapen_weight) {
    char *dir = checkpoint_copy();
    /* Drop one weight by rewriting the file without it. */
    char *st = path_join(dir, "model.safetensors");
    Err e = {0};
    StFile *f = st_open(st, &e);
    ck_assert_msg(f != NULL, "%s", e.msg);
    TensorSet set;
    tset_init(&set);
    for (size_t i = 0; i < f->tensors.len; i++) {
        const StTensor *t = &f->tensors.data[i];
        if (strcmp(t->name, "model.layers.1.self_attn.kv_b_proj.weight") == 0) continue;
        tset_put(&set, t->name, st_to_tensor(t, &e));
    }
    st_close(f);
    ck_assert_int_eq(st_write(st, &set, &e), 0);
    tset_free(&set);
    CmdResult r = run_on(dir);
    assert_user_error(&r, "missing weight 'model.layers.1.self_attn.kv_b_proj.weight'");
    cmd_free(&r);
    /* The golden checkpoint with a config that disagrees about q_lora_rank. */
    r = run_v3c("run models/deepseek_v3.v3 --checkpoint %s --set q_lora_rank=16 --input %s/expected.safetensors "
                "--output %s/out.safetensors", golden, golden, dir);
    assert_user_error(&r, "[16,64]");
    ck_assert(strstr(r.err, "[32,64]") != NULL);
    cmd_free(&r);
    free(st);
    free(dir);
}
END_TEST

START_TEST(test_bad_input_ids) {
    char *dir = make_temp_dir();
    char *in = path_join(dir, "in.safetensors");
    TensorSet set;
    tset_init(&set);
    int64_t shape[2] = {1, 4};
    Tensor *ids = tensor_new(DT_I64, 2, shape);
    ((int64_t *)ids->data)[2] = 999; /* vocab is 256 */
    tset_put(&set, "input_ids", ids);
    Err e = {0};
    ck_assert_int_eq(st_write(in, &set, &e), 0);
    tset_free(&set);
    CmdResult r = run_v3c("run models/deepseek_v3.v3 --checkpoint %s --input %s --output %s/out.safetensors", golden,
                          in, dir);
    assert_user_error(&r, "999");
    cmd_free(&r);
    free(in);
    free(dir);
}
END_TEST

/* The report's Table 2 bubbles through the command, and its picture. */
START_TEST(test_schedule_command) {
    char *dir = make_temp_dir();
    char *svg = path_join(dir, "dualpipe.svg");
    CmdResult r = run_v3c("schedule --pp 8 --microbatches 16 --schedule dualpipe --fb 2.5 --svg %s", svg);
    ck_assert_msg(r.status == 0, "%s", r.err);
    ck_assert_msg(strstr(r.out, "bubble (largest per-rank idle time) 4.5") && strstr(r.out, "(equal)"), "%s", r.out);
    cmd_free(&r);
    Err e = {0};
    char *text = read_file(svg, NULL, &e);
    ck_assert_msg(text && strncmp(text, "<svg", 4) == 0 && strstr(text, "</svg>"), "%s", e.msg);
    free(text);
    r = run_v3c("schedule --pp 7 --microbatches 14 --schedule dualpipe");
    assert_user_error(&r, "even");
    cmd_free(&r);
    free(svg);
    free(dir);
}
END_TEST

/* v3c cache counts the entries the backends wrote (CPU objects here: the build
 * may lack NVRTC), --clear removes them and the temporary entries of an
 * interrupted writer, and nothing else in the directory. */
START_TEST(test_cache_command) {
    char *dir = make_temp_dir(), *cache = path_join(dir, "cache");
    setenv("V3C_CACHE_DIR", cache, 1);
    CmdResult r = run_v3c("train models/tiny.v3 --steps 1 --batch 1 --seq 8 --backend cpu");
    int cpu = r.status == 0;
    ck_assert_msg(cpu || strstr(r.err, "no LLVM"), "%s", r.err);
    cmd_free(&r);
    r = run_v3c("cache");
    ck_assert_msg(r.status == 0 && strstr(r.out, cache), "%s%s", r.out, r.err);
    long long entries = -1, cuda = -1, cpus = -1;
    const char *at = strstr(r.out, "entries: ");
    ck_assert_msg(at && sscanf(at, "entries: %lld (%lld cuda, %lld cpu)", &entries, &cuda, &cpus) == 3, "%s", r.out);
    ck_assert_msg(cpu ? cpus > 10 && entries == cpus + cuda : entries == 0, "%s", r.out);
    cmd_free(&r);
    char *keep = path_join(cache, "keep"), *notes = path_join(cache, "notes.txt");
    char *tmp = path_join(cache, ".tmp.0123456789abcdef0123456789abcdef.99.1");
    ck_assert_int_eq(mkdir(keep, 0755), 0);
    ck_assert_int_eq(mkdir(tmp, 0755), 0);
    write_text(notes, "not the cache's\n");
    r = run_v3c("cache --clear");
    char *want = xsprintf("removed %lld entries from %s\n", entries, cache);
    ck_assert_msg(r.status == 0 && strcmp(r.out, want) == 0, "%s%s", r.out, r.err);
    cmd_free(&r);
    r = run_v3c("cache");
    ck_assert_msg(r.status == 0 && strstr(r.out, "entries: 0 (0 cuda, 0 cpu)\nbytes: 0"), "%s", r.out);
    cmd_free(&r);
    ck_assert(access(keep, F_OK) == 0 && access(notes, F_OK) == 0 && access(tmp, F_OK) != 0);
    r = run_v3c("cache models/tiny.v3");
    assert_user_error(&r, "'v3c cache' takes no model file");
    cmd_free(&r);
    unsetenv("V3C_CACHE_DIR");
    free(want), free(keep), free(notes), free(tmp), free(cache), free(dir);
}
END_TEST

/* With V3C_CACHE_MAX_SIZE below what a run compiles, the cache ends the run within the limit;
 * a malformed limit is the user's error wherever the cache is used. */
START_TEST(test_cache_limit) {
    char *dir = make_temp_dir(), *cache = path_join(dir, "cache");
    setenv("V3C_CACHE_DIR", cache, 1);
    setenv("V3C_CACHE_MAX_SIZE", "64K", 1);
    CmdResult r = run_v3c("train models/tiny.v3 --steps 1 --batch 1 --seq 8 --backend cpu");
    int cpu = r.status == 0;
    ck_assert_msg(cpu || strstr(r.err, "no LLVM"), "%s", r.err);
    cmd_free(&r);
    r = run_v3c("cache");
    long long bytes = -1;
    const char *at = strstr(r.out, "bytes: ");
    ck_assert_msg(r.status == 0 && at && sscanf(at, "bytes: %lld", &bytes) == 1, "%s%s", r.out, r.err);
    ck_assert_msg(bytes <= 64 << 10 && (!cpu || bytes > 0), "%s", r.out);
    ck_assert_msg(strstr(r.out, "limit: 65536 (0.1 MiB;"), "%s", r.out);
    cmd_free(&r);
    setenv("V3C_CACHE_MAX_SIZE", "0", 1);
    r = run_v3c("cache");
    ck_assert_msg(r.status == 0 && strstr(r.out, "limit: none (V3C_CACHE_MAX_SIZE=0)"), "%s%s", r.out, r.err);
    cmd_free(&r);
    setenv("V3C_CACHE_MAX_SIZE", "64 K", 1);
    r = run_v3c("cache");
    assert_user_error(&r, "V3C_CACHE_MAX_SIZE='64 K' is not a size");
    cmd_free(&r);
    if (cpu) {
        /* The run fails before its first step: an existing log stays as it was, no new one is made. */
        char *log = path_join(dir, "old.jsonl"), *fresh = path_join(dir, "new.jsonl");
        write_text(log, "{\"step\":1}\n");
        r = run_v3c("train models/tiny.v3 --steps 1 --batch 1 --seq 8 --backend cpu --log %s", log);
        assert_user_error(&r, "V3C_CACHE_MAX_SIZE='64 K' is not a size");
        cmd_free(&r);
        Err e = {0};
        char *kept = read_file(log, NULL, &e);
        ck_assert_msg(kept && strcmp(kept, "{\"step\":1}\n") == 0, "the log became '%s'", kept ? kept : "(gone)");
        r = run_v3c("train models/tiny.v3 --steps 1 --batch 1 --seq 8 --backend cpu --log %s", fresh);
        assert_user_error(&r, "V3C_CACHE_MAX_SIZE='64 K' is not a size");
        cmd_free(&r);
        ck_assert_msg(access(fresh, F_OK) != 0, "a failed run made %s", fresh);
        free(kept), free(log), free(fresh);
    }
    unsetenv("V3C_CACHE_MAX_SIZE");
    unsetenv("V3C_CACHE_DIR");
    free(cache), free(dir);
}
END_TEST

int main(void) {
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_stats_deepseek_v3);
    tcase_add_test(tc, test_stats_v2_lite);
    tcase_add_test(tc, test_stats_config_and_set);
    tcase_add_test(tc, test_config_rope_scaling_partial);
    tcase_add_test(tc, test_dump_round_trip_full_model);
    tcase_add_test(tc, test_dump_dot_renders);
    tcase_add_test(tc, test_check_models);
    tcase_add_test(tc, test_dsl_error_location);
    tcase_add_test(tc, test_bad_options);
    tcase_add_test(tc, test_cache_command);
    tcase_add_test(tc, test_cache_limit);
    tcase_add_test(tc, test_truncated_and_corrupt_checkpoint);
    tcase_add_test(tc, test_malformed_config);
    tcase_add_test(tc, test_missing_and_misshapen_weight);
    tcase_add_test(tc, test_bad_input_ids);
    tcase_add_test(tc, test_schedule_command);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
