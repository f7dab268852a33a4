/* Reading .v3 files: each file once (keyed by its real path), imports resolved
 * relative to the importing file, declarations registered in file order with
 * an import's declarations before the statements that follow it. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "diag.h"
#include "eval.h"
#include "program.h"

enum { MAX_SOURCE_BYTES = 16 << 20 };

static Program *program_new(void) {
    Program *p = xcalloc(1, sizeof *p);
    strmap_init(&p->hyper_index);
    strmap_init(&p->fn_index);
    strmap_init(&p->file_index);
    p->max_iterations = 1000000;
    p->max_nodes = 10000000;
    return p;
}

void program_free(Program *p) {
    if (!p) return;
    for (size_t i = 0; i < p->files.len; i++) {
        free(p->files.data[i].path);
        free(p->files.data[i].text);
    }
    VEC_FREE(p->files);
    VEC_FREE(p->hypers);
    VEC_FREE(p->fns);
    VEC_FREE(p->stmts);
    strmap_free(&p->hyper_index);
    strmap_free(&p->fn_index);
    strmap_free(&p->file_index);
    arena_free(&p->arena);
    free(p);
}

void program_set_limits(Program *p, int64_t max_iterations, int64_t max_nodes) {
    p->max_iterations = max_iterations;
    p->max_nodes = max_nodes;
}

/* Only regular files of sane size: an import of /dev/zero must not hang. */
static char *read_source(const char *path, Err *err) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
        err_set(err, "cannot read '%s': not a readable file", path);
        return NULL;
    }
    if (st.st_size > MAX_SOURCE_BYTES) {
        err_set(err, "cannot read '%s': larger than %d bytes", path, MAX_SOURCE_BYTES);
        return NULL;
    }
    size_t len;
    char *text = read_file(path, &len, err);
    if (text && strlen(text) != len) {
        err_set(err, "cannot read '%s': it contains a NUL byte", path);
        free(text);
        return NULL;
    }
    return text;
}

static int check_params(Program *p, const Decl *d, Err *err) {
    for (int i = 0; i < d->params.len; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(d->params.items[i], d->params.items[j]) == 0)
                return diag_error(p, d->params.locs[i], err, "parameter '%s' appears twice", d->params.items[i]);
    return 0;
}

static int declare_fn(Program *p, const Decl *d, Err *err) {
    int64_t prev;
    if (builtin_exists(d->name))
        return diag_error(p, d->loc, err, "function '%s' has the name of a built-in", d->name);
    if (strmap_get(&p->fn_index, d->name, &prev)) {
        Loc first = p->fns.data[prev]->loc;
        return diag_error(p, d->loc, err, "function '%s' is defined twice (first at %s:%d:%d)", d->name,
                          p->files.data[first.file].path, first.line, first.col);
    }
    if (check_params(p, d, err)) return -1;
    strmap_put(&p->fn_index, d->name, (int64_t)p->fns.len);
    VEC_PUSH(p->fns, d);
    return 0;
}

/* The import's path as shown in errors: relative to the importing file's folder. */
static char *import_path(const char *importer, const char *path) {
    const char *slash = strrchr(importer, '/');
    if (path[0] == '/' || !slash) return xstrdup(path);
    return xsprintf("%.*s/%s", (int)(slash - importer), importer, path);
}

static int parse_and_register(Program *p, const char *path, const char *key, char *text, Err *err);

static int load_import(Program *p, int file, const Decl *d, Err *err) {
    char *path = import_path(p->files.data[file].path, d->name);
    char real[PATH_MAX];
    Err why = {0};
    int rc = 0;
    char *text = NULL;
    if (!realpath(path, real))
        rc = diag_error(p, d->loc, err, "cannot import \"%s\": no such file '%s'", d->name, path);
    else if (!strmap_get(&p->file_index, real, NULL) && !(text = read_source(path, &why)))
        rc = diag_error(p, d->loc, err, "cannot import \"%s\": %s", d->name, why.msg);
    else if (text)
        rc = parse_and_register(p, path, real, text, err);
    free(path);
    return rc;
}

static int register_decl(Program *p, int file, const Decl *d, Err *err) {
    switch (d->kind) {
    case D_IMPORT: return load_import(p, file, d, err);
    case D_HYPER: return hyper_declare(p, d, err);
    case D_FN: return declare_fn(p, d, err);
    case D_STMT: VEC_PUSH(p->stmts, d->stmt); return 0;
    }
    return err_internal(err, "unknown declaration kind");
}

static int add_file(Program *p, const char *path, char *text) {
    SourceFile f = {xstrdup(path), text};
    VEC_PUSH(p->files, f);
    return (int)p->files.len - 1;
}

/* Takes text; the file is registered before its imports are read, so an
 * import cycle ends at a file already seen. */
static int parse_and_register(Program *p, const char *path, const char *key, char *text, Err *err) {
    int file = add_file(p, path, text);
    strmap_put(&p->file_index, key, file);
    DeclList decls = {0};
    int rc = ast_parse_file(p, file, &decls, err);
    for (int i = 0; rc == 0 && i < decls.len; i++) rc = register_decl(p, file, decls.items[i], err);
    ast_decls_free(&decls);
    return rc;
}

int source_load(Program *p, const char *path, const char *text, Err *err) {
    char real[PATH_MAX];
    const char *key = text ? path : realpath(path, real);
    if (!key) return err_set(err, "cannot read '%s': no such file", path);
    char *owned = text ? xstrdup(text) : read_source(path, err);
    if (!owned) return -1;
    return parse_and_register(p, path, key, owned, err);
}

static Program *finish(Program *p, int rc) {
    if (rc == 0) return p;
    program_free(p);
    return NULL;
}

Program *program_parse_file(const char *path, Err *err) {
    Program *p = program_new();
    return finish(p, source_load(p, path, NULL, err));
}

Program *program_parse_string(const char *text, const char *name, Err *err) {
    Program *p = program_new();
    return finish(p, source_load(p, name, text, err));
}
