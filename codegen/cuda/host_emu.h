/* Host emulation of the CUDA C subset v3c generates, for the tests (C++, not
 * part of any build): a generated kernel source compiled with
 *   g++ -std=c++17 -ffp-contract=off -include codegen/cuda/host_emu.h
 * runs on the CPU with one pthread per CUDA thread of a block and blocks one
 * after another; __syncthreads is a barrier of the block's threads. It checks
 * the generated arithmetic and indexing, not the GPU's scheduling, memory
 * model or math library (see docs/cuda.md). Kernels use no warp intrinsics or
 * atomics, so nothing else needs emulating.
 *
 * One translation unit defines V3C_EMU_MAIN and gets the launcher. */
#ifndef V3C_HOST_EMU_H
#define V3C_HOST_EMU_H

#include <cmath>
#include <cstring>
#include <pthread.h>

using std::isinf;
using std::isnan;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__
#define __restrict__ __restrict

struct v3c_dim3 {
    unsigned x, y, z;
};
extern thread_local v3c_dim3 threadIdx, blockIdx;
extern v3c_dim3 blockDim, gridDim;
extern pthread_barrier_t v3c_block_barrier;
/* The dynamic shared memory every kernel names v3c_red (blocks run one at a time). */
extern "C" double v3c_red[];

inline void __syncthreads() { pthread_barrier_wait(&v3c_block_barrier); }
inline double __longlong_as_double(long long v) { double d; std::memcpy(&d, &v, sizeof d); return d; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, sizeof u); return u; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, sizeof f); return f; }

#endif

/* Outside the include guard: the launcher's TU includes this file again after
 * defining V3C_EMU_MAIN (g++ -include has already read it once). */
#if defined(V3C_EMU_MAIN) && !defined(V3C_HOST_EMU_MAIN_DONE)
#define V3C_HOST_EMU_MAIN_DONE
thread_local v3c_dim3 threadIdx, blockIdx;
v3c_dim3 blockDim, gridDim;
pthread_barrier_t v3c_block_barrier;
extern "C" double v3c_red[4096];
double v3c_red[4096];

typedef void (*v3c_entry)(void **args);

struct v3c_thread_job {
    v3c_entry fn;
    void **args;
    unsigned block, thread;
};

static void *v3c_run_thread(void *p) {
    v3c_thread_job *j = (v3c_thread_job *)p;
    blockIdx = {j->block, 0, 0};
    threadIdx = {j->thread, 0, 0};
    j->fn(j->args);
    return nullptr;
}

/* Runs fn(args) as a grid of `grid` blocks of `block` threads (block <= 1024). */
extern "C" int v3c_emu_launch(v3c_entry fn, void **args, unsigned grid, unsigned block) {
    if (block < 1 || block > 1024) return -1;
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    static pthread_t threads[1024];
    static v3c_thread_job jobs[1024];
    for (unsigned b = 0; b < grid; b++) {
        pthread_barrier_init(&v3c_block_barrier, nullptr, block);
        for (unsigned t = 0; t < block; t++) {
            jobs[t] = {fn, args, b, t};
            if (pthread_create(&threads[t], nullptr, v3c_run_thread, &jobs[t]) != 0) return -1;
        }
        for (unsigned t = 0; t < block; t++) pthread_join(threads[t], nullptr);
        pthread_barrier_destroy(&v3c_block_barrier);
    }
    return 0;
}
#endif
