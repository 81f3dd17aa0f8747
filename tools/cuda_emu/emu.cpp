/* tools/cuda_emu/emu.cpp -- the emulated CUDA runtime and machine (see
 * README.md): grids run block by block; a block's threads are fibers that
 * run until they reach a barrier (__syncthreads: the whole block; a warp
 * operation: the 32 lanes, same mask and operation), when the scheduler
 * releases it; shared memory, device allocations and workspaces are filled
 * with 0xff bytes (NaN) before use. EMU_ORDER=fwd|rev|rand sets the order of
 * blocks and of the fibers between barriers. Errors it can see (deadlock,
 * divergent warp operations, launch limits, shared memory over the opt-in)
 * stop the program with a message naming the kernel, block and thread. */
#include "cuda_runtime.h"
#include <sys/mman.h>
#include <vector>
#include <map>
#include <string>
#include <algorithm>
#include <random>

enum { RUN = 0, BAR_BLOCK = 1, BAR_WARP = 2, DONE = 3 };
struct emu_thread {
    void *sp;
    uint3 tid;
    int state, lane, warp, op;
    unsigned mask;
};
emu_thread *emu_cur;
uint3 emu_bidx;
dim3 emu_bdim, emu_gdim;
uint3 &emu_tid_of(emu_thread *t) { return t->tid; }

static void *sched_sp;
extern "C" void emu_ctx_switch(void **save, void *to);
static std::vector<emu_thread> th;
static const std::function<void()> *cur_body;
static void *dyn_smem;
static size_t dyn_bytes;
static uint64_t xbuf[32][32];
static int last_error;
static std::map<const void *, int> max_dyn;
static const char *cur_kernel;
static long n_launch;

struct shreg { void *p; size_t n; };
static std::vector<shreg> &shregs() { static std::vector<shreg> v; return v; }
static void poison(void *p, size_t n);
emu_shreg::emu_shreg(void *p, size_t n) { shregs().push_back({p, n}); poison(p, n); }
void emu_poison(void *p, size_t n) { poison(p, n); }

static int order_mode() {
    static int m = -1;
    if (m < 0) {
        const char *e = getenv("EMU_ORDER");
        m = !e ? 0 : !strcmp(e, "rev") ? 1 : !strcmp(e, "rand") ? 2 : 0;
    }
    return m;
}
static std::mt19937 rng(12345);

[[noreturn]] static void die(const char *what)
{
    fprintf(stderr, "EMU FATAL in kernel %s block (%u,%u,%u) thread %u: %s\n", cur_kernel ? cur_kernel : "?",
            emu_bidx.x, emu_bidx.y, emu_bidx.z, emu_cur ? emu_cur->tid.x : 0u, what);
    fflush(stderr);
    abort();
}

void *emu_dyn_smem(void) { return dyn_smem; }
int emu_lane(void) { return emu_cur->lane; }

static void yield_(int state)
{
    emu_cur->state = state;
    emu_ctx_switch(&emu_cur->sp, sched_sp);
}
void emu_syncthreads(void) { yield_(BAR_BLOCK); }
void emu_warp_put(const void *v, size_t n, unsigned mask, int op)
{
    if (!(mask >> emu_cur->lane & 1)) die("warp op: own lane not in mask");
    uint64_t x = 0;
    memcpy(&x, v, n);
    xbuf[emu_cur->warp][emu_cur->lane] = x;
    emu_cur->op = op, emu_cur->mask = mask;
    yield_(BAR_WARP);
}
void emu_warp_get(int src, void *v, size_t n, unsigned mask, int op)
{
    memcpy(v, &xbuf[emu_cur->warp][src], n);
    emu_cur->op = op, emu_cur->mask = mask;
    yield_(BAR_WARP);
}
unsigned emu_warp_ballot(unsigned mask, int pred)
{
    uint64_t x = pred != 0;
    xbuf[emu_cur->warp][emu_cur->lane] = x;
    emu_cur->op = 3, emu_cur->mask = mask;
    yield_(BAR_WARP);
    unsigned r = 0;
    for (int l = 0; l < 32; l++) {
        int t = emu_cur->warp * 32 + l;
        if ((mask >> l & 1) && t < (int)th.size() && xbuf[emu_cur->warp][l]) r |= 1u << l;
    }
    emu_cur->op = 4;
    yield_(BAR_WARP);
    return r;
}

static void fiber_main() {
    (*cur_body)();
    emu_cur->state = DONE;
    emu_ctx_switch(&emu_cur->sp, sched_sp);
    abort();
}

static std::vector<void *> stacks;
enum { STACK = 1 << 20 };

static void poison(void *p, size_t n) { memset(p, 0xff, n); }

static void run_block(size_t nthreads)
{
    th.assign(nthreads, emu_thread());
    if (stacks.size() < nthreads) {
        while (stacks.size() < nthreads) {
            void *s = mmap(NULL, STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (s == MAP_FAILED) die("mmap");
            stacks.push_back(s);
        }
    }
    for (size_t i = 0; i < nthreads; i++) {
        emu_thread &t = th[i];
        t.tid.x = (unsigned)(i % emu_bdim.x);
        t.tid.y = (unsigned)(i / emu_bdim.x % emu_bdim.y);
        t.tid.z = (unsigned)(i / (emu_bdim.x * emu_bdim.y));
        t.lane = (int)(i & 31), t.warp = (int)(i >> 5);
        t.state = RUN;
        uintptr_t top = ((uintptr_t)stacks[i] + STACK) & ~(uintptr_t)15;
        void **sp = (void **)top;
        *--sp = NULL;                    /* fiber_main's return address (never used) */
        *--sp = (void *)fiber_main;      /* ret target */
        for (int r = 0; r < 6; r++) *--sp = NULL;
        t.sp = (void *)sp;
    }
    std::vector<size_t> ord(nthreads);
    for (size_t i = 0; i < nthreads; i++) ord[i] = i;
    const int om = order_mode();
    if (om == 1) std::reverse(ord.begin(), ord.end());
    const size_t nw = (nthreads + 31) / 32;
    for (;;) {
        if (om == 2) std::shuffle(ord.begin(), ord.end(), rng);
        bool ran = false;
        for (size_t k = 0; k < nthreads; k++) {
            emu_thread &t = th[ord[k]];
            if (t.state != RUN) continue;
            emu_cur = &t;
            emu_ctx_switch(&sched_sp, t.sp);
            ran = true;
        }
        bool released = false, all_done = true, any_block = false;
        size_t live = 0, at_block = 0;
        for (auto &t : th) {
            if (t.state != DONE) live++, all_done = false;
            if (t.state == BAR_BLOCK) at_block++, any_block = true;
        }
        if (all_done) break;
        for (size_t w = 0; w < nw; w++) {
            size_t wl = 0, wb = 0;
            int op = -1;
            unsigned mask = 0;
            bool mixed = false;
            for (size_t i = w * 32; i < nthreads && i < w * 32 + 32; i++) {
                if (th[i].state == DONE) continue;
                wl++;
                if (th[i].state == BAR_WARP) {
                    wb++;
                    if (op < 0) op = th[i].op, mask = th[i].mask;
                    else if (op != th[i].op || mask != th[i].mask) mixed = true;
                }
            }
            if (wl && wb == wl) {
                if (mixed) { emu_cur = &th[w * 32]; die("warp barrier: lanes at different warp ops / masks"); }
                for (int l = 0; l < 32; l++)
                    if (mask >> l & 1) {
                        size_t i = w * 32 + l;
                        if (i >= nthreads || th[i].state == DONE) {
                            emu_cur = &th[w * 32];
                            die("warp op: mask names an exited or absent lane");
                        }
                    }
                for (size_t i = w * 32; i < nthreads && i < w * 32 + 32; i++)
                    if (th[i].state == BAR_WARP) th[i].state = RUN;
                released = true;
            }
        }
        if (!released && at_block == live && live) {
            for (auto &t : th) if (t.state == BAR_BLOCK) t.state = RUN;
            released = true;
        }
        if (!released && !ran) {
            int n[4] = {0, 0, 0, 0};
            for (auto &t : th) n[t.state]++;
            char msg[200];
            snprintf(msg, sizeof msg, "deadlock: %d at __syncthreads, %d at warp ops, %d exited", n[1], n[2], n[3]);
            emu_cur = &th[0];
            die(msg);
        }
        (void)any_block;
    }
}

bool emu_check_launch(const void *k, dim3 g, dim3 b, size_t smem, const char *name)
{
    n_launch++;
    const size_t nt = (size_t)b.x * b.y * b.z;
    if (getenv("EMU_TRACE")) fprintf(stderr, "launch %s grid (%u,%u,%u) block (%u,%u,%u) smem %zu\n", name, g.x, g.y, g.z, b.x, b.y, b.z, smem);
    if (nt == 0 || nt > 1024 || b.z > 64 || g.x == 0 || g.y == 0 || g.z == 0 || g.x > 2147483647u || g.y > 65535 || g.z > 65535) {
        fprintf(stderr, "EMU LAUNCH ERROR %s: invalid configuration grid (%u,%u,%u) block (%u,%u,%u)\n", name, g.x, g.y, g.z, b.x, b.y, b.z);
        last_error = cudaErrorInvalidConfiguration;
        return false;
    }
    int lim = 48 * 1024;
    auto it = max_dyn.find(k);
    if (it != max_dyn.end()) lim = it->second;
    if (smem > (size_t)lim) {
        fprintf(stderr, "EMU LAUNCH ERROR %s: %zu bytes of dynamic shared memory, limit %d (opt-in missing?)\n", name, smem, lim);
        last_error = cudaErrorInvalidValue;
        return false;
    }
    return true;
}

void emu_run_grid(dim3 g, dim3 b, size_t smem, const std::function<void()> &body, const char *name)
{
    cur_kernel = name;
    emu_bdim = b, emu_gdim = g;
    cur_body = &body;
    const size_t nb = (size_t)g.x * g.y * g.z, nt = (size_t)b.x * b.y * b.z;
    if (getenv("EMU_MAXBLOCKS") && nb > (size_t)atol(getenv("EMU_MAXBLOCKS"))) {
        fprintf(stderr, "EMU: kernel %s has %zu blocks, over EMU_MAXBLOCKS\n", name, nb);
    }
    std::vector<size_t> ord(nb);
    for (size_t i = 0; i < nb; i++) ord[i] = i;
    if (order_mode() == 1) std::reverse(ord.begin(), ord.end());
    if (order_mode() == 2) std::shuffle(ord.begin(), ord.end(), rng);
    for (size_t k = 0; k < nb; k++) {
        const size_t id = ord[k];
        emu_bidx.x = (unsigned)(id % g.x);
        emu_bidx.y = (unsigned)(id / g.x % g.y);
        emu_bidx.z = (unsigned)(id / ((size_t)g.x * g.y));
        dyn_bytes = smem;
        dyn_smem = malloc(smem ? smem : 1);
        poison(dyn_smem, smem);
        for (auto &r : shregs()) poison(r.p, r.n);
        run_block(nt);
        free(dyn_smem);
        dyn_smem = NULL;
    }
    emu_cur = NULL;
    cur_kernel = NULL;
}

cudaError_t emu_func_set_attr(const void *f, int attr, int v)
{
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
    if (v < 0 || v > 227 * 1024) {
        fprintf(stderr, "EMU: cudaFuncSetAttribute(MaxDynamicSharedMemorySize, %d) exceeds 227 KB\n", v);
        return cudaErrorInvalidValue;
    }
    max_dyn[f] = v;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceCount(int *n) { *n = 1; return cudaSuccess; }
cudaError_t cudaSetDevice(int) { return cudaSuccess; }
cudaError_t cudaMalloc(void **p, size_t bytes)
{
    *p = malloc(bytes ? bytes : 1);
    if (!*p) return cudaErrorMemoryAllocation;
    poison(*p, bytes);
    return cudaSuccess;
}
cudaError_t cudaFree(void *p) { free(p); return cudaSuccess; }
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind, cudaStream_t)
{
    memmove(d, s, n);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t) { memset(d, v, n); return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaGetLastError(void) { int e = last_error; last_error = 0; return e; }
const char *cudaGetErrorName(cudaError_t e) { static char b[32]; snprintf(b, 32, "emuError%d", e); return b; }
const char *cudaGetErrorString(cudaError_t) { return "emulated error"; }
