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

/* The order the blocks of the n-th launch run in: a shuffle seeded by n (splitmix64),
 * so reproducible from run to run, yet no fixed order a kernel could lean on. */
static void v3c_block_order(unsigned *order, unsigned grid, unsigned long long n) {
    unsigned long long state = n * 0x9e3779b97f4a7c15ull;
    for (unsigned b = 0; b < grid; b++) order[b] = b;
    for (unsigned b = grid; b > 1; b--) {
        unsigned long long z = (state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        unsigned j = (unsigned)(z % b), t = order[b - 1];
        order[b - 1] = order[j], order[j] = t;
    }
}

/* Runs fn(args) as a grid of `grid` blocks of `block` threads (block <= 1024).
 * A GPU runs the blocks in no order and leaves shared memory undefined: here
 * they run one after another in a shuffled order, each with shared memory
 * filled with NaN, so a kernel whose blocks read each other's results, or that
 * reads shared memory it did not write, fails its tests here too. */
extern "C" int v3c_emu_launch(v3c_entry fn, void **args, unsigned grid, unsigned block) {
    if (block < 1 || block > 1024) return -1;
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    static pthread_t threads[1024];
    static v3c_thread_job jobs[1024];
    static unsigned long long launches;
    /* Small stacks (kernels keep a few scalars): thread start-up is most of an emulated launch. */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 << 10);
    unsigned *order = new unsigned[grid ? grid : 1];
    v3c_block_order(order, grid, ++launches);
    for (unsigned i = 0; i < grid; i++) {
        std::memset(v3c_red, 0xff, sizeof v3c_red);
        pthread_barrier_init(&v3c_block_barrier, nullptr, block);
        for (unsigned t = 0; t < block; t++) {
            jobs[t] = {fn, args, order[i], t};
            if (pthread_create(&threads[t], &attr, v3c_run_thread, &jobs[t]) != 0) {
                delete[] order;
                pthread_attr_destroy(&attr);
                return -1;
            }
        }
        for (unsigned t = 0; t < block; t++) pthread_join(threads[t], nullptr);
        pthread_barrier_destroy(&v3c_block_barrier);
    }
    delete[] order;
    pthread_attr_destroy(&attr);
    return 0;
}
#endif
