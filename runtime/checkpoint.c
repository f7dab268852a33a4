#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../base/numeric.h"

static const char INDEX_NAME[] = "model.safetensors.index.json";

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Parses DIR/NAME as JSON; *out stays NULL when the file is absent. */
static int read_json(const char *dir, const char *name, Json **out, Err *err) {
    char *path = xsprintf("%s/%s", dir, name);
    *out = NULL;
    int rc = 0;
    if (file_exists(path)) {
        size_t len;
        char *text = read_file(path, &len, err);
        if (!text) rc = -1;
        else if (!(*out = json_parse(text, len, path, err))) rc = -1;
        free(text);
    }
    free(path);
    return rc;
}

static int add_file(Checkpoint *c, const char *name, Err *err) {
    char *path = xsprintf("%s/%s", c->dir, name);
    StFile *f = st_open(path, err);
    free(path);
    if (!f) return -1;
    VEC_PUSH(c->files, f);
    return (int)c->files.len - 1;
}

static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* Opens each distinct shard of the index once; `shards` maps a shard name to its file. */
static int open_indexed(Checkpoint *c, const Json *index, Err *err) {
    const Json *map = json_get(index, "weight_map");
    if (!map || map->kind != JSON_OBJECT)
        return err_set(err, "%s/%s: 'weight_map' is missing or not an object", c->dir, INDEX_NAME);
    StrMap shards;
    strmap_init(&shards);
    int rc = 0;
    for (size_t i = 0; i < map->len && !rc; i++) {
        const char *name = map->keys[i];
        const Json *shard = map->items[i];
        if (shard->kind != JSON_STRING) {
            rc = err_set(err, "%s/%s: weight_map entry '%s' is not a file name", c->dir, INDEX_NAME, name);
            break;
        }
        int64_t at;
        if (!strmap_get(&shards, shard->string, &at)) {
            if ((at = add_file(c, shard->string, err)) < 0) {
                rc = err_wrap(err, "%s/%s names shard '%s': ", c->dir, INDEX_NAME, shard->string);
                break;
            }
            strmap_put(&shards, shard->string, at);
        }
        if (!st_find(c->files.data[at], name))
            rc = err_set(err, "%s/%s: tensor '%s' is mapped to shard '%s', which does not contain it", c->dir,
                         INDEX_NAME, name, shard->string);
        else
            strmap_put(&c->where, name, at);
    }
    strmap_free(&shards);
    return rc;
}

static int by_string(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && strcmp(s + n - k, suffix) == 0;
}

/* The *.safetensors file names in dir, sorted so that the open order is stable. */
static int list_safetensors(const char *dir, char ***names, size_t *count, Err *err) {
    DIR *d = opendir(dir);
    if (!d) return err_set(err, "cannot open checkpoint directory '%s': %s", dir, strerror(errno));
    VEC(char *) v = {0};
    for (struct dirent *e; (e = readdir(d));)
        if (has_suffix(e->d_name, ".safetensors")) VEC_PUSH(v, xstrdup(e->d_name));
    closedir(d);
    if (v.len) qsort(v.data, v.len, sizeof *v.data, by_string);
    *names = v.data;
    *count = v.len;
    return 0;
}

static int register_tensors(Checkpoint *c, int at, Err *err) {
    const StFile *f = c->files.data[at];
    for (size_t i = 0; i < f->tensors.len; i++) {
        const char *name = f->tensors.data[i].name;
        int64_t other;
        if (strmap_get(&c->where, name, &other))
            return err_set(err, "%s: tensor '%s' is in both '%s' and '%s'", c->dir, name,
                           base_name(c->files.data[other]->path), base_name(f->path));
        strmap_put(&c->where, name, at);
    }
    return 0;
}

static int open_all(Checkpoint *c, Err *err) {
    char **names = NULL;
    size_t n = 0;
    if (list_safetensors(c->dir, &names, &n, err)) return -1;
    int rc = n ? 0 : err_set(err, "checkpoint directory '%s' has no *.safetensors files", c->dir);
    for (size_t i = 0; i < n && !rc; i++) {
        int at = add_file(c, names[i], err);
        rc = at < 0 ? -1 : register_tensors(c, at, err);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

static int open_tensors(Checkpoint *c, Err *err) {
    Json *index;
    if (read_json(c->dir, INDEX_NAME, &index, err)) return -1;
    if (!index) return open_all(c, err);
    int rc = open_indexed(c, index, err);
    json_free(index);
    return rc;
}

Checkpoint *checkpoint_open(const char *dir, Err *err) {
    Checkpoint *c = xcalloc(1, sizeof *c);
    c->dir = xstrdup(dir);
    strmap_init(&c->where);
    int rc = read_json(dir, "config.json", &c->config, err);
    if (!rc && c->config && c->config->kind != JSON_OBJECT)
        rc = err_set(err, "%s/config.json is not a JSON object (found %s)", dir, json_kind_name(c->config->kind));
    if (!rc) rc = open_tensors(c, err);
    if (rc) {
        checkpoint_close(c);
        return NULL;
    }
    return c;
}

void checkpoint_close(Checkpoint *c) {
    if (!c) return;
    for (size_t i = 0; i < c->files.len; i++) st_close(c->files.data[i]);
    VEC_FREE(c->files);
    strmap_free(&c->where);
    json_free(c->config);
    free(c->dir);
    free(c);
}

const StTensor *checkpoint_find(const Checkpoint *c, const char *name) {
    int64_t at;
    if (!strmap_get(&c->where, name, &at)) return NULL;
    return st_find(c->files.data[at], name);
}

/* ---- loading params ---- */

typedef struct ParamCheck {
    const char *name;
    DType dtype;
    int rank;
    int64_t shape[IR_MAX_RANK];
    const StTensor *found;
} ParamCheck;

static void format_dims(char *out, size_t n, const int64_t *shape, int rank) {
    size_t k = (size_t)snprintf(out, n, "[");
    for (int i = 0; i < rank && k < n; i++) k += (size_t)snprintf(out + k, n - k, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (k < n) snprintf(out + k, n - k, "]");
}

static int loadable_as_float(StDType t) { return t == ST_F32 || t == ST_BF16 || t == ST_F16 || t == ST_F64; }

static int same_shape(const ParamCheck *p) {
    if (p->found->rank != p->rank) return 0;
    for (int i = 0; i < p->rank; i++)
        if (p->found->shape[i] != p->shape[i]) return 0;
    return 1;
}

/* The first problem with one param, or 0 when it can be loaded. */
static int check_param(const Checkpoint *c, ParamCheck *p, Err *err) {
    if (p->dtype != DT_F32 && p->dtype != DT_BF16 && p->dtype != DT_F16)
        return err_set(err, "weight '%s' has type %s in the model; only f32, bf16 and f16 weights can be loaded",
                       p->name, dtype_name(p->dtype));
    p->found = checkpoint_find(c, p->name);
    if (!p->found) return err_set(err, "missing weight '%s'", p->name);
    if (!same_shape(p)) {
        char have[256], want[256];
        format_dims(have, sizeof have, p->found->shape, p->found->rank);
        format_dims(want, sizeof want, p->shape, p->rank);
        return err_set(err, "weight '%s' has shape %s in the checkpoint but the model expects %s", p->name, have, want);
    }
    if (!loadable_as_float(p->found->dtype))
        return err_set(err, "weight '%s' has dtype %s in the checkpoint; only F32, BF16, F16 and F64 can be loaded",
                       p->name, st_dtype_name(p->found->dtype));
    return 0;
}

/* The param's name and concrete shape; a symbolic dim is a model error, not a checkpoint one. */
static int describe_param(const Graph *g, const Node *n, ParamCheck *p, Err *err) {
    const Type *ty = ir_type(g, n->out[0]);
    p->name = node_str(n, "name", NULL);
    if (!p->name) return err_internal(err, "a param node has no name");
    p->dtype = ty->dtype;
    p->rank = ty->rank;
    for (int i = 0; i < ty->rank; i++) {
        if (!dim_is_const(ty->dims[i]))
            return err_set(err, "weight '%s' has a symbolic dimension %d; weights need constant shapes", p->name, i);
        p->shape[i] = dim_const_value(ty->dims[i]);
    }
    return 0;
}

/* Checks every param, keeping the first message and counting the rest. */
static int check_all(const Checkpoint *c, ParamCheck *params, size_t n, Err *err) {
    size_t problems = 0;
    Err first = {0}, scratch = {0};
    for (size_t i = 0; i < n; i++)
        if (check_param(c, &params[i], problems ? &scratch : &first)) problems++;
    if (!problems) return 0;
    if (!err) return -1;
    *err = first;
    size_t k = strlen(err->msg);
    if (problems > 1)
        snprintf(err->msg + k, sizeof err->msg - k, " (and %zu more weight problem%s)", problems - 1,
                 problems > 2 ? "s" : "");
    return -1;
}

static Tensor *load_param(const ParamCheck *p, Err *err) {
    Tensor *t = st_to_tensor(p->found, err);
    if (!t) return NULL;
    /* Float dtypes are held as float; a narrower param sees its values rounded to its dtype. */
    float *v = tensor_f32(t);
    if (p->dtype == DT_BF16)
        for (int64_t i = 0; i < t->numel; i++) v[i] = round_to_bf16(v[i]);
    if (p->dtype == DT_F16)
        for (int64_t i = 0; i < t->numel; i++) v[i] = round_to_f16(v[i]);
    t->dtype = p->dtype;
    return t;
}

static int collect_params(const Graph *g, ParamCheck **out, size_t *count, Err *err) {
    VEC(ParamCheck) v = {0};
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        if (n->op != OP_PARAM || n->dead) continue;
        ParamCheck p = {0};
        if (describe_param(g, n, &p, err)) {
            VEC_FREE(v);
            return -1;
        }
        VEC_PUSH(v, p);
    }
    *out = v.data;
    *count = v.len;
    return 0;
}

int checkpoint_load_params(const Checkpoint *c, const Graph *g, TensorSet *out, Err *err) {
    ParamCheck *params;
    size_t n;
    if (collect_params(g, &params, &n, err)) return -1;
    int rc = check_all(c, params, n, err);
    for (size_t i = 0; i < n && !rc; i++) {
        Tensor *t = load_param(&params[i], err);
        if (!t) rc = -1;
        else tset_put(out, params[i].name, t);
    }
    free(params);
    return rc;
}
