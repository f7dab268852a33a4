/* The command line: options, the model pipeline shared by the commands, and
 * one function per command. */
#ifndef V3C_CLI_H
#define V3C_CLI_H

#include <stdint.h>

#include "../frontend/frontend.h"
#include "../ir/interp.h"
#include "../passes/passes.h"
#include "../runtime/checkpoint.h"

typedef struct Options {
    const char *command;
    const char *model; /* the positional MODEL.v3 / FILE.v3ir */
    const char *checkpoint, *config, *sets;
    const char *passes, *print_after, *dump_dir, *format, *out_file;
    int verify_each, time_passes, annotate;
    const char *input, *output, *backend, *data;
    int grads, fp8, bf16;
    int64_t batch, seq, seed;
    /* stats --memory */
    int memory;
    /* train (runtime/train.h documents each) */
    int64_t steps, warmup, save_every;
    int64_t dp, ep; /* train: data- and expert-parallel ranks (0: not given; --pp is below) */
    int64_t ep_capacity; /* --ep-capacity: rows an EP rank may receive per local token (0: the exact worst case) */
    const char *log, *save, *resume, *lr, *min_lr, *weight_decay, *gamma, *alpha, *mtp_lambda, *clip;
    int recompute;
    /* convert */
    const char *to;
    /* compile */
    const char *target, *dump_kernels;
    int clear; /* cache --clear */
    /* schedule */
    int64_t pp, microbatches;
    const char *schedule, *sched_f, *sched_b, *sched_w, *sched_fb, *svg;
} Options;

/* Parses argv (after the command name). Unknown or misplaced options are errors. */
int parse_options(int argc, char **argv, const char *command, Options *o, Err *err);

/* A model compiled as far as the commands need: program, graph, checkpoint. */
typedef struct Model {
    Program *program; /* NULL when read from .v3ir */
    Graph *graph;
    Checkpoint *checkpoint;
} Model;

/* Parses, binds hyperparameters (checkpoint config.json, --config, --set),
 * lowers and runs the pass pipeline (--passes etc.). */
int model_build(const Options *o, Model *m, Err *err);
void model_free(Model *m);

/* Weights for the graph: from the checkpoint, else a seeded random init. */
int model_weights(const Options *o, const Model *m, TensorSet *weights, Err *err);

void print_ir_summary(const Graph *g, FILE *f);
/* Evaluates the graph on input_ids [B,T] (already in feeds). */
int run_forward(const Options *o, const Model *m, TensorSet *feeds, const Tensor *ids, TensorSet *results, Err *err);

int cmd_check(const Options *o, Err *err);
int cmd_stats(const Options *o, Err *err);
int cmd_dump(const Options *o, Err *err);
int cmd_run(const Options *o, Err *err);
int cmd_eval(const Options *o, Err *err);
int cmd_train(const Options *o, Err *err);   /* tools/cmd_train.c */
int cmd_convert(const Options *o, Err *err); /* tools/cmd_convert.c */
int cmd_schedule(const Options *o, Err *err); /* tools/cmd_schedule.c */
int cmd_compile(const Options *o, Err *err);  /* tools/cmd_compile.c */
int cmd_aot(const Options *o, Err *err);      /* tools/cmd_aot.c */
int cmd_launch(const Options *o, Err *err);   /* tools/cmd_launch.c */
int cmd_cache(const Options *o, Err *err);    /* tools/cmd_cache.c */

#endif
