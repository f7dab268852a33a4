/* runtime: the CUDA driver, loaded at run time (dlopen "libcuda.so.1") so that
 * one v3c binary runs with or without a GPU. This part opens the driver and
 * finds the device and its architecture (the default NVRTC target); where the
 * driver or a device is missing, the error names what is missing.
 *
 * Not verified on a GPU: no machine this was written on has one. */
#ifndef V3C_RUNTIME_CUDA_BACKEND_H
#define V3C_RUNTIME_CUDA_BACKEND_H

#include "cuda_api.h"

typedef struct CudaDevice CudaDevice;

/* Loads the driver, cuInit, device 0. */
CudaDevice *cuda_device_open(Err *err);
void cuda_device_close(CudaDevice *d);
/* "sm_90a" on Hopper (the arch-specific target for compute capability 9.0), else "sm_NN". */
const char *cuda_device_target(const CudaDevice *d);
const char *cuda_device_name(const CudaDevice *d);

/* Whether the driver loads and a GPU answers; prints nothing, costs one dlopen
 * where there is no driver (exec_default_backend asks it). */
int cuda_gpu_present(void);

/* The executor's table on the real device (cuda_api.h): device 0's primary
 * context, two streams' worth of driver calls, kernels compiled by NVRTC for
 * the device's target through the kernel cache ($V3C_CACHE_DIR, ...), GEMMs by
 * cuBLASLt (fp32, and block-scaled FP8 in the forward form: cuda_blaslt.h). */
CudaApi *cuda_api_open(Err *err);

#endif
