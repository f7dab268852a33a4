/* v3c: the command line. Each command is one function; exit status 0 on
 * success, 1 on bad input ("v3c: error: ..." on stderr), 2 on internal error. */
#include <malloc.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

typedef struct Command {
    const char *name;
    int (*run)(const Options *o, Err *err);
    const char *usage;
} Command;

static const Command commands[] = {
    {"check", cmd_check, "check MODEL.v3 [--checkpoint DIR|--config F] [--set k=v,...]   parse, lower, verify"},
    {"stats", cmd_stats,
     "stats MODEL.v3 [--checkpoint DIR|--config F] [--set k=v,...] [--memory --batch B --seq T]\n"
     "      parameter counts; with --memory, a training step's peak activation bytes with and without recompute"},
    {"dump", cmd_dump,
     "dump  MODEL.v3|FILE.v3ir [--passes LIST] [--print-after P|all] [--dump-dir D] [--verify-each]\n"
     "      [--time-passes] [--format text|dot] [--annotate --batch B --seq T] [-o FILE]"},
    {"run", cmd_run,
     "run   MODEL.v3 --checkpoint DIR --input IN.safetensors --output OUT.safetensors [--backend interp]"},
    {"train", cmd_train,
     "train MODEL.v3 [--checkpoint DIR] [--data FILE] [--steps N] [--log FILE.jsonl] [--save DIR] [--resume DIR]\n"
     "      [--fp8] [--recompute] [--batch B] [--seq T] [--lr X] [--gamma G] [--alpha A] [--mtp-lambda L]\n"
     "      [--pp P --ep E --dp D --schedule 1f1b|zb1p|dualpipe --microbatches M] (ranks: mpirun -np P*E*D)"},
    {"convert", cmd_convert, "convert --checkpoint IN --output OUT --to fp8|bf16|f32"},
    {"schedule", cmd_schedule,
     "schedule --pp P --microbatches M --schedule 1f1b|zb1p|dualpipe [--f F --b B --w W --fb FB] [--svg FILE]\n"
     "      per-rank pipeline timeline and bubble (the report's Table 2)"},
    {"compile", cmd_compile,
     "compile MODEL.v3 [--checkpoint DIR|--config F] [--set k=v,...] [--target sm_90a] [--batch B --seq T]\n"
     "      [--grads] [--fp8] [--dump-kernels DIR]   generate and NVRTC-compile every CUDA kernel (no GPU needed)"},
    {"aot", cmd_aot,
     "aot   MODEL.v3 [--checkpoint DIR|--config F] [--set k=v,...] --pp P --ep E --dp D [--schedule S]\n"
     "      [--microbatches M] [--batch B --seq T] [--fp8] [--recompute] [--target sm_90a] -o DIR\n"
     "      compile a training job for a cluster into a bundle: plans, kernels, per-rank memory (no GPU needed)"},
    {"launch", cmd_launch,
     "launch DIR [--checkpoint DIR|--resume DIR] [--data FILE] [--steps N] [--log F] [--save DIR] [--lr X] ...\n"
     "      run a bundle from v3c aot (ranks: mpirun -np P*E*D)"},
    {"cache", cmd_cache,
     "cache [--clear]   what the kernel cache ($V3C_CACHE_DIR, else ~/.cache/v3c) holds, or empty it"},
    {"eval", cmd_eval,
     "eval  MODEL.v3 [--checkpoint DIR|--seed S] [--data FILE] [--batch B] [--seq T]   loss on text"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: v3c COMMAND ...\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++) fprintf(f, "  v3c %s\n", commands[i].usage);
}

static const Command *find_command(const char *name) {
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (strcmp(commands[i].name, name) == 0) return &commands[i];
    return NULL;
}

static int report(const Err *err) {
    fflush(stdout);
    const char *msg = err->set ? err->msg : "unknown failure";
    /* A source diagnostic ("file:line:col: error: ...", source line, caret) is
     * shown as compilers show it; the last line still says "v3c: error:". */
    if (strstr(msg, ": error: ") && !strstr(msg, "v3c: error: "))
        fprintf(stderr, "%s\nv3c: error: compilation failed\n", msg);
    else
        fprintf(stderr, "v3c: error: %s\n", msg);
    return err->code == 2 ? 2 : 1;
}

/* A training step allocates and frees the same large buffers every step. glibc would hand
 * those above 128 KB back to the kernel (mmap, trimming the heap) and take them again,
 * page faults and zeroing each time: keeping freed memory in the heap made steps 12-14%
 * faster (tiny.v3, bench/cpu_large.v3) at the same peak resident size. */
static void keep_freed_memory(void) {
#ifdef __GLIBC__
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

int main(int argc, char **argv) {
    keep_freed_memory();
    if (argc < 2 || strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 1 : 0;
    }
    const Command *c = find_command(argv[1]);
    Err err = {0};
    if (!c) {
        err_set(&err, "unknown command '%s' (see 'v3c help')", argv[1]);
        return report(&err);
    }
    Options o;
    if (parse_options(argc - 2, argv + 2, c->name, &o, &err)) return report(&err);
    if (c->run(&o, &err)) return report(&err);
    return 0;
}
