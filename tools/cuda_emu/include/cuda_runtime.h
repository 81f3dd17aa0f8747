/* Host emulation of the CUDA runtime for reviewing seqk's kernels without a GPU.
 * Each CUDA thread is a fiber; blocks run one after the other (EMU_RESIDENT=N:
 * N of them interleaved); __syncthreads and warp intrinsics are barriers
 * between fibers, __threadfence a point where other resident blocks may run. */
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <math.h>
#include <functional>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct uint3 { unsigned x, y, z; };
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct float2 { float x, y; };
static inline float2 make_float2(float a, float b) { float2 r; r.x = a; r.y = b; return r; }

typedef void *cudaStream_t;
typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2,
       cudaErrorInvalidConfiguration = 9, cudaErrorNoDevice = 100,
       cudaErrorInsufficientDriver = 35, cudaErrorLaunchOutOfResources = 7 };
typedef enum { cudaMemcpyHostToHost = 0, cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2,
               cudaMemcpyDeviceToDevice = 3, cudaMemcpyDefault = 4 } cudaMemcpyKind;
typedef enum { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 } cudaFuncAttribute;

cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind k, cudaStream_t s);
cudaError_t cudaMemsetAsync(void *dst, int v, size_t bytes, cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaGetLastError(void);
const char *cudaGetErrorName(cudaError_t e);
const char *cudaGetErrorString(cudaError_t e);
cudaError_t emu_func_set_attr(const void *f, int attr, int v);
template <class T> cudaError_t cudaFuncSetAttribute(T *f, cudaFuncAttribute attr, int v)
{
    return emu_func_set_attr((const void *)f, (int)attr, v);
}

/* ---- the emulated machine ---- */
struct emu_thread;
extern emu_thread *emu_cur;
extern uint3 emu_bidx;
extern dim3 emu_bdim, emu_gdim;
uint3 &emu_tid_of(emu_thread *t);
#define threadIdx (emu_tid_of(emu_cur))
#define blockIdx emu_bidx
#define blockDim emu_bdim
#define gridDim emu_gdim

void *emu_dyn_smem(void);
void emu_poison(void *p, size_t n);
void emu_syncthreads(void);
void emu_warp_put(const void *v, size_t n, unsigned mask, int op);
void emu_warp_get(int src, void *v, size_t n, unsigned mask, int op);
int emu_lane(void);
unsigned emu_warp_ballot(unsigned mask, int pred);
struct emu_shreg { emu_shreg(void *p, size_t n); };
#define EMU_SHARED_REG(n) static emu_shreg emu_reg_##n((void *)(n), sizeof(n))

static inline void __syncthreads(void) { emu_syncthreads(); }
void emu_fence(void);
static inline void __threadfence(void) { emu_fence(); }
static inline void __nanosleep(unsigned) {}
template <class T> static inline T __ldg(const T *p) { return *p; }
template <class T> static inline T __ldcg(const T *p) { return *p; }
template <class T> static inline void __stcg(T *p, T v) { *p = v; }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
static inline float __int_as_float(int x) { float f; memcpy(&f, &x, 4); return f; }
static inline unsigned atomicAdd(unsigned *p, unsigned v) { unsigned o = *p; *p = o + v; return o; }

template <class T> static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32)
{
    const int lane = emu_lane();
    emu_warp_put(&v, sizeof(T), mask, 1);
    T r;
    emu_warp_get((lane & ~(width - 1)) + (src & (width - 1)), &r, sizeof(T), mask, 2);
    return r;
}
template <class T> static inline T __shfl_xor_sync(unsigned mask, T v, int m, int width = 32)
{
    const int lane = emu_lane();
    emu_warp_put(&v, sizeof(T), mask, 1);
    T r;
    int s = lane ^ m;
    if ((s & ~(width - 1)) != (lane & ~(width - 1))) s = lane;
    emu_warp_get(s, &r, sizeof(T), mask, 2);
    return r;
}
template <class T> static inline T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32)
{
    const int lane = emu_lane();
    emu_warp_put(&v, sizeof(T), mask, 1);
    T r;
    int s = lane - (int)d;
    if (s < (lane & ~(width - 1))) s = lane;
    emu_warp_get(s, &r, sizeof(T), mask, 2);
    return r;
}
static inline unsigned __ballot_sync(unsigned mask, int pred) { return emu_warp_ballot(mask, pred); }

bool emu_check_launch(const void *k, dim3 g, dim3 b, size_t smem, const char *name);
void emu_run_grid(dim3 g, dim3 b, size_t smem, const std::function<void()> &body, const char *name);

template <class... P, class... A>
static void emu_launch_(const char *name, void (*k)(P...), dim3 g, dim3 b, size_t smem, cudaStream_t,
                        A... a)
{
    if (!emu_check_launch((const void *)k, g, b, smem, name)) return;
    std::function<void()> body = [=]() { k(a...); };
    emu_run_grid(g, b, smem, body, name);
}
#define EMU_LAUNCH(k, ...) emu_launch_(#k, k, __VA_ARGS__)
