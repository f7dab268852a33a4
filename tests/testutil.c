#include "testutil.h"

#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../base/base.h"
#include "../ir/interp.h"
#include "../ir/text.h"

static char *slurp(const char *path) {
    Err e = {0};
    char *s = read_file(path, NULL, &e);
    return s ? s : xstrdup("");
}

CmdResult run_v3c(const char *args_fmt, ...) {
    char *dir = make_temp_dir();
    char *out = path_join(dir, "stdout"), *err = path_join(dir, "stderr");
    Buf cmd = {0};
    va_list ap;
    va_start(ap, args_fmt);
    buf_printf(&cmd, "%s ", V3C_BINARY);
    buf_vprintf(&cmd, args_fmt, ap);
    va_end(ap);
    buf_printf(&cmd, " >%s 2>%s </dev/null", out, err);
    int st = system(cmd.data);
    CmdResult r = {0};
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    r.out = slurp(out);
    r.err = slurp(err);
    buf_free(&cmd);
    free(out);
    free(err);
    free(dir);
    return r;
}

void cmd_free(CmdResult *r) {
    free(r->out);
    free(r->err);
}

void assert_user_error(const CmdResult *r, const char *needle) {
    ck_assert_msg(r->status == 1, "expected exit 1, got %d; stderr: %s", r->status, r->err);
    ck_assert_msg(strstr(r->err, "v3c: error: ") != NULL || strstr(r->err, ": error: ") != NULL,
                  "no error line in stderr: %s", r->err);
    ck_assert_msg(strstr(r->err, needle) != NULL, "stderr lacks '%s': %s", needle, r->err);
    ck_assert_msg(strstr(r->err, "AddressSanitizer") == NULL && strstr(r->err, "runtime error") == NULL,
                  "sanitizer report: %s", r->err);
}

char *make_temp_dir(void) {
    const char *base = getenv("TMPDIR");
    char *tmpl = xsprintf("%s/v3c-test-XXXXXX", base ? base : "/tmp");
    if (!mkdtemp(tmpl)) {
        perror("mkdtemp");
        abort();
    }
    return tmpl;
}

char *path_join(const char *dir, const char *name) { return xsprintf("%s/%s", dir, name); }

void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

int run_suite(Suite *s) {
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

double tensor_value(const Tensor *t, int64_t i) {
    if (t->dtype == DT_I32) return ((const int32_t *)t->data)[i];
    if (t->dtype == DT_I64) return (double)((const int64_t *)t->data)[i];
    if (t->dtype == DT_U8) return ((const unsigned char *)t->data)[i];
    return tensor_f32(t)[i];
}

double rel_l2(const Tensor *got, const Tensor *want) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < want->numel; i++) {
        double w = tensor_value(want, i), d = tensor_value(got, i) - w;
        num += d * d;
        den += w * w;
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

int starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

int for_each_variant(int (*check)(const char *dir), int min_each) {
    const char *root = "tests/data/variants";
    DIR *d = opendir(root);
    ck_assert_msg(d != NULL, "missing %s", root);
    int variants = 0;
    struct dirent *ent;
    while ((ent = readdir(d)) != NULL) {
        if (ent->d_name[0] == '.') continue;
        char *dir = path_join(root, ent->d_name);
        ck_assert_int_ge(check(dir), min_each);
        free(dir);
        variants++;
    }
    closedir(d);
    return variants;
}

Graph *parse_ir_ok(const char *text, const char *what) {
    Err e = {0};
    Graph *g = ir_parse(text, what, &e);
    ck_assert_msg(g != NULL, "parse of %s failed: %s", what, e.msg);
    return g;
}

char *print_ir(const Graph *g) {
    Buf b = {0};
    PrintOptions opt = {0};
    ir_print(g, &opt, &b);
    return buf_take(&b);
}

static uint64_t next_random(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

static Tensor *random_input(const Type *ty, const InputFill *f, int64_t b, int64_t t, uint64_t *seed) {
    int64_t shape[IR_MAX_RANK];
    Err e = {0};
    ck_assert_msg(type_concrete(ty, b, t, shape, &e) == 0, "%s", e.msg);
    Tensor *x = tensor_new(ty->dtype, ty->rank, shape);
    for (int64_t i = 0; i < x->numel; i++) {
        uint64_t r = next_random(seed);
        if (ty->dtype == DT_I64) ((int64_t *)x->data)[i] = (int64_t)(r % (uint64_t)f->range);
        else if (ty->dtype == DT_I32) ((int32_t *)x->data)[i] = (int32_t)(r % (uint64_t)f->range);
        else if (ty->dtype == DT_E4M3 || ty->dtype == DT_U8) ((uint8_t *)x->data)[i] = (uint8_t)(r % 0x7e);
        else tensor_f32(x)[i] = f->positive ? 0.5f + (float)(r % 20001) / 20000.0f : (float)(r % 20001) / 10000.0f - 1.0f;
    }
    return x;
}

static const InputFill *fill_for(const InputFill *fills, const InputFill *fallback, const char *name) {
    for (const InputFill *f = fills; f && f->name; f++)
        if (strcmp(f->name, name) == 0) return f;
    return fallback;
}

void feed_random_inputs(const Graph *g, const InputFill *fills, InputFill fallback, int64_t b, int64_t t,
                        uint64_t seed, TensorSet *feeds) {
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        if (n->op != OP_INPUT) continue;
        const char *name = node_str(n, "name", "");
        tset_put(feeds, name, random_input(ir_type(g, n->out[0]), fill_for(fills, &fallback, name), b, t, &seed));
    }
}
