/* codegen/cuda: NVRTC, loaded at run time with dlopen so that v3c builds and
 * runs where no CUDA toolkit is installed (then compiling is a clear error). */
#ifndef V3C_CODEGEN_NVRTC_H
#define V3C_CODEGEN_NVRTC_H

#include <stddef.h>

#include "../../base/base.h"

typedef struct Nvrtc Nvrtc;

/* Loads libnvrtc (libnvrtc.so.13, libnvrtc.so, then /usr/local/cuda/lib64/). */
Nvrtc *nvrtc_open(Err *err);
void nvrtc_close(Nvrtc *n);
/* "nvrtc 13.0": part of every cache key. */
const char *nvrtc_version_text(const Nvrtc *n);

/* Whether target is sm_NN or sm_NNa (NN two or three digits); else a user error. */
int cuda_target_check(const char *target, Err *err);

/* The options every kernel is compiled with, for target (NULL-terminated, static
 * storage except the architecture option, which is written into arch_buf). */
int nvrtc_options(const char *target, char *arch_buf, size_t n, const char **opts, int max_opts);

/* Compiles source to a cubin for target, and with ptx (may be NULL) hands back
 * the PTX it was assembled from. On failure the program log is in err. */
int nvrtc_compile(const Nvrtc *n, const char *source, const char *name, const char *target, char **cubin,
                  size_t *cubin_len, char **ptx, Err *err);

#endif
