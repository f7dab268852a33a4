#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"

static const char *const dtype_names[DT_COUNT] = {
    [DT_F32] = "f32", [DT_BF16] = "bf16", [DT_F16] = "f16", [DT_E4M3] = "e4m3",
    [DT_E5M2] = "e5m2", [DT_I32] = "i32", [DT_I64] = "i64", [DT_U8] = "u8",
};

static const size_t dtype_host_sizes[DT_COUNT] = {
    [DT_F32] = 4, [DT_BF16] = 4, [DT_F16] = 4, [DT_E4M3] = 1,
    [DT_E5M2] = 1, [DT_I32] = 4, [DT_I64] = 8, [DT_U8] = 1,
};

const char *dtype_name(DType t) { return (unsigned)t < DT_COUNT ? dtype_names[t] : "?"; }

int dtype_parse(const char *s, DType *out) {
    for (int i = 0; i < DT_COUNT; i++)
        if (strcmp(s, dtype_names[i]) == 0) {
            *out = (DType)i;
            return 0;
        }
    return -1;
}

int dtype_is_float(DType t) { return t <= DT_E5M2; }
int dtype_is_int(DType t) { return t >= DT_I32; }
size_t dtype_host_size(DType t) { return t <= DT_F16 ? real_size() : dtype_host_sizes[t]; }

static const char *const chunk_names[CHUNK_COUNT] = {"", "attention", "dispatch", "mlp", "combine"};

const char *chunk_name(Chunk c) { return (unsigned)c < CHUNK_COUNT ? chunk_names[c] : "?"; }

int chunk_parse(const char *s, Chunk *out) {
    for (int i = 1; i < CHUNK_COUNT; i++)
        if (strcmp(s, chunk_names[i]) == 0) {
            *out = (Chunk)i;
            return 0;
        }
    return -1;
}

int type_equal(const Type *a, const Type *b) {
    if (a->dtype != b->dtype || a->rank != b->rank) return 0;
    for (int i = 0; i < a->rank; i++)
        if (!dim_equal(a->dims[i], b->dims[i])) return 0;
    return 1;
}

int type_print(const Type *t, char *out, int n) {
    int k = snprintf(out, (size_t)n, "%s[", dtype_name(t->dtype));
    for (int i = 0; i < t->rank && k < n; i++) {
        if (i) k += snprintf(out + k, (size_t)(n - k), ",");
        if (k < n) dim_print(t->dims[i], out + k, n - k);
        k += (int)strlen(out + k);
    }
    if (k < n) k += snprintf(out + k, (size_t)(n - k), "]");
    return k;
}

static const char *const flag_names[NODE_FLAG_COUNT] = {"recompute", "backward", "wgrad"};

const char *node_flag_name(int bit_index) {
    return bit_index >= 0 && bit_index < NODE_FLAG_COUNT ? flag_names[bit_index] : "?";
}

int node_flag_parse(const char *s, unsigned *flag) {
    for (int i = 0; i < NODE_FLAG_COUNT; i++)
        if (strcmp(s, flag_names[i]) == 0) {
            *flag = 1u << i;
            return 0;
        }
    return -1;
}

Attr attr_int(const char *key, int64_t v) { return (Attr){.key = key, .kind = ATTR_INT, .i = v}; }
Attr attr_float(const char *key, double v) { return (Attr){.key = key, .kind = ATTR_FLOAT, .f = v}; }
Attr attr_str(const char *key, const char *s) { return (Attr){.key = key, .kind = ATTR_STR, .s = s}; }
Attr attr_dtype(const char *key, DType t) { return (Attr){.key = key, .kind = ATTR_DTYPE, .dtype = t}; }
Attr attr_dims(const char *key, int n, Dim *dims) {
    return (Attr){.key = key, .kind = ATTR_DIMS, .ndims = n, .dims = dims};
}

const Attr *node_attr(const Node *n, const char *key) {
    for (int i = 0; i < n->nattrs; i++)
        if (strcmp(n->attrs[i].key, key) == 0) return &n->attrs[i];
    return NULL;
}

int64_t node_int(const Node *n, const char *key, int64_t dflt) {
    const Attr *a = node_attr(n, key);
    return a && a->kind == ATTR_INT ? a->i : dflt;
}

double node_float(const Node *n, const char *key, double dflt) {
    const Attr *a = node_attr(n, key);
    if (!a) return dflt;
    return a->kind == ATTR_FLOAT ? a->f : a->kind == ATTR_INT ? (double)a->i : dflt;
}

const char *node_str(const Node *n, const char *key, const char *dflt) {
    const Attr *a = node_attr(n, key);
    return a && a->kind == ATTR_STR ? a->s : dflt;
}

Graph *graph_new(void) {
    Graph *g = xcalloc(1, sizeof *g);
    strmap_init(&g->names);
    strmap_init(&g->strings);
    strmap_init(&g->output_index);
    g->cur_scope = graph_intern(g, "");
    return g;
}

void graph_free(Graph *g) {
    if (!g) return;
    arena_free(&g->arena);
    VEC_FREE(g->nodes);
    VEC_FREE(g->values);
    VEC_FREE(g->outputs);
    strmap_free(&g->names);
    strmap_free(&g->strings);
    strmap_free(&g->output_index);
    free(g);
}

const char *graph_intern(Graph *g, const char *s) { return strmap_put(&g->strings, s, 0); }

const OpInfo *op_info(OpKind op);

static int check_attrs(const OpInfo *info, const Attr *attrs, int nattrs, Err *err) {
    for (int i = 0; i < nattrs; i++) {
        const AttrSpec *s = info->attrs;
        while (s && s->key && strcmp(s->key, attrs[i].key) != 0) s++;
        if (!s || !s->key) return err_set(err, "op '%s' has no attribute '%s'", info->name, attrs[i].key);
        int int_as_float = s->kind == ATTR_FLOAT && attrs[i].kind == ATTR_INT;
        if (s->kind != attrs[i].kind && !int_as_float)
            return err_set(err, "attribute '%s' of op '%s' has the wrong kind", attrs[i].key, info->name);
        for (int j = 0; j < i; j++)
            if (strcmp(attrs[j].key, attrs[i].key) == 0)
                return err_set(err, "attribute '%s' given twice to op '%s'", attrs[i].key, info->name);
    }
    for (const AttrSpec *s = info->attrs; s && s->key; s++) {
        if (!s->required) continue;
        int found = 0;
        for (int i = 0; i < nattrs; i++) found |= strcmp(attrs[i].key, s->key) == 0;
        if (!found) return err_set(err, "op '%s' needs attribute '%s'", info->name, s->key);
    }
    return 0;
}

static int attr_cmp(const void *a, const void *b) {
    return strcmp(((const Attr *)a)->key, ((const Attr *)b)->key);
}

/* Copies attributes into the graph's arena (keys and strings interned, ints
 * given for float attributes converted), sorted by key for a canonical text form. */
static Attr *copy_attrs(Graph *g, const OpInfo *info, const Attr *attrs, int nattrs) {
    Attr *out = arena_alloc(&g->arena, sizeof(Attr) * (size_t)(nattrs ? nattrs : 1));
    for (int i = 0; i < nattrs; i++) {
        Attr a = attrs[i];
        a.key = graph_intern(g, a.key);
        if (a.kind == ATTR_STR) a.s = graph_intern(g, a.s);
        if (a.kind == ATTR_DIMS) {
            a.dims = arena_alloc(&g->arena, sizeof(Dim) * (size_t)(a.ndims ? a.ndims : 1));
            memcpy(a.dims, attrs[i].dims, sizeof(Dim) * (size_t)a.ndims);
        }
        for (const AttrSpec *s = info->attrs; s && s->key; s++)
            if (strcmp(s->key, a.key) == 0 && s->kind == ATTR_FLOAT && a.kind == ATTR_INT) {
                a.kind = ATTR_FLOAT;
                a.f = (double)a.i;
            }
        out[i] = a;
    }
    qsort(out, (size_t)nattrs, sizeof *out, attr_cmp);
    return out;
}

static int check_inputs(const Graph *g, const OpInfo *info, const ValueId *in, int nin, Err *err) {
    if (nin < info->min_in || (info->max_in >= 0 && nin > info->max_in))
        return err_set(err, "op '%s' takes %d%s input%s, got %d", info->name, info->min_in,
                       info->max_in < 0 ? " or more" : info->max_in != info->min_in ? "+" : "",
                       info->min_in == 1 ? "" : "s", nin);
    for (int i = 0; i < nin; i++)
        if (in[i] < 0 || (size_t)in[i] >= g->values.len)
            return err_internal(err, "op '%s': input %d is not a value of this graph", info->name, i);
    return 0;
}

static int append_node(Graph *g, OpKind op, const ValueId *in, int nin, Attr *attrs, int nattrs,
                       const Type *types, int nout, ValueId *out) {
    Node n = {.op = op, .nin = nin, .nout = nout, .nattrs = nattrs, .attrs = attrs};
    n.in = arena_alloc(&g->arena, sizeof(ValueId) * (size_t)(nin ? nin : 1));
    n.out = arena_alloc(&g->arena, sizeof(ValueId) * (size_t)(nout ? nout : 1));
    if (nin) memcpy(n.in, in, sizeof(ValueId) * (size_t)nin);
    n.scope = g->cur_scope;
    n.chunk = g->cur_chunk;
    n.flags = g->cur_flags;
    int32_t id = (int32_t)g->nodes.len;
    for (int i = 0; i < nout; i++) {
        Value v = {.type = types[i], .node = id, .index = i};
        n.out[i] = (ValueId)g->values.len;
        if (out) out[i] = n.out[i];
        VEC_PUSH(g->values, v);
    }
    VEC_PUSH(g->nodes, n);
    return id;
}

int ir_infer(const Graph *g, OpKind op, const ValueId *in, int nin, const Attr *attrs, int nattrs, Type *types,
             Err *err) {
    const OpInfo *info = op_info(op);
    Type *in_types = xmalloc(sizeof(Type) * (size_t)(nin ? nin : 1));
    for (int i = 0; i < nin; i++) in_types[i] = g->values.data[in[i]].type;
    Node probe = {.op = op, .nin = nin, .nout = info->nout, .nattrs = nattrs, .attrs = (Attr *)attrs};
    memset(types, 0, sizeof(Type) * (size_t)info->nout);
    int rc = info->infer(in_types, nin, &probe, types, err);
    free(in_types);
    return rc;
}

int ir_emit(Graph *g, OpKind op, const ValueId *in, int nin, const Attr *attrs, int nattrs,
            ValueId *out, Err *err) {
    const OpInfo *info = op_info(op);
    if (check_inputs(g, info, in, nin, err) || check_attrs(info, attrs, nattrs, err)) return -1;
    Attr *copied = copy_attrs(g, info, attrs, nattrs);
    Type types[4];
    if (ir_infer(g, op, in, nin, copied, nattrs, types, err)) return -1;
    return append_node(g, op, in, nin, copied, nattrs, types, info->nout, out);
}

int ir_emit_typed(Graph *g, OpKind op, const ValueId *in, int nin, const Attr *attrs, int nattrs,
                  const Type *out_types, int nout, ValueId *out, Err *err) {
    const OpInfo *info = op_info(op);
    if (check_inputs(g, info, in, nin, err) || check_attrs(info, attrs, nattrs, err)) return -1;
    if (nout != info->nout)
        return err_set(err, "op '%s' has %d output%s, %d given", info->name, info->nout,
                       info->nout == 1 ? "" : "s", nout);
    Attr *copied = copy_attrs(g, info, attrs, nattrs);
    if (op != OP_INPUT && op != OP_PARAM) {
        Type inferred[4];
        if (ir_infer(g, op, in, nin, copied, nattrs, inferred, err)) return -1;
        for (int i = 0; i < nout; i++)
            if (!type_equal(&inferred[i], &out_types[i])) {
                char want[256], got[256];
                type_print(&inferred[i], want, sizeof want);
                type_print(&out_types[i], got, sizeof got);
                return err_set(err, "op '%s' output %d has type %s, but its shape rule gives %s",
                               info->name, i, got, want);
            }
    }
    return append_node(g, op, in, nin, copied, nattrs, out_types, nout, out);
}

static ValueId named_source(Graph *g, OpKind op, const char *name, Type t, Err *err) {
    int64_t existing;
    if (strmap_get(&g->names, name, &existing) && existing >= 0) {
        const Value *v = &g->values.data[existing];
        if (g->nodes.data[v->node].op != op || !type_equal(&v->type, &t)) {
            char a[256], b[256];
            type_print(&v->type, a, sizeof a);
            type_print(&t, b, sizeof b);
            return err_set(err, "'%s' is declared twice with different types: %s and %s", name, a, b);
        }
        return (ValueId)existing;
    }
    Attr a = attr_str("name", name);
    ValueId v = -1;
    const char *saved_scope = g->cur_scope;
    Chunk saved_chunk = g->cur_chunk;
    unsigned saved_flags = g->cur_flags;
    g->cur_scope = graph_intern(g, "");
    g->cur_chunk = CHUNK_NONE;
    g->cur_flags = 0;
    int id = ir_emit_typed(g, op, NULL, 0, &a, 1, &t, 1, &v, err);
    g->cur_scope = saved_scope;
    g->cur_chunk = saved_chunk;
    g->cur_flags = saved_flags;
    if (id < 0) return -1;
    strmap_put(&g->names, name, v);
    return v;
}

ValueId ir_param(Graph *g, const char *name, Type t, Err *err) { return named_source(g, OP_PARAM, name, t, err); }
ValueId ir_input(Graph *g, const char *name, Type t, Err *err) { return named_source(g, OP_INPUT, name, t, err); }

int ir_add_output(Graph *g, const char *name, ValueId v, Err *err) {
    if (ir_find_output(g, name) >= 0) return err_set(err, "output '%s' is defined twice", name);
    if (v < 0 || (size_t)v >= g->values.len) return err_internal(err, "output '%s' is not a value", name);
    GraphOutput o = {graph_intern(g, name), v};
    strmap_put(&g->output_index, name, (int64_t)g->outputs.len);
    VEC_PUSH(g->outputs, o);
    return 0;
}

static int name_in_use(const StrMap *m, const char *name) {
    int64_t v;
    return strmap_get(m, name, &v) && v >= 0;
}

int ir_rename_source(Graph *g, const char *from, const char *to, Err *err) {
    int64_t v;
    if (!strmap_get(&g->names, from, &v) || v < 0) return err_set(err, "no param or input named '%s'", from);
    if (name_in_use(&g->names, to)) return err_set(err, "'%s' is already a param or input", to);
    Node *n = &g->nodes.data[g->values.data[v].node];
    for (int i = 0; i < n->nattrs; i++)
        if (strcmp(n->attrs[i].key, "name") == 0) n->attrs[i].s = graph_intern(g, to);
    strmap_put(&g->names, from, -1); /* the map has no delete: -1 reads as absent */
    strmap_put(&g->names, to, v);
    return 0;
}

int ir_rename_output(Graph *g, const char *from, const char *to, Err *err) {
    int i = ir_find_output(g, from);
    if (i < 0) return err_set(err, "no output named '%s'", from);
    if (ir_find_output(g, to) >= 0) return err_set(err, "output '%s' is defined twice", to);
    g->outputs.data[i].name = graph_intern(g, to);
    strmap_put(&g->output_index, from, -1);
    strmap_put(&g->output_index, to, i);
    return 0;
}

const Type *ir_type(const Graph *g, ValueId v) { return &g->values.data[v].type; }

int ir_find_output(const Graph *g, const char *name) {
    int64_t i;
    return strmap_get(&g->output_index, name, &i) && i >= 0 ? (int)i : -1;
}

void ir_retain_outputs(Graph *g, int (*keep)(const char *name, void *ctx), void *ctx) {
    size_t kept = 0;
    for (size_t i = 0; i < g->outputs.len; i++) {
        GraphOutput o = g->outputs.data[i];
        int k = keep(o.name, ctx);
        strmap_put(&g->output_index, o.name, k ? (int64_t)kept : -1);
        if (k) g->outputs.data[kept++] = o;
    }
    g->outputs.len = kept;
}

void ir_compact(Graph *g) {
    ValueId *remap = xmalloc(sizeof(ValueId) * (g->values.len ? g->values.len : 1));
    size_t nn = 0, nv = 0;
    for (size_t i = 0; i < g->nodes.len; i++) {
        Node n = g->nodes.data[i];
        if (n.dead) {
            for (int k = 0; k < n.nout; k++) remap[n.out[k]] = -1;
            continue;
        }
        for (int k = 0; k < n.nin; k++) n.in[k] = remap[n.in[k]];
        for (int k = 0; k < n.nout; k++) {
            Value v = g->values.data[n.out[k]];
            v.node = (int32_t)nn;
            remap[n.out[k]] = (ValueId)nv;
            n.out[k] = (ValueId)nv;
            g->values.data[nv++] = v;
        }
        g->nodes.data[nn++] = n;
    }
    g->nodes.len = nn;
    g->values.len = nv;
    for (size_t i = 0; i < g->outputs.len; i++) g->outputs.data[i].value = remap[g->outputs.data[i].value];
    for (size_t i = 0; i < g->names.len; i++)
        if (g->names.vals[i] >= 0) g->names.vals[i] = remap[g->names.vals[i]]; /* -1: removed or renamed */
    free(remap);
}

int type_concrete(const Type *ty, int64_t b, int64_t t, int64_t *shape, Err *err) {
    for (int i = 0; i < ty->rank; i++)
        if (dim_eval(ty->dims[i], b, t, &shape[i], err)) return -1;
    return 0;
}

Tensor *tensor_new(DType dt, int rank, const int64_t *shape) {
    Tensor *t = xcalloc(1, sizeof *t);
    t->dtype = dt;
    t->rank = rank;
    t->numel = 1;
    for (int i = 0; i < rank; i++) {
        t->shape[i] = shape[i];
        t->numel *= shape[i];
    }
    t->data = xcalloc((size_t)(t->numel ? t->numel : 1), dtype_host_size(dt));
    return t;
}

void tensor_free(Tensor *t) {
    if (!t) return;
    free(t->data);
    free(t);
}

float *tensor_f32(const Tensor *t) { return (float *)t->data; }
