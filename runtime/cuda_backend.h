/* runtime: the CUDA driver, loaded at run time (dlopen "libcuda.so.1") so that
 * one v3c binary runs with or without a GPU. This part opens the driver and
 * finds the device and its architecture (the default NVRTC target); where the
 * driver or a device is missing, the error names what is missing.
 *
 * Not verified on a GPU: no machine this was written on has one. */
#ifndef V3C_RUNTIME_CUDA_BACKEND_H
#define V3C_RUNTIME_CUDA_BACKEND_H

#include "../base/base.h"

typedef struct CudaDevice CudaDevice;

/* Loads the driver, cuInit, device 0. */
CudaDevice *cuda_device_open(Err *err);
void cuda_device_close(CudaDevice *d);
/* "sm_90a" on Hopper (the arch-specific target for compute capability 9.0), else "sm_NN". */
const char *cuda_device_target(const CudaDevice *d);
const char *cuda_device_name(const CudaDevice *d);

#endif
