/* Host emulation of the CUDA C subset v3c generates, for the tests (C++, not
 * part of any build): a generated kernel source compiled with
 *   g++ -std=c++17 -ffp-contract=off -include codegen/cuda/host_emu.h
 * runs on the CPU with one pthread per CUDA thread of a block (a team kept
 * between blocks and launches) and blocks one after another; __syncthreads
 * is a barrier of the block's threads. It checks
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

/* The threads of one block, kept from block to block and launch to launch (started
 * again only when a launch asks for another block size): starting 256 threads per
 * block was most of an emulated launch. Each block, the launcher and the team meet
 * at `go`, the team runs the block, and they meet again at `done`. */
struct v3c_team {
    unsigned size;
    pthread_t threads[1024];
    pthread_barrier_t go, done;
    v3c_entry fn;
    void **args;
    unsigned block;
    bool quit;
    /* Threads wait here until all of the team could be started (or not: quit). */
    pthread_mutex_t gate_lock;
    pthread_cond_t gate_open;
    bool gate;
};
static v3c_team v3c_the_team = {0, {}, {}, {}, nullptr, nullptr, 0, false, PTHREAD_MUTEX_INITIALIZER,
                                PTHREAD_COND_INITIALIZER, false};

static void v3c_team_open_gate(bool quit) {
    v3c_team &m = v3c_the_team;
    pthread_mutex_lock(&m.gate_lock);
    m.quit = quit, m.gate = true;
    pthread_cond_broadcast(&m.gate_open);
    pthread_mutex_unlock(&m.gate_lock);
}

static void *v3c_team_thread(void *p) {
    v3c_team &m = v3c_the_team;
    unsigned t = (unsigned)(size_t)p;
    pthread_mutex_lock(&m.gate_lock);
    while (!m.gate) pthread_cond_wait(&m.gate_open, &m.gate_lock);
    pthread_mutex_unlock(&m.gate_lock);
    if (m.quit) return nullptr;
    for (;;) {
        pthread_barrier_wait(&m.go);
        if (m.quit) return nullptr;
        blockIdx = {m.block, 0, 0};
        threadIdx = {t, 0, 0};
        m.fn(m.args);
        pthread_barrier_wait(&m.done);
    }
}

static void v3c_team_join(unsigned n) {
    for (unsigned t = 0; t < n; t++) pthread_join(v3c_the_team.threads[t], nullptr);
}

static void v3c_team_stop() {
    v3c_team &m = v3c_the_team;
    if (m.size == 0) return;
    m.quit = true;
    pthread_barrier_wait(&m.go);
    v3c_team_join(m.size);
    pthread_barrier_destroy(&m.go);
    pthread_barrier_destroy(&m.done);
    pthread_barrier_destroy(&v3c_block_barrier);
    m.size = 0;
}

/* A forked child has none of the parent's threads (Check runs each test in one). */
static void v3c_team_forget() { v3c_the_team.size = 0; }

/* The team's lifetime is the library's: threads still waiting in its code when it is
 * unloaded would crash, so they are stopped first. */
struct v3c_team_owner {
    v3c_team_owner() { pthread_atfork(nullptr, nullptr, v3c_team_forget); }
    ~v3c_team_owner() { v3c_team_stop(); }
};
static v3c_team_owner v3c_the_team_owner;

/* A team of `size` threads; false (and no team) when the system refuses a thread. */
static bool v3c_team_start(unsigned size) {
    v3c_team &m = v3c_the_team;
    if (m.size == size) return true;
    v3c_team_stop();
    m.gate = false;
    /* Small stacks (kernels keep a few scalars). */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 << 10);
    unsigned started = 0;
    while (started < size && pthread_create(&m.threads[started], &attr, v3c_team_thread, (void *)(size_t)started) == 0)
        started++;
    pthread_attr_destroy(&attr);
    if (started < size) {
        v3c_team_open_gate(true);
        v3c_team_join(started);
        return false;
    }
    pthread_barrier_init(&m.go, nullptr, size + 1);
    pthread_barrier_init(&m.done, nullptr, size + 1);
    pthread_barrier_init(&v3c_block_barrier, nullptr, size);
    m.size = size;
    v3c_team_open_gate(false);
    return true;
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
    if (!v3c_team_start(block)) return -1;
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    static unsigned long long launches;
    unsigned *order = new unsigned[grid ? grid : 1];
    v3c_block_order(order, grid, ++launches);
    v3c_team &m = v3c_the_team;
    m.fn = fn, m.args = args;
    for (unsigned i = 0; i < grid; i++) {
        std::memset(v3c_red, 0xff, sizeof v3c_red);
        m.block = order[i];
        pthread_barrier_wait(&m.go);
        pthread_barrier_wait(&m.done);
    }
    delete[] order;
    return 0;
}
#endif
