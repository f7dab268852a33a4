/* NVRTC through dlopen: the few entry points v3c needs, resolved by name. */
#include <ctype.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nvrtc.h"
#include "nvrtc_abi.h"

typedef AbiNvrtcResult NvrtcResult;
typedef AbiNvrtcProgram NvrtcProgram;

struct Nvrtc {
    void *lib;
    char version[32];
    NVRTC_ENTRY_POINTS(DLABI_FIELD)
};

static const char *const library_names[] = {
    "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so", "/usr/local/cuda/lib64/libnvrtc.so",
};

#define SYMBOL(symbol, field, ret, params) {#symbol, offsetof(Nvrtc, field)},
static const DlabiSymbol symbols[] = {NVRTC_ENTRY_POINTS(SYMBOL)};

static void *open_library(void) {
    for (size_t i = 0; i < sizeof library_names / sizeof *library_names; i++) {
        void *lib = dlopen(library_names[i], RTLD_NOW | RTLD_LOCAL);
        if (lib) return lib;
    }
    return NULL;
}

static int resolve(Nvrtc *n, Err *err) {
    const char *missing = dlabi_resolve(n->lib, symbols, sizeof symbols / sizeof *symbols, NULL, 0, n);
    return missing ? err_set(err, "NVRTC library lacks %s", missing) : 0;
}

Nvrtc *nvrtc_open(Err *err) {
    Nvrtc *n = xcalloc(1, sizeof *n);
    n->lib = open_library();
    if (!n->lib) {
        err_set(err, "cannot load NVRTC (libnvrtc.so.13 or libnvrtc.so, also looked in /usr/local/cuda/lib64): "
                     "install the CUDA toolkit's NVRTC to generate CUDA kernels");
        free(n);
        return NULL;
    }
    int major = 0, minor = 0;
    if (resolve(n, err) || n->version_fn(&major, &minor) != NVRTC_OK) {
        if (!err->set) err_set(err, "nvrtcVersion failed");
        nvrtc_close(n);
        return NULL;
    }
    snprintf(n->version, sizeof n->version, "nvrtc %d.%d", major, minor);
    return n;
}

/* The library stays loaded: NVRTC keeps internal allocations until exit, and
 * LeakSanitizer can attribute (and the suppression below silence) them only
 * while its frames still resolve to libnvrtc. dlopen is reference counted, so
 * repeated opens cost nothing. */
void nvrtc_close(Nvrtc *n) { free(n); }

/* Sanitizer builds: NVRTC's own allocations are not v3c's leaks. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libnvrtc\n"; }

const char *nvrtc_version_text(const Nvrtc *n) { return n->version; }

int cuda_target_check(const char *target, Err *err) {
    size_t len = target ? strlen(target) : 0, digits = 0;
    int ok = len > 3 && strncmp(target, "sm_", 3) == 0;
    while (ok && 3 + digits < len && isdigit((unsigned char)target[3 + digits])) digits++;
    const char *rest = ok ? target + 3 + digits : "";
    ok = ok && digits >= 2 && digits <= 3 && (strcmp(rest, "") == 0 || strcmp(rest, "a") == 0);
    if (!ok) return err_set(err, "--target '%s' is not a CUDA architecture of the form sm_NN or sm_NNa (e.g. sm_90a)",
                            target ? target : "");
    return 0;
}

int nvrtc_options(const char *target, char *arch_buf, size_t n, const char **opts, int max_opts) {
    snprintf(arch_buf, n, "--gpu-architecture=%s", target);
    /* --fmad=false: a contracted a*b+c rounds once, the interpreter's twice. */
    const char *fixed[] = {arch_buf, "-default-device", "-std=c++17", "--fmad=false", "-I/usr/local/cuda/include"};
    int k = 0;
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed && k + 1 < max_opts; i++) opts[k++] = fixed[i];
    opts[k] = NULL;
    return k;
}

static char *program_log(const Nvrtc *n, NvrtcProgram p) {
    size_t len = 0;
    if (n->log_size(p, &len) != NVRTC_OK || len == 0) return xstrdup("(no log)");
    char *log = xcalloc(len + 1, 1);
    if (n->log(p, log) != NVRTC_OK) strcpy(log, "(no log)");
    return log;
}

static int fetch_cubin(const Nvrtc *n, NvrtcProgram p, char **cubin, size_t *cubin_len, Err *err) {
    size_t len = 0;
    if (n->cubin_size(p, &len) != NVRTC_OK || len == 0) return err_set(err, "NVRTC produced no cubin");
    *cubin = xmalloc(len);
    if (n->cubin(p, *cubin) != NVRTC_OK) {
        free(*cubin);
        *cubin = NULL;
        return err_set(err, "nvrtcGetCUBIN failed");
    }
    *cubin_len = len;
    return 0;
}

/* The PTX the cubin was assembled from (NVRTC keeps it for a real architecture too). */
static int fetch_ptx(const Nvrtc *n, NvrtcProgram p, char **ptx, Err *err) {
    size_t len = 0;
    if (n->ptx_size(p, &len) != NVRTC_OK || len == 0) return err_set(err, "NVRTC produced no PTX");
    *ptx = xcalloc(len + 1, 1);
    if (n->ptx(p, *ptx) == NVRTC_OK) return 0;
    free(*ptx);
    *ptx = NULL;
    return err_set(err, "nvrtcGetPTX failed");
}

int nvrtc_compile(const Nvrtc *n, const char *source, const char *name, const char *target, char **cubin,
                  size_t *cubin_len, char **ptx, Err *err) {
    if (cuda_target_check(target, err)) return -1;
    NvrtcProgram p = NULL;
    NvrtcResult r = n->create(&p, source, name, 0, NULL, NULL);
    if (r != NVRTC_OK) return err_set(err, "nvrtcCreateProgram(%s): %s", name, n->error_string(r));
    char arch[64];
    const char *opts[8];
    int nopts = nvrtc_options(target, arch, sizeof arch, opts, 8);
    int rc = 0;
    if ((r = n->compile(p, nopts, opts)) != NVRTC_OK) {
        char *log = program_log(n, p);
        rc = err_set(err, "NVRTC could not compile kernel %s for %s (%s):\n%s", name, target, n->error_string(r), log);
        free(log);
    } else {
        rc = fetch_cubin(n, p, cubin, cubin_len, err);
        if (rc == 0 && ptx && fetch_ptx(n, p, ptx, err)) {
            free(*cubin);
            *cubin = NULL;
            rc = -1;
        }
    }
    n->destroy(&p);
    return rc;
}
