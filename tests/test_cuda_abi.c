/* The ABI v3c writes out for the libraries it opens with dlopen (base/dlabi.h:
 * codegen/cuda/nvrtc_abi.h, runtime/cuda_driver_abi.h, runtime/cublaslt_abi.h,
 * runtime/nccl_abi.h), checked against the CUDA toolkit where the build found one
 * (V3C_CUDA_HOME, tests/CMakeLists.txt):
 * - when this file compiles: every entry point's type is the header's (V3C_ABI
 *   picks the header's handle and enum types), every value is the header's, and
 *   the structs v3c passes or reads have the header's size and field offsets;
 * - when it runs: every symbol is exported by the toolkit's shared library (the
 *   driver's from its link stub, as no driver is installed here).
 * The CUDA backend and the NCCL engine have never run on a GPU; this is what
 * can be known of their calls without one. Without a toolkit the suite says so
 * and checks only the resolver that fills the tables (base/dlabi.c). */
#ifdef V3C_CUDA_HOME
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <cublasLt.h>
#include <nccl.h>
#include <nvrtc.h>
#define V3C_ABI(ours, theirs) theirs
#endif

#include <check.h>
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>

#include "../codegen/cuda/nvrtc_abi.h"
#include "../runtime/cublaslt_abi.h"
#include "../runtime/cuda_api.h"
#include "../runtime/cuda_driver_abi.h"
#include "../runtime/nccl_abi.h"
#include "testutil.h"

#ifdef V3C_CUDA_HOME
/* An entry point whose type is not the header's (a parameter missing, added or of
 * another type, another return type) or whose name the header does not declare
 * stops the build here. */
#define SAME_TYPE(symbol, field, ret, params)                                                                          \
    _Static_assert(__builtin_types_compatible_p(ret(*) params, __typeof__(&symbol)), #symbol ": not the header's type");
NVRTC_ENTRY_POINTS(SAME_TYPE)
CU_DRIVER_ENTRY_POINTS(SAME_TYPE)
CUBLASLT_ENTRY_POINTS(SAME_TYPE)
NCCL_ENTRY_POINTS(SAME_TYPE)
CUDART_ENTRY_POINTS(SAME_TYPE)

/* The older driver names (CU_DRIVER_OLDER_NAMES) cuda.h declares only for the
 * driver's own build; they are checked as exports below. */

#define SAME_VALUE(ours, theirs, value)                                                                                \
    _Static_assert((long long)(ours) == (long long)(theirs), #ours " is not " #theirs);
NVRTC_ABI_VALUES(SAME_VALUE)
CU_DRIVER_ABI_VALUES(SAME_VALUE)
CUBLASLT_ABI_VALUES(SAME_VALUE)
NCCL_ABI_VALUES(SAME_VALUE)

#define SAME_FIELD(ours, theirs, a, b)                                                                                 \
    (offsetof(ours, a) == offsetof(theirs, b) &&                                                                       \
     __builtin_types_compatible_p(__typeof__(((ours *)0)->a), __typeof__(((theirs *)0)->b)))
_Static_assert(__builtin_types_compatible_p(CuPtr, CUdeviceptr), "CuPtr is not CUdeviceptr");
_Static_assert(sizeof(LtAlgo) == sizeof(cublasLtMatmulAlgo_t), "LtAlgo is not cublasLtMatmulAlgo_t's size");
_Static_assert(sizeof(LtHeuristic) == sizeof(cublasLtMatmulHeuristicResult_t) &&
                   offsetof(LtHeuristic, algo) == offsetof(cublasLtMatmulHeuristicResult_t, algo) &&
                   SAME_FIELD(LtHeuristic, cublasLtMatmulHeuristicResult_t, workspace_size, workspaceSize) &&
                   SAME_FIELD(LtHeuristic, cublasLtMatmulHeuristicResult_t, state, state) &&
                   SAME_FIELD(LtHeuristic, cublasLtMatmulHeuristicResult_t, waves, wavesCount),
               "LtHeuristic is not cublasLtMatmulHeuristicResult_t's layout");
_Static_assert(sizeof(NcclId) == sizeof(ncclUniqueId) && sizeof(NcclId) == NCCL_UNIQUE_ID_BYTES,
               "NcclId is not ncclUniqueId's size");
#endif

#ifdef V3C_CUDA_HOME
#define NAME(symbol, field, ret, params) #symbol,
#define OLDER(symbol, older) #older,
static const char *const nvrtc_names[] = {NVRTC_ENTRY_POINTS(NAME)};
static const char *const driver_names[] = {CU_DRIVER_ENTRY_POINTS(NAME)};
static const char *const driver_older_names[] = {CU_DRIVER_OLDER_NAMES(OLDER)};
static const char *const cublaslt_names[] = {CUBLASLT_ENTRY_POINTS(NAME)};
static const char *const nccl_names[] = {NCCL_ENTRY_POINTS(NAME)};
static const char *const cudart_names[] = {CUDART_ENTRY_POINTS(NAME)};

#define COUNT(array) (sizeof array / sizeof *array)

#define TOOLKIT_LIB(file) V3C_CUDA_HOME "/lib64/" file

/* Each library, where it is looked for (the first path that loads), and the names it must export. */
typedef struct Library {
    const char *paths[2];
    const char *const *names;
    int count;
    const char *what;
} Library;
#define NAMES(array) array, (int)COUNT(array)
static const Library libraries[] = {
    {{TOOLKIT_LIB("libnvrtc.so")}, NAMES(nvrtc_names), "entry points v3c calls"},
    {{TOOLKIT_LIB("stubs/libcuda.so")}, NAMES(driver_names), "entry points v3c calls"},
    {{TOOLKIT_LIB("stubs/libcuda.so")}, NAMES(driver_older_names), "older names v3c falls back to"},
    {{TOOLKIT_LIB("libcublasLt.so")}, NAMES(cublaslt_names), "entry points v3c calls"},
    /* NCCL ships apart from the toolkit: the loader's path first, as comm_nccl.c looks. */
    {{"libnccl.so.2", TOOLKIT_LIB("libnccl.so.2")}, NAMES(nccl_names), "entry points v3c calls"},
    {{TOOLKIT_LIB("libcudart.so")}, NAMES(cudart_names), "entry points v3c calls"},
};

START_TEST(test_library_exports_every_name) {
    const Library *l = &libraries[_i];
    void *lib = NULL;
    for (int i = 0; i < 2 && l->paths[i] && !lib; i++) lib = dlopen(l->paths[i], RTLD_NOW | RTLD_LOCAL);
    ck_assert_msg(lib, "none of %s... loads: %s", l->paths[0], dlerror());
    for (int i = 0; i < l->count; i++)
        ck_assert_msg(dlsym(lib, l->names[i]), "%s does not export %s", l->paths[0], l->names[i]);
    printf("test_cuda_abi: %s exports all %d %s\n", l->paths[0], l->count, l->what);
    /* Not dlclosed: unloading the C++ runtime these libraries bring would turn its
     * emergency exception pool into a leak in LeakSanitizer's eyes (v3c keeps NVRTC loaded too). */
}
END_TEST

/* The headers' checks above ran when this file compiled; say against what. */
#define PLUS_ONE(ours, theirs, value) +1
START_TEST(test_headers_checked) {
    int entry_points = (int)(COUNT(nvrtc_names) + COUNT(driver_names) + COUNT(cublaslt_names) + COUNT(nccl_names) +
                             COUNT(cudart_names));
    int values = 0 NVRTC_ABI_VALUES(PLUS_ONE) CU_DRIVER_ABI_VALUES(PLUS_ONE) CUBLASLT_ABI_VALUES(PLUS_ONE)
        NCCL_ABI_VALUES(PLUS_ONE);
    printf("test_cuda_abi: %d entry points and %d values checked against the headers of CUDA %d.%d (NCCL %d.%d.%d) "
           "in %s\n",
           entry_points, values, CUDA_VERSION / 1000, CUDA_VERSION % 1000 / 10, NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH,
           V3C_CUDA_HOME);
    ck_assert_int_ge(CUDA_VERSION, 12090); /* cuBLASLt's block-scaled FP8 modes (cublaslt_abi.h) */
}
END_TEST
#else
START_TEST(test_no_toolkit) {
    printf("test_cuda_abi: skipped: the build found no CUDA toolkit headers (V3C_CUDA_HOME, tests/CMakeLists.txt), "
           "so nothing of the dlopen'd libraries' ABI is checked\n");
}
END_TEST
#endif

/* The resolver every dlopen'd table is filled by: fields by offset, the first missing name,
 * and an older name tried only for the symbol it renames (libm stands in for a CUDA library). */
typedef struct MathTable {
    double (*cosine)(double);
    double (*sine)(double);
} MathTable;

START_TEST(test_dlabi_resolve) {
    void *libm = dlopen("libm.so.6", RTLD_NOW | RTLD_LOCAL);
    ck_assert_msg(libm != NULL, "%s", dlerror());
    MathTable t = {0};
    const DlabiSymbol found[] = {{"cos", offsetof(MathTable, cosine)}, {"sin", offsetof(MathTable, sine)}};
    ck_assert_ptr_null(dlabi_resolve(libm, found, 2, NULL, 0, &t));
    ck_assert(t.cosine(0.0) == 1.0 && t.sine(0.0) == 0.0);
    const DlabiSymbol renamed[] = {{"cos_v2", offsetof(MathTable, cosine)}, {"sin_v2", offsetof(MathTable, sine)}};
    const DlabiRename older[] = {{"cos_v2", "cos"}};
    MathTable u = {0};
    ck_assert_str_eq(dlabi_resolve(libm, renamed, 2, older, 1, &u), "sin_v2");
    ck_assert(u.cosine == t.cosine && u.sine == NULL);
    dlclose(libm);
}
END_TEST

static Suite *abi_suite(void) {
    Suite *s = suite_create("cuda_abi");
    TCase *tc = tcase_create("abi");
    tcase_add_test(tc, test_dlabi_resolve);
#ifdef V3C_CUDA_HOME
    tcase_add_test(tc, test_headers_checked);
    tcase_add_loop_test(tc, test_library_exports_every_name, 0, (int)COUNT(libraries));
#else
    tcase_add_test(tc, test_no_toolkit);
#endif
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(abi_suite()); }
