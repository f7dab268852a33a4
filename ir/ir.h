/* ir: the graph IR. An SSA dataflow graph of typed values and nodes in
 * topological order. It knows nothing of the DSL, CUDA or LLVM. */
#ifndef V3C_IR_H
#define V3C_IR_H

#include <stdint.h>
#include <stdio.h>

#include "../base/base.h"
#include "../base/strmap.h"
#include "dim.h"

enum { IR_MAX_RANK = 8 };

typedef enum DType {
    DT_F32,
    DT_BF16,
    DT_F16,
    DT_E4M3,
    DT_E5M2,
    DT_I32,
    DT_I64,
    DT_U8,
    DT_COUNT
} DType;

const char *dtype_name(DType t);           /* "f32", "bf16", ... */
int dtype_parse(const char *s, DType *out); /* 0 ok, -1 unknown */
int dtype_is_float(DType t);                /* f32 bf16 f16 e4m3 e5m2 */
int dtype_is_int(DType t);                  /* i32 i64 u8 */

typedef struct Type {
    DType dtype;
    int rank;
    Dim dims[IR_MAX_RANK];
} Type;

int type_equal(const Type *a, const Type *b);
/* "f32[B,T,64]"; returns the text length. */
int type_print(const Type *t, char *out, int n);

typedef enum Chunk { CHUNK_NONE, CHUNK_ATTENTION, CHUNK_DISPATCH, CHUNK_MLP, CHUNK_COMBINE, CHUNK_COUNT } Chunk;
const char *chunk_name(Chunk c); /* "", "attention", "dispatch", "mlp", "combine" */
int chunk_parse(const char *s, Chunk *out);

typedef enum OpKind {
#define OP(e, name, min_in, max_in, nout) OP_##e,
#include "ops.def"
#undef OP
    OP_COUNT
} OpKind;

typedef enum AttrKind { ATTR_INT, ATTR_FLOAT, ATTR_STR, ATTR_DIMS, ATTR_DTYPE } AttrKind;

typedef struct Attr {
    const char *key;
    AttrKind kind;
    int64_t i;      /* ATTR_INT */
    double f;       /* ATTR_FLOAT */
    const char *s;  /* ATTR_STR */
    int ndims;      /* ATTR_DIMS */
    Dim *dims;      /* ATTR_DIMS */
    DType dtype;    /* ATTR_DTYPE */
} Attr;

Attr attr_int(const char *key, int64_t v);
Attr attr_float(const char *key, double v);
Attr attr_str(const char *key, const char *s);
Attr attr_dims(const char *key, int n, Dim *dims);
Attr attr_dtype(const char *key, DType t);

typedef int32_t ValueId;

/* Node flags: facts passes attach to nodes, printed in the text form as !name. */
typedef enum NodeFlag {
    NODE_RECOMPUTE = 1, /* cheap to recompute: backward re-emits it instead of keeping its output */
    NODE_BACKWARD = 2,  /* emitted by autodiff */
    NODE_WGRAD = 4,     /* part of a weight gradient (DualPipe's W), not of an input gradient */
    NODE_FLAG_COUNT = 3
} NodeFlag;
const char *node_flag_name(int bit_index);          /* "recompute", "backward", "wgrad" */
int node_flag_parse(const char *s, unsigned *flag); /* 0 ok, -1 unknown */

typedef struct Value {
    Type type;
    int32_t node;  /* producing node */
    int32_t index; /* which output of it */
} Value;

typedef struct Node {
    OpKind op;
    int nin, nout;
    ValueId *in, *out;
    int nattrs;
    Attr *attrs;       /* sorted by key */
    const char *scope; /* "layers.3.self_attn", "" for none; owned by the graph */
    Chunk chunk;
    unsigned flags;    /* NodeFlag bits */
    int32_t group;     /* fusion group recorded by the fuse pass: 0 none, N >= 1 runs in kernel N (text: ^N) */
    int dead;          /* set by passes; ir_compact drops dead nodes */
} Node;

/* Attribute lookup on a node; the *_or forms return the default when absent. */
const Attr *node_attr(const Node *n, const char *key);
int64_t node_int(const Node *n, const char *key, int64_t dflt);
double node_float(const Node *n, const char *key, double dflt);
const char *node_str(const Node *n, const char *key, const char *dflt);

typedef struct GraphOutput {
    const char *name;
    ValueId value;
} GraphOutput;

typedef struct Graph {
    Arena arena; /* nodes' arrays, attributes and strings */
    VEC(Node) nodes;
    VEC(Value) values;
    VEC(GraphOutput) outputs;
    StrMap names;    /* param/input name -> value, to share weights referenced twice */
    StrMap strings;  /* interned strings (scopes, attribute keys and texts) */
    StrMap output_index; /* output name -> position in outputs */
    /* Builder state: new nodes get this scope and chunk. */
    const char *cur_scope;
    Chunk cur_chunk;
    unsigned cur_flags;
} Graph;

Graph *graph_new(void);
void graph_free(Graph *g);
const char *graph_intern(Graph *g, const char *s);

/* Builders. Each infers the output types with the op's shape rule and appends
 * one node; on a shape or attribute error they return -1 with err set. */
int ir_emit(Graph *g, OpKind op, const ValueId *in, int nin, const Attr *attrs, int nattrs,
            ValueId *out, Err *err);
/* The same weight/input name twice yields the same value; a different type is an error. */
ValueId ir_param(Graph *g, const char *name, Type t, Err *err);
ValueId ir_input(Graph *g, const char *name, Type t, Err *err);
/* Appends a node whose output types are given (the text reader uses this); it
 * still checks them against the shape rule. */
int ir_emit_typed(Graph *g, OpKind op, const ValueId *in, int nin, const Attr *attrs, int nattrs,
                  const Type *out_types, int nout, ValueId *out, Err *err);
int ir_add_output(Graph *g, const char *name, ValueId v, Err *err);
/* The output types the op's shape rule gives for these inputs and attributes. */
int ir_infer(const Graph *g, OpKind op, const ValueId *in, int nin, const Attr *attrs, int nattrs, Type *out,
             Err *err);
const Type *ir_type(const Graph *g, ValueId v);
/* Position of the output named name, or -1. */
int ir_find_output(const Graph *g, const char *name);
/* Renames a param or input (its node's "name" and the name lookup) and an
 * output. Errors: `from` absent, `to` already in use. For handing a graph
 * planned for one rank to another that holds other weights of the same shapes
 * (an EP rank's experts: tools/bundle.c). */
int ir_rename_source(Graph *g, const char *from, const char *to, Err *err);
int ir_rename_output(Graph *g, const char *from, const char *to, Err *err);
/* Keeps only the outputs for which keep(name, ctx) is nonzero (in order). */
void ir_retain_outputs(Graph *g, int (*keep)(const char *name, void *ctx), void *ctx);

/* Drops nodes marked dead (and values only they produced), renumbering values. */
void ir_compact(Graph *g);

/* Interpreter-side tensor: concrete shape, host memory. Float types (f32, bf16,
 * f16) are held as float (values rounded to their dtype), i32 as int32_t, i64
 * as int64_t, u8/e4m3/e5m2 as their raw bytes. */
typedef struct Tensor {
    DType dtype;
    int rank;
    int64_t shape[IR_MAX_RANK];
    int64_t numel;
    void *data;
} Tensor;

size_t dtype_host_size(DType t); /* bytes per element as held in a Tensor */
size_t real_size(void);          /* sizeof the interpreter's float storage (ir/ops: float, or double in v3c_ir64) */
Tensor *tensor_new(DType dt, int rank, const int64_t *shape);
void tensor_free(Tensor *t);
float *tensor_f32(const Tensor *t);
/* Concrete shape of a type at B, T. */
int type_concrete(const Type *ty, int64_t b, int64_t t, int64_t *shape, Err *err);

/* The op table: one row per op (name, arity, attributes, shape rule, interpreter, doc). */
typedef struct AttrSpec {
    const char *key;
    AttrKind kind;
    int required;
} AttrSpec;

typedef int (*InferFn)(const Type *in, int nin, const Node *n, Type *out, Err *err);
/* Vector-Jacobian product: given the gradients of n's outputs (gout[k], -1 when
 * output k has none), emits nodes computing the gradients of its inputs into
 * gin[i] (-1 when input i gets none). See ir/vjp.h. */
struct VjpCtx;
typedef int (*VjpFn)(struct VjpCtx *ctx, const Node *n, const ValueId *gout, ValueId *gin, Err *err);
typedef int (*InterpFn)(const Tensor *const *in, int nin, const Node *n, Tensor *const *out, Err *err);

typedef struct OpInfo {
    const char *name;
    int min_in, max_in, nout;
    const AttrSpec *attrs; /* terminated by {0} */
    InferFn infer;
    InterpFn interp;
    VjpFn vjp;       /* NULL: not differentiable (integer results, gradient ops) */
    const char *doc; /* one line */
} OpInfo;

const OpInfo *op_info(OpKind op);
int op_lookup(const char *name, OpKind *out);

#endif
