/* runtime: the CUDA driver API's entry points and values as cuda_backend.c calls
 * them through dlopen (base/dlabi.h; checked against cuda.h by
 * tests/test_cuda_abi.c). The symbols are the exported names: the _v2 ones where
 * cuda.h maps the plain name to them. */
#ifndef V3C_RUNTIME_CUDA_DRIVER_ABI_H
#define V3C_RUNTIME_CUDA_DRIVER_ABI_H

#include <stddef.h>

#include "../base/dlabi.h"

typedef V3C_ABI(int, CUresult) AbiCuResult;
typedef V3C_ABI(int, CUdevice) AbiCuDevice;
typedef V3C_ABI(int, CUdevice_attribute) AbiCuDeviceAttribute;
typedef V3C_ABI(void *, CUcontext) AbiCuContext;
typedef V3C_ABI(void *, CUmodule) AbiCuModule;
typedef V3C_ABI(void *, CUfunction) AbiCuFunction;
typedef V3C_ABI(void *, CUstream) AbiCuStream;
typedef V3C_ABI(void *, CUevent) AbiCuEvent;
typedef V3C_ABI(unsigned long long, CUdeviceptr) AbiCuPtr;

#define CU_DRIVER_ABI_VALUES(X)                                                                                        \
    X(CU_OK, CUDA_SUCCESS, 0)                                                                                          \
    X(CU_ATTR_CC_MAJOR, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, 75)                                              \
    X(CU_ATTR_CC_MINOR, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, 76)                                              \
    X(CU_FLAG_STREAM_NON_BLOCKING, CU_STREAM_NON_BLOCKING, 1) /* no implicit sync with the legacy stream */            \
    X(CU_FLAG_EVENT_DEFAULT, CU_EVENT_DEFAULT, 0)             /* timed, so cuEventElapsedTime can read it */

enum { CU_DRIVER_ABI_VALUES(DLABI_VALUE) };

#define CU_DRIVER_ENTRY_POINTS(X)                                                                                      \
    X(cuInit, init, AbiCuResult, (unsigned flags))                                                                     \
    X(cuDeviceGetCount, device_count, AbiCuResult, (int *count))                                                       \
    X(cuDeviceGet, device_get, AbiCuResult, (AbiCuDevice * device, int ordinal))                                       \
    X(cuDeviceGetAttribute, device_attribute, AbiCuResult,                                                             \
      (int *value, AbiCuDeviceAttribute attribute, AbiCuDevice device))                                                \
    X(cuDeviceGetName, device_name, AbiCuResult, (char *name, int len, AbiCuDevice device))                            \
    X(cuGetErrorString, error_string, AbiCuResult, (AbiCuResult r, const char **text))                                 \
    X(cuDevicePrimaryCtxRetain, primary_retain, AbiCuResult, (AbiCuContext * ctx, AbiCuDevice device))                 \
    X(cuDevicePrimaryCtxRelease_v2, primary_release, AbiCuResult, (AbiCuDevice device))                                \
    X(cuCtxSetCurrent, ctx_set_current, AbiCuResult, (AbiCuContext ctx))                                               \
    X(cuModuleLoadData, module_load_data, AbiCuResult, (AbiCuModule * m, const void *image))                           \
    X(cuModuleUnload, module_unload, AbiCuResult, (AbiCuModule m))                                                     \
    X(cuModuleGetFunction, module_get_function, AbiCuResult, (AbiCuFunction * f, AbiCuModule m, const char *name))     \
    X(cuLaunchKernel, launch_kernel, AbiCuResult,                                                                      \
      (AbiCuFunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned smem,   \
       AbiCuStream s, void **params, void **extra))                                                                    \
    X(cuMemAlloc_v2, mem_alloc, AbiCuResult, (AbiCuPtr * p, size_t bytes))                                             \
    X(cuMemFree_v2, mem_free, AbiCuResult, (AbiCuPtr p))                                                               \
    X(cuMemsetD8Async, memset_d8_async, AbiCuResult, (AbiCuPtr p, unsigned char v, size_t n, AbiCuStream s))           \
    X(cuMemcpyHtoDAsync_v2, memcpy_h2d_async, AbiCuResult, (AbiCuPtr dst, const void *src, size_t n, AbiCuStream s))   \
    X(cuMemcpyDtoHAsync_v2, memcpy_d2h_async, AbiCuResult, (void *dst, AbiCuPtr src, size_t n, AbiCuStream s))         \
    X(cuStreamCreate, stream_create, AbiCuResult, (AbiCuStream * s, unsigned flags))                                   \
    X(cuStreamDestroy_v2, stream_destroy, AbiCuResult, (AbiCuStream s))                                                \
    X(cuStreamSynchronize, stream_sync, AbiCuResult, (AbiCuStream s))                                                  \
    X(cuEventCreate, event_create, AbiCuResult, (AbiCuEvent * e, unsigned flags))                                      \
    X(cuEventDestroy_v2, event_destroy, AbiCuResult, (AbiCuEvent e))                                                   \
    X(cuEventRecord, event_record, AbiCuResult, (AbiCuEvent e, AbiCuStream s))                                         \
    X(cuStreamWaitEvent, stream_wait_event, AbiCuResult, (AbiCuStream s, AbiCuEvent e, unsigned flags))                \
    X(cuEventElapsedTime_v2, event_elapsed, AbiCuResult, (float *ms, AbiCuEvent start, AbiCuEvent end))

/* A driver older than the _v2 entry point exports only the plain name, with the same parameters. */
#define CU_DRIVER_OLDER_NAMES(X) X(cuEventElapsedTime_v2, cuEventElapsedTime)

#endif
