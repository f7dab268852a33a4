#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../base/base.h"
#include "../ir/interp.h"
#include "../ir/text.h"

static char *slurp(const char *path) {
    Err e = {0};
    char *s = read_file(path, NULL, &e);
    return s ? s : xstrdup("");
}

static CmdResult run_shell(const char *program, const char *args_fmt, va_list ap) {
    char *dir = make_temp_dir();
    char *out = path_join(dir, "stdout"), *err = path_join(dir, "stderr");
    Buf cmd = {0};
    buf_printf(&cmd, "%s ", program);
    buf_vprintf(&cmd, args_fmt, ap);
    buf_printf(&cmd, " >%s 2>%s </dev/null", out, err);
    int st = system(cmd.data);
    CmdResult r = {0};
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    r.out = slurp(out);
    r.err = slurp(err);
    buf_free(&cmd);
    free(out);
    free(err);
    free(dir);
    return r;
}

CmdResult run_v3c(const char *args_fmt, ...) {
    va_list ap;
    va_start(ap, args_fmt);
    CmdResult r = run_shell(V3C_BINARY, args_fmt, ap);
    va_end(ap);
    return r;
}

CmdResult run_program(const char *program, const char *args_fmt, ...) {
    va_list ap;
    va_start(ap, args_fmt);
    CmdResult r = run_shell(program, args_fmt, ap);
    va_end(ap);
    return r;
}

int skip_without_mpirun(const char *what) {
    if (system("command -v mpirun >/dev/null 2>&1") == 0) return 0;
    printf("skipped %s: no mpirun on PATH\n", what);
    return 1;
}

static double seconds_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

CmdResult run_mpirun_v3c(int np, const char *env, const char *mpirun_opts, const char *args, double *seconds) {
    char *dir = make_temp_dir(), *out = path_join(dir, "stdout"), *err = path_join(dir, "stderr");
    char *cmd = xsprintf("OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 ASAN_OPTIONS=detect_leaks=0 %s "
                         "timeout 300 mpirun --oversubscribe %s -np %d %s %s >%s 2>%s </dev/null",
                         env, mpirun_opts, np, V3C_BINARY, args, out, err);
    double t0 = seconds_now();
    int st = system(cmd);
    if (seconds) *seconds = seconds_now() - t0;
    CmdResult r = {0};
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    r.out = slurp(out);
    r.err = slurp(err);
    free(cmd);
    free(out);
    free(err);
    free(dir);
    return r;
}

void expect_same_files(const char *dir_a, const char *dir_b, const char *const *names, int n) {
    for (int i = 0; i < n; i++) {
        char *pa = path_join(dir_a, names[i]), *pb = path_join(dir_b, names[i]);
        Err e = {0};
        size_t na = 0, nb = 0;
        char *a = read_file(pa, &na, &e), *b = a ? read_file(pb, &nb, &e) : NULL;
        ck_assert_msg(a && b, "%s", e.msg);
        ck_assert_msg(na == nb && memcmp(a, b, na) == 0, "%s and %s differ", pa, pb);
        free(a);
        free(b);
        free(pa);
        free(pb);
    }
}

void cmd_free(CmdResult *r) {
    free(r->out);
    free(r->err);
}

void assert_user_error(const CmdResult *r, const char *needle) {
    ck_assert_msg(r->status == 1, "expected exit 1, got %d; stderr: %s", r->status, r->err);
    ck_assert_msg(strstr(r->err, "v3c: error: ") != NULL || strstr(r->err, ": error: ") != NULL,
                  "no error line in stderr: %s", r->err);
    ck_assert_msg(strstr(r->err, needle) != NULL, "stderr lacks '%s': %s", needle, r->err);
    ck_assert_msg(strstr(r->err, "AddressSanitizer") == NULL && strstr(r->err, "runtime error") == NULL,
                  "sanitizer report: %s", r->err);
}

char *make_temp_dir(void) {
    const char *base = getenv("TMPDIR");
    char *tmpl = xsprintf("%s/v3c-test-XXXXXX", base ? base : "/tmp");
    if (!mkdtemp(tmpl)) {
        perror("mkdtemp");
        abort();
    }
    return tmpl;
}

char *path_join(const char *dir, const char *name) { return xsprintf("%s/%s", dir, name); }

void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

int run_suite(Suite *s) {
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

double tensor_value(const Tensor *t, int64_t i) {
    if (t->dtype == DT_I32) return ((const int32_t *)t->data)[i];
    if (t->dtype == DT_I64) return (double)((const int64_t *)t->data)[i];
    if (t->dtype == DT_U8) return ((const unsigned char *)t->data)[i];
    return tensor_f32(t)[i];
}

double rel_l2(const Tensor *got, const Tensor *want) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < want->numel; i++) {
        double w = tensor_value(want, i), d = tensor_value(got, i) - w;
        num += d * d;
        den += w * w;
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

int starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

int for_each_variant(int (*check)(const char *dir), int min_each) {
    const char *root = "tests/data/variants";
    DIR *d = opendir(root);
    ck_assert_msg(d != NULL, "missing %s", root);
    int variants = 0;
    struct dirent *ent;
    while ((ent = readdir(d)) != NULL) {
        if (ent->d_name[0] == '.') continue;
        char *dir = path_join(root, ent->d_name);
        ck_assert_int_ge(check(dir), min_each);
        free(dir);
        variants++;
    }
    closedir(d);
    return variants;
}

Graph *parse_ir_ok(const char *text, const char *what) {
    Err e = {0};
    Graph *g = ir_parse(text, what, &e);
    ck_assert_msg(g != NULL, "parse of %s failed: %s", what, e.msg);
    return g;
}

char *print_ir(const Graph *g) {
    Buf b = {0};
    PrintOptions opt = {0};
    ir_print(g, &opt, &b);
    return buf_take(&b);
}

static uint64_t next_random(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

static Tensor *random_input(const Type *ty, const InputFill *f, int64_t b, int64_t t, uint64_t *seed) {
    int64_t shape[IR_MAX_RANK];
    Err e = {0};
    ck_assert_msg(type_concrete(ty, b, t, shape, &e) == 0, "%s", e.msg);
    Tensor *x = tensor_new(ty->dtype, ty->rank, shape);
    for (int64_t i = 0; i < x->numel; i++) {
        uint64_t r = next_random(seed);
        if (ty->dtype == DT_I64) ((int64_t *)x->data)[i] = (int64_t)(r % (uint64_t)f->range);
        else if (ty->dtype == DT_I32) ((int32_t *)x->data)[i] = (int32_t)(r % (uint64_t)f->range);
        else if (ty->dtype == DT_E4M3 || ty->dtype == DT_U8) ((uint8_t *)x->data)[i] = (uint8_t)(r % 0x7e);
        else tensor_f32(x)[i] = f->positive ? 0.5f + (float)(r % 20001) / 20000.0f : (float)(r % 20001) / 10000.0f - 1.0f;
    }
    return x;
}

static const InputFill *fill_for(const InputFill *fills, const InputFill *fallback, const char *name) {
    for (const InputFill *f = fills; f && f->name; f++)
        if (strcmp(f->name, name) == 0) return f;
    return fallback;
}

void feed_random_inputs(const Graph *g, const InputFill *fills, InputFill fallback, int64_t b, int64_t t,
                        uint64_t seed, TensorSet *feeds) {
    for (size_t i = 0; i < g->nodes.len; i++) {
        const Node *n = &g->nodes.data[i];
        if (n->op != OP_INPUT) continue;
        const char *name = node_str(n, "name", "");
        tset_put(feeds, name, random_input(ir_type(g, n->out[0]), fill_for(fills, &fallback, name), b, t, &seed));
    }
}

struct ThreadGroup {
    int size;
    pthread_barrier_t barrier;
    const char *send[THREAD_GROUP_MAX];
    const int64_t *send_bytes[THREAD_GROUP_MAX];
    struct ThreadMember {
        ThreadGroup *group;
        int rank;
    } members[THREAD_GROUP_MAX];
};

ThreadGroup *thread_group_new(int size) {
    ck_assert_int_le(size, THREAD_GROUP_MAX);
    ThreadGroup *g = xcalloc(1, sizeof *g);
    g->size = size;
    pthread_barrier_init(&g->barrier, NULL, (unsigned)size);
    for (int r = 0; r < size; r++) g->members[r] = (struct ThreadMember){g, r};
    return g;
}

void thread_group_free(ThreadGroup *g) {
    pthread_barrier_destroy(&g->barrier);
    free(g);
}

/* Rank r receives, from each q in order, the slice of q's send buffer addressed to r. */
static int thread_alltoallv(void *ctx, const void *send, const int64_t *send_bytes, void *recv,
                            const int64_t *recv_bytes, Err *err) {
    struct ThreadMember *m = ctx;
    ThreadGroup *g = m->group;
    g->send[m->rank] = send;
    g->send_bytes[m->rank] = send_bytes;
    pthread_barrier_wait(&g->barrier);
    int rc = 0;
    int64_t at = 0;
    for (int q = 0; q < g->size; q++) {
        int64_t from = 0;
        for (int p = 0; p < m->rank; p++) from += g->send_bytes[q][p];
        if (g->send_bytes[q][m->rank] != recv_bytes[q])
            rc = err_set(err, "rank %d expects %lld bytes from rank %d, which sends %lld", m->rank,
                         (long long)recv_bytes[q], q, (long long)g->send_bytes[q][m->rank]);
        else
            memcpy((char *)recv + at, g->send[q] + from, (size_t)recv_bytes[q]);
        at += recv_bytes[q];
    }
    pthread_barrier_wait(&g->barrier); /* nobody frees a send buffer a peer still reads */
    return rc;
}

Collectives thread_group_member(ThreadGroup *g, int r) { return (Collectives){&g->members[r], r, g->size, thread_alltoallv}; }

void fill_bf16_rounding_cases(Tensor *t) {
    static const uint32_t cases[] = {
        0x3f808000u, /* 1 + 2^-8: a tie, to even (down) */
        0x3f818000u, /* 1 + 3 * 2^-8: a tie, to even (up) */
        0x3f80ffffu, /* just under a tie's upper neighbour: up */
        0x7f7fffffu, /* the largest float: rounds to inf */
        0xff7f8000u, /* a tie at the top of bf16's range: to -inf */
        0x7f800001u, /* a NaN whose payload lies only in the dropped bits: stays NaN */
        0xffc12345u, /* a negative quiet NaN */
        0x7f800000u, 0xff800000u, 0x80000000u,
        0x00000001u, /* the smallest subnormal: down to 0 */
        0x00018000u, /* a subnormal tie */
        0x3e4ccccdu, /* 0.2 */
    };
    enum { NCASES = sizeof cases / sizeof cases[0] };
    float *d = tensor_f32(t);
    for (int64_t i = 0; i < t->numel; i++) {
        uint32_t u = cases[i % NCASES] ^ ((i / NCASES) % 2 ? 0x80000000u : 0);
        memcpy(&d[i], &u, sizeof u);
    }
}

/* ---- CUDA without a GPU ---- */
#include <dlfcn.h>
#include <time.h>

#include "../base/fp8.h"
#include "../runtime/cuda_api.h"
#include "emu_streams.h"

const char *host_cxx(void) {
    static const char *const compilers[] = {"g++", "clang++"};
    for (size_t i = 0; i < sizeof compilers / sizeof *compilers; i++) {
        char *cmd = xsprintf("command -v %s >/dev/null 2>&1", compilers[i]);
        int rc = system(cmd);
        free(cmd);
        if (rc == 0) return compilers[i];
    }
    return NULL;
}

/* C entry points taking the launch's argument array, one per kernel. */
static char *entry_wrapper(const CudaKernel *kernels, size_t n, const char *shim) {
    Buf b = {0};
    buf_printf(&b, "#define V3C_EMU_MAIN\n#include \"%s\"\n", shim);
    for (size_t i = 0; i < n; i++) {
        const CudaKernel *k = &kernels[i];
        buf_printf(&b, "extern \"C\" void %s(", k->name);
        for (int a = 0; a < k->nparams; a++) buf_printf(&b, "%s%s", a ? ", " : "", k->param_types[a]);
        buf_printf(&b, ");\nextern \"C\" void v3c_entry_%s(void **a) { %s(", k->name, k->name);
        for (int a = 0; a < k->nparams; a++) buf_printf(&b, "%s(%s)a[%d]", a ? ", " : "", k->param_types[a], a);
        buf_puts(&b, "); }\n");
    }
    return b.data;
}

/* Under the sanitizer build the kernels are instrumented too: an index past a buffer in a
 * generated kernel, which a GPU may or may not fault on, is an AddressSanitizer report here. */
#if defined(__SANITIZE_ADDRESS__)
#define EMU_SANITIZE " -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
#else
#define EMU_SANITIZE ""
#endif
static const char host_cxx_flags[] = "-std=c++17 -O1 -ffp-contract=off -fPIC -shared -w" EMU_SANITIZE;

/* `cxx --version`'s first line: another compiler release is another library. */
static char *cxx_version(const char *cxx) {
    char *cmd = xsprintf("%s --version 2>/dev/null", cxx), line[256] = "";
    FILE *p = popen(cmd, "r");
    ck_assert_msg(p != NULL, "%s", cmd);
    if (!fgets(line, sizeof line, p)) line[0] = 0;
    pclose(p);
    free(cmd);
    return xstrdup(line);
}

/* The name of a library in $V3C_EMU_CACHE: a hash of all it is made from. */
static char *emu_cache_name(const char *cxx, const char *shim_path, const char *wrapper, const CudaKernel *kernels,
                            size_t n) {
    Err e = {0};
    char *shim = read_file(shim_path, NULL, &e);
    ck_assert_msg(shim != NULL, "%s", e.msg);
    char *version = cxx_version(cxx);
    Buf b = {0};
    buf_printf(&b, "%s\n%s%s\n%s\n%s\n", cxx, version, host_cxx_flags, shim, wrapper);
    free(version);
    for (size_t i = 0; i < n; i++) buf_printf(&b, "%s\n", kernels[i].source);
    char *name = xsprintf("%016llx%016llx.so", (unsigned long long)hash_bytes(b.data, b.len, 0),
                          (unsigned long long)hash_bytes(b.data, b.len, 0x9e3779b97f4a7c15ull));
    buf_free(&b);
    free(shim);
    return name;
}

static int copy_file(const char *from, const char *to, Err *e) {
    size_t len = 0;
    char *data = read_file(from, &len, e);
    int rc = data ? write_file_atomic(to, data, len, e) : -1;
    free(data);
    return rc;
}

static void compile_host_kernels(const char *cxx, const char *shim, const char *wrapper, const CudaKernel *kernels,
                                 size_t n, const char *dir) {
    Buf cmd = {0};
    buf_printf(&cmd, "%s %s -include %s -o %s/kernels.so", cxx, host_cxx_flags, shim, dir);
    for (size_t i = 0; i < n; i++) {
        char *name = xsprintf("%s/k%zu.cpp", dir, i);
        write_text(name, kernels[i].source);
        buf_printf(&cmd, " %s", name);
        free(name);
    }
    char *wrapper_path = path_join(dir, "wrapper.cpp");
    write_text(wrapper_path, wrapper);
    buf_printf(&cmd, " %s -lpthread 2>%s/cxx.log", wrapper_path, dir);
    int rc = system(cmd.data);
    ck_assert_msg(rc == 0, "host compile failed (see %s/cxx.log): %s", dir, cmd.data);
    free(wrapper_path);
    buf_free(&cmd);
}

/* g++ takes seconds per kernel set and the suites build the same sets many
 * times: with $V3C_EMU_CACHE (tests/CMakeLists.txt sets it), a built library
 * is kept there by content. Every call still returns a library of its own, a
 * copy, since the emulator's launch state lives in the library's globals. */
char *build_host_kernels(const char *cxx, const CudaKernel *kernels, size_t n) {
    char *dir = make_temp_dir(), shim[4096];
    ck_assert_ptr_nonnull(realpath("codegen/cuda/host_emu.h", shim));
    char *wrapper = entry_wrapper(kernels, n, shim), *so = path_join(dir, "kernels.so");
    const char *cache = getenv("V3C_EMU_CACHE");
    char *name = cache && *cache ? emu_cache_name(cxx, shim, wrapper, kernels, n) : NULL;
    char *kept = name ? path_join(cache, name) : NULL;
    Err e = {0};
    if (kept && access(kept, R_OK) == 0) {
        ck_assert_msg(copy_file(kept, so, &e) == 0, "%s", e.msg);
    } else {
        compile_host_kernels(cxx, shim, wrapper, kernels, n, dir);
        /* A cache that cannot be written costs the next build a compile, nothing more. */
        if (kept && (mkdir(cache, 0755) == 0 || errno == EEXIST)) copy_file(so, kept, &e);
    }
    free(wrapper), free(name), free(kept), free(dir);
    return so;
}

typedef void (*EmuEntry)(void **args);
typedef int (*EmuLaunch)(EmuEntry fn, void **args, unsigned grid, unsigned block);

typedef struct EmuFunction {
    EmuEntry entry;
    EmuLaunch launch;
} EmuFunction;

typedef struct Emu {
    const char *cxx;
    unsigned block, max_grid;
    VEC(EmuFunction *) functions;
    CudaEmuCounts counts;
    EmuStreams *streams; /* the device's queues (emu_streams.h) */
} Emu;

static Emu *emu(const CudaApi *a) { return a->ctx; }
static void *host_ptr(CuPtr p) { return (void *)(uintptr_t)p; }

static int emu_bind(CudaApi *a, Err *err) { (void)a, (void)err; return 0; }

static int emu_compile(CudaApi *a, const CudaKernel *kernels, int n, CudaCubin *images, CudaCompileStats *st, Err *err) {
    (void)err;
    char *so = build_host_kernels(emu(a)->cxx, kernels, (size_t)n);
    for (int i = 0; i < n; i++) images[i] = (CudaCubin){.data = xstrdup(so), .len = strlen(so) + 1};
    free(so);
    *st = (CudaCompileStats){.compiled = n};
    emu(a)->counts.compiles += n;
    return 0;
}

static int emu_module_load(CudaApi *a, const CudaCubin *image, CuModule *m, Err *err) {
    (void)a;
    *m = dlopen(image->data, RTLD_NOW | RTLD_LOCAL);
    return *m ? 0 : err_set(err, "emulated module %s: %s", image->data, dlerror());
}
static void emu_module_unload(CudaApi *a, CuModule m) {
    emu_drain(emu(a)->streams); /* no queued launch may outlive its code */
    dlclose(m);
}

static int emu_module_function(CudaApi *a, CuModule m, const char *name, CuFunction *f, Err *err) {
    char *entry = xsprintf("v3c_entry_%s", name);
    EmuFunction fn = {(EmuEntry)dlsym(m, entry), (EmuLaunch)dlsym(m, "v3c_emu_launch")};
    free(entry);
    if (!fn.entry || !fn.launch) return err_set(err, "emulated module has no kernel %s", name);
    EmuFunction *kept = xmalloc(sizeof *kept);
    *kept = fn;
    VEC_PUSH(emu(a)->functions, kept);
    *f = kept;
    return 0;
}

static int emu_mem_alloc(CudaApi *a, size_t bytes, CuPtr *p, Err *err) {
    (void)err;
    void *m = xmalloc(bytes);
    memset(m, 0xff, bytes);
    *p = (CuPtr)(uintptr_t)m;
    emu(a)->counts.live_allocations++;
    return 0;
}
/* cuMemFree waits for the device, so nothing queued reads freed memory. */
static void emu_mem_free(CudaApi *a, CuPtr p) {
    emu_drain(emu(a)->streams);
    free(host_ptr(p));
    emu(a)->counts.live_allocations--;
}

/* ---- the device's work, each queued on its stream (emu_streams.h) and run from there ---- */
typedef struct FillWork {
    CuPtr p;
    size_t bytes;
    unsigned char value;
} FillWork;
static int run_fill(void *ctx, const void *payload, Err *err) {
    (void)ctx, (void)err;
    const FillWork *w = payload;
    memset(host_ptr(w->p), w->value, w->bytes);
    return 0;
}
static int emu_memset_byte(CudaApi *a, CuPtr p, unsigned char value, size_t bytes, CuStream s, Err *err) {
    FillWork w = {p, bytes, value};
    return emu_enqueue(emu(a)->streams, s, run_fill, &w, sizeof w, err);
}
static int emu_memset_zero(CudaApi *a, CuPtr p, size_t bytes, CuStream s, Err *err) {
    return emu_memset_byte(a, p, 0, bytes, s, err);
}

/* An upload from pageable memory: the driver has taken the bytes when the call returns. */
typedef struct UploadWork {
    CuPtr dst;
    size_t bytes;
    unsigned char data[];
} UploadWork;
static int run_upload(void *ctx, const void *payload, Err *err) {
    (void)ctx, (void)err;
    const UploadWork *w = payload;
    memcpy(host_ptr(w->dst), w->data, w->bytes);
    return 0;
}
static int emu_copy_h2d(CudaApi *a, CuPtr dst, const void *src, size_t bytes, CuStream s, Err *err) {
    UploadWork *w = xmalloc(sizeof *w + bytes);
    w->dst = dst, w->bytes = bytes;
    memcpy(w->data, src, bytes);
    int rc = emu_enqueue(emu(a)->streams, s, run_upload, w, sizeof *w + bytes, err);
    free(w);
    return rc;
}

/* A download to pageable memory returns once it is done (and so all before it on its stream). */
typedef struct DownloadWork {
    void *dst;
    CuPtr src;
    size_t bytes;
} DownloadWork;
static int run_download(void *ctx, const void *payload, Err *err) {
    (void)ctx, (void)err;
    const DownloadWork *w = payload;
    memcpy(w->dst, host_ptr(w->src), w->bytes);
    return 0;
}
static int emu_copy_d2h(CudaApi *a, void *dst, CuPtr src, size_t bytes, CuStream s, Err *err) {
    DownloadWork w = {dst, src, bytes};
    return emu_enqueue_sync(emu(a)->streams, s, run_download, &w, sizeof w, err);
}

typedef struct LaunchWork {
    EmuFunction fn;
    unsigned grid, block;
    void *argv[32];
} LaunchWork;
static int run_launch(void *ctx, const void *payload, Err *err) {
    (void)ctx;
    const LaunchWork *w = payload;
    void *argv[32];
    memcpy(argv, w->argv, sizeof argv);
    return w->fn.launch(w->fn.entry, argv, w->grid, w->block) == 0 ? 0 : err_set(err, "emulated launch failed");
}
static int emu_launch(CudaApi *a, CuFunction f, unsigned grid, unsigned block, unsigned smem, CuStream s,
                      const CuPtr *args, int nargs, Err *err) {
    (void)block, (void)smem;
    Emu *e = emu(a);
    if (nargs > 32) return err_set(err, "emulated launch with %d arguments", nargs);
    LaunchWork w = {*(const EmuFunction *)f, grid < e->max_grid ? grid : e->max_grid, e->block, {0}};
    for (int i = 0; i < nargs; i++) w.argv[i] = host_ptr(args[i]);
    e->counts.launches++;
    return emu_enqueue(e->streams, s, run_launch, &w, sizeof w, err);
}

static int emu_stream_create(CudaApi *a, CuStream *s, Err *err) {
    (void)err;
    *s = emu_stream_new(emu(a)->streams);
    return 0;
}
static void emu_stream_destroy(CudaApi *a, CuStream s) { emu_stream_free(emu(a)->streams, s); }
static int emu_stream_sync(CudaApi *a, CuStream s, Err *err) { return emu_sync(emu(a)->streams, s, err); }
static int emu_event_create(CudaApi *a, CuEvent *ev, Err *err) {
    (void)a, (void)err;
    *ev = xcalloc(1, sizeof(EmuEvent));
    return 0;
}
static void emu_event_destroy(CudaApi *a, CuEvent ev) {
    emu_drain(emu(a)->streams); /* no queued record may outlive its event */
    free(ev);
}
static int emu_event_record(CudaApi *a, CuEvent ev, CuStream s, Err *err) {
    (void)err;
    emu_record(emu(a)->streams, s, ev);
    return 0;
}
static int emu_stream_wait_event(CudaApi *a, CuStream s, CuEvent ev, Err *err) {
    emu(a)->counts.stream_waits++;
    return emu_wait(emu(a)->streams, s, ev, err);
}
/* As cuEventElapsedTime: both events recorded and their records run (else CUDA_ERROR_NOT_READY). */
static int emu_event_elapsed(CudaApi *a, CuEvent start, CuEvent end, float *ms, Err *err) {
    (void)a;
    const EmuEvent *s = start, *e = end;
    if (!s->recorded || !e->recorded) return err_set(err, "emulation: elapsed time of an event never recorded");
    if (!emu_event_done(s) || !emu_event_done(e))
        return err_set(err, "emulation: elapsed time of an event whose stream has not reached it (not ready)");
    *ms = (float)((double)(e->at.tv_sec - s->at.tv_sec) * 1e3 + (double)(e->at.tv_nsec - s->at.tv_nsec) / 1e6);
    return 0;
}

/* bf16_operands lets the device multiply in TF32, exact only on bf16-grid values:
 * the count of operand values (NaN aside) that are not, so a wrongly set flag fails. */
static int64_t off_bf16_grid(const float *v, int64_t n) {
    int64_t off = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &v[i], sizeof bits);
        off += v[i] == v[i] && (bits & 0xffffu) != 0; /* a bf16 is a float's upper 16 bits */
    }
    return off;
}

/* Off-grid values among those one operand of a GEMM reads: per batch, `rows`
 * stored rows of `len`, ld apart (what lies between rows may be anything). */
static int64_t off_grid_read(const float *x, int64_t batch, int64_t stride, int64_t rows, int64_t len, int64_t ld) {
    int64_t off = 0;
    for (int64_t i = 0; i < batch; i++)
        for (int64_t r = 0; r < rows; r++) off += off_bf16_grid(x + i * stride + r * ld, len);
    return off;
}

/* Where element [i,j] of op(X) lies: X stored with rows ld apart, transposed or not. */
static int64_t op_at(int trans, int64_t ld, int64_t i, int64_t j) { return trans ? j * ld + i : i * ld + j; }

/* The interpreter's GEMM order: fp64 sums over the contracted axis in increasing
 * order, scaled by alpha in fp64, one rounding to fp32 (alpha 1: the sum rounded; a
 * bf16 result is rounded further by the executor's kernel, as the interpreter rounds
 * its float). */
static int run_gemm(void *ctx, const void *payload, Err *err) {
    (void)ctx;
    const CudaGemm *g = payload;
    const float *pa = host_ptr(g->a), *pb = host_ptr(g->b);
    float *pc = host_ptr(g->c);
    if (g->bf16_operands &&
        off_grid_read(pa, g->batch, g->stride_a, g->trans_a ? g->k : g->m, g->trans_a ? g->m : g->k, g->lda) +
            off_grid_read(pb, g->batch, g->stride_b, g->trans_b ? g->n : g->k, g->trans_b ? g->k : g->n, g->ldb))
        return err_set(err, "emulation: a GEMM flagged bf16_operands has operands off the bf16 grid");
    for (int64_t t = 0; t < g->batch; t++) {
        const float *at = pa + t * g->stride_a, *bt = pb + t * g->stride_b;
        float *ct = pc + t * g->stride_c;
        for (int64_t i = 0; i < g->m; i++)
            for (int64_t j = 0; j < g->n; j++) {
                double sum = 0;
                for (int64_t p = 0; p < g->k; p++)
                    sum += (double)at[op_at(g->trans_a, g->lda, i, p)] * bt[op_at(g->trans_b, g->ldb, p, j)];
                ct[i * g->ldc + j] = (float)((double)g->alpha * sum);
            }
    }
    return 0;
}
/* The shape is checked at the call, as cuBLASLt does; the operands when the GEMM runs. */
static int emu_gemm(CudaApi *a, const CudaGemm *g, CuStream s, Err *err) {
    emu(a)->counts.gemms++;
    if (!cuda_gemm_valid(g)) /* what cuBLASLt refuses, refused here too so the executor's tests see it */
        return err_internal(err, "emulation: GEMM of m=%lld n=%lld k=%lld batch=%lld with lda=%lld ldb=%lld ldc=%lld",
                            (long long)g->m, (long long)g->n, (long long)g->k, (long long)g->batch, (long long)g->lda,
                            (long long)g->ldb, (long long)g->ldc);
    return emu_enqueue(emu(a)->streams, s, run_gemm, g, sizeof *g, err);
}

/* CudaFp8Gemm's scale layouts, written out here rather than taken from the plan's helpers so
 * that a wrong layout in the plan shows: the 1x128 scales (sa; sb too in the weight gradient's
 * form) block-major, s[kb * ld + r] with ld = rows rounded up to 4; the forward's 128x128 sb
 * [ceil(n/128)][ceil(k/128) rounded up to 4]. */
static int64_t fp8_ld4(int64_t rows) { return (rows + 3) / 4 * 4; }
static int64_t fp8_blocks(int64_t k) { return (k + 127) / 128; }
static double fp8_scale_a(const CudaFp8Gemm *g, const float *sa, int64_t r, int64_t kb) {
    return sa[kb * fp8_ld4(g->m) + r];
}
static double fp8_scale_b(const CudaFp8Gemm *g, const float *sb, int64_t c, int64_t kb) {
    return g->both_1x128 ? sb[kb * fp8_ld4(g->n) + c] : sb[(c / 128) * fp8_ld4(fp8_blocks(g->k)) + kb];
}

/* The padding of a scale tensor of `outer` lines of `used` floats, `ld` apart, is zeros. */
static int fp8_padding_zero(const float *s, int64_t outer, int64_t used, int64_t ld) {
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = used; i < ld; i++)
            if (s[o * ld + i] != 0.0f) return 0;
    return 1;
}

/* The scales' padding holds zeros, as the layouts promise (PyTorch zero-pads what cuBLASLt may
 * read for alignment): a copy that fills it with anything else (its neighbours' scales) shows. */
static int fp8_check_padding(const CudaFp8Gemm *g, const float *sa, const float *sb, Err *err) {
    int64_t kb = fp8_blocks(g->k);
    int ok = fp8_padding_zero(sa, kb, g->m, fp8_ld4(g->m)) &&
             (g->both_1x128 ? fp8_padding_zero(sb, kb, g->n, fp8_ld4(g->n))
                            : fp8_padding_zero(sb, fp8_blocks(g->n), kb, fp8_ld4(kb)));
    return ok ? 0 : err_set(err, "emulation: an FP8 GEMM's scales have nonzero padding");
}

/* ir/ops/fp8.c's order: per 128-block of the contracted axis an exact partial
 * sum, scaled by both scales in fp64 and added into the fp32 accumulator. */
static int run_fp8_gemm(void *ctx, const void *payload, Err *err) {
    (void)ctx;
    const CudaFp8Gemm *g = payload;
    const uint8_t *qa = host_ptr(g->qa), *qb = host_ptr(g->qb);
    const float *sa = host_ptr(g->sa), *sb = host_ptr(g->sb);
    float *y = host_ptr(g->out);
    if (fp8_check_padding(g, sa, sb, err)) return -1;
    int64_t blocks = fp8_blocks(g->k);
    for (int64_t r = 0; r < g->m; r++)
        for (int64_t c = 0; c < g->n; c++) {
            float acc = 0;
            for (int64_t kb = 0; kb < blocks; kb++) {
                double part = 0;
                for (int64_t i = kb * 128; i < g->k && i < (kb + 1) * 128; i++)
                    part += (double)fp8_to_float(FP8_E4M3, qa[r * g->k + i]) * fp8_to_float(FP8_E4M3, qb[c * g->k + i]);
                acc = (float)((double)acc + part * fp8_scale_a(g, sa, r, kb) * fp8_scale_b(g, sb, c, kb));
            }
            y[r * g->n + c] = acc;
        }
    return 0;
}
static int emu_fp8_gemm(CudaApi *a, const CudaFp8Gemm *g, CuStream s, Err *err) {
    emu(a)->counts.fp8_gemms++;
    if (g->both_1x128 && g->k % 128)
        return err_set(err, "emulation: an FP8 GEMM with 1x128 scales on both operands needs K a multiple of 128, not %lld",
                       (long long)g->k);
    return emu_enqueue(emu(a)->streams, s, run_fp8_gemm, g, sizeof *g, err);
}

static void emu_close(CudaApi *a) {
    Emu *e = emu(a);
    emu_streams_free(e->streams);
    for (size_t i = 0; i < e->functions.len; i++) free(e->functions.data[i]);
    VEC_FREE(e->functions);
    free(e);
    free(a);
}

CudaApi *cuda_emu_open(unsigned block, unsigned max_grid) {
    const char *cxx = host_cxx();
    if (!cxx) {
        printf("skipping host emulation of CUDA: no g++ or clang++ on PATH\n");
        return NULL;
    }
    Emu *e = xcalloc(1, sizeof *e);
    e->cxx = cxx, e->block = block, e->max_grid = max_grid;
    e->streams = emu_streams_new(e);
    CudaApi *a = xcalloc(1, sizeof *a);
    *a = (CudaApi){
        .ctx = e, .what = "host emulation", .bind = emu_bind, .compile = emu_compile, .module_load = emu_module_load,
        .module_unload = emu_module_unload, .module_function = emu_module_function, .mem_alloc = emu_mem_alloc,
        .mem_free = emu_mem_free, .memset_zero = emu_memset_zero, .copy_h2d = emu_copy_h2d, .copy_d2h = emu_copy_d2h,
        .launch = emu_launch, .stream_create = emu_stream_create, .stream_destroy = emu_stream_destroy,
        .stream_sync = emu_stream_sync, .event_create = emu_event_create, .event_destroy = emu_event_destroy,
        .event_record = emu_event_record, .stream_wait_event = emu_stream_wait_event,
        .event_elapsed_ms = emu_event_elapsed, .gemm = emu_gemm, .fp8_gemm = emu_fp8_gemm,
        .memset_byte = emu_memset_byte, .close = emu_close,
    };
    return a;
}

CudaEmuCounts cuda_emu_counts(const CudaApi *api) { return emu(api)->counts; }
