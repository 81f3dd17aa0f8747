/* tools/cuda_emu/emu.cpp -- the emulated CUDA runtime and machine (see
 * README.md): grids run block by block (EMU_RESIDENT=N: N blocks at once,
 * interleaved at every barrier, warp operation and __threadfence); a block's
 * threads are fibers that run until they reach a barrier (__syncthreads: the
 * whole block; a warp operation: the 32 lanes, same mask and operation), when
 * the scheduler releases it; shared memory, device allocations and
 * workspaces are filled with 0xff bytes (NaN) before use. EMU_ORDER=fwd|rev|
 * rand sets the order of blocks and of the fibers between barriers. Errors
 * it can see (deadlock, a spin no resident block can end, a fiber that never
 * yields (EMU_WATCHDOG), divergent warp operations, launch limits, shared
 * memory over the opt-in) stop the program with a message naming the kernel,
 * block and thread. */
#include "cuda_runtime.h"
#include <sys/mman.h>
#include <vector>
#include <map>
#include <string>
#include <algorithm>
#include <random>
#include <atomic>
#include <thread>
#include <chrono>

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
/* One resident block: its fibers, index, dynamic shared memory, warp
 * exchange buffer and (with several resident blocks) its copy of the static
 * __shared__ arrays, swapped in while it runs. */
struct emu_block {
    std::vector<emu_thread> fib;
    uint3 bidx;
    void *dyn;
    std::vector<unsigned char> sh;
    uint64_t xbuf[32][32];
    size_t stack0;
    bool live;
};
static std::vector<emu_thread> *thp; /* the running block's fibers */
static const std::function<void()> *cur_body;
static void *dyn_smem;
static size_t dyn_bytes;
static uint64_t (*xbuf)[32];
static size_t n_resident = 1; /* EMU_RESIDENT: blocks that run interleaved */
static int last_error;
static std::map<const void *, int> max_dyn;
static const char *cur_kernel;
static long n_launch;
/* The watchdog (EMU_WATCHDOG seconds, default 60, 0 = off): while a grid
 * runs, a thread that checks that fibers keep coming back to the scheduler.
 * A fiber that never does spins without a barrier, warp operation or
 * __threadfence (with EMU_RESIDENT > 1 the only points where the blocks it
 * may wait for run), or loops forever: reported instead of a silent hang. */
static std::atomic<unsigned long> n_switch;
static std::atomic<bool> in_grid;

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
/* __threadfence: with several resident blocks, a point where the scheduler
 * may run the other blocks (a spin on another block's flag reaches one on
 * every read), so their writes become visible between the fiber's reads. */
void emu_fence(void)
{
    if (n_resident > 1) yield_(RUN);
}
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
        if ((mask >> l & 1) && t < (int)thp->size() && xbuf[emu_cur->warp][l]) r |= 1u << l;
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

static void ensure_stacks(size_t n)
{
    while (stacks.size() < n) {
        void *s = mmap(NULL, STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (s == MAP_FAILED) die("mmap");
        stacks.push_back(s);
    }
}

/* Block id of the grid into slot blk (its fibers on stacks from stack0). */
static void init_block(emu_block &blk, size_t id, size_t nthreads, size_t smem)
{
    const dim3 g = emu_gdim;
    blk.bidx.x = (unsigned)(id % g.x);
    blk.bidx.y = (unsigned)(id / g.x % g.y);
    blk.bidx.z = (unsigned)(id / ((size_t)g.x * g.y));
    blk.dyn = malloc(smem ? smem : 1);
    poison(blk.dyn, smem);
    if (n_resident > 1) {
        size_t n = 0;
        for (auto &r : shregs()) n += r.n;
        blk.sh.assign(n, 0xff);
    } else {
        for (auto &r : shregs()) poison(r.p, r.n);
    }
    blk.fib.assign(nthreads, emu_thread());
    ensure_stacks(blk.stack0 + nthreads);
    for (size_t i = 0; i < nthreads; i++) {
        emu_thread &t = blk.fib[i];
        t.tid.x = (unsigned)(i % emu_bdim.x);
        t.tid.y = (unsigned)(i / emu_bdim.x % emu_bdim.y);
        t.tid.z = (unsigned)(i / (emu_bdim.x * emu_bdim.y));
        t.lane = (int)(i & 31), t.warp = (int)(i >> 5);
        t.state = RUN;
        uintptr_t top = ((uintptr_t)stacks[blk.stack0 + i] + STACK) & ~(uintptr_t)15;
        void **sp = (void **)top;
        *--sp = NULL;                    /* fiber_main's return address (never used) */
        *--sp = (void *)fiber_main;      /* ret target */
        for (int r = 0; r < 6; r++) *--sp = NULL;
        t.sp = (void *)sp;
    }
    blk.live = true;
}

/* Makes blk the running block (in: swap its static shared arrays in) or
 * puts it aside (out). */
static void activate(emu_block &blk, bool in)
{
    thp = &blk.fib;
    xbuf = blk.xbuf;
    emu_bidx = blk.bidx;
    dyn_smem = blk.dyn;
    if (n_resident > 1) {
        /* the static arrays register when their function first runs (they
         * are function-local statics): a block that has not seen one yet
         * gets it poisoned */
        size_t n = 0, o = 0;
        for (auto &r : shregs()) n += r.n;
        if (blk.sh.size() < n) blk.sh.resize(n, 0xff);
        for (auto &r : shregs()) {
            if (in) memcpy(r.p, blk.sh.data() + o, r.n);
            else memcpy(blk.sh.data() + o, r.p, r.n);
            o += r.n;
        }
    }
}

/* One step of the running block: every runnable fiber once (to its next
 * barrier, warp operation or fence), then the barriers that can be
 * released. Returns false when the block has finished. *progress: a
 * barrier was released. */
static bool step_block(bool *progress)
{
    std::vector<emu_thread> &th = *thp;
    const size_t nthreads = th.size();
    std::vector<size_t> ord(nthreads);
    for (size_t i = 0; i < nthreads; i++) ord[i] = i;
    const int om = order_mode();
    if (om == 1) std::reverse(ord.begin(), ord.end());
    const size_t nw = (nthreads + 31) / 32;
    {
        if (om == 2) std::shuffle(ord.begin(), ord.end(), rng);
        bool ran = false;
        for (size_t k = 0; k < nthreads; k++) {
            emu_thread &t = th[ord[k]];
            if (t.state != RUN) continue;
            emu_cur = &t;
            emu_ctx_switch(&sched_sp, t.sp);
            n_switch.fetch_add(1, std::memory_order_relaxed);
            ran = true;
        }
        bool released = false, all_done = true;
        size_t live = 0, at_block = 0;
        for (auto &t : th) {
            if (t.state != DONE) live++, all_done = false;
            if (t.state == BAR_BLOCK) at_block++;
        }
        if (all_done) return false;
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
        *progress = released;
    }
    return true;
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

static void watchdog(long secs)
{
    unsigned long seen = n_switch.load();
    long still = 0;
    for (;;) {
        std::this_thread::sleep_for(std::chrono::seconds(1));
        const unsigned long now = n_switch.load();
        if (!in_grid.load() || now != seen) {
            seen = now, still = 0;
            continue;
        }
        if (++still >= secs) {
            char msg[200];
            snprintf(msg, sizeof msg, "watchdog: no fiber came back to the scheduler for %ld s (a spin "
                     "without __threadfence / barrier, or an endless loop)", secs);
            die(msg); /* the stuck fiber's values are stable: it is the one named */
        }
    }
}

static void start_watchdog(void)
{
    static bool started;
    if (started) return;
    started = true;
    const char *e = getenv("EMU_WATCHDOG");
    const long secs = e ? atol(e) : 60;
    if (secs > 0) std::thread(watchdog, secs).detach();
}

static size_t resident_blocks(void)
{
    const char *e = getenv("EMU_RESIDENT");
    const long r = e ? atol(e) : 1;
    return r > 1 ? (size_t)r : 1;
}

/* Blocks run one at a time (EMU_RESIDENT unset or 1), or up to
 * EMU_RESIDENT of them interleaved step by step, a new one started as one
 * finishes (in grid order, reversed or shuffled by EMU_ORDER); the order of
 * the resident blocks in each round follows EMU_ORDER too. */
void emu_run_grid(dim3 g, dim3 b, size_t smem, const std::function<void()> &body, const char *name)
{
    start_watchdog();
    cur_kernel = name;
    in_grid.store(true);
    emu_bdim = b, emu_gdim = g;
    cur_body = &body;
    dyn_bytes = smem;
    const size_t nb = (size_t)g.x * g.y * g.z, nt = (size_t)b.x * b.y * b.z;
    if (getenv("EMU_MAXBLOCKS") && nb > (size_t)atol(getenv("EMU_MAXBLOCKS"))) {
        fprintf(stderr, "EMU: kernel %s has %zu blocks, over EMU_MAXBLOCKS\n", name, nb);
    }
    std::vector<size_t> ord(nb);
    for (size_t i = 0; i < nb; i++) ord[i] = i;
    if (order_mode() == 1) std::reverse(ord.begin(), ord.end());
    if (order_mode() == 2) std::shuffle(ord.begin(), ord.end(), rng);
    n_resident = resident_blocks();
    std::vector<emu_block> slot(n_resident < nb ? n_resident : nb);
    size_t next = 0, live = 0;
    for (size_t s = 0; s < slot.size(); s++) {
        slot[s].stack0 = s * nt;
        slot[s].live = false;
    }
    long idle_rounds = 0; /* rounds in which no barrier was released and no block ended */
    for (;;) {
        for (size_t s = 0; s < slot.size(); s++)
            if (!slot[s].live && next < nb) init_block(slot[s], ord[next++], nt, smem), live++;
        if (!live) break;
        std::vector<size_t> so(slot.size());
        for (size_t s = 0; s < so.size(); s++) so[s] = s;
        if (order_mode() == 1) std::reverse(so.begin(), so.end());
        if (order_mode() == 2) std::shuffle(so.begin(), so.end(), rng);
        bool progress = false;
        for (size_t s : so) {
            emu_block &blk = slot[s];
            if (!blk.live) continue;
            activate(blk, true);
            bool released = false;
            const bool running = n_resident > 1 ? step_block(&released) : true;
            if (n_resident == 1) /* one block: step it to the end */
                while (step_block(&released)) {}
            activate(blk, false);
            if (!running || n_resident == 1) {
                free(blk.dyn);
                blk.live = false, live--;
                progress = true;
            }
            progress = progress || released;
        }
        if (progress) idle_rounds = 0;
        else if (++idle_rounds > 100000L) {
            emu_cur = NULL;
            die("no block makes progress: spinning on a flag no resident block will set");
        }
    }
    dyn_smem = NULL;
    emu_cur = NULL;
    in_grid.store(false);
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
    /* 256-byte aligned, as the runtime's allocations are (a caller workspace
     * must be: seqk_context_set_workspace checks it) */
    *p = aligned_alloc(256, (bytes + 255) / 256 * 256 + (bytes ? 0 : 256));
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
