/* v3c convert --checkpoint IN --output OUT --to fp8|bf16|f32.
 * fp8: every Linear weight DeepSeek quantizes (runtime/fp8_checkpoint.h) becomes
 * F8_E4M3 + F32 weight_scale_inv in 128x128 blocks, and config.json gains
 * DeepSeek's quantization_config; everything else is stored F32 so that nothing
 * but the quantized weights changes. bf16 / f32: FP8 weights are dequantized and
 * every float tensor is stored in that dtype. OUT is built as OUT.tmp.<pid> and
 * renamed into place, so a reader never sees half a checkpoint. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../base/numeric.h"
#include "../runtime/fp8_checkpoint.h"
#include "cli.h"

typedef enum Target { TO_FP8, TO_BF16, TO_F32 } Target;

static const char QUANTIZATION_CONFIG[] =
    "{\"activation_scheme\": \"dynamic\", \"fmt\": \"e4m3\", \"quant_method\": \"fp8\", "
    "\"weight_block_size\": [128, 128]}";

static void write_json(Buf *b, const Json *j);

static void write_members(Buf *b, const Json *j) {
    for (size_t i = 0; i < j->len; i++) {
        if (i) buf_puts(b, ", ");
        if (j->kind == JSON_OBJECT) {
            json_write_string(b, j->keys[i]);
            buf_puts(b, ": ");
        }
        write_json(b, j->items[i]);
    }
}

static void write_json(Buf *b, const Json *j) {
    char num[64];
    switch (j->kind) {
    case JSON_NULL: buf_puts(b, "null"); return;
    case JSON_BOOL: buf_puts(b, j->boolean ? "true" : "false"); return;
    case JSON_STRING: json_write_string(b, j->string); return;
    case JSON_NUMBER:
        if (j->is_integer) buf_printf(b, "%lld", (long long)j->integer);
        else format_double(num, sizeof num, j->number), buf_puts(b, num);
        return;
    case JSON_ARRAY: buf_putc(b, '['), write_members(b, j), buf_putc(b, ']'); return;
    case JSON_OBJECT: buf_putc(b, '{'), write_members(b, j), buf_putc(b, '}'); return;
    }
}

/* config.json without any quantization_config, plus DeepSeek's for fp8. */
static char *converted_config(const Json *config, Target to) {
    Buf b = {0};
    buf_puts(&b, "{\n");
    int first = 1;
    for (size_t i = 0; i < config->len; i++) {
        if (strcmp(config->keys[i], "quantization_config") == 0) continue;
        buf_puts(&b, first ? "  " : ",\n  ");
        first = 0;
        json_write_string(&b, config->keys[i]);
        buf_puts(&b, ": ");
        write_json(&b, config->items[i]);
    }
    if (to == TO_FP8) buf_printf(&b, "%s  \"quantization_config\": %s", first ? "" : ",\n", QUANTIZATION_CONFIG);
    buf_puts(&b, "\n}\n");
    return buf_take(&b);
}

/* A "<w>_scale_inv" whose weight is stored F8: it travels with its weight. */
static int is_fp8_scale(const Checkpoint *c, const char *name) {
    if (!str_ends_with(name, "_scale_inv")) return 0;
    char *weight = xstrndup(name, strlen(name) - strlen("_scale_inv"));
    const StTensor *w = checkpoint_find(c, weight);
    free(weight);
    return w && w->dtype == ST_F8_E4M3;
}

static Tensor *dequantized(const Checkpoint *c, const StTensor *q, Err *err) {
    char *sname = fp8_scale_name(q->name);
    const StTensor *s = checkpoint_find(c, sname);
    Tensor *qt = NULL, *st = NULL, *w = NULL;
    if (!s) err_set(err, "'%s' is F8_E4M3 but the checkpoint has no '%s'", q->name, sname);
    else if ((qt = st_to_tensor(q, err)) && (st = st_to_tensor(s, err))) w = fp8_dequantize_weight(qt, st, err);
    free(sname);
    tensor_free(qt);
    tensor_free(st);
    return w;
}

static int put_quantized(const char *name, Tensor *w, TensorSet *out, Err *err) {
    Tensor *q, *s;
    int rc = fp8_quantize_weight(w, &q, &s, err);
    tensor_free(w);
    if (rc) return err_wrap(err, "quantizing '%s': ", name);
    char *sname = fp8_scale_name(name);
    tset_put(out, name, q);
    tset_put(out, sname, s);
    free(sname);
    return 0;
}

static void narrow(Tensor *t, Target to) {
    if (to != TO_BF16 || t->dtype != DT_F32) return;
    float *v = tensor_f32(t);
    for (int64_t i = 0; i < t->numel; i++) v[i] = round_to_bf16(v[i]);
    t->dtype = DT_BF16;
}

static int convert_tensor(const Checkpoint *c, const StTensor *st, Target to, TensorSet *out, Err *err) {
    if (is_fp8_scale(c, st->name)) return 0;
    int fp8 = st->dtype == ST_F8_E4M3;
    if (fp8 && to == TO_FP8) { /* already FP8: carried over with its scales */
        Tensor *q = st_to_tensor(st, err), *s = NULL;
        char *sname = fp8_scale_name(st->name);
        const StTensor *sst = checkpoint_find(c, sname);
        if (q && !sst) err_set(err, "'%s' is F8_E4M3 but the checkpoint has no '%s'", st->name, sname);
        if (q && sst && (s = st_to_tensor(sst, err))) tset_put(out, st->name, q), tset_put(out, sname, s);
        else tensor_free(q);
        free(sname);
        return s ? 0 : -1;
    }
    if (st->dtype == ST_F8_E5M2) return err_set(err, "'%s' is F8_E5M2; only E4M3 checkpoints are converted", st->name);
    Tensor *t = fp8 ? dequantized(c, st, err) : st_to_tensor(st, err);
    if (!t) return -1;
    if (to == TO_FP8 && t->dtype == DT_F32 && fp8_quantizes_weight(st->name, st->rank))
        return put_quantized(st->name, t, out, err);
    narrow(t, to);
    tset_put(out, st->name, t);
    return 0;
}

static int parse_target(const char *s, Target *to, Err *err) {
    static const char *const names[] = {"fp8", "bf16", "f32"};
    for (int i = 0; s && i < 3; i++)
        if (strcmp(s, names[i]) == 0) return *to = (Target)i, 0;
    return err_set(err, "--to must be fp8, bf16 or f32%s%s", s ? ", not " : "", s ? s : "");
}

static int write_checkpoint(const Checkpoint *c, const TensorSet *set, Target to, const char *dir, Err *err) {
    if (mkdir(dir, 0777) != 0) return err_set(err, "cannot create '%s': %s", dir, strerror(errno));
    char *st_path = xsprintf("%s/model.safetensors", dir), *cfg_path = xsprintf("%s/config.json", dir);
    int rc = st_write(st_path, set, err);
    if (!rc && c->config) {
        char *text = converted_config(c->config, to);
        rc = write_file_atomic(cfg_path, text, strlen(text), err);
        free(text);
    }
    free(st_path);
    free(cfg_path);
    return rc;
}

static void remove_partial(const char *dir) {
    char *a = xsprintf("%s/model.safetensors", dir), *b = xsprintf("%s/config.json", dir);
    unlink(a), unlink(b), rmdir(dir);
    free(a), free(b);
}

static int convert_all(const Checkpoint *c, Target to, TensorSet *out, Err *err) {
    for (size_t f = 0; f < c->files.len; f++)
        for (size_t i = 0; i < c->files.data[f]->tensors.len; i++)
            if (convert_tensor(c, &c->files.data[f]->tensors.data[i], to, out, err)) return -1;
    return 0;
}

int cmd_convert(const Options *o, Err *err) {
    Target to = TO_F32; /* set by parse_target before use; -O3 cannot see through the error return */
    if (!o->checkpoint || !o->output) return err_set(err, "'v3c convert' needs --checkpoint IN, --output OUT and --to");
    if (parse_target(o->to, &to, err)) return -1;
    struct stat sb;
    if (stat(o->output, &sb) == 0) return err_set(err, "--output '%s' already exists; convert writes a new directory", o->output);
    Checkpoint *c = checkpoint_open(o->checkpoint, err);
    if (!c) return -1;
    TensorSet set;
    tset_init(&set);
    char *tmp = xsprintf("%s.tmp.%ld", o->output, (long)getpid());
    int rc = convert_all(c, to, &set, err);
    if (!rc) rc = write_checkpoint(c, &set, to, tmp, err);
    if (!rc && rename(tmp, o->output) != 0) rc = err_set(err, "cannot rename '%s' to '%s': %s", tmp, o->output, strerror(errno));
    if (rc) remove_partial(tmp);
    free(tmp);
    tset_free(&set);
    checkpoint_close(c);
    return rc;
}
