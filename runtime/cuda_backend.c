/* The CUDA driver through dlopen: the entry points resolved by name into a
 * table, errors turned into messages with cuGetErrorString. */
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_backend.h"

typedef int CUresult;
enum { CU_ATTR_CC_MAJOR = 75, CU_ATTR_CC_MINOR = 76 }; /* CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_* */

struct CudaDevice {
    void *lib;
    int device;
    char target[16], name[256];
    CUresult (*init)(unsigned flags);
    CUresult (*device_count)(int *count);
    CUresult (*device_get)(int *device, int ordinal);
    CUresult (*device_attribute)(int *value, int attribute, int device);
    CUresult (*device_name)(char *name, int len, int device);
    CUresult (*error_string)(CUresult r, const char **text);
};

typedef struct Symbol {
    const char *name;
    size_t offset;
} Symbol;

#define SYM(name, field) {name, offsetof(CudaDevice, field)}
static const Symbol symbols[] = {
    SYM("cuInit", init), SYM("cuDeviceGetCount", device_count), SYM("cuDeviceGet", device_get),
    SYM("cuDeviceGetAttribute", device_attribute), SYM("cuDeviceGetName", device_name),
    SYM("cuGetErrorString", error_string),
};

static int resolve(CudaDevice *d, Err *err) {
    for (size_t i = 0; i < sizeof symbols / sizeof *symbols; i++) {
        void *fn = dlsym(d->lib, symbols[i].name);
        if (!fn) return err_set(err, "the CUDA driver (libcuda.so.1) lacks %s", symbols[i].name);
        memcpy((char *)d + symbols[i].offset, &fn, sizeof fn);
    }
    return 0;
}

static int check(const CudaDevice *d, CUresult r, const char *what, Err *err) {
    if (r == 0) return 0;
    const char *text = NULL;
    if (d->error_string(r, &text) != 0 || !text) text = "unknown error";
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
