/* The declared hyperparameters as a list and as a config.json, so a trained
 * model's checkpoint records exactly the values it was built with. */
#include <stdlib.h>
#include <string.h>

#include "program.h"

int program_hyper_count(const Program *p) { return (int)p->hypers.len; }

const char *program_hyper_name(const Program *p, int i) {
    return i >= 0 && (size_t)i < p->hypers.len ? p->hypers.data[i].name : NULL;
}

static void json_value(Buf *b, const Val *v) {
    if (v->kind == V_STR) json_write_string(b, v->s);
    else if (v->kind == V_NONE || value_format(b, v) != 0) buf_puts(b, "null");
}

/* Length of the first dotted component ("rope_scaling" of "rope_scaling.factor"), 0 without a dot. */
static size_t group_len(const char *name) {
    const char *dot = strchr(name, '.');
    return dot ? (size_t)(dot - name) : 0;
}

static int seen_group(const Program *p, size_t upto, const char *name, size_t n) {
    for (size_t j = 0; j < upto; j++)
        if (group_len(p->hypers.data[j].name) == n && strncmp(p->hypers.data[j].name, name, n) == 0) return 1;
    return 0;
}

/* "group": {"rest": value, ...} with every hyper named group.rest, in declaration order. */
static void json_group(Buf *b, const Program *p, const char *name, size_t n) {
    buf_puts(b, "  ");
    char *group = xstrndup(name, n);
    json_write_string(b, group);
    free(group);
    buf_puts(b, ": {");
    int first = 1;
    for (size_t j = 0; j < p->hypers.len; j++) {
        const HyperDecl *h = &p->hypers.data[j];
        if (group_len(h->name) != n || strncmp(h->name, name, n) != 0) continue;
        buf_puts(b, first ? "\n    " : ",\n    ");
        first = 0;
        json_write_string(b, h->name + n + 1);
        buf_puts(b, ": ");
        json_value(b, &h->value);
    }
    buf_puts(b, "\n  }");
}

char *program_hypers_json(const Program *p) {
    Buf b = {0};
    buf_puts(&b, "{");
    for (size_t i = 0; i < p->hypers.len; i++) {
        const HyperDecl *h = &p->hypers.data[i];
        size_t n = group_len(h->name);
        if (n && seen_group(p, i, h->name, n)) continue;
        buf_puts(&b, i ? ",\n" : "\n");
        if (n) {
            json_group(&b, p, h->name, n);
            continue;
        }
        buf_puts(&b, "  ");
        json_write_string(&b, h->name);
        buf_puts(&b, ": ");
        json_value(&b, &h->value);
    }
    buf_puts(&b, "\n}\n");
    return buf_take(&b);
}
