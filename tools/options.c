#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

typedef enum OptKind { OPT_FLAG, OPT_STR, OPT_INT } OptKind;

/* Which commands take an option: a space-separated list, matched word by word. */
typedef struct OptSpec {
    const char *name;
    OptKind kind;
    size_t offset;
    const char *commands;
} OptSpec;

#define FIELD(f) offsetof(Options, f)
static const OptSpec options[] = {
    {"--checkpoint", OPT_STR, FIELD(checkpoint), "check stats dump run eval train convert compile aot launch"},
    {"--config", OPT_STR, FIELD(config), "check stats dump eval train compile aot"},
    {"--set", OPT_STR, FIELD(sets), "check stats dump run eval train compile aot"},
    {"--passes", OPT_STR, FIELD(passes), "check dump run eval train compile"},
    {"--print-after", OPT_STR, FIELD(print_after), "check dump run eval train compile"},
    {"--dump-dir", OPT_STR, FIELD(dump_dir), "check dump run eval train compile"},
    {"--verify-each", OPT_FLAG, FIELD(verify_each), "check dump run eval train compile"},
    {"--time-passes", OPT_FLAG, FIELD(time_passes), "check dump run eval train compile"},
    {"--format", OPT_STR, FIELD(format), "dump"},
    {"--annotate", OPT_FLAG, FIELD(annotate), "dump"},
    {"-o", OPT_STR, FIELD(out_file), "dump aot"},
    {"--input", OPT_STR, FIELD(input), "run"},
    {"--output", OPT_STR, FIELD(output), "run convert"},
    {"--backend", OPT_STR, FIELD(backend), "run eval train launch"},
    {"--grads", OPT_FLAG, FIELD(grads), "dump run compile"},
    {"--fp8", OPT_FLAG, FIELD(fp8), "dump run eval train compile aot"},
    {"--bf16", OPT_FLAG, FIELD(bf16), "dump run eval train compile aot"},
    {"--data", OPT_STR, FIELD(data), "eval train launch"},
    {"--batch", OPT_INT, FIELD(batch), "dump eval stats train compile aot"},
    {"--seq", OPT_INT, FIELD(seq), "dump eval stats train compile aot"},
    {"--seed", OPT_INT, FIELD(seed), "eval train launch"},
    {"--memory", OPT_FLAG, FIELD(memory), "stats"},
    {"--steps", OPT_INT, FIELD(steps), "train launch"},
    {"--warmup", OPT_INT, FIELD(warmup), "train launch"},
    {"--save-every", OPT_INT, FIELD(save_every), "train launch"},
    {"--log", OPT_STR, FIELD(log), "train launch"},
    {"--save", OPT_STR, FIELD(save), "train launch"},
    {"--resume", OPT_STR, FIELD(resume), "train launch"},
    {"--lr", OPT_STR, FIELD(lr), "train launch"},
    {"--min-lr", OPT_STR, FIELD(min_lr), "train launch"},
    {"--weight-decay", OPT_STR, FIELD(weight_decay), "train launch"},
    {"--gamma", OPT_STR, FIELD(gamma), "train launch"},
    {"--alpha", OPT_STR, FIELD(alpha), "train aot"},
    {"--mtp-lambda", OPT_STR, FIELD(mtp_lambda), "train aot"},
    {"--clip", OPT_STR, FIELD(clip), "train launch"},
    {"--recompute", OPT_FLAG, FIELD(recompute), "train aot"},
    {"--to", OPT_STR, FIELD(to), "convert"},
    {"--target", OPT_STR, FIELD(target), "compile aot"},
    {"--dump-kernels", OPT_STR, FIELD(dump_kernels), "compile run"},
    {"--pp", OPT_INT, FIELD(pp), "schedule train aot"},
    {"--dp", OPT_INT, FIELD(dp), "train aot"},
    {"--ep", OPT_INT, FIELD(ep), "train aot"},
    {"--ep-capacity", OPT_INT, FIELD(ep_capacity), "train aot"},
    {"--microbatches", OPT_INT, FIELD(microbatches), "schedule train aot"},
    {"--schedule", OPT_STR, FIELD(schedule), "schedule train aot"},
    {"--f", OPT_STR, FIELD(sched_f), "schedule"},
    {"--b", OPT_STR, FIELD(sched_b), "schedule"},
    {"--w", OPT_STR, FIELD(sched_w), "schedule"},
    {"--fb", OPT_STR, FIELD(sched_fb), "schedule"},
    {"--svg", OPT_STR, FIELD(svg), "schedule"},
    {"--clear", OPT_FLAG, FIELD(clear), "cache"},
};

static int takes(const OptSpec *s, const char *command) {
    size_t n = strlen(command);
    for (const char *p = s->commands; (p = strstr(p, command)) != NULL; p += n)
        if ((p == s->commands || p[-1] == ' ') && (p[n] == ' ' || p[n] == 0)) return 1;
    return 0;
}

static int parse_int_arg(const char *name, const char *text, int64_t *out, Err *err) {
    char *end;
    long long v = strtoll(text, &end, 10);
    if (!*text || *end || v < 0 || v > (1ll << 40))
        return err_set(err, "%s expects a non-negative integer, got '%s'", name, text);
    *out = v;
    return 0;
}

static int set_option(const OptSpec *s, const char *value, Options *o, Err *err) {
    char *field = (char *)o + s->offset;
    if (s->kind == OPT_FLAG) {
        *(int *)field = 1;
        return 0;
    }
    if (s->kind == OPT_STR) {
        *(const char **)field = value;
        return 0;
    }
    return parse_int_arg(s->name, value, (int64_t *)field, err);
}

static const OptSpec *find_option(const char *arg) {
    for (size_t i = 0; i < sizeof options / sizeof *options; i++)
        if (strcmp(options[i].name, arg) == 0) return &options[i];
    return NULL;
}

int parse_options(int argc, char **argv, const char *command, Options *o, Err *err) {
    memset(o, 0, sizeof *o);
    o->command = command;
    o->batch = o->seq = o->seed = o->steps = o->warmup = o->save_every = -1;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (arg[0] != '-' || arg[1] == 0) {
            if (o->model) return err_set(err, "%s takes one model, got '%s' and '%s'", command, o->model, arg);
            o->model = arg;
            continue;
        }
        const OptSpec *s = find_option(arg);
        if (!s) return err_set(err, "unknown option '%s' (see 'v3c help')", arg);
        if (!takes(s, command)) return err_set(err, "'v3c %s' does not take %s", command, arg);
        const char *value = NULL;
        if (s->kind != OPT_FLAG) {
            if (i + 1 >= argc) return err_set(err, "%s needs a value", arg);
            value = argv[++i];
        }
        if (set_option(s, value, o, err)) return -1;
    }
    int needs_model = strcmp(command, "convert") != 0 && strcmp(command, "schedule") != 0 && strcmp(command, "cache") != 0;
    if (needs_model && !o->model) return err_set(err, "'v3c %s' needs a model file (see 'v3c help')", command);
    if (!needs_model && o->model) return err_set(err, "'v3c %s' takes no model file, got '%s'", command, o->model);
    return 0;
}
