/* The frontend's shared state: the files read, the declarations found in
 * them, and the hyperparameters bound. Internal to frontend/. */
#ifndef V3C_PROGRAM_H
#define V3C_PROGRAM_H

#include "../base/strmap.h"
#include "ast.h"
#include "frontend.h"
#include "value.h"

typedef struct SourceFile {
    char *path; /* as shown in errors */
    char *text;
} SourceFile;

typedef struct HyperDecl {
    const char *name;
    Loc loc;
    Val value; /* the default until bound; a scalar */
    ValueKind declared; /* the default's kind */
} HyperDecl;

typedef struct FnDecl {
    const Decl *decl;
} FnDecl;

struct Program {
    Arena arena; /* AST nodes and their strings */
    VEC(SourceFile) files;
    VEC(HyperDecl) hypers;
    StrMap hyper_index;   /* name -> index into hypers */
    VEC(const Decl *) fns;
    StrMap fn_index;      /* name -> index into fns */
    VEC(const Stmt *) stmts; /* top-level statements, imports' first */
    StrMap file_index;    /* canonical path -> file index (each file read once) */
    int64_t max_iterations; /* loop iterations per lowering */
    int64_t max_nodes;      /* graph nodes per lowering */
};

/* source.c: reads a file once, parses it and its imports, registers declarations. */
int source_load(Program *p, const char *path, const char *text, Err *err);
/* hyper.c: registers one `hyper` declaration (default evaluated as a constant). */
int hyper_declare(Program *p, const Decl *d, Err *err);
const HyperDecl *hyper_find(const Program *p, const char *name);

#endif
