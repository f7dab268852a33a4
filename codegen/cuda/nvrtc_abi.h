/* codegen: NVRTC's entry points and values as nvrtc.c calls them through dlopen
 * (base/dlabi.h; checked against nvrtc.h by tests/test_cuda_abi.c). */
#ifndef V3C_CODEGEN_CUDA_NVRTC_ABI_H
#define V3C_CODEGEN_CUDA_NVRTC_ABI_H

#include <stddef.h>

#include "../../base/dlabi.h"

typedef V3C_ABI(int, nvrtcResult) AbiNvrtcResult;
typedef V3C_ABI(struct AbiNvrtcProgram *, nvrtcProgram) AbiNvrtcProgram;

#define NVRTC_ABI_VALUES(X) X(NVRTC_OK, NVRTC_SUCCESS, 0)

enum { NVRTC_ABI_VALUES(DLABI_VALUE) };

#define NVRTC_ENTRY_POINTS(X)                                                                                          \
    X(nvrtcVersion, version_fn, AbiNvrtcResult, (int *major, int *minor))                                              \
    X(nvrtcCreateProgram, create, AbiNvrtcResult,                                                                      \
      (AbiNvrtcProgram * p, const char *src, const char *name, int nheaders, const char *const *headers,              \
       const char *const *include_names))                                                                              \
    X(nvrtcCompileProgram, compile, AbiNvrtcResult, (AbiNvrtcProgram p, int nopts, const char *const *opts))          \
    X(nvrtcGetProgramLogSize, log_size, AbiNvrtcResult, (AbiNvrtcProgram p, size_t *n))                                \
    X(nvrtcGetProgramLog, log, AbiNvrtcResult, (AbiNvrtcProgram p, char *log))                                         \
    X(nvrtcGetCUBINSize, cubin_size, AbiNvrtcResult, (AbiNvrtcProgram p, size_t *n))                                   \
    X(nvrtcGetCUBIN, cubin, AbiNvrtcResult, (AbiNvrtcProgram p, char *cubin))                                          \
    X(nvrtcGetPTXSize, ptx_size, AbiNvrtcResult, (AbiNvrtcProgram p, size_t *n))                                       \
    X(nvrtcGetPTX, ptx, AbiNvrtcResult, (AbiNvrtcProgram p, char *ptx))                                                \
    X(nvrtcDestroyProgram, destroy, AbiNvrtcResult, (AbiNvrtcProgram * p))                                             \
    X(nvrtcGetErrorString, error_string, const char *, (AbiNvrtcResult r))

#endif
