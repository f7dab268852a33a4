/* The IR text form (docs/ir.md): printer, reader, Graphviz DOT and per-node cost.
 * The printer and the reader are exact inverses on printed text; both run in
 * time linear in the graph (the full model has a few hundred thousand nodes). */
#include "text.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ printer */

/* Printed value numbers: 0.. in order of definition, whatever the ids inside. */
static int32_t *number_values(const Graph *g) {
    int32_t *num = xmalloc(sizeof(int32_t) * (g->values.len ? g->values.len : 1));
    for (size_t v = 0; v < g->values.len; v++) num[v] = -1;
    int32_t next = 0;
    for (size_t i = 0; i < g->nodes.len; i++)
        for (int k = 0; k < g->nodes.data[i].nout; k++) {
            ValueId v = g->nodes.data[i].out[k];
            if (v >= 0 && (size_t)v < g->values.len) num[v] = next++;
        }
    return num;
}

static int value_in_range(const Graph *g, ValueId v) { return v >= 0 && (size_t)v < g->values.len; }

/* A value the numbering does not know (only in a broken graph) prints as %?ID,
 * which the reader rejects rather than silently misreading. */
static void print_value_ref(Buf *out, const int32_t *num, const Graph *g, ValueId v) {
    if (value_in_range(g, v) && num[v] >= 0)
        buf_printf(out, "%%%d", num[v]);
    else
        buf_printf(out, "%%?%d", v);
}

static void print_string(Buf *out, const char *s) {
    buf_putc(out, '"');
    for (; *s; s++) {
        switch (*s) {
        case '"': buf_puts(out, "\\\""); break;
        case '\\': buf_puts(out, "\\\\"); break;
        case '\n': buf_puts(out, "\\n"); break;
        case '\t': buf_puts(out, "\\t"); break;
        default: buf_putc(out, *s);
        }
    }
    buf_putc(out, '"');
}

static void print_dim(Buf *out, Dim d) {
    char s[192];
    dim_print(d, s, sizeof s);
    buf_puts(out, s);
}

static void print_dims(Buf *out, const Dim *dims, int n) {
    buf_putc(out, '[');
    for (int i = 0; i < n; i++) {
        if (i) buf_putc(out, ',');
        print_dim(out, dims[i]);
    }
    buf_putc(out, ']');
}

static void print_type(Buf *out, const Type *t) {
    buf_puts(out, dtype_name(t->dtype));
    print_dims(out, t->dims, t->rank);
}

/* The shortest text that reads back to v, marked as a float by a '.', 'e', inf or nan. */
static void print_float(Buf *out, double v) {
    char s[64];
    format_double(s, sizeof s, v);
    buf_puts(out, s);
    if (!strpbrk(s, ".e") && !strstr(s, "inf") && !strstr(s, "nan")) buf_puts(out, ".0");
}

static void print_attr(Buf *out, const Attr *a) {
    buf_puts(out, a->key);
    buf_putc(out, '=');
    switch (a->kind) {
    case ATTR_INT: buf_printf(out, "%lld", (long long)a->i); break;
    case ATTR_FLOAT: print_float(out, a->f); break;
    case ATTR_STR: print_string(out, a->s); break;
    case ATTR_DIMS: print_dims(out, a->dims, a->ndims); break;
    case ATTR_DTYPE: buf_puts(out, dtype_name(a->dtype)); break;
    }
}

static void print_annotation(Buf *out, const Graph *g, const Node *n, const PrintOptions *opt) {
    double flops, bytes;
    if (ir_node_cost(g, n, opt->batch, opt->seq, &flops, &bytes) == 0)
        buf_printf(out, "   ; flops=%.0f bytes=%.0f", flops, bytes);
    else
        buf_puts(out, "   ; cost unknown at these B, T");
}

static void print_node(Buf *out, const Graph *g, const Node *n, const int32_t *num, const PrintOptions *opt) {
    for (int k = 0; k < n->nout; k++) {
        if (k) buf_puts(out, ", ");
        print_value_ref(out, num, g, n->out[k]);
    }
    buf_puts(out, " = ");
    buf_puts(out, op_info(n->op)->name);
    for (int k = 0; k < n->nin; k++) {
        buf_puts(out, k ? ", " : " ");
        print_value_ref(out, num, g, n->in[k]);
    }
    for (int k = 0; k < n->nattrs; k++) {
        buf_puts(out, k ? ", " : " {");
        print_attr(out, &n->attrs[k]);
    }
    if (n->nattrs) buf_putc(out, '}');
    buf_puts(out, " : ");
    for (int k = 0; k < n->nout; k++) {
        if (k) buf_puts(out, ", ");
        if (value_in_range(g, n->out[k]))
            print_type(out, &g->values.data[n->out[k]].type);
        else
            buf_puts(out, "?[]");
    }
    if (n->scope && n->scope[0]) {
        buf_puts(out, " @");
        print_string(out, n->scope);
    }
    if (n->chunk != CHUNK_NONE) buf_printf(out, " #%s", chunk_name(n->chunk));
    for (int b = 0; b < NODE_FLAG_COUNT; b++)
        if (n->flags & (1u << b)) buf_printf(out, " !%s", node_flag_name(b));
    if (n->group > 0) buf_printf(out, " ^%d", (int)n->group);
    if (opt && opt->annotate) print_annotation(out, g, n, opt);
    buf_putc(out, '\n');
}

void ir_print(const Graph *g, const PrintOptions *opt, Buf *out) {
    int32_t *num = number_values(g);
    buf_puts(out, "v3ir 1\n");
    for (size_t i = 0; i < g->nodes.len; i++) print_node(out, g, &g->nodes.data[i], num, opt);
    for (size_t i = 0; i < g->outputs.len; i++) {
        buf_puts(out, "output ");
        print_string(out, g->outputs.data[i].name);
        buf_puts(out, " = ");
        print_value_ref(out, num, g, g->outputs.data[i].value);
        buf_putc(out, '\n');
    }
    free(num);
}

/* ------------------------------------------------------------------- reader */

typedef struct Reader {
    const char *what;
    const char *p;          /* cursor */
    const char *line_start; /* for columns */
    int line;
    Graph *g;
    StrMap values; /* value number as written ("17") -> ValueId */
    Buf sbuf;      /* the string being read */
    Err *err;
    /* one node line's pieces, reused from line to line */
    VEC(ValueId) inputs;
    VEC(Attr) attrs;
    VEC(size_t) attr_dim_off; /* ATTR_DIMS: offset into dims, fixed up once all are read */
    VEC(Dim) dims;
    VEC(Type) types;
    VEC(ValueId) outs;
    VEC(char *) result_names;
    int32_t group; /* the line's ^N, 0 when absent */
} Reader;

static int col_of(const Reader *r, const char *at) { return (int)(at - r->line_start) + 1; }

static int rd_error(Reader *r, const char *at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int rd_error(Reader *r, const char *at, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return err_set(r->err, "%s:%d:%d: error: %s", r->what, r->line, col_of(r, at), msg);
}

/* Puts "WHAT:LINE:COL: error: " in front of a message a lower layer set. */
static int rd_wrap(Reader *r, const char *at) {
    return err_wrap(r->err, "%s:%d:%d: error: ", r->what, r->line, col_of(r, at));
}

/* What the cursor points at, for "expected X, found Y" messages. */
static const char *describe(const char *p, char *buf, size_t n) {
    if (*p == '\n' || *p == 0 || *p == ';') return "end of line";
    if (isprint((unsigned char)*p))
        snprintf(buf, n, "'%c'", *p);
    else
        snprintf(buf, n, "byte 0x%02x", (unsigned char)*p);
    return buf;
}

static int expected(Reader *r, const char *what) {
    char b[32];
    return rd_error(r, r->p, "expected %s, found %s", what, describe(r->p, b, sizeof b));
}

static void skip_ws(Reader *r) {
    while (*r->p == ' ' || *r->p == '\t' || *r->p == '\r') r->p++;
}

static int at_line_end(const Reader *r) { return *r->p == '\n' || *r->p == 0 || *r->p == ';'; }

static int accept(Reader *r, char c) {
    skip_ws(r);
    if (*r->p != c) return 0;
    r->p++;
    return 1;
}

static int expect(Reader *r, char c) {
    if (accept(r, c)) return 0;
    char what[8];
    snprintf(what, sizeof what, "'%c'", c);
    return expected(r, what);
}

static int is_ident_start(char c) { return isalpha((unsigned char)c) || c == '_'; }
static int is_ident_char(char c) { return isalnum((unsigned char)c) || c == '_'; }

/* Reads [A-Za-z_][A-Za-z0-9_]* into out (NUL-terminated). */
static int read_ident(Reader *r, char *out, size_t n, const char *what) {
    skip_ws(r);
    if (!is_ident_start(*r->p)) return expected(r, what);
    const char *start = r->p;
    while (is_ident_char(*r->p)) r->p++;
    size_t len = (size_t)(r->p - start);
    if (len >= n) return rd_error(r, start, "name too long (%zu characters)", len);
    memcpy(out, start, len);
    out[len] = 0;
    return 0;
}

static int read_escape(Reader *r) {
    static const char from[] = "\"\\nt", to[] = "\"\\\n\t";
    const char *hit = *r->p ? strchr(from, *r->p) : NULL;
    if (!hit) {
        char b[32];
        return rd_error(r, r->p - 1, "unknown escape '\\' followed by %s in string", describe(r->p, b, sizeof b));
    }
    buf_putc(&r->sbuf, to[hit - from]);
    r->p++;
    return 0;
}

/* Reads a quoted string into r->sbuf (NUL-terminated, possibly empty). */
static int read_string(Reader *r) {
    skip_ws(r);
    if (*r->p != '"') return expected(r, "a string");
    const char *start = r->p++;
    r->sbuf.len = 0;
    buf_puts(&r->sbuf, "");
    while (*r->p != '"') {
        if (*r->p == '\n' || *r->p == 0) return rd_error(r, start, "unterminated string");
        if (*r->p == '\\') {
            r->p++;
            if (read_escape(r)) return -1;
        } else {
            buf_putc(&r->sbuf, *r->p++);
        }
    }
    r->p++;
    return 0;
}

static int read_dim(Reader *r, Dim *d) {
    skip_ws(r);
    const char *start = r->p;
    int k = dim_parse(r->p, d, r->err);
    if (k < 0) return rd_wrap(r, start);
    r->p += k;
    return 0;
}

/* "[" [dim {"," dim}] "]" appended to r->dims; returns the count or -1. */
static int read_dim_list(Reader *r, int max) {
    if (expect(r, '[')) return -1;
    if (accept(r, ']')) return 0;
    int n = 0;
    do {
        Dim d;
        if (n == max) return rd_error(r, r->p, "more than %d dims", max);
        if (read_dim(r, &d)) return -1;
        VEC_PUSH(r->dims, d);
        n++;
    } while (accept(r, ','));
    if (expect(r, ']')) return -1;
    return n;
}

static int read_dtype(Reader *r, DType *dt) {
    skip_ws(r);
    const char *start = r->p;
    char name[64];
    if (read_ident(r, name, sizeof name, "a dtype")) return -1;
    if (dtype_parse(name, dt)) return rd_error(r, start, "unknown dtype '%s'", name);
    return 0;
}

static int read_type(Reader *r, Type *t) {
    memset(t, 0, sizeof *t);
    if (read_dtype(r, &t->dtype)) return -1;
    size_t base = r->dims.len;
    int n = read_dim_list(r, IR_MAX_RANK);
    if (n < 0) return -1;
    t->rank = n;
    if (n) memcpy(t->dims, r->dims.data + base, sizeof(Dim) * (size_t)n); /* a scalar's list may be unallocated */
    r->dims.len = base;
    return 0;
}

/* "%" digits, as written, into key (the name the text gives the value). */
static int read_value_name(Reader *r, char *key, size_t n) {
    skip_ws(r);
    if (*r->p != '%') return expected(r, "a value ('%N')");
    const char *start = r->p++;
    size_t len = 0;
    while (isdigit((unsigned char)*r->p)) {
        if (len + 1 >= n) return rd_error(r, start, "value number too long");
        key[len++] = *r->p++;
    }
    if (!len) return rd_error(r, start, "expected digits after '%%'");
    key[len] = 0;
    return 0;
}

static int read_value_ref(Reader *r, ValueId *v) {
    skip_ws(r);
    const char *start = r->p;
    char key[24];
    int64_t id;
    if (read_value_name(r, key, sizeof key)) return -1;
    if (!strmap_get(&r->values, key, &id)) return rd_error(r, start, "undefined value %%%s", key);
    *v = (ValueId)id;
    return 0;
}

/* A number: INT unless it has '.', 'e', inf or nan (docs/ir.md). */
static int read_number(Reader *r, Attr *a) {
    const char *start = r->p, *q = r->p;
    if (*q == '-' || *q == '+') q++;
    int is_float = 0;
    if (strncmp(q, "inf", 3) == 0 || strncmp(q, "nan", 3) == 0) {
        q += 3;
        is_float = 1;
    } else {
        while (isdigit((unsigned char)*q) || *q == '.' || *q == 'e' || *q == 'E' ||
               ((*q == '-' || *q == '+') && (q[-1] == 'e' || q[-1] == 'E'))) {
            is_float |= *q == '.' || *q == 'e' || *q == 'E';
            q++;
        }
    }
    if (is_ident_char(*q)) return rd_error(r, start, "malformed number");
    char text[64];
    if ((size_t)(q - start) >= sizeof text) return rd_error(r, start, "number too long");
    memcpy(text, start, (size_t)(q - start));
    text[q - start] = 0;
    char *end;
    errno = 0;
    if (is_float) {
        a->kind = ATTR_FLOAT;
        a->f = strtod(text, &end);
    } else {
        a->kind = ATTR_INT;
        a->i = strtoll(text, &end, 10);
    }
    if (end == text || *end) return rd_error(r, start, "malformed number '%s'", text);
    if (errno == ERANGE && !is_float) return rd_error(r, start, "integer %s out of range", text);
    r->p = q;
    return 0;
}

static int read_attr_value(Reader *r, Attr *a, size_t *dim_off) {
    skip_ws(r);
    char c = *r->p;
    if (c == '"') {
        if (read_string(r)) return -1;
        a->kind = ATTR_STR;
        a->s = graph_intern(r->g, r->sbuf.data);
        return 0;
    }
    if (c == '[') {
        *dim_off = r->dims.len;
        int n = read_dim_list(r, 1 << 20);
        if (n < 0) return -1;
        a->kind = ATTR_DIMS;
        a->ndims = n;
        return 0;
    }
    if (c == '-' || c == '+' || isdigit((unsigned char)c) || strncmp(r->p, "inf", 3) == 0 ||
        strncmp(r->p, "nan", 3) == 0)
        return read_number(r, a);
    if (!is_ident_start(c)) return expected(r, "an attribute value (number, string, [dims] or dtype)");
    a->kind = ATTR_DTYPE;
    return read_dtype(r, &a->dtype);
}

static int read_attrs(Reader *r) {
    if (!accept(r, '{')) return 0;
    do {
        Attr a = {0};
        size_t off = 0;
        char key[64];
        if (read_ident(r, key, sizeof key, "an attribute name")) return -1;
        a.key = graph_intern(r->g, key);
        if (expect(r, '=') || read_attr_value(r, &a, &off)) return -1;
        VEC_PUSH(r->attrs, a);
        VEC_PUSH(r->attr_dim_off, off);
    } while (accept(r, ','));
    return expect(r, '}');
}

/* Dims attributes point into r->dims only once it stops growing (types grow it too). */
static void fix_attr_dims(Reader *r) {
    for (size_t i = 0; i < r->attrs.len; i++)
        if (r->attrs.data[i].kind == ATTR_DIMS) r->attrs.data[i].dims = r->dims.data + r->attr_dim_off.data[i];
}

static int read_types(Reader *r) {
    do {
        Type t;
        if (read_type(r, &t)) return -1;
        VEC_PUSH(r->types, t);
    } while (accept(r, ','));
    return 0;
}

/* "^N": the node's fusion group, 1 <= N < 2^31. */
static int read_group(Reader *r) {
    r->group = 0;
    if (!accept(r, '^')) return 0;
    const char *start = r->p;
    int64_t n = 0;
    while (*r->p >= '0' && *r->p <= '9' && n <= INT32_MAX) n = n * 10 + (*r->p++ - '0');
    if (r->p == start || n < 1 || n > INT32_MAX)
        return rd_error(r, start, "a fusion group must be a number from 1 to %d", (int)INT32_MAX);
    r->group = (int32_t)n;
    return 0;
}

static int read_scope_and_chunk(Reader *r) {
    r->g->cur_scope = graph_intern(r->g, "");
    r->g->cur_chunk = CHUNK_NONE;
    if (accept(r, '@')) {
        if (read_string(r)) return -1;
        r->g->cur_scope = graph_intern(r->g, r->sbuf.data);
    }
    if (accept(r, '#')) {
        const char *start = r->p;
        char name[64];
        if (read_ident(r, name, sizeof name, "a chunk name")) return -1;
        if (chunk_parse(name, &r->g->cur_chunk))
            return rd_error(r, start, "unknown chunk '%s' (attention, dispatch, mlp or combine)", name);
    }
    r->g->cur_flags = 0;
    while (accept(r, '!')) {
        const char *start = r->p;
        char name[64];
        unsigned flag;
        if (read_ident(r, name, sizeof name, "a node flag")) return -1;
        if (node_flag_parse(name, &flag)) return rd_error(r, start, "unknown node flag '%s' (recompute, backward, wgrad)", name);
        r->g->cur_flags |= flag;
    }
    return read_group(r);
}

static void clear_line(Reader *r) {
    for (size_t i = 0; i < r->result_names.len; i++) free(r->result_names.data[i]);
    r->result_names.len = 0;
    r->inputs.len = r->attrs.len = r->attr_dim_off.len = r->dims.len = r->types.len = r->outs.len = 0;
}

static int read_results(Reader *r) {
    do {
        skip_ws(r);
        const char *start = r->p;
        char key[24];
        if (read_value_name(r, key, sizeof key)) return -1;
        if (strmap_get(&r->values, key, NULL)) return rd_error(r, start, "value %%%s is defined twice", key);
        for (size_t i = 0; i < r->result_names.len; i++)
            if (strcmp(r->result_names.data[i], key) == 0)
                return rd_error(r, start, "value %%%s is defined twice", key);
        VEC_PUSH(r->result_names, xstrdup(key));
    } while (accept(r, ','));
    return expect(r, '=');
}

static int read_operands(Reader *r) {
    skip_ws(r);
    if (*r->p != '%') return 0;
    do {
        ValueId v = -1;
        if (read_value_ref(r, &v)) return -1;
        VEC_PUSH(r->inputs, v);
    } while (accept(r, ','));
    return 0;
}

/* input/param: names stay unique, so a second declaration is an error rather
 * than a silent alias (ir_param's sharing is for the builder, not for text). */
static int check_source_name(Reader *r, OpKind op, const char *op_at) {
    if (op != OP_INPUT && op != OP_PARAM) return 0;
    for (size_t i = 0; i < r->attrs.len; i++) {
        const Attr *a = &r->attrs.data[i];
        if (strcmp(a->key, "name") == 0 && a->kind == ATTR_STR && strmap_get(&r->g->names, a->s, NULL))
            return rd_error(r, op_at, "'%s' is declared twice", a->s);
    }
    return 0;
}

static void register_source_name(Reader *r, OpKind op, ValueId v) {
    if (op != OP_INPUT && op != OP_PARAM) return;
    for (size_t i = 0; i < r->attrs.len; i++)
        if (strcmp(r->attrs.data[i].key, "name") == 0 && r->attrs.data[i].kind == ATTR_STR)
            strmap_put(&r->g->names, r->attrs.data[i].s, v);
}

static int emit_line_node(Reader *r, OpKind op, const char *op_at) {
    size_t nres = r->result_names.len;
    if (r->types.len != nres)
        return rd_error(r, op_at, "%zu result%s but %zu type%s", nres, nres == 1 ? "" : "s", r->types.len,
                        r->types.len == 1 ? "" : "s");
    if (check_source_name(r, op, op_at)) return -1;
    fix_attr_dims(r);
    VEC_RESERVE(r->outs, nres);
    if (ir_emit_typed(r->g, op, r->inputs.data, (int)r->inputs.len, r->attrs.data, (int)r->attrs.len,
                      r->types.data, (int)nres, r->outs.data, r->err) < 0)
        return rd_wrap(r, op_at);
    for (size_t i = 0; i < nres; i++) strmap_put(&r->values, r->result_names.data[i], r->outs.data[i]);
    register_source_name(r, op, r->outs.data[0]);
    r->g->nodes.data[r->g->nodes.len - 1].group = r->group;
    return 0;
}

static int read_node_line(Reader *r) {
    clear_line(r);
    if (read_results(r)) return -1;
    skip_ws(r);
    const char *op_at = r->p;
    char name[64];
    OpKind op;
    if (read_ident(r, name, sizeof name, "an op name")) return -1;
    if (op_lookup(name, &op)) return rd_error(r, op_at, "unknown op '%s'", name);
    if (read_operands(r) || read_attrs(r) || expect(r, ':') || read_types(r) || read_scope_and_chunk(r))
        return -1;
    return emit_line_node(r, op, op_at);
}

static int read_output_line(Reader *r) {
    char word[16];
    if (read_ident(r, word, sizeof word, "'output'")) return -1;
    skip_ws(r);
    const char *at = r->p;
    if (read_string(r)) return -1;
    char *name = xstrdup(r->sbuf.data);
    ValueId v = -1;
    int rc = expect(r, '=') || read_value_ref(r, &v) ? -1 : 0;
    if (!rc && ir_add_output(r->g, name, v, r->err)) rc = rd_wrap(r, at);
    free(name);
    return rc;
}

/* After an item: an optional comment, then the end of the line. */
static int finish_line(Reader *r) {
    skip_ws(r);
    if (*r->p == ';')
        while (*r->p && *r->p != '\n') r->p++;
    if (*r->p != '\n' && *r->p != 0) return expected(r, "end of line");
    return 0;
}

static void next_line(Reader *r) {
    while (*r->p && *r->p != '\n') r->p++;
    if (*r->p == '\n') r->p++;
    r->line++;
    r->line_start = r->p;
}

static int line_is_blank(Reader *r) {
    skip_ws(r);
    return at_line_end(r);
}

static int read_header(Reader *r) {
    while (*r->p && line_is_blank(r)) next_line(r);
    char word[16];
    const char *at = r->p;
    if (read_ident(r, word, sizeof word, "the header 'v3ir 1'") || strcmp(word, "v3ir") != 0)
        return rd_error(r, at, "expected the header 'v3ir 1'");
    skip_ws(r);
    Attr version = {0};
    const char *vat = r->p;
    if (!isdigit((unsigned char)*r->p) || read_number(r, &version) || version.kind != ATTR_INT)
        return rd_error(r, vat, "expected the format version after 'v3ir'");
    if (version.i != 1) return rd_error(r, vat, "unsupported format version %lld (this reader knows 1)", (long long)version.i);
    return finish_line(r);
}

static int read_item(Reader *r) {
    skip_ws(r);
    if (*r->p == '%') return read_node_line(r);
    if (strncmp(r->p, "output", 6) == 0 && !is_ident_char(r->p[6])) return read_output_line(r);
    return expected(r, "a node ('%N = op ...') or 'output'");
}

static int read_body(Reader *r) {
    while (*r->p) {
        next_line(r);
        if (line_is_blank(r)) continue;
        if (read_item(r) || finish_line(r)) return -1;
    }
    return 0;
}

static void reader_free(Reader *r) {
    clear_line(r);
    strmap_free(&r->values);
    buf_free(&r->sbuf);
    VEC_FREE(r->inputs);
    VEC_FREE(r->attrs);
    VEC_FREE(r->attr_dim_off);
    VEC_FREE(r->dims);
    VEC_FREE(r->types);
    VEC_FREE(r->outs);
    VEC_FREE(r->result_names);
}

Graph *ir_parse(const char *text, const char *what, Err *err) {
    Reader r = {.what = what ? what : "<ir>", .p = text, .line_start = text, .line = 1, .err = err};
    r.g = graph_new();
    strmap_init(&r.values);
    /* Never hand a NULL array to the builder, even for zero inputs. */
    VEC_RESERVE(r.inputs, 1);
    VEC_RESERVE(r.attrs, 1);
    int rc = read_header(&r);
    if (!rc) rc = read_body(&r);
    reader_free(&r);
    r.g->cur_scope = graph_intern(r.g, "");
    r.g->cur_chunk = CHUNK_NONE;
    if (rc) {
        graph_free(r.g);
        return NULL;
    }
    return r.g;
}

/* ---------------------------------------------------------------------- DOT */

static void dot_escape(Buf *out, const char *s) {
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') buf_putc(out, '\\');
        if (*s == '\n')
            buf_puts(out, "\\n");
        else
            buf_putc(out, *s);
    }
}

static void dot_node(Buf *out, const Graph *g, size_t i, const char *indent) {
    const Node *n = &g->nodes.data[i];
    Buf label = {0};
    buf_puts(&label, op_info(n->op)->name);
    const char *name = node_str(n, "name", NULL);
    if ((n->op == OP_PARAM || n->op == OP_INPUT) && name) buf_printf(&label, " %s", name);
    for (int k = 0; k < n->nout; k++) {
        buf_putc(&label, '\n');
        print_type(&label, &g->values.data[n->out[k]].type);
    }
    if (n->scope && n->scope[0]) buf_printf(&label, "\n@%s", n->scope);
    if (n->chunk != CHUNK_NONE) buf_printf(&label, " #%s", chunk_name(n->chunk));
    if (n->group > 0) buf_printf(&label, " ^%d", (int)n->group);
    buf_printf(out, "%sn%zu [label=\"", indent, i);
    dot_escape(out, label.data);
    buf_puts(out, "\"];\n");
    buf_free(&label);
}

/* The cluster a scope belongs to: its first two dot-separated components
 * ("layers.3.self_attn" -> "layers.3"), so a layer's ops draw together. */
static void cluster_key(const char *scope, Buf *key) {
    key->len = 0;
    buf_puts(key, "");
    const char *dot = strchr(scope, '.');
    if (dot) dot = strchr(dot + 1, '.');
    size_t len = dot ? (size_t)(dot - scope) : strlen(scope);
    for (size_t i = 0; i < len; i++) buf_putc(key, scope[i]);
}

/* Cluster index per node (-1: none) and the cluster names in first-seen order. */
static int32_t *assign_clusters(const Graph *g, StrMap *clusters) {
    int32_t *cid = xmalloc(sizeof(int32_t) * (g->nodes.len ? g->nodes.len : 1));
    Buf key = {0};
    for (size_t i = 0; i < g->nodes.len; i++) {
        const char *scope = g->nodes.data[i].scope ? g->nodes.data[i].scope : "";
        cid[i] = -1;
        if (!scope[0]) continue;
        cluster_key(scope, &key);
        int64_t id;
        if (!strmap_get(clusters, key.data, &id)) {
            id = (int64_t)clusters->len;
            strmap_put(clusters, key.data, id);
        }
        cid[i] = (int32_t)id;
    }
    buf_free(&key);
    return cid;
}

static void dot_clusters(Buf *out, const Graph *g, const int32_t *cid, const StrMap *clusters) {
    /* Counting sort of the nodes by cluster: linear, whatever the count. */
    size_t nc = clusters->len;
    size_t *start = xcalloc(nc + 1, sizeof *start);
    for (size_t i = 0; i < g->nodes.len; i++)
        if (cid[i] >= 0) start[cid[i] + 1]++;
    for (size_t c = 0; c < nc; c++) start[c + 1] += start[c];
    size_t *order = xmalloc(sizeof(size_t) * (start[nc] ? start[nc] : 1));
    size_t *fill = xmalloc(sizeof(size_t) * (nc ? nc : 1));
    memcpy(fill, start, sizeof(size_t) * nc);
    for (size_t i = 0; i < g->nodes.len; i++)
        if (cid[i] >= 0) order[fill[cid[i]]++] = i;
    for (size_t c = 0; c < nc; c++) {
        buf_printf(out, "  subgraph cluster_%zu {\n    label=\"", c);
        dot_escape(out, clusters->keys[c]);
        buf_puts(out, "\";\n");
        for (size_t k = start[c]; k < start[c + 1]; k++) dot_node(out, g, order[k], "    ");
        buf_puts(out, "  }\n");
    }
    free(start);
    free(order);
    free(fill);
}

void ir_print_dot(const Graph *g, Buf *out) {
    StrMap clusters;
    strmap_init(&clusters);
    int32_t *cid = assign_clusters(g, &clusters);
    int32_t *num = number_values(g);
    buf_puts(out, "digraph v3ir {\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n");
    dot_clusters(out, g, cid, &clusters);
    for (size_t i = 0; i < g->nodes.len; i++)
        if (cid[i] < 0) dot_node(out, g, i, "  ");
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        for (int k = 0; k < n->nin; k++) {
            ValueId v = n->in[k];
            if (v < 0 || (size_t)v >= g->values.len) continue;
            buf_printf(out, "  n%d -> n%zu [label=\"%%%d\"];\n", g->values.data[v].node, i, num[v]);
        }
    }
    for (size_t i = 0; i < g->outputs.len; i++) {
        ValueId v = g->outputs.data[i].value;
        if (v < 0 || (size_t)v >= g->values.len) continue;
        buf_printf(out, "  out%zu [shape=ellipse, label=\"", i);
        dot_escape(out, g->outputs.data[i].name);
        buf_printf(out, "\"];\n  n%d -> out%zu [label=\"%%%d\"];\n", g->values.data[v].node, i, num[v]);
    }
    buf_puts(out, "}\n");
    free(num);
    free(cid);
    strmap_free(&clusters);
}

/* --------------------------------------------------------------------- cost */

/* Bytes per element as stored on a device (not as the interpreter holds them). */
static const double storage_bytes[DT_COUNT] = {
    [DT_F32] = 4, [DT_BF16] = 2, [DT_F16] = 2, [DT_E4M3] = 1,
    [DT_E5M2] = 1, [DT_I32] = 4, [DT_I64] = 8, [DT_U8] = 1,
};

typedef struct CostCtx {
    const Graph *g;
    const Node *n;
    int64_t b, t;
} CostCtx;

static const Type *in_type(const CostCtx *c, int k) { return &c->g->values.data[c->n->in[k]].type; }
static const Type *out_type(const CostCtx *c, int k) { return &c->g->values.data[c->n->out[k]].type; }

static int dim_at(const CostCtx *c, Dim d, double *out) {
    int64_t v;
    Err e = {0};
    if (dim_eval(d, c->b, c->t, &v, &e)) return -1;
    *out = (double)v;
    return 0;
}

static int numel(const CostCtx *c, const Type *t, double *out) {
    double n = 1, d;
    for (int i = 0; i < t->rank; i++) {
        if (dim_at(c, t->dims[i], &d)) return -1;
        n *= d;
    }
    *out = n;
    return 0;
}

static int last_dim(const CostCtx *c, const Type *t, double *out) {
    if (t->rank == 0) return -1;
    return dim_at(c, t->dims[t->rank - 1], out);
}

/* 2*M*N*K: each output element is a K-long dot product (linear, grouped_linear). */
static int matmul_flops(const CostCtx *c, double *flops) {
    double out_n, k;
    if (numel(c, out_type(c, 0), &out_n) || last_dim(c, in_type(c, 0), &k)) return -1;
    *flops = 2 * out_n * k;
    return 0;
}

/* Each output element sums K weighted rows. */
static int combine_flops(const CostCtx *c, double *flops) {
    double out_n, k;
    if (numel(c, out_type(c, 0), &out_n) || last_dim(c, in_type(c, 1), &k)) return -1;
    *flops = 2 * out_n * k;
    return 0;
}

/* 2*B*h*T*S*(dk+dv): q.k and p.v products; causal masking skips about half. */
static int sdpa_flops(const CostCtx *c, double *flops) {
    const Type *q = in_type(c, 0), *k = in_type(c, 1), *v = in_type(c, 2);
    if (q->rank != 4 || k->rank != 4 || v->rank != 4) return -1;
    double q_n, s, dk, dv;
    if (numel(c, q, &q_n) || dim_at(c, k->dims[1], &s) || last_dim(c, q, &dk) || last_dim(c, v, &dv)) return -1;
    if (dk == 0) return -1;
    *flops = 2 * (q_n / dk) * s * (dk + dv);
    if (node_int(c->n, "causal", 1)) *flops /= 2;
    return 0;
}

/* FLOPs = per_in * elements of input 0 + per_out * elements of output 0 + special. */
typedef struct CostRule {
    double per_in, per_out;
    int (*special)(const CostCtx *c, double *flops);
} CostRule;

static const CostRule cost_rules[OP_COUNT] = {
    [OP_NEG] = {0, 1, NULL},     [OP_EXP] = {0, 1, NULL},     [OP_LOG] = {0, 1, NULL},
    [OP_SQRT] = {0, 1, NULL},    [OP_RSQRT] = {0, 1, NULL},   [OP_RECIP] = {0, 1, NULL},
    [OP_ABS] = {0, 1, NULL},     [OP_SIGMOID] = {0, 1, NULL}, [OP_SILU] = {0, 1, NULL},
    [OP_CAST] = {0, 1, NULL},    [OP_ADD] = {0, 1, NULL},     [OP_SUB] = {0, 1, NULL},
    [OP_MUL] = {0, 1, NULL},     [OP_DIV] = {0, 1, NULL},     [OP_MAXIMUM] = {0, 1, NULL},
    [OP_MINIMUM] = {0, 1, NULL}, [OP_WHERE] = {0, 1, NULL},   [OP_SUM] = {1, 0, NULL},
    [OP_MEAN] = {1, 0, NULL},    [OP_MAX] = {1, 0, NULL},     [OP_MEAN_ALL] = {1, 0, NULL},
    /* max, subtract, exp, sum, divide */
    [OP_SOFTMAX] = {0, 5, NULL},
    [OP_LINEAR] = {0, 0, matmul_flops},
    [OP_GROUPED_LINEAR] = {0, 0, matmul_flops},
    [OP_MOE_COMBINE] = {0, 0, combine_flops},
    /* one compare per candidate */
    [OP_TOPK] = {1, 0, NULL},
    /* two multiplies and an add per rotated element */
    [OP_ROPE] = {0, 3, NULL},
    [OP_SDPA] = {0, 0, sdpa_flops},
    /* max, exp, sum over the logits */
    [OP_CROSS_ENTROPY] = {3, 0, NULL},
};

static int moved_bytes(const CostCtx *c, double *bytes) {
    double total = 0, n;
    for (int k = 0; k < c->n->nin; k++) {
        if (numel(c, in_type(c, k), &n)) return -1;
        total += n * storage_bytes[in_type(c, k)->dtype];
    }
    for (int k = 0; k < c->n->nout; k++) {
        if (numel(c, out_type(c, k), &n)) return -1;
        total += n * storage_bytes[out_type(c, k)->dtype];
    }
    *bytes = total;
    return 0;
}

int ir_node_cost(const Graph *g, const Node *n, int64_t b, int64_t t, double *flops, double *bytes) {
    for (int k = 0; k < n->nin; k++)
        if (!value_in_range(g, n->in[k])) return -1;
    for (int k = 0; k < n->nout; k++)
        if (!value_in_range(g, n->out[k])) return -1;
    CostCtx c = {g, n, b, t};
    const CostRule *rule = &cost_rules[n->op];
    double f = 0, elems;
    if (rule->per_in != 0 && n->nin > 0) {
        if (numel(&c, in_type(&c, 0), &elems)) return -1;
        f += rule->per_in * elems;
    }
    if (rule->per_out != 0) {
        if (numel(&c, out_type(&c, 0), &elems)) return -1;
        f += rule->per_out * elems;
    }
    if (rule->special) {
        double s;
        if (rule->special(&c, &s)) return -1;
        f += s;
    }
    if (moved_bytes(&c, bytes)) return -1;
    *flops = f;
    return 0;
}
