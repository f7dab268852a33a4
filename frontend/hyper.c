/* Hyperparameters: declarations with literal defaults, then overrides from a
 * config.json (nested objects flattened to dotted keys, HF aliases applied)
 * and from --set k=v. A bound value keeps the declared type, except that none
 * is always accepted and an int is accepted (and converted) for a float. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diag.h"
#include "program.h"

const HyperDecl *hyper_find(const Program *p, const char *name) {
    int64_t i;
    return strmap_get(&p->hyper_index, name, &i) ? &p->hypers.data[i] : NULL;
}

/* A default is a literal: its type is the hyperparameter's type. */
static int literal_value(Program *p, const Expr *e, Val *out, Err *err) {
    int neg = e->kind == E_NEG;
    const Expr *x = neg ? e->a : e;
    if (x->kind == E_INT) *out = value_int(neg ? -x->i : x->i);
    else if (x->kind == E_FLOAT) *out = value_float(neg ? -x->f : x->f);
    else if (neg) return diag_error(p, e->loc, err, "the default of a hyperparameter must be a literal");
    else if (x->kind == E_BOOL) *out = value_bool((int)x->i);
    else if (x->kind == E_NONE) *out = value_none();
    else if (x->kind == E_STRING && x->nparts == 0) *out = value_str("");
    else if (x->kind == E_STRING && x->nparts == 1 && !x->parts[0].expr) *out = value_str(x->parts[0].text);
    else return diag_error(p, e->loc, err, "the default of a hyperparameter must be a literal (number, string, true, false or none)");
    return 0;
}

int hyper_declare(Program *p, const Decl *d, Err *err) {
    const HyperDecl *prev = hyper_find(p, d->name);
    if (prev)
        return diag_error(p, d->loc, err, "hyperparameter '%s' is declared twice (first at %s:%d:%d)", d->name,
                          p->files.data[prev->loc.file].path, prev->loc.line, prev->loc.col);
    HyperDecl h = {.name = d->name, .loc = d->loc};
    if (literal_value(p, d->value, &h.value, err)) return -1;
    h.declared = h.value.kind;
    strmap_put(&p->hyper_index, d->name, (int64_t)p->hypers.len);
    VEC_PUSH(p->hypers, h);
    return 0;
}

/* Binds name to v; origin names the source in errors ("config.json key", "--set").
 * Returns 1 if the name is not declared (the caller decides whether that is an error). */
static int bind(Program *p, const char *name, Val v, const char *origin, Err *err) {
    int64_t i;
    if (!strmap_get(&p->hyper_index, name, &i)) return 1;
    HyperDecl *h = &p->hypers.data[i];
    if (v.kind == V_INT && h->declared == V_FLOAT) v = value_float((double)v.i);
    if (v.kind != V_NONE && h->declared != V_NONE && v.kind != h->declared)
        return err_set(err, "%s '%s': expected %s (the type of its default), got %s", origin, name,
                       value_kind_name(h->declared), value_kind_name(v.kind));
    if (v.kind == V_STR) v.s = arena_strdup(&p->arena, v.s);
    h->value = v;
    return 0;
}

/* HF spellings of the same setting, applied in order (each to the previous result). */
typedef struct Alias {
    const char *from;
    const char *to;
    int prefix; /* from is a prefix to replace; else an exact key */
} Alias;

static const Alias aliases[] = {
    {"rope_parameters.rope_theta", "rope_theta", 0},
    {"rope_parameters.", "rope_scaling.", 1},
    {"rope_scaling.type", "rope_scaling.rope_type", 0},
};

static char *canonical_key(const char *key) {
    char *k = xstrdup(key);
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++) {
        const Alias *a = &aliases[i];
        size_t n = strlen(a->from);
        if (a->prefix ? strncmp(k, a->from, n) != 0 : strcmp(k, a->from) != 0) continue;
        char *renamed = xsprintf("%s%s", a->to, k + n);
        free(k);
        k = renamed;
    }
    return k;
}

typedef struct ConfigBind {
    Program *p;
    Err *err;
    int saw_rope_scaling;
    StrMap given; /* canonical keys this config set */
} ConfigBind;

static int json_scalar(const Json *j, Val *out) {
    if (j->kind == JSON_NULL) *out = value_none();
    else if (j->kind == JSON_BOOL) *out = value_bool(j->boolean);
    else if (j->kind == JSON_NUMBER && j->is_integer) *out = value_int(j->integer);
    else if (j->kind == JSON_NUMBER) *out = value_float(j->number);
    else if (j->kind == JSON_STRING) *out = value_str(j->string);
    else return -1;
    return 0;
}

static int bind_json_leaf(ConfigBind *cb, const char *key, const Json *j) {
    char *name = canonical_key(key);
    if (strncmp(name, "rope_scaling.", 13) == 0) cb->saw_rope_scaling = 1;
    strmap_put(&cb->given, name, 1);
    Val v;
    int rc = 0;
    if (json_scalar(j, &v) == 0) rc = bind(cb->p, name, v, "config.json key", cb->err);
    else if (hyper_find(cb->p, name))
        rc = err_set(cb->err, "config.json key '%s': expected %s, got %s", name,
                     value_kind_name(hyper_find(cb->p, name)->declared), json_kind_name(j->kind));
    free(name);
    return rc < 0 ? -1 : 0;
}

static int bind_json(ConfigBind *cb, const char *prefix, const Json *j) {
    if (j->kind != JSON_OBJECT) return bind_json_leaf(cb, prefix, j);
    for (size_t i = 0; i < j->len; i++) {
        char *key = *prefix ? xsprintf("%s.%s", prefix, j->keys[i]) : xstrdup(j->keys[i]);
        int rc = bind_json(cb, key, j->items[i]);
        free(key);
        if (rc) return -1;
    }
    return 0;
}

/* A config that names a rope scaling describes all of it: the rope_scaling.*
 * keys it leaves out mean "absent" (none), not the model file's defaults, as
 * in HF. One that names none means plain RoPE. */
static int complete_rope_scaling(ConfigBind *cb) {
    if (!cb->saw_rope_scaling)
        return bind(cb->p, "rope_scaling.rope_type", value_str("default"), "config.json key", cb->err) < 0 ? -1 : 0;
    for (size_t i = 0; i < cb->p->hypers.len; i++) {
        const char *name = cb->p->hypers.data[i].name;
        if (strncmp(name, "rope_scaling.", 13) != 0 || strmap_get(&cb->given, name, NULL)) continue;
        if (bind(cb->p, name, value_none(), "config.json key", cb->err) < 0) return -1;
    }
    return 0;
}

int program_bind_config(Program *p, const Json *config, Err *err) {
    if (!config || config->kind != JSON_OBJECT) return err_set(err, "config.json: expected an object at the top");
    ConfigBind cb = {p, err, 0, {0}};
    strmap_init(&cb.given);
    int rc = bind_json(&cb, "", config);
    if (rc == 0) rc = complete_rope_scaling(&cb);
    strmap_free(&cb.given);
    return rc;
}

/* A --set value: true/false/none, an integer, a float, else a string (quotes optional). */
static Val parse_set_value(const char *text) {
    if (strcmp(text, "true") == 0 || strcmp(text, "false") == 0) return value_bool(text[0] == 't');
    if (strcmp(text, "none") == 0) return value_none();
    char *end;
    errno = 0;
    long long i = strtoll(text, &end, 10);
    if (*text && !*end && errno == 0) return value_int(i);
    errno = 0;
    double f = strtod(text, &end);
    if (*text && !*end && errno == 0 && isfinite(f)) return value_float(f);
    return value_str(text);
}

/* Splits "k=v" off the front of *s; a value in double quotes may hold commas. */
static int next_assignment(const char **s, char **key, char **val, int *quoted, Err *err) {
    const char *eq = strchr(*s, '=');
    const char *comma = strchr(*s, ',');
    if (!eq || (comma && comma < eq) || eq == *s)
        return err_set(err, "--set: expected key=value, got '%.*s'", comma ? (int)(comma - *s) : (int)strlen(*s), *s);
    *key = xstrndup(*s, (size_t)(eq - *s));
    const char *v = eq + 1, *end;
    *quoted = *v == '"';
    if (*quoted) {
        end = strchr(v + 1, '"');
        if (!end) {
            free(*key);
            return err_set(err, "--set: unterminated quote in '%s'", *s);
        }
        *val = xstrndup(v + 1, (size_t)(end - v - 1));
        end++;
    } else {
        end = v + strcspn(v, ",");
        *val = xstrndup(v, (size_t)(end - v));
    }
    if (*end && *end != ',') {
        free(*key);
        free(*val);
        return err_set(err, "--set: unexpected text after the value of '%.*s'", (int)(eq - *s), *s);
    }
    *s = *end ? end + 1 : end;
    return 0;
}

int program_bind_sets(Program *p, const char *assignments, Err *err) {
    const char *s = assignments;
    while (*s) {
        char *key = 0, *val = 0;
        int quoted = 0;
        if (next_assignment(&s, &key, &val, &quoted, err)) return -1;
        Val v = quoted ? value_str(val) : parse_set_value(val);
        int rc = bind(p, key, v, "--set", err);
        if (rc > 0) rc = err_set(err, "--set: unknown hyperparameter '%s'", key);
        free(key);
        free(val);
        if (rc) return -1;
    }
    return 0;
}

const char *program_hyper_text(Program *p, const char *name, char *buf, int n) {
    const HyperDecl *h = hyper_find(p, name);
    if (!h || n <= 0) return NULL;
    Buf b = {0};
    value_format(&b, &h->value);
    snprintf(buf, (size_t)n, "%s", b.data ? b.data : "");
    buf_free(&b);
    return buf;
}
