/*
 * scan/linear_state.h -- the one engine behind every module whose state is a
 * K x V matrix updated as  S_t = a_t S_{t-1} + k_t v_t^T  and read as
 * o_t = S_t^T (scale q_t)  (DESIGN 3.1): linear attention (a_t = 1), RetNet
 * retention (a_t = gamma_h), gated retention / Mamba2 (a_t = exp(g_t)).
 * The modules differ only in where the log-decay comes from; they fill a
 * seqk__lin problem and call the recurrent or the chunked driver.
 *
 * DeltaNet reuses the chunk stages (seqk__chunk_*) with Vnew in place of V;
 * Titans reuses seqk__chunk_load.
 */
#ifndef SEQK_SCAN_LINEAR_STATE_H
#define SEQK_SCAN_LINEAR_STATE_H

#include "../core/internal.h"
#include "../core/vmath.h"

#include <math.h>

/* Flags of the engine (the public SEQK_LINATTN_* values map onto these). */
enum {
    SEQK__LIN_NORMALIZE = 1u, /* o_t = num_t / (scale phi(q_t) . z_t + eps), z_t = a_t z_{t-1} + phi(k_t) */
    SEQK__LIN_ELU1 = 2u,      /* phi(x) = elu(x) + 1 on q and k; identity otherwise */
    SEQK__LIN_L2NORM = 4u     /* after phi, q and k rows -> x / sqrt(sum x^2 + SEQK__LIN_L2NORM_EPS)
                               * (DeltaNet's and Titans' flag: honoured by
                               * seqk__chunk_load; seqk__lin_recurrent does
                               * not take it, they have their own kernels) */
};
#define SEQK__LIN_L2NORM_EPS 1e-6f

#define SEQK__LIN_EPS 1e-6f
/* Largest head dimension K of the linear-state modules (the recurrent step
 * keeps phi(q), phi(k) and z on the stack so that it allocates nothing). */
#define SEQK__LIN_MAX_K 1024

typedef struct seqk__lin {
    /* sizes: B batch, T tokens, H heads of v/o/state, Hqk heads of q/k
     * (H % Hqk == 0; head h reads q/k head h / (H / Hqk)), K, V head dims,
     * N sequences (B, or the count in cu), chunk size */
    int64_t B, T, H, Hqk, K, V, N, chunk;
    const int32_t *cu;      /* host cu_seqlens [N+1] or NULL */
    float scale;
    unsigned flags;         /* SEQK__LIN_* */
    const float *q, *k;     /* [B,T,Hqk,K] */
    const float *v;         /* [B,T,H,V] */
    const float *v_scale;   /* [B,T,H] or NULL: v_t is used as v_scale_t * v_t (Mamba2's dt) */
    /* log a_t for head h = g[t,h] * (g_head ? g_head[h] : 1) + (log_gamma ? log_gamma[h] : 0) */
    const float *g;         /* [B,T,H] or NULL */
    const float *g_head;    /* [H] or NULL */
    const float *log_gamma; /* [H] or NULL */
    float *o;               /* [B,T,H,V] */
    const float *s_in;      /* [N,H,K,V] or NULL (zeros) */
    float *s_out;           /* [N,H,K,V] or NULL; may equal s_in */
    const float *z_in;      /* [N,H,K] or NULL, with SEQK__LIN_NORMALIZE */
    float *z_out;           /* [N,H,K] or NULL; may equal z_in */
    size_t ws_offset;       /* bytes at the start of the workspace the module keeps */
    /* SEQK_DTYPE_F32 (0), or BF16 / F16 for the native reduced-precision
     * path (CUDA, parallel mode, no normaliser: seqk__lin_native): then q, k,
     * v and o point at elements of that dtype (cast to float *), everything
     * else stays fp32 */
    seqk_dtype dtype;
    const float *skip;      /* [H] or NULL, native path only: o_t += skip[h] v_t
                             * before o is rounded (Mamba2's D x) */
    size_t stage_bytes;     /* 0, or the staged drivers' bytes of a window of chunk
                             * states in place of their own (scan/chunk.c: threads x
                             * SEQK__LIN_FWD_WINDOW_BYTES; scan/chunk_backward.c:
                             * SEQK__LIN_BWD_STAGED_BYTES): tests/internal/
                             * test_staged_windows.c walks small windows */
} seqk__lin;

/* Whether an _ex call of a linear-state module with this dtype, mode and
 * engine flags (SEQK__LIN_*) takes the native reduced-precision path (a
 * CUDA context, dtype BF16 or F16, the parallel mode, no normaliser) rather
 * than the converting one (core/dtype.h). False for anything invalid: the
 * converting path then reports it. */
bool seqk__lin_native(const seqk_context *ctx, seqk_dtype dtype, int mode, unsigned flags);

/* Token range [row0, row0 + len) of sequence n in the [B*T] row index. */
static inline void seqk__lin_seq(const seqk__lin *P, int64_t n, int64_t *row0, int64_t *len)
{
    if (P->cu) {
        *row0 = P->cu[n];
        *len = (int64_t)P->cu[n + 1] - P->cu[n];
    } else {
        *row0 = n * P->T;
        *len = P->T;
    }
}

/* log a for token row r (in [B*T]) and head h. */
static inline float seqk__lin_logdecay(const seqk__lin *P, int64_t r, int64_t h)
{
    float ld = 0.0f;
    if (P->g) ld = P->g[r * P->H + h] * (P->g_head ? P->g_head[h] : 1.0f);
    if (P->log_gamma) ld += P->log_gamma[h];
    return ld;
}

/* The feature map: elu(x) + 1 with SEQK__LIN_ELU1, else x. */
static inline float seqk__lin_phi(float x, unsigned flags)
{
    if (!(flags & SEQK__LIN_ELU1)) return x;
    return x > 0.0f ? x + 1.0f : expf(x);
}

/* out[i] = f phi(x[i]), i < n (the feature map's test outside the loop, so
 * that the plain case vectorises). */
static inline void seqk__lin_phi_row(const float *x, int64_t n, float f, unsigned flags, float *out)
{
    if (!(flags & SEQK__LIN_ELU1))
        for (int64_t i = 0; i < n; i++) out[i] = f * x[i];
    else
        for (int64_t i = 0; i < n; i++) out[i] = f * seqk__lin_phi(x[i], flags);
}

/* Heads per work item for drivers whose items are (sequence, group of
 * consecutive heads, one of per_head parts): as many as still leave about two
 * items per thread. One head's rows of q, k, v, o are H*K floats apart, so a
 * head alone touches a new page every token or two and the TLB misses on
 * nearly every row; an item that walks hg heads together shares each page
 * (and line) among them. */
static inline int64_t seqk__lin_head_group(const seqk__lin *P, int threads, int64_t per_head)
{
    int64_t hg = P->N * P->H * per_head / (2 * (int64_t)threads);
    return hg < 1 ? 1 : hg > P->H ? P->H : hg;
}

/* The rows of the tokens a kernel will read next, fetched into the cache a
 * few lines at a time while the current tokens compute. One head's rows are
 * H*K floats apart, two or so to a page, where the hardware prefetcher stops,
 * so without this the first touch of every row is a wait on memory; and
 * asked all at once (a chunk's rows: hundreds of lines) most of the requests
 * are dropped (measured on the AMD EPYC VM, 2026-12-07: a chunk load's
 * 6.6 kcycles stayed 5.7 with its rows asked in one burst 20 kcycles
 * before, and fell to 3.1 with them asked 8 lines at a time), so a caller
 * spreads them over its work: up to four arrays (seqk__lin_prefetch_add),
 * token by token, each token's rows in the order added. */
typedef struct seqk__lin_prefetch {
    const float *row0[4];          /* each array's row of the first token */
    int64_t ld[4];                 /* floats between two tokens' rows */
    int64_t lines[4];              /* 16-float lines of one row */
    unsigned write;                /* bit r: array r fetched for writing */
    int narr;                      /* arrays added */
    int64_t per;                   /* lines per token */
    int64_t tokens, u;             /* tokens to fetch; the token being fetched */
    int run;                       /* its array being fetched */
    const float *p;                /* the next line of that row */
    int64_t left;                  /* lines left in that row */
} seqk__lin_prefetch;

/* An empty cursor over `tokens` tokens (0: nothing to fetch). */
static inline void seqk__lin_prefetch_start(seqk__lin_prefetch *c, int64_t tokens)
{
    c->narr = 0, c->write = 0, c->per = 0;
    c->tokens = tokens > 0 ? tokens : 0, c->u = 0, c->run = -1, c->p = NULL, c->left = 0;
}

/* One more array: n floats from row0 per token, rows ld floats apart. */
static inline void seqk__lin_prefetch_add(seqk__lin_prefetch *c, const float *row0, int64_t ld,
                                          int64_t n, bool write)
{
    if (c->narr == 4 || n <= 0 || c->tokens == 0) return;
    c->row0[c->narr] = row0, c->ld[c->narr] = ld, c->lines[c->narr] = (n + 15) / 16;
    if (write) c->write |= 1u << c->narr;
    c->per += c->lines[c->narr++];
}

/* The linear-state recurrence's rows: tokens [row, row + tokens) of the
 * [B*T] row index; q and k (nqk floats from head hq0), v and o (o for
 * writing; nvo floats from column c0 of head h0). */
static inline void seqk__lin_prefetch_init(seqk__lin_prefetch *c, const seqk__lin *P, int64_t row,
                                           int64_t tokens, int64_t hq0, int64_t nqk, int64_t h0,
                                           int64_t c0, int64_t nvo)
{
    seqk__lin_prefetch_start(c, tokens);
    if (c->tokens == 0) return;
    const int64_t ldqk = P->Hqk * P->K, ldvo = P->H * P->V;
    seqk__lin_prefetch_add(c, P->q + row * ldqk + hq0 * P->K, ldqk, nqk, false);
    seqk__lin_prefetch_add(c, P->k + row * ldqk + hq0 * P->K, ldqk, nqk, false);
    seqk__lin_prefetch_add(c, P->v + row * ldvo + h0 * P->V + c0, ldvo, nvo, false);
    seqk__lin_prefetch_add(c, P->o + row * ldvo + h0 * P->V + c0, ldvo, nvo, true);
}

/* The lines the cursor has left in all (at the start). */
static inline int64_t seqk__lin_prefetch_lines(const seqk__lin_prefetch *c)
{
    return c->tokens * c->per;
}

/* Moves the cursor to the next row with lines to fetch; false at the end. */
static inline bool seqk__lin_prefetch_row(seqk__lin_prefetch *c)
{
    if (c->narr == 0) return false;
    for (;;) {
        if (++c->run == c->narr) c->run = 0, c->u++;
        if (c->u >= c->tokens) return false;
        c->p = c->row0[c->run] + c->u * c->ld[c->run], c->left = c->lines[c->run];
        if (c->left > 0) return true;
    }
}

/* Fetches the next n lines: a row's lines in a plain loop, the row's
 * address computed once. */
static inline void seqk__lin_prefetch_next(seqk__lin_prefetch *c, int64_t n)
{
    while (n > 0) {
        if (c->left == 0 && !seqk__lin_prefetch_row(c)) return;
        const int64_t m = n < c->left ? n : c->left;
        const float *p = c->p;
        if (c->write >> c->run & 1u)
            for (int64_t i = 0; i < m; i++, p += 16) __builtin_prefetch(p, 1, 2);
        else
            for (int64_t i = 0; i < m; i++, p += 16) __builtin_prefetch(p, 0, 2);
        c->p = p, c->left -= m, n -= m;
    }
}

/* The factors of one token's q~ = fq q, k~ = fk k: fq = scale, fk = 1, or
 * with SEQK__LIN_L2NORM fq = scale / ||q||, fk = 1 / ||k|| (each norm with
 * SEQK__LIN_L2NORM_EPS under the root). q, k: K floats (after the feature
 * map, where there is one). */
static inline void seqk__lin_qk_factors(const seqk__lin *P, const float *q, const float *k,
                                        float *fq, float *fk)
{
    *fq = P->scale, *fk = 1.0f;
    if (!(P->flags & SEQK__LIN_L2NORM)) return;
    *fq = P->scale / sqrtf(seqk__dot(q, q, P->K) + SEQK__LIN_L2NORM_EPS);
    *fk = 1.0f / sqrtf(seqk__dot(k, k, P->K) + SEQK__LIN_L2NORM_EPS);
}

/* The recurrent mode (scan/linear_recurrent.c): token by token, O(K V)
 * memory per (sequence, head). Workspace: seqk__lin_recurrent_workspace. */
size_t seqk__lin_recurrent_workspace(const seqk__lin *P, int threads);
seqk_status seqk__lin_recurrent(seqk_context *ctx, const seqk__lin *P);

/* The parallel (chunked) mode (scan/chunk.c). */
size_t seqk__lin_chunked_workspace(const seqk__lin *P, int threads);
seqk_status seqk__lin_chunked(seqk_context *ctx, const seqk__lin *P);

/* The backward of the engine (scan/chunk_backward.c; DESIGN 3.7): the
 * gradients of the function P computes, for the parallel and the recurrent
 * mode alike. P is filled as for the forward (P->o, s_out, z_out unused).
 * Every non-NULL output is overwritten. */
typedef struct seqk__lin_grad {
    const float *dout;   /* [B,T,H,V]   dL/do */
    const float *ds_out; /* [N,H,K,V] or NULL (zero) */
    const float *dz_out; /* [N,H,K] or NULL (zero), with SEQK__LIN_NORMALIZE */
    float *dq, *dk;      /* [B,T,Hqk,K] dL/dq, dL/dk (the raw inputs, before the
                          * feature map); with Hqk < H summed over the heads
                          * that share a q/k head, in head order */
    float *dv;           /* [B,T,H,V]   dL/dv (the raw input: v_scale_t dL/d(v_scale_t v_t)) */
    float *dv_scale;     /* [B,T,H] or NULL: dL/dv_scale (only with P->v_scale) */
    float *dlogdecay;    /* [B,T,H] or NULL: dL/d(log a_t), the per-token log-decay
                          * (the module maps it onto g, g_head) */
    float *ds_in;        /* [N,H,K,V] or NULL: dL/d s_in */
    float *dz_in;        /* [N,H,K] or NULL: dL/d z_in, with SEQK__LIN_NORMALIZE */
    /* A skip connection o += skip_h v_t beside the state (Mamba2's D x), CPU
     * backward and the native bf16 / f16 CUDA one only (NULL for the fp32
     * CUDA backward): dv += skip[h] dout_t (before dv is rounded), and per token
     * dskip_tok[t, h] = dout_t . v_t (the terms of dL/d skip_h, which the
     * module sums) -- in the pass that writes dv, where dout's rows are in
     * cache, instead of two more passes over dout and v. */
    const float *skip;   /* [H] or NULL */
    float *dskip_tok;    /* [B,T,H] or NULL */
} seqk__lin_grad;

/* Workspace bytes (CPU) of seqk__lin_backward for P on `threads` threads. */
size_t seqk__lin_backward_workspace(const seqk__lin *P, int threads);
/* CPU backward; P validated (P->cu host cu_seqlens), Gr's pointers checked. */
seqk_status seqk__lin_backward(seqk_context *ctx, const seqk__lin *P, const seqk__lin_grad *Gr);

/* Validates Gr against P (pointers, overlaps) and runs the backward on ctx's
 * backend (the forward's checks of P included). */
seqk_status seqk__lin_run_backward(const char *fn, seqk_context *ctx, seqk__lin *P,
                                   const seqk__lin_grad *Gr, const int32_t *cu_seqlens);

/* The chunk size a call of op's modules on backend uses: chunk, or for 0
 * the default of the op, backend and head sizes (seqk_chunk_default, seqk.h). */
int64_t seqk__lin_chunk(seqk_backend backend, seqk_chunked_op op, int64_t chunk, int64_t K,
                        int64_t V);

/* Checks the sizes every linear-state op takes (messages name fn). */
seqk_status seqk__lin_check_sizes(const char *fn, seqk_context *ctx, int mode, int64_t B,
                                  int64_t T, int64_t H, int64_t K, int64_t V, int64_t N,
                                  bool varlen, int64_t chunk);

/* Validates the rest of P (pointers, overlaps, scale, cu_seqlens) and runs it
 * in `mode` on ctx's backend. The module has filled P (N as given by the
 * caller; chunk as given, 0 = default) and checked its own extra arguments. */
seqk_status seqk__lin_run(const char *fn, seqk_context *ctx, int mode, seqk__lin *P,
                          const int32_t *cu_seqlens);

#endif
