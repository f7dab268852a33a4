/* Fusion groups on the symbolic graph: the rule table and the walk (fusion.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fusion.h"

/* ---- shapes, compared as polynomials in B and T ---- */
static int same_dims(const Type *a, const Type *b) {
    if (a->rank != b->rank) return 0;
    for (int i = 0; i < a->rank; i++)
        if (!dim_equal(a->dims[i], b->dims[i])) return 0;
    return 1;
}

static int is_one(Dim d) { return dim_is_const(d) && dim_const_value(d) == 1; }

/* A per-row shape of the group: its leading dims, with or without a trailing 1. */
static int is_row_shape(const Type *s, const IrFusionGroup *gr) {
    int lead = gr->full.rank - 1;
    if (s->rank != lead && !(s->rank == gr->full.rank && is_one(s->dims[lead]))) return 0;
    for (int i = 0; i < lead; i++)
        if (!dim_equal(s->dims[i], gr->full.dims[i])) return 0;
    return 1;
}

/* ---- the rules: a pattern (ops, f32 operands, an optional condition) and how a node sits in a group ---- */
typedef struct Planner {
    const Graph *g;
    IrFusion *f;
} Planner;

static int in_group(const Planner *p, ValueId v, int group) { return p->f->group_of[p->g->values.data[v].node] == group; }

/* Elementwise: per element on the group's full shape, or per row on one of its row shapes.
 * Group values it reads must fit that space: full ones only per element, and per-row
 * ones only in the keepdim form a full shape broadcasts against. */
static int fits_elementwise(const Planner *p, const Node *n, int group) {
    const IrFusionGroup *gr = &p->f->groups.data[group];
    const Type *out = ir_type(p->g, n->out[0]);
    int elem = same_dims(out, &gr->full);
    if (!elem && !is_row_shape(out, gr)) return 0;
    for (int k = 0; k < n->nin; k++) {
        if (!in_group(p, n->in[k], group)) continue;
        const Type *in = ir_type(p->g, n->in[k]);
        int ok = elem ? same_dims(in, &gr->full) || (in->rank == gr->full.rank && is_row_shape(in, gr))
                      : same_dims(in, out);
        if (!ok) return 0;
    }
    return 1;
}

/* A reduction or softmax over cols reads a full-shape value. */
static int fits_row_op(const Planner *p, const Node *n, int group) {
    return same_dims(ir_type(p->g, n->in[0]), &p->f->groups.data[group].full);
}

static int on_last_axis(const Graph *g, const Node *n, int64_t dflt) {
    int rank = ir_type(g, n->in[0])->rank;
    int64_t axis = node_int(n, "axis", dflt);
    return axis == -1 || axis == rank - 1;
}
static int reduces_last_axis(const Graph *g, const Node *n) { return on_last_axis(g, n, 0); }

/* sum_to onto the input's shape with the last dim 1 (the backward of a per-row broadcast) sums each row. */
static int sums_rows(const Graph *g, const Node *n) {
    const Type *in = ir_type(g, n->in[0]), *out = ir_type(g, n->out[0]);
    if (in->rank != out->rank || !is_one(out->dims[out->rank - 1])) return 0;
    for (int i = 0; i + 1 < in->rank; i++)
        if (!dim_equal(in->dims[i], out->dims[i])) return 0;
    return 1;
}
static int softmax_last_axis(const Graph *g, const Node *n) { return on_last_axis(g, n, -1); }

enum { RULE_MAX_OPS = 17 };
typedef enum Seed { SEED_OUTPUT, SEED_INPUT } Seed; /* which value sets a new group's shape */

typedef struct FuseRule {
    const char *name;
    OpKind ops[RULE_MAX_OPS]; /* the pattern's ops; the unused tail is zero, OP_INPUT, which no rule fuses */
    int (*when)(const Graph *g, const Node *n); /* NULL: always */
    int (*fits)(const Planner *p, const Node *n, int group);
    Seed seed;
} FuseRule;

static const FuseRule rules[] = {
    {"elementwise",
     {OP_NEG, OP_EXP, OP_LOG, OP_SQRT, OP_RSQRT, OP_RECIP, OP_ABS, OP_SIGMOID, OP_SILU, OP_ADD, OP_SUB, OP_MUL, OP_DIV,
      OP_MAXIMUM, OP_MINIMUM, OP_WHERE, OP_CAST},
     NULL, fits_elementwise, SEED_OUTPUT},
    {"row reduction", {OP_SUM, OP_MEAN, OP_MAX}, reduces_last_axis, fits_row_op, SEED_INPUT},
    {"softmax", {OP_SOFTMAX}, softmax_last_axis, fits_row_op, SEED_OUTPUT},
    {"row sum_to", {OP_SUM_TO}, sums_rows, fits_row_op, SEED_INPUT},
};
enum { RULE_COUNT = sizeof rules / sizeof rules[0] };

int ir_fusion_rule_count(void) { return RULE_COUNT; }
const char *ir_fusion_rule_name(int i) { return i >= 0 && i < RULE_COUNT ? rules[i].name : NULL; }

/* Kernels hold values as float and compute in double, rounding to float after each op: so f32
 * throughout, and casts between f32 and bf16 (the bf16 pass's), whose bf16 side is a float on
 * bf16's grid. Other bf16 arithmetic would need a bf16 rounding after every op. */
static int fusible_dtypes(const Graph *g, const Node *n) {
    DType in = ir_type(g, n->in[0])->dtype, out = ir_type(g, n->out[0])->dtype;
    if (n->op == OP_CAST) return (in == DT_F32 || in == DT_BF16) && (out == DT_F32 || out == DT_BF16);
    for (int k = 0; k < n->nin; k++)
        if (ir_type(g, n->in[k])->dtype != DT_F32) return 0;
    return out == DT_F32;
}

static int fusible_types(const Graph *g, const Node *n) {
    return n->nin >= 1 && n->nout == 1 && fusible_dtypes(g, n) && ir_type(g, n->out[0])->rank >= 1;
}

static int pattern_matches(const FuseRule *r, const Graph *g, const Node *n) {
    for (int i = 0; i < RULE_MAX_OPS && r->ops[i] != OP_INPUT; i++)
        if (r->ops[i] == n->op) return !r->when || r->when(g, n);
    return 0;
}

static const FuseRule *rule_for(const Graph *g, const Node *n) {
    if (!fusible_types(g, n)) return NULL;
    for (int i = 0; i < RULE_COUNT; i++)
        if (pattern_matches(&rules[i], g, n)) return &rules[i];
    return NULL;
}

/* ---- the walk ---- */
static int producer_group(const Planner *p, ValueId v) { return p->f->group_of[p->g->values.data[v].node]; }

static int try_join(const Planner *p, const FuseRule *r, const Node *n) {
    for (int k = 0; k < n->nin; k++) {
        int gid = producer_group(p, n->in[k]);
        if (gid >= 0 && !p->f->groups.data[gid].sealed && r->fits(p, n, gid)) return gid;
    }
    return -1;
}

static int start_group(Planner *p, const FuseRule *r, const Node *n) {
    const Type *full = ir_type(p->g, r->seed == SEED_OUTPUT ? n->out[0] : n->in[0]);
    if (full->rank < 1) return -1;
    IrFusionGroup gr = {.full = *full, .rule = r->name};
    VEC_PUSH(p->f->groups, gr);
    return (int)p->f->groups.len - 1;
}

/* Any group n reads from, other than its own, is now read from outside: seal it. */
static void seal_inputs(Planner *p, const Node *n, int own) {
    for (int k = 0; k < n->nin; k++) {
        int gid = producer_group(p, n->in[k]);
        if (gid >= 0 && gid != own) p->f->groups.data[gid].sealed = 1;
    }
}

static void place(Planner *p, int32_t i, int gid) {
    seal_inputs(p, &p->g->nodes.data[i], gid);
    p->f->group_of[i] = gid;
    if (gid >= 0) VEC_PUSH(p->f->groups.data[gid].nodes, i);
}

static void fusion_init(const Graph *g, IrFusion *f) {
    memset(f, 0, sizeof *f);
    f->group_of = xmalloc(sizeof(int32_t) * (g->nodes.len ? g->nodes.len : 1));
    for (size_t i = 0; i < g->nodes.len; i++) f->group_of[i] = -1;
}

void ir_fusion_plan(const Graph *g, IrFusion *f) {
    fusion_init(g, f);
    Planner p = {g, f};
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        const FuseRule *r = rule_for(g, n);
        int gid = -1;
        if (r && (gid = try_join(&p, r, n)) < 0) gid = start_group(&p, r, n);
        place(&p, (int32_t)i, gid);
    }
}

/* ---- checking a recorded grouping ---- */
static int recorded_error(const Graph *g, int32_t i, Err *err, const char *why) {
    const Node *n = &g->nodes.data[i];
    return err_set(err, "node %d (%s%s%s) cannot be in fusion group %d: %s", (int)i, op_info(n->op)->name,
                   n->scope[0] ? " in " : "", n->scope, (int)n->group, why);
}

/* Sets *gid to the planner's group for node i's recorded group: joined (checked) or started. */
static int recorded_place(Planner *p, StrMap *index, int32_t i, int *gid, Err *err) {
    const Node *n = &p->g->nodes.data[i];
    const FuseRule *r = rule_for(p->g, n);
    if (!r) return recorded_error(p->g, i, err, "no fusion rule takes this op with these types");
    char key[16];
    snprintf(key, sizeof key, "%d", (int)n->group);
    int64_t known;
    if (!strmap_get(index, key, &known)) {
        if ((*gid = start_group(p, r, n)) < 0) return recorded_error(p->g, i, err, "it has no [rows, cols] shape");
        strmap_put(index, key, *gid);
        return 0;
    }
    *gid = (int)known;
    if (p->f->groups.data[*gid].sealed)
        return recorded_error(p->g, i, err, "an earlier node outside the group already reads the group");
    if (!r->fits(p, n, *gid)) return recorded_error(p->g, i, err, "its shape does not fit the group's kernel");
    return 0;
}

int ir_fusion_recorded(const Graph *g, IrFusion *f, Err *err) {
    fusion_init(g, f);
    Planner p = {g, f};
    StrMap index; /* recorded group number -> planner group */
    strmap_init(&index);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < g->nodes.len; i++) {
        int gid = -1;
        if (g->nodes.data[i].group > 0) rc = recorded_place(&p, &index, (int32_t)i, &gid, err);
        if (rc == 0) place(&p, (int32_t)i, gid);
    }
    strmap_free(&index);
    if (rc) ir_fusion_free(f);
    return rc;
}

int ir_fusion_is_recorded(const Graph *g) {
    for (size_t i = 0; i < g->nodes.len; i++)
        if (g->nodes.data[i].group > 0) return 1;
    return 0;
}

void ir_fusion_free(IrFusion *f) {
    for (size_t i = 0; i < f->groups.len; i++) VEC_FREE(f->groups.data[i].nodes);
    VEC_FREE(f->groups);
    free(f->group_of);
    memset(f, 0, sizeof *f);
}
