/* frontend: .v3 source -> AST -> (hyperparameters bound) -> IR graph. */
#ifndef V3C_FRONTEND_H
#define V3C_FRONTEND_H

#include "../base/json.h"
#include "../ir/ir.h"

typedef struct Program Program; /* parsed model: hyper declarations, functions, statements */

/* Parses path and everything it imports. Errors are "file:line:col: error: msg\n<line>\n<caret>". */
Program *program_parse_file(const char *path, Err *err);
Program *program_parse_string(const char *text, const char *name, Err *err); /* for tests and fuzzing */
void program_free(Program *p);

/* Overrides from a config.json object: keys are flattened ("rope_scaling.factor"),
 * rope_parameters.* map to rope_theta / rope_scaling.*, rope_scaling.type to
 * rope_scaling.rope_type; undeclared keys are ignored. A config that gives no rope
 * scaling at all means rope_scaling.rope_type = "default" (HF semantics). */
int program_bind_config(Program *p, const Json *config, Err *err);
/* "--set k=v,k2=v2": an undeclared key is an error. */
int program_bind_sets(Program *p, const char *assignments, Err *err);
/* Value of a bound hyperparameter as text (for stats/logs); NULL if undeclared. */
const char *program_hyper_text(Program *p, const char *name, char *buf, int n);

/* Caps on one lowering (defaults 1,000,000 loop iterations in total and
 * 10,000,000 graph nodes); past them lowering fails with "model too large". */
void program_set_limits(Program *p, int64_t max_iterations, int64_t max_nodes);

/* Runs the program's statements, emitting the graph. */
Graph *program_lower(Program *p, Err *err);

/* frontend/hyper_list.c: the declared hyperparameters in declaration order, and
 * all of them as a config.json object text (dotted names nested one level:
 * "rope_scaling.factor" -> "rope_scaling": {"factor": ...}) that
 * program_bind_config reads back to the same values. Caller frees the text. */
int program_hyper_count(const Program *p);
const char *program_hyper_name(const Program *p, int i); /* NULL when out of range */
char *program_hypers_json(const Program *p);

#endif
