/* Reading an aot bundle back (bundle.h), and the expert stacks both sides share. */
#include <stdlib.h>
#include <string.h>

#include "../base/json.h"
#include "../ir/text.h"
#include "bundle.h"

/* ---- expert stacks ---- */

/* The stack read as grouped_linear's weights, when it is a stack of params. */
static const Node *expert_stack(const Graph *g, const Node *n) {
    if (n->op != OP_GROUPED_LINEAR) return NULL;
    const Node *s = &g->nodes.data[g->values.data[n->in[2]].node];
    if (s->op != OP_STACK) return NULL;
    for (int i = 0; i < s->nin; i++)
        if (g->nodes.data[g->values.data[s->in[i]].node].op != OP_PARAM) return NULL;
    return s;
}

static char **stack_names(const Graph *g, const Node *s) {
    char **names = xmalloc(sizeof(char *) * (size_t)s->nin);
    for (int i = 0; i < s->nin; i++)
        names[i] = xstrdup(node_str(&g->nodes.data[g->values.data[s->in[i]].node], "name", "?"));
    return names;
}

int expert_stacks_collect(const Graph *g, ExpertStacks *out, Err *err) {
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *s = expert_stack(g, &g->nodes.data[i]);
        if (!s) continue;
        if (out->stacks.len && s->nin != out->experts)
            return err_set(err, "aot: expert stacks of %lld and %d weights (every MoE layer must have as many experts)",
                           (long long)out->experts, s->nin);
        out->experts = s->nin;
        VEC_PUSH(out->stacks, stack_names(g, s));
    }
    return 0;
}

void expert_stacks_free(ExpertStacks *s) {
    for (size_t i = 0; i < s->stacks.len; i++) {
        for (int64_t e = 0; e < s->experts; e++) free(s->stacks.data[i][e]);
        free(s->stacks.data[i]);
    }
    VEC_FREE(s->stacks);
    s->experts = 0;
}

/* The param where the graph reads the weight, and its gradient where the graph
 * outputs it: a weight gradient (x^T g) does not read the weight itself. */
static int rename_weight(Graph *g, const char *from, const char *to, Err *err) {
    int64_t v;
    if (strmap_get(&g->names, from, &v) && v >= 0 && ir_rename_source(g, from, to, err)) return -1;
    char *gfrom = xsprintf("grad.%s", from), *gto = xsprintf("grad.%s", to);
    int rc = ir_find_output(g, gfrom) >= 0 ? ir_rename_output(g, gfrom, gto, err) : 0;
    free(gfrom);
    free(gto);
    return rc;
}

int bundle_rebase_experts(PipelineSplit *split, const ExpertStacks *ex, int rank, int ranks, Err *err) {
    if (rank == 0 || ex->stacks.len == 0) return 0;
    if (ranks < 1 || ex->experts % ranks) return err_set(err, "%lld experts do not split over %d EP ranks",
                                                         (long long)ex->experts, ranks);
    int64_t local = ex->experts / ranks;
    for (int s = 0; s < split->stages; s++)
        for (int part = 0; part < PIPE_PART_COUNT; part++)
            for (size_t k = 0; k < ex->stacks.len; k++)
                for (int64_t j = 0; j < local; j++)
                    if (rename_weight(split->graphs[s][part], ex->stacks.data[k][j],
                                      ex->stacks.data[k][rank * local + j], err))
                        return -1;
    return 0;
}

void bundle_rebase_names(char **names, size_t n, const ExpertStacks *ex, int rank, int ranks) {
    if (rank == 0 || ex->stacks.len == 0 || ranks < 1 || ex->experts % ranks) return;
    int64_t local = ex->experts / ranks;
    StrMap at; /* rank 0's name -> its place (stack * local + j) */
    strmap_init(&at);
    for (size_t k = 0; k < ex->stacks.len; k++)
        for (int64_t j = 0; j < local; j++) strmap_put(&at, ex->stacks.data[k][j], (int64_t)k * local + j);
    for (size_t i = 0; i < n; i++) {
        int64_t place;
        if (!strmap_get(&at, names[i], &place)) continue;
        free(names[i]);
        names[i] = xstrdup(ex->stacks.data[place / local][rank * local + place % local]);
    }
    strmap_free(&at);
}

static const Type *declared_type(const PipelineSplit *split, const char *name) {
    for (int s = 0; s < split->stages; s++)
        for (int part = 0; part < PIPE_PART_COUNT; part++) {
            const Graph *g = split->graphs[s][part];
            int64_t v;
            if (strmap_get(&g->names, name, &v) && v >= 0) return ir_type(g, (ValueId)v);
        }
    return NULL;
}

Graph *bundle_weight_graph(const Bundle *b, Err *err) {
    Graph *g = graph_new();
    for (size_t i = 0; i < b->weights.len; i++) {
        const Type *t = declared_type(b->split, b->weights.data[i]);
        if (!t) {
            err_set(err, "bundle %s: weight '%s' is in the manifest but no plan reads it", b->dir, b->weights.data[i]);
            graph_free(g);
            return NULL;
        }
        if (ir_param(g, b->weights.data[i], *t, err) < 0) {
            graph_free(g);
            return NULL;
        }
    }
    return g;
}

char *bundle_plan_path(int stage, PipePart part) {
    return xsprintf("plans/stage%d.%s.v3ir", stage, pipe_part_name(part));
}

/* ---- reading ---- */

typedef struct Reader {
    const char *what; /* the manifest's path, for errors */
    Err *err;
} Reader;

static const Json *field(Reader *r, const Json *obj, const char *key, JsonKind kind) {
    const Json *j = json_get(obj, key);
    if (!j || j->kind != kind) {
        err_set(r->err, "%s: '%s' is missing or not a JSON %s", r->what, key, json_kind_name(kind));
        return NULL;
    }
    return j;
}

static int int_field(Reader *r, const Json *obj, const char *key, int64_t lo, int64_t hi, int64_t *out) {
    const Json *j = field(r, obj, key, JSON_NUMBER);
    if (!j) return -1;
    if (!j->is_integer || j->integer < lo || j->integer > hi)
        return err_set(r->err, "%s: '%s' must be an integer in [%lld, %lld]", r->what, key, (long long)lo,
                       (long long)hi);
    *out = j->integer;
    return 0;
}

static int str_field(Reader *r, const Json *obj, const char *key, char **out) {
    const Json *j = field(r, obj, key, JSON_STRING);
    if (!j) return -1;
    *out = xstrdup(j->string);
    return 0;
}

static int bool_field(Reader *r, const Json *obj, const char *key, int *out) {
    const Json *j = field(r, obj, key, JSON_BOOL);
    if (!j) return -1;
    *out = j->boolean;
    return 0;
}

static Json *read_json(const char *dir, const char *name, char **path, Err *err) {
    *path = xsprintf("%s/%s", dir, name);
    size_t len;
    char *text = read_file(*path, &len, err);
    Json *j = text ? json_parse(text, len, *path, err) : NULL;
    free(text);
    return j;
}

static int read_layout(Reader *r, const Json *m, Layout *l) {
    const Json *j = field(r, m, "layout", JSON_OBJECT);
    char *schedule = NULL;
    const int64_t most = (int64_t)1 << 20;
    if (!j || int_field(r, j, "pp", 1, SCHED_MAX_RANKS, &l->pp) || int_field(r, j, "ep", 1, most, &l->ep) ||
        int_field(r, j, "dp", 1, most, &l->dp) ||
        int_field(r, j, "microbatches", 1, SCHED_MAX_MICROBATCHES, &l->microbatches) ||
        str_field(r, j, "schedule", &schedule))
        return -1;
    int kind = sched_kind_parse(schedule);
    free(schedule);
    if (kind < 0) return err_set(r->err, "%s: unknown schedule", r->what);
    l->schedule = (SchedKind)kind;
    return 0;
}

static int read_activations(Reader *r, const Json *m, Bundle *b) {
    const Json *ranks = field(r, m, "pipe_ranks", JSON_ARRAY);
    if (!ranks) return -1;
    if ((int64_t)ranks->len != b->layout.pp)
        return err_set(r->err, "%s: 'pipe_ranks' has %zu entries for %lld stages", r->what, ranks->len,
                       (long long)b->layout.pp);
    b->activation_bytes = xcalloc(ranks->len + 1, sizeof(int64_t));
    for (size_t i = 0; i < ranks->len; i++) {
        /* field() on a non-object finds no key and says so */
        const Json *mem = field(r, ranks->items[i], "memory", JSON_OBJECT);
        if (!mem || int_field(r, mem, "activation_bytes", 0, INT64_MAX, &b->activation_bytes[i])) return -1;
    }
    return 0;
}

static int read_weights(Reader *r, const Json *m, Bundle *b) {
    const Json *w = field(r, m, "weights", JSON_ARRAY);
    if (!w) return -1;
    for (size_t i = 0; i < w->len; i++) {
        if (w->items[i]->kind != JSON_STRING) return err_set(r->err, "%s: a weight name is not a string", r->what);
        VEC_PUSH(b->weights, xstrdup(w->items[i]->string));
    }
    return 0;
}

static int read_manifest(const Json *m, const char *what, Bundle *b, Err *err) {
    Reader r = {what, err};
    const Json *format = field(&r, m, "format", JSON_STRING);
    int64_t version;
    if (!format) return -1;
    if (strcmp(format->string, BUNDLE_FORMAT) != 0) return err_set(err, "%s: not a v3c bundle (format '%s')", what, format->string);
    if (int_field(&r, m, "version", 0, INT32_MAX, &version)) return -1;
    if (version != BUNDLE_VERSION)
        return err_set(err, "%s: bundle version %lld, this v3c reads version %d (run v3c aot again)", what,
                       (long long)version, BUNDLE_VERSION);
    const Json *hypers = field(&r, m, "hyperparameters", JSON_OBJECT);
    if (!hypers || read_layout(&r, m, &b->layout) || int_field(&r, m, "batch", 1, (int64_t)1 << 40, &b->batch) ||
        int_field(&r, m, "seq", 2, (int64_t)1 << 40, &b->seq) || str_field(&r, m, "objective", &b->objective) ||
        str_field(&r, m, "target", &b->target) || str_field(&r, m, "checkpoint", &b->checkpoint) ||
        bool_field(&r, m, "fp8", &b->fp8) || bool_field(&r, m, "bf16", &b->bf16))
        return -1;
    return read_activations(&r, m, b) || read_weights(&r, m, b) ? -1 : 0;
}

static int read_hypers_text(const char *dir, Bundle *b, Err *err) {
    char *path;
    size_t len;
    path = xsprintf("%s/hyperparameters.json", dir);
    b->config_json = read_file(path, &len, err);
    free(path);
    return b->config_json ? 0 : -1;
}

static Graph *read_plan(const char *dir, int stage, PipePart part, Err *err) {
    char *rel = bundle_plan_path(stage, part), *path = xsprintf("%s/%s", dir, rel);
    size_t len;
    char *text = read_file(path, &len, err);
    Graph *g = text ? ir_parse(text, path, err) : NULL;
    free(text);
    free(rel);
    free(path);
    return g;
}

static int read_plans(const char *dir, Bundle *b, Err *err) {
    int stages = (int)b->layout.pp;
    b->split = xcalloc(1, sizeof *b->split);
    b->split->stages = stages;
    b->split->graphs = xcalloc((size_t)stages, sizeof *b->split->graphs);
    for (int s = 0; s < stages; s++)
        for (int part = 0; part < PIPE_PART_COUNT; part++)
            if (!(b->split->graphs[s][part] = read_plan(dir, s, (PipePart)part, err))) return -1;
    return 0;
}

static int read_stack(Reader *r, const Json *j, ExpertStacks *ex) {
    if (j->kind != JSON_ARRAY || (int64_t)j->len != ex->experts)
        return err_set(r->err, "%s: a stack is not an array of %lld names", r->what, (long long)ex->experts);
    char **names = xcalloc(j->len + 1, sizeof(char *));
    VEC_PUSH(ex->stacks, names);
    for (size_t i = 0; i < j->len; i++) {
        if (j->items[i]->kind != JSON_STRING) return err_set(r->err, "%s: an expert name is not a string", r->what);
        names[i] = xstrdup(j->items[i]->string);
    }
    return 0;
}

static int read_experts(const char *dir, Bundle *b, Err *err) {
    if (b->layout.ep == 1) return 0;
    char *path;
    Json *j = read_json(dir, "experts.json", &path, err);
    Reader r = {path, err};
    const Json *stacks = j ? field(&r, j, "stacks", JSON_ARRAY) : NULL;
    int rc = stacks && int_field(&r, j, "experts", 1, (int64_t)1 << 20, &b->experts.experts) == 0 ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < stacks->len; i++) rc = read_stack(&r, stacks->items[i], &b->experts);
    if (rc == 0 && b->experts.experts % b->layout.ep)
        rc = err_set(err, "%s: %lld experts do not split over --ep %lld", path, (long long)b->experts.experts,
                     (long long)b->layout.ep);
    json_free(j);
    free(path);
    return rc;
}

int bundle_open(const char *dir, Bundle *b, Err *err) {
    memset(b, 0, sizeof *b);
    b->dir = xstrdup(dir);
    char *path;
    Json *m = read_json(dir, "manifest.json", &path, err);
    int rc = m ? read_manifest(m, path, b, err) : -1;
    json_free(m);
    free(path);
    if (rc == 0) rc = read_hypers_text(dir, b, err);
    if (rc == 0) rc = read_plans(dir, b, err);
    if (rc == 0) rc = read_experts(dir, b, err);
    if (rc) err_wrap(err, "bundle %s: ", dir);
    return rc;
}

void bundle_close(Bundle *b) {
    pipeline_split_free(b->split);
    expert_stacks_free(&b->experts);
    free(b->dir);
    free(b->objective);
    free(b->target);
    free(b->checkpoint);
    free(b->config_json);
    free(b->activation_bytes);
    for (size_t i = 0; i < b->weights.len; i++) free(b->weights.data[i]);
    VEC_FREE(b->weights);
    memset(b, 0, sizeof *b);
}
