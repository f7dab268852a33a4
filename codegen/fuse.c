/* The fusion planner: a table of rules, each a few lines, deciding whether a
 * node may join a producer's group (and in which space) or start its own. */
#include <stdlib.h>
#include <string.h>

#include "fuse.h"

typedef struct Shape {
    int rank;
    int64_t d[IR_MAX_RANK];
} Shape;

typedef struct Planner {
    const Graph *g;
    int64_t b, t;
    Fusion *f;
} Planner;

static int value_shape(const Planner *p, ValueId v, Shape *s) {
    Err ignored = {0};
    const Type *ty = ir_type(p->g, v);
    s->rank = ty->rank;
    return type_concrete(ty, p->b, p->t, s->d, &ignored);
}

static int shape_eq(const Shape *a, const int64_t *d, int rank) {
    if (a->rank != rank) return 0;
    for (int i = 0; i < rank; i++)
        if (a->d[i] != d[i]) return 0;
    return 1;
}

/* A per-row shape of the group: its leading dims, with or without a trailing 1. */
static int is_row_shape(const Shape *s, const FusionGroup *gr) {
    int lead = gr->rank - 1;
    if (s->rank != lead && !(s->rank == gr->rank && s->d[lead] == 1)) return 0;
    for (int i = 0; i < lead; i++)
        if (s->d[i] != gr->full[i]) return 0;
    return 1;
}

static int in_group(const Planner *p, ValueId v, int group) {
    return p->f->group_of[p->g->values.data[v].node] == group;
}

static int all_f32(const Graph *g, const Node *n) {
    for (int k = 0; k < n->nin; k++)
        if (ir_type(g, n->in[k])->dtype != DT_F32) return 0;
    return ir_type(g, n->out[0])->dtype == DT_F32 && ir_type(g, n->out[0])->rank >= 1;
}

static int last_axis(const Graph *g, const Node *n, int64_t dflt) {
    int rank = ir_type(g, n->in[0])->rank;
    int64_t axis = node_int(n, "axis", dflt);
    return axis == -1 || axis == rank - 1;
}

/* ---- the rules ---- */
static int is_elementwise(const Graph *g, const Node *n) {
    (void)g;
    return (n->op >= OP_NEG && n->op <= OP_SILU) || (n->op >= OP_ADD && n->op <= OP_WHERE);
}
static int is_row_reduction(const Graph *g, const Node *n) {
    return (n->op == OP_SUM || n->op == OP_MEAN || n->op == OP_MAX) && last_axis(g, n, 0);
}
static int is_row_softmax(const Graph *g, const Node *n) { return n->op == OP_SOFTMAX && last_axis(g, n, -1); }

/* Elementwise: per element on the group's full shape, or per row on one of its row shapes.
 * Group values it reads must fit that space: full ones only per element, and per-row
 * ones only in the keepdim form a full shape broadcasts against. */
static int fits_elementwise(const Planner *p, const Node *n, int group, const FusionGroup *gr) {
    Shape out, in;
    if (value_shape(p, n->out[0], &out)) return 0;
    int elem = shape_eq(&out, gr->full, gr->rank);
    if (!elem && !is_row_shape(&out, gr)) return 0;
    for (int k = 0; k < n->nin; k++) {
        if (!in_group(p, n->in[k], group)) continue;
        if (value_shape(p, n->in[k], &in)) return 0;
        int ok = elem ? shape_eq(&in, gr->full, gr->rank) || (in.rank == gr->rank && is_row_shape(&in, gr))
                      : shape_eq(&in, out.d, out.rank);
        if (!ok) return 0;
    }
    return 1;
}

/* A reduction or softmax over cols reads a full-shape value. */
static int fits_row_op(const Planner *p, const Node *n, int group, const FusionGroup *gr) {
    (void)group;
    Shape in;
    return value_shape(p, n->in[0], &in) == 0 && shape_eq(&in, gr->full, gr->rank);
}

static ValueId seed_out(const Node *n) { return n->out[0]; }
static ValueId seed_in(const Node *n) { return n->in[0]; }

typedef struct FuseRule {
    const char *name;
    int (*matches)(const Graph *g, const Node *n);
    int (*fits)(const Planner *p, const Node *n, int group, const FusionGroup *gr);
    ValueId (*full_shape_of)(const Node *n); /* which value sets a new group's shape */
} FuseRule;

static const FuseRule rules[] = {
    {"elementwise", is_elementwise, fits_elementwise, seed_out},
    {"row reduction", is_row_reduction, fits_row_op, seed_in},
    {"softmax", is_row_softmax, fits_row_op, seed_out},
};

static const FuseRule *rule_for(const Graph *g, const Node *n) {
    if (!all_f32(g, n)) return NULL;
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
        if (rules[i].matches(g, n)) return &rules[i];
    return NULL;
}

/* ---- the walk ---- */
static int producer_group(const Planner *p, ValueId v) { return p->f->group_of[p->g->values.data[v].node]; }

static int try_join(Planner *p, const FuseRule *r, const Node *n) {
    for (int k = 0; k < n->nin; k++) {
        int gid = producer_group(p, n->in[k]);
        if (gid < 0) continue;
        FusionGroup *gr = &p->f->groups.data[gid];
        if (!gr->sealed && r->fits(p, n, gid, gr)) return gid;
    }
    return -1;
}

static int start_group(Planner *p, const FuseRule *r, const Node *n) {
    Shape s;
    if (value_shape(p, r->full_shape_of(n), &s) || s.rank < 1) return -1;
    FusionGroup gr = {.rank = s.rank};
    memcpy(gr.full, s.d, sizeof gr.full);
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

static void plan_node(Planner *p, int32_t i) {
    const Node *n = &p->g->nodes.data[i];
    const FuseRule *r = rule_for(p->g, n);
    int gid = -1;
    if (r && (gid = try_join(p, r, n)) < 0) gid = start_group(p, r, n);
    seal_inputs(p, n, gid);
    p->f->group_of[i] = gid;
    if (gid >= 0) VEC_PUSH(p->f->groups.data[gid].nodes, i);
}

int fusion_plan(const Graph *g, int64_t b, int64_t t, Fusion *f, Err *err) {
    (void)err;
    memset(f, 0, sizeof *f);
    f->group_of = xmalloc(sizeof(int32_t) * (g->nodes.len ? g->nodes.len : 1));
    Planner p = {g, b, t, f};
    for (size_t i = 0; i < g->nodes.len; i++) plan_node(&p, (int32_t)i);
    return 0;
}

void fusion_free(Fusion *f) {
    for (size_t i = 0; i < f->groups.len; i++) VEC_FREE(f->groups.data[i].nodes);
    VEC_FREE(f->groups);
    free(f->group_of);
    memset(f, 0, sizeof *f);
}

int fusion_value_escapes(const Graph *g, const Fusion *f, ValueId v) {
    int own = f->group_of[g->values.data[v].node];
    for (size_t i = 0; i < g->outputs.len; i++)
        if (g->outputs.data[i].value == v) return 1;
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        if (f->group_of[i] == own && own >= 0) continue;
        for (int k = 0; k < n->nin; k++)
            if (n->in[k] == v) return 1;
    }
    return 0;
}
