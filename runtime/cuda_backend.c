/* The CUDA driver through dlopen: the entry points resolved by name into a
 * table, errors turned into messages with cuGetErrorString; and the CudaApi
 * the executor runs on (the device's primary context, NVRTC with the kernel
 * cache for the device's target, cuBLASLt for the GEMMs).
 *
 * Not verified on a GPU: no machine this was written on has one. */
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_backend.h"
#include "cuda_blaslt.h"
#include "cuda_driver_abi.h"

typedef AbiCuResult CUresult;

struct CudaDevice {
    void *lib;
    int device;
    char target[16], name[256];
    CU_DRIVER_ENTRY_POINTS(DLABI_FIELD)
};

#define SYMBOL(symbol, field, ret, params) {#symbol, offsetof(CudaDevice, field)},
static const DlabiSymbol symbols[] = {CU_DRIVER_ENTRY_POINTS(SYMBOL)};
static const DlabiRename older_names[] = {CU_DRIVER_OLDER_NAMES(DLABI_RENAME)};

static int resolve(CudaDevice *d, Err *err) {
    const char *missing = dlabi_resolve(d->lib, symbols, sizeof symbols / sizeof *symbols, older_names,
                                        sizeof older_names / sizeof *older_names, d);
    return missing ? err_set(err, "the CUDA driver (libcuda.so.1) lacks %s", missing) : 0;
}

static int check(const CudaDevice *d, CUresult r, const char *what, Err *err) {
    if (r == CU_OK) return 0;
    const char *text = NULL;
    if (d->error_string(r, &text) != CU_OK || !text) text = "unknown error";
    return err_set(err, "CUDA driver: %s failed: %s (%d)", what, text, r);
}

static int find_device(CudaDevice *d, Err *err) {
    int count = 0, major = 0, minor = 0;
    if (check(d, d->init(0), "cuInit", err) || check(d, d->device_count(&count), "cuDeviceGetCount", err)) return -1;
    if (count < 1) return err_set(err, "the CUDA driver found no GPU");
    if (check(d, d->device_get(&d->device, 0), "cuDeviceGet", err) ||
        check(d, d->device_attribute(&major, CU_ATTR_CC_MAJOR, d->device), "cuDeviceGetAttribute", err) ||
        check(d, d->device_attribute(&minor, CU_ATTR_CC_MINOR, d->device), "cuDeviceGetAttribute", err) ||
        check(d, d->device_name(d->name, (int)sizeof d->name, d->device), "cuDeviceGetName", err))
        return -1;
    /* sm_90a: Hopper's arch-specific features (wgmma, TMA) need the "a" target. */
    snprintf(d->target, sizeof d->target, "sm_%d%d%s", major, minor, major == 9 && minor == 0 ? "a" : "");
    return 0;
}

CudaDevice *cuda_device_open(Err *err) {
    CudaDevice *d = xcalloc(1, sizeof *d);
    d->lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!d->lib) {
        const char *why = dlerror();
        err_set(err, "the CUDA backend needs the NVIDIA driver, and libcuda.so.1 cannot be loaded (%s)",
                why ? why : "not found");
        free(d);
        return NULL;
    }
    if (resolve(d, err) || find_device(d, err)) {
        cuda_device_close(d);
        return NULL;
    }
    return d;
}

void cuda_device_close(CudaDevice *d) {
    if (!d) return;
    if (d->lib) dlclose(d->lib);
    free(d);
}

const char *cuda_device_target(const CudaDevice *d) { return d->target; }
const char *cuda_device_name(const CudaDevice *d) { return d->name; }

int cuda_gpu_present(void) {
    Err quiet = {0};
    CudaDevice *d = cuda_device_open(&quiet);
    int present = d != NULL;
    cuda_device_close(d);
    return present;
}

/* ---- the executor's table on the device ---- */
enum { GEMM_WORKSPACE = 32 << 20 }; /* cuBLASLt's scratch: 32 MiB covers its Hopper kernels */

typedef struct Driver {
    CudaDevice *dev;
    void *ctx; /* the primary context */
    Nvrtc *nvrtc;
    char *cache_dir;
    Blaslt *blaslt;
    CuPtr workspace;
    char what[320];
} Driver;

static Driver *drv(const CudaApi *a) { return a->ctx; }
static int dcheck(const CudaApi *a, CUresult r, const char *what, Err *err) { return check(drv(a)->dev, r, what, err); }

static int d_bind(CudaApi *a, Err *err) { return dcheck(a, drv(a)->dev->ctx_set_current(drv(a)->ctx), "cuCtxSetCurrent", err); }

static int d_compile(CudaApi *a, const CudaKernel *kernels, int n, CudaCubin *images, CudaCompileStats *stats, Err *err) {
    Driver *d = drv(a);
    return cuda_compile_kernels(d->nvrtc, kernels, n, d->dev->target, d->cache_dir, images, 0, stats, err);
}

static int d_module_load(CudaApi *a, const CudaCubin *image, CuModule *m, Err *err) {
    return dcheck(a, drv(a)->dev->module_load_data(m, image->data), "cuModuleLoadData", err);
}
static void d_module_unload(CudaApi *a, CuModule m) { drv(a)->dev->module_unload(m); }
static int d_module_function(CudaApi *a, CuModule m, const char *name, CuFunction *f, Err *err) {
    if (dcheck(a, drv(a)->dev->module_get_function(f, m, name), "cuModuleGetFunction", err)) return err_wrap(err, "%s: ", name);
    return 0;
}

static int d_mem_alloc(CudaApi *a, size_t bytes, CuPtr *p, Err *err) {
    if (dcheck(a, drv(a)->dev->mem_alloc(p, bytes), "cuMemAlloc", err))
        return err_wrap(err, "allocating %zu bytes on the GPU: ", bytes);
    return 0;
}
static void d_mem_free(CudaApi *a, CuPtr p) { drv(a)->dev->mem_free(p); }
static int d_memset_zero(CudaApi *a, CuPtr p, size_t bytes, CuStream s, Err *err) {
    return dcheck(a, drv(a)->dev->memset_d8_async(p, 0, bytes, s), "cuMemsetD8Async", err);
}
static int d_memset_byte(CudaApi *a, CuPtr p, unsigned char value, size_t bytes, CuStream s, Err *err) {
    return dcheck(a, drv(a)->dev->memset_d8_async(p, value, bytes, s), "cuMemsetD8Async", err);
}
static int d_copy_h2d(CudaApi *a, CuPtr dst, const void *src, size_t bytes, CuStream s, Err *err) {
    return dcheck(a, drv(a)->dev->memcpy_h2d_async(dst, src, bytes, s), "cuMemcpyHtoDAsync", err);
}
static int d_copy_d2h(CudaApi *a, void *dst, CuPtr src, size_t bytes, CuStream s, Err *err) {
    return dcheck(a, drv(a)->dev->memcpy_d2h_async(dst, src, bytes, s), "cuMemcpyDtoHAsync", err);
}

/* cuLaunchKernel takes the address of each argument. */
static int d_launch(CudaApi *a, CuFunction f, unsigned grid, unsigned block, unsigned smem, CuStream s,
                    const CuPtr *args, int nargs, Err *err) {
    CuPtr values[CUDA_MAX_PARAMS];
    void *params[CUDA_MAX_PARAMS];
    for (int i = 0; i < nargs && i < CUDA_MAX_PARAMS; i++) values[i] = args[i], params[i] = &values[i];
    return dcheck(a, drv(a)->dev->launch_kernel(f, grid, 1, 1, block, 1, 1, smem, s, params, NULL), "cuLaunchKernel", err);
}

static int d_stream_create(CudaApi *a, CuStream *s, Err *err) {
    return dcheck(a, drv(a)->dev->stream_create(s, CU_FLAG_STREAM_NON_BLOCKING), "cuStreamCreate", err);
}
static void d_stream_destroy(CudaApi *a, CuStream s) { drv(a)->dev->stream_destroy(s); }
static int d_stream_sync(CudaApi *a, CuStream s, Err *err) {
    return dcheck(a, drv(a)->dev->stream_sync(s), "cuStreamSynchronize (a kernel or GEMM before it failed)", err);
}
static int d_event_create(CudaApi *a, CuEvent *e, Err *err) {
    return dcheck(a, drv(a)->dev->event_create(e, CU_FLAG_EVENT_DEFAULT), "cuEventCreate", err);
}
static void d_event_destroy(CudaApi *a, CuEvent e) { drv(a)->dev->event_destroy(e); }
static int d_event_record(CudaApi *a, CuEvent e, CuStream s, Err *err) {
    return dcheck(a, drv(a)->dev->event_record(e, s), "cuEventRecord", err);
}
static int d_stream_wait_event(CudaApi *a, CuStream s, CuEvent e, Err *err) {
    return dcheck(a, drv(a)->dev->stream_wait_event(s, e, 0), "cuStreamWaitEvent", err);
}
static int d_event_elapsed(CudaApi *a, CuEvent start, CuEvent end, float *ms, Err *err) {
    return dcheck(a, drv(a)->dev->event_elapsed(ms, start, end), "cuEventElapsedTime", err);
}
static int d_gemm(CudaApi *a, const CudaGemm *g, CuStream s, Err *err) { return blaslt_gemm(drv(a)->blaslt, g, s, err); }

static int d_fp8_gemm(CudaApi *a, const CudaFp8Gemm *g, CuStream s, Err *err) {
    return blaslt_fp8_gemm(drv(a)->blaslt, g, s, err);
}
static int d_fp8_check(CudaApi *a, const CudaFp8Gemm *g, Err *err) { (void)a; return blaslt_fp8_check(g, err); }

static void d_close(CudaApi *a) {
    Driver *d = drv(a);
    if (d->blaslt) blaslt_close(d->blaslt);
    if (d->workspace) d->dev->mem_free(d->workspace);
    if (d->ctx) d->dev->primary_release(d->dev->device);
    nvrtc_close(d->nvrtc);
    free(d->cache_dir);
    cuda_device_close(d->dev);
    free(d);
    free(a);
}

static const CudaApi driver_table = {
    .bind = d_bind, .compile = d_compile, .module_load = d_module_load, .module_unload = d_module_unload,
    .module_function = d_module_function, .mem_alloc = d_mem_alloc, .mem_free = d_mem_free,
    .memset_zero = d_memset_zero, .copy_h2d = d_copy_h2d, .copy_d2h = d_copy_d2h, .launch = d_launch,
    .stream_create = d_stream_create, .stream_destroy = d_stream_destroy, .stream_sync = d_stream_sync,
    .event_create = d_event_create, .event_destroy = d_event_destroy, .event_record = d_event_record,
    .stream_wait_event = d_stream_wait_event, .event_elapsed_ms = d_event_elapsed, .gemm = d_gemm,
    .fp8_gemm = d_fp8_gemm, .fp8_check = d_fp8_check, .memset_byte = d_memset_byte, .close = d_close,
};

static int open_parts(Driver *d, Err *err) {
    if (!(d->dev = cuda_device_open(err))) return -1;
    if (check(d->dev, d->dev->primary_retain(&d->ctx, d->dev->device), "cuDevicePrimaryCtxRetain", err)) {
        d->ctx = NULL;
        return -1;
    }
    if (check(d->dev, d->dev->ctx_set_current(d->ctx), "cuCtxSetCurrent", err)) return -1;
    if (!(d->nvrtc = nvrtc_open(err)) || !(d->cache_dir = kcache_dir(err))) return -1;
    if (check(d->dev, d->dev->mem_alloc(&d->workspace, GEMM_WORKSPACE), "cuMemAlloc (GEMM workspace)", err)) {
        d->workspace = 0;
        return -1;
    }
    if (!(d->blaslt = blaslt_open(NULL, d->workspace, GEMM_WORKSPACE, err))) return -1;
    snprintf(d->what, sizeof d->what, "CUDA driver on %s (%s)", d->dev->name, d->dev->target);
    return 0;
}

CudaApi *cuda_api_open(Err *err) {
    CudaApi *a = xcalloc(1, sizeof *a);
    *a = driver_table;
    Driver *d = xcalloc(1, sizeof *d);
    a->ctx = d;
    if (open_parts(d, err)) {
        if (d->dev) d_close(a);
        else free(d), free(a);
        return NULL;
    }
    a->what = d->what;
    return a;
}
