/*
 * seqk.h -- the public API of seqk, a C library of sequence-model kernels.
 *
 * One header, plain C (C11), every symbol prefixed seqk_ / SEQK_.
 *
 * Conventions shared by every function (shared/DESIGN.md section 2):
 *
 *   Dimension letters
 *     B  batch (number of sequences; 1 when cu_seqlens packs them)
 *     T  sequence length (tokens, or scan steps)
 *     H  heads
 *     K  key / query head dimension
 *     V  value head dimension
 *     N  number of sequences (B, or the count in cu_seqlens)
 *     C  channels of the scan primitive (elements per step)
 *
 *   Layout: token-major, innermost dimension contiguous: q, k [B,T,H,K];
 *   v, o [B,T,H,V]; per-token scalars [B,T,H]; per-head constants [H].
 *
 *   Memory: every array argument lives where the context's backend computes:
 *   host memory for SEQK_BACKEND_CPU, device memory for SEQK_BACKEND_CUDA.
 *   seqk_malloc / seqk_memcpy move data for callers that have no allocator.
 *   On CUDA, calls are asynchronous on the context's stream.
 *
 *   Varlen: cu_seqlens int32 [N+1], cu_seqlens[0] = 0, non-decreasing,
 *   cu_seqlens[N] = T, with B = 1 and the sequences packed along T. No state
 *   crosses a sequence boundary. On CUDA it is a device array; the library
 *   copies it (N+1 ints) to the host to validate it.
 *
 *   State: optional initial state (NULL = zeros) and optional final state
 *   (NULL = not written). Chaining the final state of one call into the
 *   initial state of the next equals one call over the concatenation.
 *
 *   Errors: every function returns a seqk_status. On failure nothing has been
 *   written to any output and seqk_last_error() holds a message naming the
 *   function, the argument and the value. The library never prints, never
 *   aborts, never writes outside the caller's buffers.
 *
 *   Threads: calls on one context are not concurrent; separate contexts are
 *   independent. The last-error message is per thread.
 *
 *   Gates (one policy for every op, forward and backward alike): log-gates
 *   (gated retention's and gated DeltaNet's g) must be finite and <= 0, so
 *   that every decay exp(g) lies in (0, 1]; Mamba2's and the selective
 *   scan's A must be finite and <= 0 and their dt, dt_bias and dt + dt_bias
 *   finite; retention's gamma must lie in (0, 1], DeltaNet's beta in [0, 1]
 *   ([0, 2] with its flag), Titans' eta and alpha in [0, 1] and theta be
 *   finite and >= 0. NaN is never in range. On a CPU context every value is
 *   checked before anything is written (INVALID_ARGUMENT; the message names
 *   the argument, the first bad index and its value). On a CUDA context the
 *   per-token arrays are NOT checked (that would cost a device-to-host copy
 *   on every call, decoding steps included): out-of-range gates there give
 *   what the formulas give. Per-token log-decays below -10^4 are taken as
 *   -10^4 (a decay of exactly 0 in float and double alike), so that a
 *   chunk's cumulative log-decay stays finite.
 *
 *   Precision of the chunked (parallel) modes: a chunk's cumulative
 *   log-decay is summed in double and kept as two floats, so every decay
 *   exp(G_i - G_j) keeps its relative accuracy however strong the decay: the
 *   parallel modes' error does not grow with the gates' magnitude (tests/
 *   test_decay_precision.c: gated retention, Mamba2 and gated DeltaNet
 *   within 6e-7 relative of float64, like the recurrent modes, for per-token
 *   log-gates anywhere in [-1000, 0], chunks of 64 and 256; before issue
 *   #19's fix up to 2.5e-5; Titans, whose momentum eta and forgetting
 *   1 - alpha multiply inside a mini-batch as log-sums in double, within
 *   6.1e-7 for log eta, log(1 - alpha) anywhere in [-1000, 0], mini-batches
 *   of 16 and 64; the bound checked for all four is 1e-6). The CUDA chunked
 *   kernels keep the sums in double (gpu/linear_state.cu,
 *   gpu/deltanet.cuh, gpu/titans.cu): the same sweep on the emulated CUDA
 *   backend reads at most 6.8e-7 (not yet run on a GPU). The backwards
 *   (same sweep, CPU): every gradient of gated retention, Mamba2 and gated
 *   DeltaNet within 5e-6 relative of the
 *   float64 reverse token loop for log-gates anywhere in [-1000, 0] (chunk
 *   sums down to -2.6e5), a gate gradient (dg, ddt, dA) relative to the
 *   size of the terms it sums (measured worst 1.7e-6, gated DeltaNet's dg;
 *   gated retention and Mamba2 <= 3.4e-7; no growth with the magnitude).
 *   Over long sequences with decays near 1 the carried state is rounded at
 *   every multiplication by a decay, and near 1 that rounding is biased (S
 *   minus a few ulps, rounded to whole ulps, loses the same fraction every
 *   step): the recurrent modes round once per token, relative error of the
 *   carried state up to T 2^-24; the parallel modes once per chunk, by a
 *   chunk decay gamma^L that is itself a float, up to 2 (T / chunk) 2^-24.
 *   Measured over 2^18 tokens (retention, zero keys, tests/
 *   test_decay_precision.c): gamma = 1 - 1e-6, parallel 1.7e-5 (chunk 64),
 *   recurrent 2.1e-5 on the CPU and 5.5e-4 on the emulated CUDA backend's
 *   token loop; gamma = 1 - 1e-4, parallel 7.6e-5 (chunk 64) and 9.8e-7
 *   (chunk 256): a larger chunk divides the compounding.
 *
 *   NaN and inf in data inputs (q, k, v, x, B, C, u, states) are not
 *   checked: they propagate through the arithmetic to the outputs that
 *   depend on them; the library never crashes on them and never reads or
 *   writes outside the arguments' extents. For a NaN/inf key or value row of
 *   one token and head, every op and mode keeps the outputs of the earlier
 *   tokens and of the other heads finite (tests/test_nonfinite_inputs.c).
 *   Softmax attention (forward and backward, CPU and CUDA): an output or
 *   gradient depends only on the rows it attends to; a masked entry (a key
 *   after the query under SEQK_ATTN_CAUSAL, or in another sequence of
 *   cu_seqlens) never multiplies its row, so a NaN/inf row of q, k, v or
 *   dout leaves finite every o, dq, dk, dv that does not depend on it
 *   (tests/test_regressions.c, regression_attention_masked_nonfinite).
 */
#ifndef SEQK_H
#define SEQK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(SEQK_BUILDING_SHARED)
#define SEQK_API __declspec(dllexport)
#elif defined(__GNUC__)
#define SEQK_API __attribute__((visibility("default")))
#else
#define SEQK_API
#endif

/* ------------------------------------------------------------------------ */
/* Version                                                                   */
/* ------------------------------------------------------------------------ */

#define SEQK_VERSION_MAJOR 0
#define SEQK_VERSION_MINOR 1
#define SEQK_VERSION_PATCH 0
/* MAJOR*10000 + MINOR*100 + PATCH */
#define SEQK_VERSION_NUMBER \
    (SEQK_VERSION_MAJOR * 10000 + SEQK_VERSION_MINOR * 100 + SEQK_VERSION_PATCH)

/* The library's version as "MAJOR.MINOR.PATCH" (static storage). Compare with
 * SEQK_VERSION_* to detect a header / library mismatch. */
SEQK_API const char *seqk_version(void);
/* The library's SEQK_VERSION_NUMBER. */
SEQK_API int seqk_version_number(void);

/* ------------------------------------------------------------------------ */
/* Status and errors                                                         */
/* ------------------------------------------------------------------------ */

/* Values only grow; none is ever renumbered. */
typedef enum seqk_status {
    SEQK_SUCCESS = 0,
    SEQK_ERROR_INVALID_ARGUMENT = 1,  /* NULL pointer, bad value, inconsistent shapes */
    SEQK_ERROR_UNSUPPORTED = 2,       /* valid, but this backend does not take it */
    SEQK_ERROR_OUT_OF_MEMORY = 3,     /* host or device allocation failed */
    SEQK_ERROR_NOT_COMPILED = 4,      /* backend not built into this library */
    SEQK_ERROR_NO_DEVICE = 5,         /* backend built, but no usable device/driver */
    SEQK_ERROR_BACKEND = 6,           /* a CUDA / cuBLAS call failed */
    SEQK_ERROR_WORKSPACE_TOO_SMALL = 7, /* caller-provided workspace is too small */
    SEQK_ERROR_INTERNAL = 8           /* a bug in seqk: please report it */
} seqk_status;

/* A short constant description of a status ("invalid argument", ...).
 * Unknown values give "unknown status". Never NULL. */
SEQK_API const char *seqk_status_string(seqk_status status);

/* The message of the last failed call on this thread, e.g.
 * "seqk_scan: cu_seqlens[3]=17 < cu_seqlens[2]=20". Empty string if no call
 * has failed on this thread. Successful calls leave it unchanged. Never NULL;
 * valid until the next seqk call on this thread. */
SEQK_API const char *seqk_last_error(void);

/* ------------------------------------------------------------------------ */
/* Backends and contexts                                                     */
/* ------------------------------------------------------------------------ */

/* Values only grow. */
typedef enum seqk_backend {
    SEQK_BACKEND_CPU = 0,   /* C11 + OpenMP + SIMD */
    SEQK_BACKEND_CUDA = 1   /* CUDA + cuBLAS */
} seqk_backend;

/* 1 if this build of the library contains the backend, else 0. */
SEQK_API int seqk_backend_compiled(seqk_backend backend);

/* Number of usable CUDA devices, written to *count. Writes 0 and returns
 * SEQK_SUCCESS when the CUDA backend is compiled but no driver or device is
 * present; returns SEQK_ERROR_NOT_COMPILED (and writes 0) when it is not
 * compiled. Loading the library never fails for lack of a GPU. */
SEQK_API seqk_status seqk_cuda_device_count(int *count);

typedef struct seqk_context seqk_context;

/* Creates a context: the backend, the device (CUDA device ordinal; must be 0
 * for the CPU), the CPU thread count (default: OpenMP's maximum), the CUDA
 * stream (default: the legacy default stream), the cuBLAS handle and the
 * workspace. *ctx is set to NULL on failure.
 * Errors: NOT_COMPILED, NO_DEVICE (with the CUDA runtime's reason),
 * INVALID_ARGUMENT (bad device), OUT_OF_MEMORY, BACKEND. */
SEQK_API seqk_status seqk_context_create(seqk_context **ctx, seqk_backend backend,
                                         int device);
/* Frees the context and the workspace it owns. NULL is accepted. */
SEQK_API seqk_status seqk_context_destroy(seqk_context *ctx);

SEQK_API seqk_status seqk_context_backend(const seqk_context *ctx, seqk_backend *backend);
SEQK_API seqk_status seqk_context_device(const seqk_context *ctx, int *device);

/* CPU thread count used by every op on this context; n >= 1, or 0 to go back
 * to the default (OpenMP's maximum). Ignored by the CUDA backend's kernels. */
SEQK_API seqk_status seqk_context_set_threads(seqk_context *ctx, int n);
SEQK_API seqk_status seqk_context_threads(const seqk_context *ctx, int *n);

/* CUDA stream (a cudaStream_t passed as void*; NULL = default stream) on
 * which the context's work is queued. INVALID_ARGUMENT on a CPU context. */
SEQK_API seqk_status seqk_context_set_stream(seqk_context *ctx, void *stream);
SEQK_API seqk_status seqk_context_stream(const seqk_context *ctx, void **stream);

/* Waits until all work queued on the context is done (no-op on the CPU). */
SEQK_API seqk_status seqk_context_synchronize(seqk_context *ctx);

/* Workspace. By default the context owns its workspace and grows it when an
 * op needs more (ops' *_workspace_size tell how much, so that it can be
 * reserved up front with seqk_context_reserve_workspace). A caller may instead
 * hand its own buffer (on the context's backend, 256-byte aligned) with
 * seqk_context_set_workspace; the context then never allocates and an op that
 * needs more fails with SEQK_ERROR_WORKSPACE_TOO_SMALL. ptr = NULL, bytes = 0
 * returns to the owned workspace. */
SEQK_API seqk_status seqk_context_set_workspace(seqk_context *ctx, void *ptr, size_t bytes);
SEQK_API seqk_status seqk_context_reserve_workspace(seqk_context *ctx, size_t bytes);

/* ------------------------------------------------------------------------ */
/* Memory on the context's backend                                           */
/* ------------------------------------------------------------------------ */

typedef enum seqk_copy_kind {
    SEQK_COPY_HOST_TO_BACKEND = 0,
    SEQK_COPY_BACKEND_TO_HOST = 1,
    SEQK_COPY_BACKEND_TO_BACKEND = 2
} seqk_copy_kind;

/* Allocates bytes (> 0) on the context's backend, 256-byte aligned; on the
 * CPU, 2 MiB blocks (2 MiB-aligned) from 2 MiB up, advised on Linux for
 * transparent huge pages (fewer TLB misses in the ops' per-head walks). */
SEQK_API seqk_status seqk_malloc(seqk_context *ctx, size_t bytes, void **ptr);
/* Frees memory from seqk_malloc on the same context. NULL is accepted. */
SEQK_API seqk_status seqk_free(seqk_context *ctx, void *ptr);
/* Copies bytes; synchronous with respect to the host (on CUDA it waits for
 * the context's stream). */
SEQK_API seqk_status seqk_memcpy(seqk_context *ctx, void *dst, const void *src, size_t bytes,
                                 seqk_copy_kind kind);

/* ------------------------------------------------------------------------ */
/* Dtypes                                                                    */
/* ------------------------------------------------------------------------ */
/*
 * Every op's forward and backward (and its workspace query) has an _ex entry
 * point beside the fp32 one (the cublasSgemm / cublasGemmEx pattern): the
 * same arguments with `seqk_dtype dtype` right after ctx (before mode), and
 * const void * / void * for the tensors that take the dtype. The fp32
 * functions are the _ex ones with SEQK_DTYPE_F32 (one implementation). The
 * scan primitive (seqk_scan), a building block rather than a layer, has no
 * _ex: it stays fp32.
 *
 * Which tensors take the dtype: every per-token activation tensor with a
 * feature axis (K, V, head dim, channels) -- q, k, v, o, x, y, Bm, Cm, u, z
 * (the selective scan's gate input), the decode's q, k_new, v_new, k_cache,
 * v_cache, o -- and their gradients (dout, dy, dq, dk, dv, dx, du, dBm, dCm,
 * dz). Everything else stays float32 / int32: per-token scalars (g, beta,
 * dt, eta, theta, alpha and their gradients), per-head or per-channel
 * parameters (gamma, A, D, Dskip, dt_bias and theirs), states and their
 * gradients (state_in/out, z_in/out, dstate_*), the LSE, cu_seqlens,
 * cache_len. All activation tensors of one call have the same dtype. Each
 * _ex declaration below names its dtype tensors.
 *
 * Precision: accumulation, states and the gates' log-space sums stay fp32
 * (double where the fp32 ops use double). Phase 1 runs every op through a
 * converting path on both backends: the dtype inputs are widened to fp32
 * (exact), the fp32 implementation runs unchanged, and each dtype output is
 * rounded once to the dtype (round to nearest even; NaN stays NaN; f16
 * overflows to +-inf past 65504). So a dtype output is exactly the fp32 op's
 * result on the widened inputs, rounded (bit-identical, tested); against the
 * float64 function of the same (dtype-valued) inputs, an output's relative
 * error (||out - ref|| / ||ref||, ref rounded to the dtype) is within the fp32
 * op's bound plus the dtype's unit roundoff u: u = 2^-8 for bf16, 2^-11 for
 * f16. tests/test_dtype.c checks every op, forward (both modes) and
 * backward, against 2 u on small odd shapes (varlen with empty and
 * length-1 sequences, initial states): measured worst 0.54 u in bf16 and
 * 0.40 u in f16 (softmax attention's backward, which takes the forward's o
 * rounded to the dtype; every other op <= 0.12 u), on the CPU and the
 * emulated CUDA backend. fp32 outputs of an _ex call (states, gate
 * gradients, lse) are exactly the fp32 op's.
 *
 * Native path (issue #21 phase 2): on a CUDA context, the forwards of linear
 * attention (without SEQK_LINATTN_NORMALIZE), retention, gated retention and
 * Mamba2 in SEQK_MODE_PARALLEL with a bf16 or f16 dtype do not convert whole
 * tensors: per chunk the gated rows exp(G_i) q~_i and exp(G_last - G_j) k~_j
 * and q~, k~, v~ are formed in fp32 and rounded to the dtype just before
 * the products, the products (Q~ K~^T, the decay-masked scores times V~,
 * exp(G) Q~ S0, the chunk states K~^T V~) run on tensor cores through
 * cuBLAS with fp32 accumulation, and the masks, decays, states (fp32) and
 * the state walk stay in seqk's kernels (gpu/linear_state.cu). Its outputs
 * are therefore not the fp32 op's rounded. Bound: each term of o_t carries
 * at most three roundings within u (an intra-chunk term: the masked score,
 * whose product of the exact inputs is fp32, and v~; an inter-chunk term:
 * exp(G) q~, the state S0 rounded for its product, and S0's own rounded
 * exp(G_last - G) k~), four with Mamba2 (v~ = dt x is rounded too), then o_t
 * once, so to first order |o - ref| <= 3u sum |terms| + u |ref| (4u for
 * Mamba2) elementwise; relative in norm that is (3 kappa + 1) u with
 * kappa = || sum |terms| || / ||o||, the cancellation of the inputs. f16's
 * range: the masked scores and the chunk states are rounded to f16 as well,
 * so a score scale q~.k~ exp(G_i - G_j) or a state entry past 65504
 * overflows to inf (bf16 has fp32's range; the converting path has neither
 * limit). Measured on the emulated CUDA backend against
 * the float64 function of the rounded inputs (tests/test_dtype_native.c:
 * T = 1, 11, 37, 64, 100, 130, K x V from 5 x 7 to 64 x 64, chunks 8 to 64,
 * several B and H, Mamba2 groups, varlen with empty and length-1 sequences,
 * initial states, gates in [-0.01, 0], [-1, 0], [-20, -19], elu+1): o within
 * 1.04 u (bf16 and f16; tested against 3 u; most of it is o's own rounding
 * against the reference's, which can land on neighbouring dtype values),
 * the fp32 final state within 0.61 u (tested against 2 u); the random inputs of those tests have
 * kappa of a few. Not run on a GPU yet (cuBLAS' own summation order may
 * differ from the emulator's; the bound does not depend on it). The
 * recurrent mode, the normaliser and every other op (but these four ops'
 * backwards and DeltaNet's parallel forward and backward, below) keep the
 * converting path. The native path's workspace (queried by
 * seqk_linear_state_workspace_size_ex, which answers the larger of the two
 * paths) holds the rounded operands of every chunk at once: with L the
 * chunk size and C the number of chunks (T / L per sequence, rounded up),
 * C H (L (2 (4 K + V + L) + 4 max(L, V)) + 2 K V) bytes beyond the fp32
 * op's parallel-mode workspace, instead of the fp32 copies.
 *
 * Native backward (issue #21): on a CUDA context the backwards of the same
 * four ops (seqk_linear_attention_backward_ex without the normaliser,
 * seqk_retention_backward_ex, seqk_gated_retention_backward_ex,
 * seqk_mamba2_backward_ex) with a bf16 or f16 dtype run natively too
 * (gpu/linear_state_backward.cu). They recompute the forward's rounded
 * operands and fp32 chunk states with the native forward's own stages, then
 * per chunk run on tensor cores through cuBLAS (fp32 accumulation): W =
 * Q~w^T dO for the state gradients, dP = dO V~^T, dV = Kd dSn + P^T dO,
 * dO S0^T, dP K~, V~ dSn^T and scale dP^T phi(q), with dO the input itself
 * (exact), the masked scores P, the decay-masked dP .* D (strictly lower),
 * Kd = exp(G_last - G) k~, Q~w = exp(G_i - G_first) q~ (normalised to the
 * chunk's first token, so that f16 does not flush it under strong decay),
 * the states S0 and the state gradients dSn rounded to the dtype just
 * before the products. The row decays exp(G) and exp(G_last - G) of dQ~'s
 * and dK~'s state terms are applied to the fp32 products; the masks, the
 * chunk-state walks (forward and reverse, fp32), the gate gradient (its
 * pairs E = dP .* P from the fp32 dP and the fp32 scores, each counted once
 * on each side, its query, key and state terms, the reverse sum), the
 * heads of a q/k group (summed in head order), Mamba2's dt, A, D and
 * dt_bias gradients and every reduction stay in seqk's fp32 kernels, in a
 * fixed order (deterministic). dq, dk, dv are rounded once at the end (dv
 * after Mamba2's D dy is added). Bound: every term of every gradient
 * carries at most three roundings within u (a pair term of dv: P, and
 * phi(q), phi(k) with elu+1; of dq, dk: dP .* D, v~ with Mamba2, phi(k) or
 * phi(q) with elu+1; a state term of dv, dk: dSn, itself a sum of Q~w
 * terms, and Kd, or v~ with Mamba2; of dq: S0 rounded, itself a sum of Kd
 * and v~ terms; dstate_in: Q~w, one; the gate gradient's terms: at most
 * three the same way, its pairs at most one), so to first order
 * |g - ref| <= 3u sum |terms| + u |ref| for dq, dk, dv (relative in norm
 * (3 kappa + 1) u) and 3u sum |terms| for the fp32 gradients (dstate_in,
 * dg, Mamba2's ddt, dA, ddt_bias; dD = sum dy . x carries fp32 rounding
 * only), kappa the cancellation as above (a per-head sum over tokens, dA,
 * ddt_bias, has its own: measure it against its summands). f16's range:
 * scores, dP .* D, states and state gradients past 65504 overflow to inf;
 * state and state-gradient entries below 2^-24 flush to zero (under strong
 * decay, where their terms are negligible but for dstate_in, which Q~w's
 * normalisation keeps). Measured on the emulated CUDA backend against the
 * float64 gradients of the rounded inputs (tests/test_dtype_native.c, the
 * forward's shapes, gates and states, with dstate_out): dq, dk, dv within
 * 1.03 u in bf16 and 1.12 u in f16 (tested against 3 u), the fp32
 * gradients within 0.61 u and 0.75 u (dA and ddt_bias against the norm of
 * their summands; tested against 2 u). Not run on a GPU yet. Workspace
 * (seqk_linear_state_backward_workspace_size_ex answers the larger of the
 * two paths): the native forward's (above) plus, with nb = C H,
 * nb (L (18 K + 6 V + 6 L + 8) + 6 K V + 8) + 4 B T H bytes, plus
 * Mamba2's four [B, T, H] fp32 arrays.
 *
 * The CPU keeps the converting path for bf16 and f16 in every op, also on
 * CPUs with AVX-512 BF16: a native bf16 forward of these four ops on
 * VDPBF16PS (the rounding points above) was built and measured on the
 * development machine (2026-12-06, 2 threads, T = 4096, H = 8, K = V = 64
 * and 128) at 1.3 - 1.45x the converting path's time and 1.7 - 1.8x the
 * fp32 op's (VDPBF16PS there runs at about half the fp32 FMA's flop rate),
 * and about 1 u from float64 against the converting path's 0.01 u; the
 * conversions themselves use AVX-512 BF16 / F16C where present.
 *
 * Native DeltaNet (issue #21 phase 3): on a CUDA context, seqk_deltanet_ex
 * (plain and gated, with and without SEQK_DELTANET_L2NORM_QK) in
 * SEQK_MODE_PARALLEL with a bf16 or f16 dtype runs natively too
 * (gpu/deltanet.cu; beta, g and the states stay fp32). Per chunk the
 * products K K^T and Q K^T take the inputs themselves in the dtype (exact;
 * the L2 norm's factors, scale and the decays are applied to their fp32
 * results), the masked scores P = (Q~ K~^T) .* Gamma and Vnew are rounded to
 * the dtype for P Vnew, all on cuBLAS with fp32 accumulation; A, the forward
 * substitution T = (I + A)^-1, U = T diag(beta) V and W = T diag(beta
 * exp(G)) K~ (cuBLAS on fp32 operands, never TF32), the chunk-sequential
 * state pass (Vnew = U - W S0, S' = exp(G_C) S0 + (diag(exp(G_C - G))
 * K~)^T Vnew) and the inter-chunk term exp(G) Q~ S0 (fp32 operands) stay
 * fp32. Bound: the substitution amplifies whatever rounding enters A or
 * the right-hand sides by up to the conditioning kappa_T = ||I + A|| ||T||
 * of (I + A); here only fp32's (2^-24) enters there, so Vnew and the state
 * carry kappa_T times fp32 rounding (no dtype rounding at all) and each term
 * P_ij Vnew_j of o_t carries two roundings within u (P and Vnew), o_t one:
 * to first order |o - ref| <= 2u sum_j |P_ij| |Vnew_j| + u |ref| +
 * O(kappa_T 2^-24), relative in norm (2 kappa + 1) u with kappa = || sum_j
 * |P_ij| |Vnew_j| || / ||o||. (Rounding the normalised keys k~ to the dtype
 * before the substitution, as a first version did, lets kappa_T amplify u
 * itself: 3.4 u measured in f16.) f16's range: P and Vnew past 65504
 * overflow to inf. Measured on the emulated CUDA backend against the
 * float64 function of the rounded inputs (tests/test_dtype_native.c, the
 * shapes above, plain and gated with gates in [-0.01, 0], [-1, 0],
 * [-20, -19], L2 norm on and off, keys of norm <= 1 without it, beta in
 * [0, 1] with its edges, varlen with empty and length-1 sequences, initial
 * states, and a 288-token chunk): o within 1.01 u in bf16 and 0.99 u in f16
 * with chunks up to 64, 1.96 u and 2.11 u with the 288-token chunk and no
 * decay (more terms cancel: kappa grows with the chunk), tested against
 * 3 u; the final state within 7.3e-7 relative (1.7e-4 u bf16, 1.5e-3 u
 * f16; tested against the fp32 op's 1e-5). Not run on a GPU yet. The recurrent
 * mode keeps the converting path (the backward: below). Workspace (queried by
 * seqk_deltanet_workspace_size_ex, the larger of the two paths):
 * C H (L (16 K + 8 V + 6 L + 4 max(L, V) + 8) + 4 K V) + B T H (4 K + 8)
 * bytes (each region rounded up to 256 bytes), no fp32 copies.
 *
 * Native DeltaNet backward (issue #21 phase 5): on a CUDA context,
 * seqk_deltanet_backward_ex (plain and gated, with and without
 * SEQK_DELTANET_L2NORM_QK) with a bf16 or f16 dtype runs natively too
 * (gpu/deltanet_backward.cu; beta, g, the states, dbeta, dg and dstate_in
 * stay fp32). It reruns the native forward's stages (above: T, W, Vnew and
 * the chunk states fp32 on exact inputs; the masked scores P rounded), then
 * per chunk on tensor cores through cuBLAS (fp32 accumulation): P^T dO and
 * Q~w^T dO (the chunk-local parts of the reverse state walk), dA = -X Vnew^T,
 * dP = dO Vnew^T, Y = -X S0^T, dQ~'s dP K~ and dO S0^T, dK~'s dP^T Q~,
 * (M + M^T) K~ and Vnew dS^T, with dO, q and k the inputs themselves
 * (exact; scale and the L2 norm's factors folded into the rounded L x L
 * operands) and P, Q~w = exp(G_i - G_first) q~ (normalised to the chunk's
 * first token, as in the linear-state backward), X, Vnew, S0, dS, the
 * decay-masked dP and M = diag(beta) dA .* Gamma rounded to the dtype just
 * before the products. X = T^T dVn is a product on fp32 operands (T
 * explicit, never TF32); the reverse state walk (dVn += (diag(exp(G_C - G))
 * K~) dS, dS0 = exp(G_C) dS + exp(G_first) Q~w^T dO - W^T dVn), the masks,
 * decays, dbeta, the gate gradient (its pairs dP .* P from the fp32 dP and
 * the fp32 scores and beta_i dA_ij Gamma_ij (k~_i . k~_j), each counted once
 * on each side; its query, key, W and state terms; the reverse sum), the L2
 * norm's backward and every reduction stay in seqk's fp32 kernels, in a
 * fixed order (deterministic). dq, dk, dv are rounded once at the end.
 * Bound: expand every gradient into terms through T = (I + A)^-1 (so that
 * the substitution's growth, kappa_T above, is in the terms, not in a
 * factor). To first order each term carries at most four roundings within
 * u: dVn's terms one (P, or Q~w through dS), which X = T^T dVn carries;
 * dv = beta X: one; dq: two (Vnew and the rounded dP; or S0); dk: four for
 * its M terms (X rounded on top of the one it carries, Vnew, M), three for
 * its Y and state terms (X twice and S0; dS rounded on top of the one it
 * carries, and Vnew), two for its dP terms; dstate_in: one; dbeta and dg:
 * at most three (their Y and dA terms, dg's state term), dg's score pairs
 * one. So |g - ref| <= 4u sum |terms| + u |ref| for dq, dk, dv (relative in
 * norm (4 kappa + 1) u; (2 kappa + 1) u for dq, (kappa + 1) u for dv) and
 * 3u sum |terms| for dbeta, dg, dstate_in (3 kappa u), kappa =
 * || sum |terms| || / ||g|| as above. f16's range: P, dP, M, X, Vnew, S0
 * and dS past 65504 overflow to inf; state-gradient entries below 2^-24
 * flush to zero in their
 * products (under strong decay, where those terms are negligible; dstate_in
 * itself is fp32). Measured on the emulated CUDA backend against the float64
 * gradients of the rounded inputs (tests/test_dtype_native.c, the forward's
 * shapes, gates and states above, with dstate_out): with chunks up to 64,
 * dq, dk, dv within 1.33 u in bf16 and 1.37 u in f16, dbeta, dg, dstate_in
 * within 0.98 u and 1.41 u; with the 288-token chunk (no or weak decay:
 * kappa grows with the chunk, as in the forward) dq 1.91 / 1.99 u, dk 2.16
 * / 2.13 u, dv 1.31 / 1.33 u (bf16 / f16), dbeta 1.50 / 1.57 u, dg 1.79 /
 * 1.60 u, dstate_in 2.12 / 1.82 u; tested against 3 u for both kinds.
 * Not run on a GPU yet. Workspace (queried by
 * seqk_deltanet_backward_workspace_size_ex, the larger of the two paths):
 * the native forward's plus C H (L (26 K + 12 V + 20 L + 12) + 12 K V + 4)
 * + 4 B T H bytes (each region rounded up to 256 bytes), no fp32 copies.
 *
 * Workspace: besides the fp32 op's own, a reduced dtype on the converting
 * path takes one fp32 copy of every dtype tensor of the call (each rounded up
 * to 256 bytes), from the context's workspace; the _ex queries include them
 * (a caller's buffer of the queried size suffices). SEQK_DTYPE_F32 takes no
 * copies. (The native path: above.)
 *
 * Aliasing with a reduced dtype: a dtype output must not overlap another
 * dtype tensor of the call (checked, in the dtype's bytes, INVALID_ARGUMENT);
 * an overlap between a dtype tensor and an fp32 one is not detected on the
 * converting path (the op sees the copies; the native path checks o against
 * g and the states as fp32 does): do not pass one. In-place states (state_out == state_in) work as in fp32.
 *
 * Errors: a dtype that is not a seqk_dtype gives INVALID_ARGUMENT ("fn:
 * dtype=7 is not a seqk_dtype") before anything is read or written; on any
 * failure no output is written (the outputs are converted back only after
 * the fp32 op succeeded).
 */

/* Values only grow. */
typedef enum seqk_dtype {
    SEQK_DTYPE_F32 = 0,  /* IEEE binary32 */
    SEQK_DTYPE_BF16 = 1, /* bfloat16: fp32's exponent, 8 bits of precision */
    SEQK_DTYPE_F16 = 2   /* IEEE binary16 */
} seqk_dtype;

/* "f32", "bf16", "f16"; "unknown dtype" otherwise. Never NULL. */
SEQK_API const char *seqk_dtype_string(seqk_dtype dtype);
/* Bytes per element: 4, 2, 2; 0 for a value that is not a seqk_dtype. */
SEQK_API size_t seqk_dtype_size(seqk_dtype dtype);

/* ------------------------------------------------------------------------ */
/* The scan primitive (DESIGN 3.6)                                           */
/* ------------------------------------------------------------------------ */

/* Flags for seqk_scan; combine with |. Values only grow. */
#define SEQK_SCAN_REVERSE 1u  /* run from the last step to the first */

/*
 * seqk_scan: the first-order linear recurrence, for B*C independent channels
 *
 *   forward:  h[t] = a[t] * h[t-1] + b[t],   t = 0 .. T-1,  h[-1] = h0
 *   reverse:  h[t] = a[t] * h[t+1] + b[t],   t = T-1 .. 0,  h[T] = h0
 *
 * elementwise per channel c. (The reverse form uses a[t], not a[t+1]: for the
 * gradient of a forward recurrence pass the coefficients shifted by one.)
 * The associative operator is (a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2).
 *
 * Coefficients are per element (block = 1), or one coefficient broadcast over
 * each block of `block` consecutive channels (block divides C; block = C gives
 * one scalar per step): that is how a matrix-valued state (a K x V chunk state
 * times a scalar decay) is scanned.
 *
 *   B          batch; must be 1 when cu_seqlens is given
 *   T          steps (>= 0; T = 0 writes only final_state = h0)
 *   C          channels per step (>= 1)
 *   block      coefficient block size, 1 <= block <= C, C % block == 0
 *   flags      0 or SEQK_SCAN_REVERSE
 *   a          [B, T, C/block]  coefficients
 *   b          [B, T, C]        inputs
 *   h0         [N, C] or NULL   initial state per sequence (NULL = zeros)
 *   h          [B, T, C]        output, every h[t]; may be the same pointer as
 *                               b (in place), must not otherwise overlap
 *   h_final    [N, C] or NULL   state after each sequence's last step
 *                               (forward: h[end-1], reverse: h[start]); for an
 *                               empty sequence it is h0 (or zeros)
 *   cu_seqlens [N+1] or NULL    varlen boundaries (see top of file)
 *   N          number of sequences when cu_seqlens != NULL (>= 1); ignored
 *              (N = B) otherwise
 *
 * Workspace: none on the CPU; see seqk_scan_workspace_size.
 */
SEQK_API seqk_status seqk_scan(seqk_context *ctx, int64_t B, int64_t T, int64_t C,
                               int64_t block, unsigned flags, const float *a, const float *b,
                               const float *h0, float *h, float *h_final,
                               const int32_t *cu_seqlens, int64_t N);

/* Workspace bytes that seqk_scan needs for these sizes on this context. */
SEQK_API seqk_status seqk_scan_workspace_size(seqk_context *ctx, int64_t B, int64_t T,
                                              int64_t C, int64_t block, unsigned flags,
                                              int64_t N, size_t *bytes);

/* ------------------------------------------------------------------------ */
/* Modes                                                                     */
/* ------------------------------------------------------------------------ */

/* Every recurrent-state module computes the same function in two ways. Values
 * only grow. */
typedef enum seqk_mode {
    SEQK_MODE_RECURRENT = 0, /* token by token: O(1) memory per step; decoding */
    SEQK_MODE_PARALLEL = 1   /* chunkwise: matrix products per chunk; training, prefill */
} seqk_mode;

/* ------------------------------------------------------------------------ */
/* Linear-state modules: linear attention, RetNet retention, gated          */
/* retention (Mamba2). DESIGN 3.1.                                           */
/* ------------------------------------------------------------------------ */
/*
 * All three are, per head, with S a K x V state:
 *
 *   S_t = a_t S_{t-1} + k_t v_t^T,       o_t = S_t^T (scale q_t)
 *
 * with a_t = 1 (linear attention), gamma_h (retention) or exp(g_t) (gated
 * retention). Shared arguments:
 *
 *   mode        SEQK_MODE_RECURRENT or SEQK_MODE_PARALLEL (same result up to
 *               fp32 rounding)
 *   B, T, H     batch, tokens, heads (B = 1 with cu_seqlens); T >= 0
 *   K, V        head dims of q/k and of v/o, 1 <= K <= 1024, V >= 1
 *   scale       multiplies q (finite; 1/sqrt(K) is usual)
 *   q, k        [B,T,H,K]
 *   v, o        [B,T,H,V]; o must not overlap any input
 *   state_in    [N,H,K,V] or NULL (zeros)
 *   state_out   [N,H,K,V] or NULL (not written); may be state_in (in place)
 *   cu_seqlens  [N+1] or NULL; N as in seqk_scan
 *   chunk       chunk size of the parallel mode (1..1024), or 0: the
 *               library's choice for the backend and head sizes,
 *               seqk_chunk_default (32 on the CPU for K, V <= 64, else 64)
 *
 * A decoding step is the recurrent mode with T = 1 and
 * state_in == state_out: it writes o and the state, and allocates nothing.
 * Workspace: see seqk_linear_state_workspace_size.
 */

/* Flags of seqk_linear_attention; combine with |. Values only grow. */
#define SEQK_LINATTN_NORMALIZE 1u /* o_t /= scale phi(q_t) . z_t + 1e-6, z_t = z_{t-1} + phi(k_t) */
#define SEQK_LINATTN_ELU1 2u      /* feature map phi(x) = elu(x) + 1 on q and k (else phi(x) = x) */

/*
 * seqk_linear_attention: S_t = S_{t-1} + phi(k_t) v_t^T, o_t = S_t^T (scale phi(q_t)),
 * optionally divided by the Katharopoulos normaliser (flags above), whose
 * state z [N,H,K] is passed as z_in (NULL = zeros) / z_out (NULL = not
 * written; may equal z_in). z_in and z_out must be NULL without
 * SEQK_LINATTN_NORMALIZE.
 */
SEQK_API seqk_status seqk_linear_attention(seqk_context *ctx, seqk_mode mode, int64_t B,
                                           int64_t T, int64_t H, int64_t K, int64_t V,
                                           float scale, unsigned flags, const float *q,
                                           const float *k, const float *v, float *o,
                                           const float *state_in, float *state_out,
                                           const float *z_in, float *z_out,
                                           const int32_t *cu_seqlens, int64_t N, int64_t chunk);
/* seqk_linear_attention with a dtype ("Dtypes"): q, k, v, o take it. */
SEQK_API seqk_status seqk_linear_attention_ex(seqk_context *ctx, seqk_dtype dtype,
                                              seqk_mode mode, int64_t B, int64_t T, int64_t H,
                                              int64_t K, int64_t V, float scale, unsigned flags,
                                              const void *q, const void *k, const void *v, void *o,
                                              const float *state_in, float *state_out,
                                              const float *z_in, float *z_out,
                                              const int32_t *cu_seqlens, int64_t N, int64_t chunk);

/*
 * seqk_retention (RetNet): S_t = gamma_h S_{t-1} + k_t v_t^T, o_t = S_t^T (scale q_t).
 *   gamma   [H] decays in (0, 1], or NULL for RetNet's defaults
 *           gamma_h = 1 - 2^(-5-h) (seqk_retention_default_gammas writes them)
 */
SEQK_API seqk_status seqk_retention(seqk_context *ctx, seqk_mode mode, int64_t B, int64_t T,
                                    int64_t H, int64_t K, int64_t V, float scale,
                                    const float *gamma, const float *q, const float *k,
                                    const float *v, float *o, const float *state_in,
                                    float *state_out, const int32_t *cu_seqlens, int64_t N,
                                    int64_t chunk);
/* seqk_retention with a dtype ("Dtypes"): q, k, v, o take it. */
SEQK_API seqk_status seqk_retention_ex(seqk_context *ctx, seqk_dtype dtype, seqk_mode mode,
                                       int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
                                       float scale, const float *gamma, const void *q,
                                       const void *k, const void *v, void *o,
                                       const float *state_in, float *state_out,
                                       const int32_t *cu_seqlens, int64_t N, int64_t chunk);
/* gamma[h] = 1 - 2^(-5-h), h = 0 .. H-1 (host memory). */
SEQK_API seqk_status seqk_retention_default_gammas(int64_t H, float *gamma);

/*
 * seqk_gated_retention (gated linear attention with a scalar gate per head and
 * token; Mamba2 / SSD): S_t = exp(g_t) S_{t-1} + k_t v_t^T, o_t = S_t^T (scale q_t).
 *   g       [B,T,H] log-gates, finite and <= 0 (decays in (0, 1]; checked on
 *           a CPU context, see "Gates" at the top); strongly negative gates
 *           (-20 and below) are safe: decays are only formed as
 *           exp(G_i - G_j) with i >= j (DESIGN 2), from G in two floats
 */
SEQK_API seqk_status seqk_gated_retention(seqk_context *ctx, seqk_mode mode, int64_t B,
                                          int64_t T, int64_t H, int64_t K, int64_t V,
                                          float scale, const float *q, const float *k,
                                          const float *v, const float *g, float *o,
                                          const float *state_in, float *state_out,
                                          const int32_t *cu_seqlens, int64_t N, int64_t chunk);
/* seqk_gated_retention with a dtype ("Dtypes"): q, k, v, o take it. */
SEQK_API seqk_status seqk_gated_retention_ex(seqk_context *ctx, seqk_dtype dtype, seqk_mode mode,
                                             int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
                                             float scale, const void *q, const void *k,
                                             const void *v, const float *g, void *o,
                                             const float *state_in, float *state_out,
                                             const int32_t *cu_seqlens, int64_t N, int64_t chunk);

/* Flags of seqk_mamba2; combine with |. Values only grow. */
#define SEQK_MAMBA2_DT_SOFTPLUS 1u /* dt = softplus(dt + dt_bias) (else dt + dt_bias) */

/*
 * seqk_mamba2: the Mamba2 (SSD) layer's sequence mixing, mapped onto gated
 * retention with q = C, k = B, v = dt * x, g = dt * A, scale 1:
 *
 *   dt_t  = softplus(dt_raw_t + dt_bias)   (or without softplus, per flags)
 *   S_t   = exp(dt_t A_h) S_{t-1} + B_t (dt_t x_t)^T        S: [Nst, P] per head
 *   y_t   = S_t^T C_t + D_h x_t
 *
 *   P, G, Nst  head dim of x, number of B/C groups (H % G == 0; head h uses
 *              group h / (H/G)), state size
 *   x, y       [B,T,H,P]; y must not overlap an input
 *   dt         [B,T,H] raw dt
 *   A          [H] finite and <= 0 (A = -exp(A_log)); dt, dt_bias finite
 *              (checked on a CPU context, see "Gates" at the top)
 *   Bm, Cm     [B,T,G,Nst]
 *   D          [H] or NULL (no skip);  dt_bias [H] or NULL (zero)
 *   state_in/state_out  [N,H,Nst,P] or NULL. Note: mamba_ssm stores this
 *              state transposed, [N,H,P,Nst].
 * Workspace: B*T*H floats for dt, plus the engine's.
 */
SEQK_API seqk_status seqk_mamba2(seqk_context *ctx, seqk_mode mode, int64_t B, int64_t T,
                                 int64_t H, int64_t P, int64_t G, int64_t Nst, unsigned flags,
                                 const float *x, const float *dt, const float *A,
                                 const float *Bm, const float *Cm, const float *D,
                                 const float *dt_bias, float *y, const float *state_in,
                                 float *state_out, const int32_t *cu_seqlens, int64_t N,
                                 int64_t chunk);
/* seqk_mamba2 with a dtype ("Dtypes"): x, Bm, Cm, y take it. */
SEQK_API seqk_status seqk_mamba2_ex(seqk_context *ctx, seqk_dtype dtype, seqk_mode mode, int64_t B,
                                    int64_t T, int64_t H, int64_t P, int64_t G, int64_t Nst,
                                    unsigned flags, const void *x, const float *dt, const float *A,
                                    const void *Bm, const void *Cm, const float *D,
                                    const float *dt_bias, void *y, const float *state_in,
                                    float *state_out, const int32_t *cu_seqlens, int64_t N,
                                    int64_t chunk);

/* The families of chunked modules, for seqk_chunk_default. Values only grow. */
typedef enum seqk_chunked_op {
    SEQK_CHUNKED_LINEAR_STATE = 0, /* linear attention, retention, gated retention, Mamba2 */
    SEQK_CHUNKED_DELTANET = 1      /* DeltaNet, gated DeltaNet */
} seqk_chunked_op;

/* The chunk size that chunk = 0 means for op's modules on ctx's backend with
 * head sizes K (keys, or Mamba2's Nst) and V (values, or Mamba2's P): on
 * the CPU 32 when K and V are at most 64 (DeltaNet: at most 128), else 64;
 * on CUDA 64. A rule of the op, backend and sizes alone (the same bits for
 * the same call); any explicit chunk gives the same result up to fp32
 * rounding. */
SEQK_API seqk_status seqk_chunk_default(const seqk_context *ctx, seqk_chunked_op op, int64_t K,
                                        int64_t V, int64_t *chunk);

/* An upper bound of the workspace bytes any linear-state op above needs for
 * these sizes and mode on this context (N: sequences with varlen, else 0). */
SEQK_API seqk_status seqk_linear_state_workspace_size(seqk_context *ctx, seqk_mode mode,
                                                      int64_t B, int64_t T, int64_t H, int64_t K,
                                                      int64_t V, int64_t N, int64_t chunk,
                                                      size_t *bytes);
/* seqk_linear_state_workspace_size with a dtype: the fp32 bytes plus the fp32
 * copies of the dtype tensors (none for SEQK_DTYPE_F32; see "Dtypes"). */
SEQK_API seqk_status seqk_linear_state_workspace_size_ex(seqk_context *ctx, seqk_dtype dtype,
                                                         seqk_mode mode, int64_t B, int64_t T,
                                                         int64_t H, int64_t K, int64_t V,
                                                         int64_t N, int64_t chunk, size_t *bytes);

/* ------------------------------------------------------------------------ */
/* Backward (training) of the linear-state modules (DESIGN 3.7)              */
/* ------------------------------------------------------------------------ */
/*
 * The gradients of the function the forward computes (both modes compute
 * the same one), given dout = dL/do and optionally dstate_out = dL/d(final
 * state). Every gradient is written (overwritten, never accumulated), for
 * every token, including those of empty-gradient paths (zeros).
 *
 * Math per head (DESIGN 3.7), with q~ = scale phi(q), k~ = phi(k) and G_i the
 * cumulative log-decay from the start of the sequence:
 *
 *   dS_{t-1} = a_t dS_t + q~_t dout_t^T   (reverse recurrence; dS_T = dstate_out)
 *   dq~_t = S_t dout_t,   dk~_t = dS_t v_t,   dv_t = dS_t^T k~_t
 *   dstate_in = dS_0 (the gradient of state_in before the first token)
 *   d(log a_t) = <dS_t, a_t S_{t-1}>
 *
 * computed chunkwise: per (sequence, head) the chunk states are recomputed
 * by the forward's stages (on the CPU all of them while they fit 8 MiB per
 * thread, else checkpoints every ~sqrt(chunks) chunks with the states
 * between them recomputed per segment: about 2 sqrt(T / chunk) K V floats
 * per thread instead of T / chunk; on CUDA all of them), then the chunks
 * are walked in reverse. (On the CPU with fewer (sequence, head) pairs than
 * threads and no normaliser, the chunks run in parallel instead: every
 * chunk's state and state gradient in the workspace, at most 256 MiB; past
 * that, in windows of chunks from checkpoints, the local states of all but
 * the last window computed twice. The same bits either way.) dS runs
 * backwards through the chunk-state recurrence, and per chunk, with
 * P = (Q~ K~^T) .* L, dP = (dO V^T) .* L,
 *
 *   dV  = P^T dO + diag(exp(G_C - G)) K~ dS_next
 *   dQ~ = diag(exp(G)) dO S0^T + dP K~
 *   dK~ = dP^T Q~ + diag(exp(G_C - G)) V dS_next^T
 *   dS0 = (diag(exp(G)) Q~)^T dO + exp(G_C) dS_next
 *
 * The gate gradient sums, per chunk, the pairs on the two sides of each
 * token, each with its own decay (the strict lower part of dP; the queries
 * against S0; the keys against dS; S0 against dS), one reverse scan over
 * the chunk's tokens: exact under strong decay, where the equivalent
 * sum_{i >= t} (q~_i . dq~_i - k~_i . dk~_i) + <S_T, dS_T> (DESIGN 3.7)
 * cancels O(1) terms to rounding.
 * Deterministic: the same inputs give the same bits for any thread count
 * (fixed reduction orders, no atomics).
 *
 * Shared arguments (sizes and inputs exactly as the forward call):
 *   dout         [B,T,H,V]   dL/do
 *   dstate_out   [N,H,K,V] or NULL (zero)   dL/d state_out
 *   dq, dk       [B,T,H,K]   outputs (not NULL when B*T > 0)
 *   dv           [B,T,H,V]   output (not NULL when B*T > 0)
 *   dstate_in    [N,H,K,V] or NULL (not computed)   dL/d state_in (the
 *                gradient at state_in, or at a zero state when state_in is
 *                NULL)
 * No output may overlap another output or an input.
 * Workspace: seqk_linear_state_backward_workspace_size.
 */

/*
 * seqk_linear_attention_backward: the gradients of seqk_linear_attention.
 * flags as the forward (SEQK_LINATTN_ELU1: through the feature map;
 * SEQK_LINATTN_NORMALIZE: through the normaliser, whose state adds z_in
 * [N,H,K] (NULL = zeros), dz_out [N,H,K] (NULL = zero) and dz_in [N,H,K]
 * (NULL = not computed); all three must be NULL without the flag).
 */
SEQK_API seqk_status seqk_linear_attention_backward(
    seqk_context *ctx, int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, float scale,
    unsigned flags, const float *q, const float *k, const float *v, const float *dout,
    const float *state_in, const float *z_in, const float *dstate_out, const float *dz_out,
    float *dq, float *dk, float *dv, float *dstate_in, float *dz_in,
    const int32_t *cu_seqlens, int64_t N, int64_t chunk);
/* seqk_linear_attention_backward with a dtype ("Dtypes"): q, k, v, dout, dq, dk, dv take it. */
SEQK_API seqk_status seqk_linear_attention_backward_ex(
    seqk_context *ctx, seqk_dtype dtype, int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
    float scale, unsigned flags, const void *q, const void *k, const void *v, const void *dout,
    const float *state_in, const float *z_in, const float *dstate_out, const float *dz_out,
    void *dq, void *dk, void *dv, float *dstate_in, float *dz_in, const int32_t *cu_seqlens,
    int64_t N, int64_t chunk);

/* seqk_retention_backward: the gradients of seqk_retention (gamma is a
 * constant: no gradient). */
SEQK_API seqk_status seqk_retention_backward(
    seqk_context *ctx, int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, float scale,
    const float *gamma, const float *q, const float *k, const float *v, const float *dout,
    const float *state_in, const float *dstate_out, float *dq, float *dk, float *dv,
    float *dstate_in, const int32_t *cu_seqlens, int64_t N, int64_t chunk);
/* seqk_retention_backward with a dtype ("Dtypes"): q, k, v, dout, dq, dk, dv take it. */
SEQK_API seqk_status seqk_retention_backward_ex(seqk_context *ctx, seqk_dtype dtype, int64_t B,
                                                int64_t T, int64_t H, int64_t K, int64_t V,
                                                float scale, const float *gamma, const void *q,
                                                const void *k, const void *v, const void *dout,
                                                const float *state_in, const float *dstate_out,
                                                void *dq, void *dk, void *dv, float *dstate_in,
                                                const int32_t *cu_seqlens, int64_t N,
                                                int64_t chunk);

/* seqk_gated_retention_backward: the gradients of seqk_gated_retention,
 * with dg [B,T,H] (output, not NULL when B*T > 0) the gradient of the
 * log-gates. */
SEQK_API seqk_status seqk_gated_retention_backward(
    seqk_context *ctx, int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, float scale,
    const float *q, const float *k, const float *v, const float *g, const float *dout,
    const float *state_in, const float *dstate_out, float *dq, float *dk, float *dv, float *dg,
    float *dstate_in, const int32_t *cu_seqlens, int64_t N, int64_t chunk);
/* seqk_gated_retention_backward with a dtype ("Dtypes"): q, k, v, dout, dq, dk, dv take it. */
SEQK_API seqk_status seqk_gated_retention_backward_ex(seqk_context *ctx, seqk_dtype dtype,
                                                      int64_t B, int64_t T, int64_t H, int64_t K,
                                                      int64_t V, float scale, const void *q,
                                                      const void *k, const void *v, const float *g,
                                                      const void *dout, const float *state_in,
                                                      const float *dstate_out, void *dq, void *dk,
                                                      void *dv, float *dg, float *dstate_in,
                                                      const int32_t *cu_seqlens, int64_t N,
                                                      int64_t chunk);

/*
 * seqk_mamba2_backward: the gradients of seqk_mamba2 (same sizes, flags and
 * inputs), given dy [B,T,H,P] and dstate_out [N,H,Nst,P] or NULL:
 *
 *   dx   [B,T,H,P]    (through v = dt x and the skip D x)
 *   ddt  [B,T,H]      gradient of the raw dt (through softplus when the
 *                     flag is set, through both v = dt x and g = dt A)
 *   dA   [H]          summed over tokens (and sequences)
 *   dBm, dCm [B,T,G,Nst]  summed over the heads of each group
 *   dD   [H] or NULL  (must be NULL when D is NULL)
 *   ddt_bias [H] or NULL (not computed; allowed when dt_bias is NULL: the
 *                     gradient at a zero bias)
 *   dstate_in [N,H,Nst,P] or NULL
 * dx, ddt, dA, dBm, dCm are required when B*T > 0. Reductions over tokens
 * and heads run in a fixed order (deterministic).
 */
SEQK_API seqk_status seqk_mamba2_backward(
    seqk_context *ctx, int64_t B, int64_t T, int64_t H, int64_t P, int64_t G, int64_t Nst,
    unsigned flags, const float *x, const float *dt, const float *A, const float *Bm,
    const float *Cm, const float *D, const float *dt_bias, const float *state_in,
    const float *dy, const float *dstate_out, float *dx, float *ddt, float *dA, float *dBm,
    float *dCm, float *dD, float *ddt_bias, float *dstate_in, const int32_t *cu_seqlens,
    int64_t N, int64_t chunk);
/* seqk_mamba2_backward with a dtype ("Dtypes"): x, Bm, Cm, dy, dx, dBm, dCm take it. */
SEQK_API seqk_status seqk_mamba2_backward_ex(seqk_context *ctx, seqk_dtype dtype, int64_t B,
                                             int64_t T, int64_t H, int64_t P, int64_t G,
                                             int64_t Nst, unsigned flags, const void *x,
                                             const float *dt, const float *A, const void *Bm,
                                             const void *Cm, const float *D, const float *dt_bias,
                                             const float *state_in, const void *dy,
                                             const float *dstate_out, void *dx, float *ddt,
                                             float *dA, void *dBm, void *dCm, float *dD,
                                             float *ddt_bias, float *dstate_in,
                                             const int32_t *cu_seqlens, int64_t N, int64_t chunk);

/* An upper bound of the workspace bytes any backward above needs for these
 * sizes on this context (N: sequences with varlen, else 0; G: the q/k head
 * groups, H for every op but Mamba2). */
SEQK_API seqk_status seqk_linear_state_backward_workspace_size(seqk_context *ctx, int64_t B,
                                                               int64_t T, int64_t H, int64_t G,
                                                               int64_t K, int64_t V, int64_t N,
                                                               int64_t chunk, size_t *bytes);
/* seqk_linear_state_backward_workspace_size with a dtype: the fp32 bytes plus the fp32
 * copies of the dtype tensors (none for SEQK_DTYPE_F32; see "Dtypes"). */
SEQK_API seqk_status seqk_linear_state_backward_workspace_size_ex(seqk_context *ctx,
                                                                  seqk_dtype dtype, int64_t B,
                                                                  int64_t T, int64_t H, int64_t G,
                                                                  int64_t K, int64_t V, int64_t N,
                                                                  int64_t chunk, size_t *bytes);

/* ------------------------------------------------------------------------ */
/* Mamba selective scan (Mamba1), DESIGN 3.2                                 */
/* ------------------------------------------------------------------------ */

/* Flags of seqk_selective_scan; combine with |. Values only grow. */
#define SEQK_SSCAN_DT_SOFTPLUS 1u /* dt = softplus(dt + dt_bias) (else dt + dt_bias) */

/*
 * seqk_selective_scan: per channel d (of D) and state index n (of Nst), a
 * diagonal recurrence with input-dependent coefficients,
 *
 *   dt_t[d]  = softplus(dt_raw_t[d] + dt_bias[d])        (per flags)
 *   h_t[d,n] = exp(dt_t[d] A[d,n]) h_{t-1}[d,n] + dt_t[d] B_t[g,n] u_t[d]
 *   y_t[d]   = sum_n C_t[g,n] h_t[d,n] + Dskip[d] u_t[d]
 *   y_t[d]  *= silu(z_t[d])                                (when z is given)
 *
 * with g = d / (D/G) the group of channel d. The parallel mode runs the
 * scan primitive over cache-sized chunks of time and reduces with C on the
 * fly (h is never stored for every token); the recurrent mode walks tokens.
 *
 *   B, T, D, Nst, G   batch, tokens, channels, state size, groups (D % G == 0)
 *   u, dt, y          [B,T,D] (token-major; mamba_ssm uses [B,D,T])
 *   A                 [D,Nst] finite and <= 0 (A = -exp(A_log)); dt, dt_bias
 *                     finite (checked on a CPU context, see "Gates" at the top)
 *   Bm, Cm            [B,T,G,Nst]
 *   Dskip, dt_bias    [D] or NULL
 *   z                 [B,T,D] or NULL (no gate)
 *   state_in          [N,D,Nst] or NULL (zeros); state_out [N,D,Nst] or NULL,
 *                     may be state_in
 *   cu_seqlens, N     varlen as everywhere
 */
SEQK_API seqk_status seqk_selective_scan(seqk_context *ctx, seqk_mode mode, int64_t B, int64_t T,
                                         int64_t D, int64_t Nst, int64_t G, unsigned flags,
                                         const float *u, const float *dt, const float *A,
                                         const float *Bm, const float *Cm, const float *Dskip,
                                         const float *z, const float *dt_bias, float *y,
                                         const float *state_in, float *state_out,
                                         const int32_t *cu_seqlens, int64_t N);
/* seqk_selective_scan with a dtype ("Dtypes"): u, Bm, Cm, z (the gate
 * input), y take it; dt, A, Dskip, dt_bias and the states stay fp32. */
SEQK_API seqk_status seqk_selective_scan_ex(seqk_context *ctx, seqk_dtype dtype, seqk_mode mode,
                                            int64_t B, int64_t T, int64_t D, int64_t Nst,
                                            int64_t G, unsigned flags, const void *u,
                                            const float *dt, const float *A, const void *Bm,
                                            const void *Cm, const float *Dskip, const void *z,
                                            const float *dt_bias, void *y, const float *state_in,
                                            float *state_out, const int32_t *cu_seqlens,
                                            int64_t N);

/* The workspace bytes seqk_selective_scan needs for these sizes and mode on
 * this context (N: sequences with varlen, else 0; an upper bound for any
 * cu_seqlens then): on the CPU the parallel mode's per-thread chunk scratch
 * (it depends on the thread count), the recurrent mode none; on CUDA the
 * chunked form's per-chunk carries (parallel mode with few channels). */
SEQK_API seqk_status seqk_selective_scan_workspace_size(seqk_context *ctx, seqk_mode mode,
                                                        int64_t B, int64_t T, int64_t D,
                                                        int64_t Nst, int64_t G, int64_t N,
                                                        size_t *bytes);
/* seqk_selective_scan_workspace_size with a dtype: the fp32 bytes plus the fp32
 * copies of the dtype tensors (none for SEQK_DTYPE_F32; see "Dtypes"). */
SEQK_API seqk_status seqk_selective_scan_workspace_size_ex(seqk_context *ctx, seqk_dtype dtype,
                                                           seqk_mode mode, int64_t B, int64_t T,
                                                           int64_t D, int64_t Nst, int64_t G,
                                                           int64_t N, size_t *bytes);

/*
 * seqk_selective_scan_backward: the gradients of seqk_selective_scan (both
 * modes compute the same function) for the same sizes, flags and inputs,
 * given dy = dL/dy and dstate_out = dL/d state_out. Per channel d, state
 * index n, with x_t = dt_raw_t + dt_bias, dt_t = softplus(x_t) (or x_t),
 * a_t = exp(dt_t A[d,n]), yp_t = sum_n C_t h_t + Dskip u_t (y before the
 * gate):
 *
 *   gy_t      = dy_t silu(z_t)  (dy_t without z)
 *   dz_t      = dy_t yp_t silu'(z_t),  silu'(z) = s(z) (1 + z (1 - s(z)))
 *   lam_t[n]  = C_t[n] gy_t + a_{t+1}[n] lam_{t+1}[n]    (reverse recurrence,
 *               dL/dh_t; a_{T+1} lam_{T+1} := dstate_out)
 *   dstate_in = a_1 lam_1   (dstate_out for an empty sequence)
 *   dC_t[n]   = sum_{d in group} gy_t[d] h_t[d,n]
 *   dB_t[n]   = sum_{d in group} lam_t[d,n] dt_t[d] u_t[d]
 *   du_t      = dt_t sum_n B_t[n] lam_t[n] + Dskip gy_t
 *   d(dt_t)   = sum_n lam_t[n] (A[n] a_t[n] h_{t-1}[n] + B_t[n] u_t)
 *   ddt_t     = d(dt_t) sigmoid(x_t) with SEQK_SSCAN_DT_SOFTPLUS, else d(dt_t)
 *   dA[d,n]   = sum over tokens (all sequences) of lam_t dt_t a_t h_{t-1}
 *   dDskip[d] = sum_t gy_t u_t,   ddt_bias[d] = sum_t ddt_t
 *
 * h is never stored for every token: a forward pass keeps the state at the
 * start of every time segment (a few tens of tokens), the segments are then
 * walked in reverse, h recomputed inside a segment (cache-sized) and lam
 * run backwards through it, both in registers (the scan primitive's step:
 * one FMA per state element and token), the gradients reduced on the fly. Sums over channels (dB, dC) and over sequences (dA, dDskip,
 * ddt_bias) go through per-block partials added in a fixed order:
 * deterministic (the same bits for any thread count; no atomics on CUDA).
 *
 *   B, T, D, Nst, G, flags, u, dt, A, Bm, Cm, Dskip, z, dt_bias, state_in,
 *   cu_seqlens, N   exactly as the forward call
 *   dy               [B,T,D]
 *   dstate_out       [N,D,Nst] or NULL (zero)
 *   du, ddt          [B,T,D]      outputs (ddt: gradient of the raw dt)
 *   dA               [D,Nst]      output
 *   dBm, dCm         [B,T,G,Nst]  outputs, summed over the channels of a group
 *   dDskip           [D] or NULL; must be NULL when Dskip is NULL
 *   dz               [B,T,D]; required when z is given, must be NULL otherwise
 *   ddt_bias         [D] or NULL (allowed when dt_bias is NULL: the gradient
 *                    at a zero bias)
 *   dstate_in        [N,D,Nst] or NULL (not computed)
 * du, ddt, dA, dBm, dCm are required when B*T > 0. Every output is
 * overwritten, never accumulated; no output may overlap an input or another
 * output. Workspace (seqk_selective_scan_backward_workspace_size): the
 * segment-start states (per CPU thread: ceil(T / S) states of 16 channels,
 * S = 16..64 tokens; on CUDA, where time is also cut into chunks of
 * L = 16..256 tokens whose carries are scanned in both directions: about
 * (3 + L/16) D Nst floats per chunk) and the partial sums of dB, dC (one row
 * per block of channels of a group when a group spans several blocks) and of
 * dA, dDskip, ddt_bias (one per sequence when N > 1; one per chunk on CUDA).
 */
SEQK_API seqk_status seqk_selective_scan_backward(
    seqk_context *ctx, int64_t B, int64_t T, int64_t D, int64_t Nst, int64_t G, unsigned flags,
    const float *u, const float *dt, const float *A, const float *Bm, const float *Cm,
    const float *Dskip, const float *z, const float *dt_bias, const float *state_in,
    const float *dy, const float *dstate_out, float *du, float *ddt, float *dA, float *dBm,
    float *dCm, float *dDskip, float *dz, float *ddt_bias, float *dstate_in,
    const int32_t *cu_seqlens, int64_t N);
/* seqk_selective_scan_backward with a dtype ("Dtypes"):
 * u, Bm, Cm, z, dy, du, dBm, dCm, dz take it. */
SEQK_API seqk_status seqk_selective_scan_backward_ex(seqk_context *ctx, seqk_dtype dtype,
                                                     int64_t B, int64_t T, int64_t D, int64_t Nst,
                                                     int64_t G, unsigned flags, const void *u,
                                                     const float *dt, const float *A,
                                                     const void *Bm, const void *Cm,
                                                     const float *Dskip, const void *z,
                                                     const float *dt_bias, const float *state_in,
                                                     const void *dy, const float *dstate_out,
                                                     void *du, float *ddt, float *dA, void *dBm,
                                                     void *dCm, float *dDskip, void *dz,
                                                     float *ddt_bias, float *dstate_in,
                                                     const int32_t *cu_seqlens, int64_t N);

/* The workspace bytes seqk_selective_scan_backward needs for these sizes on
 * this context (N: sequences with varlen, else 0; an upper bound for any
 * cu_seqlens then). */
SEQK_API seqk_status seqk_selective_scan_backward_workspace_size(seqk_context *ctx, int64_t B,
                                                                 int64_t T, int64_t D,
                                                                 int64_t Nst, int64_t G,
                                                                 int64_t N, size_t *bytes);
/* seqk_selective_scan_backward_workspace_size with a dtype: the fp32 bytes plus the fp32
 * copies of the dtype tensors (none for SEQK_DTYPE_F32; see "Dtypes"). */
SEQK_API seqk_status seqk_selective_scan_backward_workspace_size_ex(seqk_context *ctx,
                                                                    seqk_dtype dtype, int64_t B,
                                                                    int64_t T, int64_t D,
                                                                    int64_t Nst, int64_t G,
                                                                    int64_t N, size_t *bytes);

/* ------------------------------------------------------------------------ */
/* DeltaNet and gated DeltaNet (DESIGN 3.3)                                  */
/* ------------------------------------------------------------------------ */

/* Flags of seqk_deltanet; combine with |. Values only grow. */
#define SEQK_DELTANET_L2NORM_QK 1u        /* q, k -> x / sqrt(sum_i x_i^2 + 1e-6) per token and head */
#define SEQK_DELTANET_ALLOW_NEG_EIGVAL 2u /* beta may be in [0, 2] (else [0, 1]) */

/*
 * seqk_deltanet: the delta rule (DeltaNet, Yang et al. 2024) and its gated
 * form (Gated DeltaNet), per sequence and head, with S a K x V state:
 *
 *   S'  = exp(g_t) S_{t-1}                           (g = NULL: S' = S_{t-1})
 *   S_t = S' + beta_t k_t (v_t - S'^T k_t)^T
 *   o_t = S_t^T (scale q_t)
 *
 * i.e. S_t = (I - beta_t k_t k_t^T) exp(g_t) S_{t-1} + beta_t k_t v_t^T:
 * the state is corrected toward v_t along k_t. With SEQK_DELTANET_L2NORM_QK
 * q_t and k_t are first replaced by x / sqrt(sum_i x_i^2 + 1e-6) (the eps
 * of flash-linear-attention's l2norm), then q is multiplied by scale. The
 * transition I - beta_t k_t k_t^T never expands the state when
 * ||k_t|| <= 1 and beta_t in [0, 1] (pass unit-norm keys, or the flag):
 * that is the stable regime. beta_t in (1, 2] gives it a negative
 * eigenvalue (allowed with SEQK_DELTANET_ALLOW_NEG_EIGVAL; still
 * non-expansive for unit-norm keys up to beta = 2).
 *
 * mode SEQK_MODE_RECURRENT walks the tokens (a decoding step is T = 1 with
 * state_in == state_out: it writes o and the state and allocates nothing);
 * SEQK_MODE_PARALLEL runs the chunked WY / UT form: per chunk of C tokens,
 * with G_i the cumulative log-gate inside the chunk and
 * Gamma_ij = exp(G_i - G_j) (i >= j only),
 *
 *   A    = strict_lower(diag(beta) (K K^T .* Gamma)),   T = (I + A)^-1
 *   U    = T diag(beta) V,   W = T diag(beta exp(G)) K,   Vnew = U - W S0
 *   O    = diag(exp(G)) Q S0 + ((Q K^T) .* Gamma .* M_causal) Vnew
 *   S'   = exp(G_C) S0 + (diag(exp(G_C - G)) K)^T Vnew
 *
 * sequential over the chunks of one sequence (Vnew depends on S0). The two
 * modes agree up to fp32 rounding.
 *
 *   mode        SEQK_MODE_RECURRENT or SEQK_MODE_PARALLEL
 *   B, T, H     batch, tokens, heads (B = 1 with cu_seqlens); T >= 0
 *   K, V        head dims of q/k and of v/o, 1 <= K <= 1024, V >= 1
 *   scale       multiplies q (after the L2 norm; finite; 1/sqrt(K) is usual,
 *               1 with unit-norm queries is also common)
 *   flags       0 or SEQK_DELTANET_* above
 *   q, k        [B,T,H,K]
 *   v, o        [B,T,H,V]; o must not overlap any input
 *   beta        [B,T,H] writing strengths, each in [0, 1] ([0, 2] with
 *               SEQK_DELTANET_ALLOW_NEG_EIGVAL); NaN is out of range. On a
 *               CPU context every value is checked before anything is
 *               written (INVALID_ARGUMENT, the message names the first bad
 *               index and value). On a CUDA context the values are NOT
 *               checked (that would cost a device-to-host copy of the whole
 *               array): out-of-range betas there give what the formulas give.
 *   g           [B,T,H] log-gates (gated DeltaNet), finite and <= 0 (decays
 *               exp(g) in (0, 1]; -20 and below are safe; checked like beta),
 *               or NULL: plain DeltaNet (g = 0)
 *   state_in    [N,H,K,V] or NULL (zeros)
 *   state_out   [N,H,K,V] or NULL (not written); may be state_in (in place)
 *   cu_seqlens  [N+1] or NULL; N as in seqk_scan
 *   chunk       chunk size of the parallel mode (1..1024), or 0:
 *               seqk_chunk_default with SEQK_CHUNKED_DELTANET (32 on the CPU
 *               for K, V <= 128, else 64)
 *
 * Workspace (seqk_deltanet_workspace_size): the recurrent mode needs none
 * when state_out is given (CPU: one K x 32 slice per thread otherwise; CUDA:
 * none at all). The parallel mode needs per-thread chunk scratch on the CPU,
 * plus about B*T*H*(K+V) floats of per-chunk terms when there are fewer
 * (sequence, head) pairs than threads (it then splits the state's V
 * columns over threads); on CUDA about B*T*H*(3K + V + 2C + 2) floats.
 */
SEQK_API seqk_status seqk_deltanet(seqk_context *ctx, seqk_mode mode, int64_t B, int64_t T,
                                   int64_t H, int64_t K, int64_t V, float scale, unsigned flags,
                                   const float *q, const float *k, const float *v,
                                   const float *beta, const float *g, float *o,
                                   const float *state_in, float *state_out,
                                   const int32_t *cu_seqlens, int64_t N, int64_t chunk);
/* seqk_deltanet with a dtype ("Dtypes"): q, k, v, o take it (bf16 / f16 on a
 * CUDA context in the parallel mode: the native path, "Native DeltaNet"). */
SEQK_API seqk_status seqk_deltanet_ex(seqk_context *ctx, seqk_dtype dtype, seqk_mode mode,
                                      int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
                                      float scale, unsigned flags, const void *q, const void *k,
                                      const void *v, const float *beta, const float *g, void *o,
                                      const float *state_in, float *state_out,
                                      const int32_t *cu_seqlens, int64_t N, int64_t chunk);

/* An upper bound of the workspace bytes seqk_deltanet needs for these sizes
 * and mode on this context (N: sequences with varlen, else 0; on the CPU it
 * depends on the context's thread count). */
SEQK_API seqk_status seqk_deltanet_workspace_size(seqk_context *ctx, seqk_mode mode, int64_t B,
                                                  int64_t T, int64_t H, int64_t K, int64_t V,
                                                  int64_t N, int64_t chunk, size_t *bytes);
/* seqk_deltanet_workspace_size with a dtype: the fp32 bytes plus the fp32
 * copies of the dtype tensors (none for SEQK_DTYPE_F32; see "Dtypes"), or
 * the native path's bytes where larger (bf16 / f16, CUDA, parallel). */
SEQK_API seqk_status seqk_deltanet_workspace_size_ex(seqk_context *ctx, seqk_dtype dtype,
                                                     seqk_mode mode, int64_t B, int64_t T,
                                                     int64_t H, int64_t K, int64_t V, int64_t N,
                                                     int64_t chunk, size_t *bytes);

/*
 * seqk_deltanet_backward: the gradients of seqk_deltanet's function (both
 * modes compute the same one) for the same sizes, flags and inputs, given
 * dout = dL/do and optionally dstate_out = dL/d(final state). Every gradient
 * is overwritten (never accumulated), for every token.
 *
 * Math per sequence and head (a_t = exp(g_t), 1 without g; q~ = scale n(q),
 * k~ = n(k), n the optional L2 norm): the forward
 *   S' = a_t S_{t-1},  S_t = (I - beta_t k~ k~^T) S' + beta_t k~ v_t^T,  o_t = S_t^T q~_t
 * has the adjoint (dS = dL/dS_t, from dstate_out, walking t backwards)
 *   dq~_t = S_t do_t;   dS += q~_t do_t^T;   u = v_t - S'^T k~;   e = dS^T k~
 *   dv_t = beta_t e,   dbeta_t = e . u,   dk~_t = beta_t (dS u - S' e)
 *   dS' = (I - beta_t k~ k~^T) dS,   dg_t = <dS', S'>,   dS_{t-1} = a_t dS'
 * with dstate_in = dS_0, and through the L2 norm (x~ = x / r,
 * r = sqrt(x . x + 1e-6)): dx = (dx~ - x~ (x~ . dx~)) / r.
 *
 * Computed chunkwise (the chunked form of seqk_deltanet above): per
 * (sequence, head) the chunk states are recomputed by the forward's chunk
 * recurrence (every state before a chunk kept while they fit 8 MiB per
 * thread, else checkpoints every ~sqrt(chunks) chunks and the states between
 * recomputed per segment), then the chunks are walked in reverse: per chunk
 * T, U, W and Vnew again (read back instead when every state is kept and
 * the states and these products, 2 L^2 + L K + 2 L V floats per chunk, fit
 * 32 MiB per thread), the linear-state backward of O and S' with Vnew
 * as the values (dVnew, dQ, dK, dS0), then through Vnew = U - W S0
 * (dW = -dVnew S0^T, dS0 -= W^T dVnew), U = T diag(beta) V,
 * W = T diag(beta exp(G)) K (X = T^T dU, Y = T^T dW) and T = (I + A)^-1
 * (dA = -(X U^T + Y W^T) on the strictly lower part). dg is summed per chunk
 * from pairs of terms on the two sides of each token, each with its decay,
 * so that it keeps its relative accuracy under strong decay (g ~ -20, where
 * dg ~ exp(g)). Deterministic: the same bits for any thread count (one
 * (sequence, head) per thread, fixed orders, no atomics). Work: about three
 * times the parallel forward's (CPU, T = 4096, K = V = 64 on 1 thread:
 * 3.1x its time).
 *
 *   B, T, H, K, V, scale, flags, q, k, v, beta, g, state_in, cu_seqlens, N,
 *   chunk       exactly as the forward call (beta checked as there)
 *   dout        [B,T,H,V]   dL/do
 *   dstate_out  [N,H,K,V] or NULL (zero)   dL/d state_out
 *   dq, dk      [B,T,H,K]   outputs (dL/d of the raw q, k: through the L2 norm
 *               with the flag)
 *   dv          [B,T,H,V]   output
 *   dbeta       [B,T,H]     output
 *   dg          [B,T,H]     output, required when g is given (and B*T > 0),
 *               must be NULL when g is NULL
 *   dstate_in   [N,H,K,V] or NULL (not computed)   dL/d state_in (at a zero
 *               state when state_in is NULL)
 * dq, dk, dv, dbeta are required when B*T > 0. No output may overlap another
 * output or an input.
 * On a CUDA context the same chunked math runs with every chunk in parallel
 * (a forward rerun keeping every chunk state, a reverse pass over the
 * chunks per (sequence, head, 32 state columns), then per-chunk kernels);
 * deterministic as well (fixed orders, no atomics); beta and g are not
 * checked there (as in the forward).
 * On the CPU, with fewer (sequence, head) pairs than threads (one long
 * sequence, many cores), the chunks run in parallel as on CUDA (the states
 * and their gradients per block of state columns, then every chunk's
 * backward at once); the same bits as one thread.
 * Workspace (seqk_deltanet_backward_workspace_size): CPU, per thread, the
 * chunk scratch (about 5 C^2 + 7 C K + 4 C V floats for chunk size C) plus
 * the kept chunk states (at most 8 MiB, or ~2 sqrt(T / C) K V floats when
 * checkpointed); with fewer pairs than threads instead, 3 C^2 + C (K + V) +
 * 2 K V floats per chunk and head, at most 256 MiB (longer sequences in
 * windows of chunks); CUDA about B*T*H*(4K + 3V + 5C + 3) + 2 (chunks*H) K V
 * floats (every chunk state and its gradient kept).
 */
SEQK_API seqk_status seqk_deltanet_backward(
    seqk_context *ctx, int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, float scale,
    unsigned flags, const float *q, const float *k, const float *v, const float *beta,
    const float *g, const float *state_in, const float *dout, const float *dstate_out, float *dq,
    float *dk, float *dv, float *dbeta, float *dg, float *dstate_in, const int32_t *cu_seqlens,
    int64_t N, int64_t chunk);
/* seqk_deltanet_backward with a dtype ("Dtypes"): q, k, v, dout, dq, dk, dv take it. */
SEQK_API seqk_status seqk_deltanet_backward_ex(seqk_context *ctx, seqk_dtype dtype, int64_t B,
                                               int64_t T, int64_t H, int64_t K, int64_t V,
                                               float scale, unsigned flags, const void *q,
                                               const void *k, const void *v, const float *beta,
                                               const float *g, const float *state_in,
                                               const void *dout, const float *dstate_out, void *dq,
                                               void *dk, void *dv, float *dbeta, float *dg,
                                               float *dstate_in, const int32_t *cu_seqlens,
                                               int64_t N, int64_t chunk);

/* An upper bound of the workspace bytes seqk_deltanet_backward needs for
 * these sizes on this context (N: sequences with varlen, else 0; it depends
 * on the context's thread count). */
SEQK_API seqk_status seqk_deltanet_backward_workspace_size(seqk_context *ctx, int64_t B,
                                                           int64_t T, int64_t H, int64_t K,
                                                           int64_t V, int64_t N, int64_t chunk,
                                                           size_t *bytes);
/* seqk_deltanet_backward_workspace_size with a dtype: the fp32 bytes plus the fp32
 * copies of the dtype tensors (none for SEQK_DTYPE_F32; see "Dtypes"). */
SEQK_API seqk_status seqk_deltanet_backward_workspace_size_ex(seqk_context *ctx, seqk_dtype dtype,
                                                              int64_t B, int64_t T, int64_t H,
                                                              int64_t K, int64_t V, int64_t N,
                                                              int64_t chunk, size_t *bytes);

/* ------------------------------------------------------------------------ */
/* Titans test-time memory (DESIGN 3.4)                                      */
/* ------------------------------------------------------------------------ */

/* Flags of seqk_titans; combine with |. Values only grow. */
#define SEQK_TITANS_L2NORM_QK 1u /* q, k -> x / sqrt(sum_i x_i^2 + 1e-6) per token and head */

/*
 * seqk_titans: the linear memory of Titans (Behrouz et al. 2024), a K x V
 * matrix M per sequence and head trained at test time by mini-batch gradient
 * descent with momentum S and forgetting, on the loss
 * l_t(M) = 1/2 ||M^T k_t - v_t||^2, whose gradient is
 * grad_t(M) = k_t (M^T k_t - v_t)^T. With mini-batches of b tokens
 * (`minibatch`; positions counted from the start of each sequence, or
 * continued from the state's position) and Mhat the memory the current
 * mini-batch started with:
 *
 *   Mhat = M_{t-1}                     when token t starts a mini-batch
 *   S_t  = eta_t S_{t-1} - theta_t k_t (Mhat^T k_t - v_t)^T
 *   M_t  = (1 - alpha_t) M_{t-1} + S_t
 *   o_t  = M_t^T (scale q_t)
 *
 * (with SEQK_TITANS_L2NORM_QK q_t and k_t are first replaced by
 * x / sqrt(sum_i x_i^2 + 1e-6), then q is multiplied by scale). b is part of
 * the function computed, not a tuning knob: b = 1 is the pure online rule
 * (every gradient at the latest memory); larger b takes the gradients of a
 * mini-batch at the memory it started with, which is what makes the
 * parallel mode's matrix products possible.
 *
 * mode SEQK_MODE_RECURRENT walks the tokens keeping (M, S, Mhat, position)
 * and refreshes Mhat every b tokens (8 K V flops per token and head; a
 * decoding step is T = 1 with state_in == state_out: it writes o and the
 * state in place and allocates nothing). SEQK_MODE_PARALLEL works per
 * mini-batch (sequential over the mini-batches of a sequence): with Q, K, V
 * its rows, Gerr = K Mhat - V in one product, m_t and beta_t the products of
 * eta and of 1 - alpha over the mini-batch up to t (cumulated in log space),
 *
 *   o_t = beta_t M0^T q_t + f_t S0^T q_t - sum_{s<=t} Gmix_ts theta_s (q_t . k_s) Gerr_s
 *   Gmix_ts = sum_{r=s..t} (beta_t / beta_r)(m_r / m_s),  f_t = sum_{r<=t} (beta_t / beta_r) m_r
 *
 * (M0, S0 the state before it) and the end-of-mini-batch state from two
 * more products. The two modes agree up to fp32 rounding. The parallel
 * mode's work per token is about 10 K V + 2 b (K + V) flops, all in matrix
 * products, against the recurrent mode's 8 K V in a memory-bound pass: it
 * pays only for larger b (on the CPU at K = V = 128: slower than the
 * recurrent mode below b = 16, about even at 16, faster at 64); for small b
 * the recurrent mode is the faster way to compute the same function.
 *
 * Stability: with unit-norm keys each token is a gradient step of size
 * theta_t on a loss of curvature <= 1. Without momentum (eta ~ 0) or with
 * strong forgetting (alpha ~ 1) the memory stays bounded for theta up to 1
 * at b = 1 and 16; momentum near 1 with little forgetting needs a small
 * theta (bounded in the tests: 1e-2 at b = 1, 1e-3 at b = 16 and 64), and a
 * large b with a large theta takes many steps from one stale gradient (b =
 * 64 is bounded in the tests up to theta = 1/4, or 1 with alpha ~ 1).
 * Outside such regimes it is the mathematics that diverges (the float64
 * token loop too), not the rounding.
 *
 * State: fp32 [N, H, E] with E = 3 K V + 8 floats per (sequence, head)
 * (seqk_titans_state_size gives E); each block holds, in this order,
 *
 *   [0, KV)        M      the memory, K x V row-major
 *   [KV, 2KV)      S      the momentum, K x V
 *   [2KV, 3KV)     Mhat   the memory the current mini-batch started with
 *   [3KV]          pos    tokens of the current mini-batch already taken, an
 *                         integer in [0, b) stored as a float (0: the next
 *                         token starts a mini-batch)
 *   [3KV+1, 3KV+8) reserved: written as 0, ignored when read
 *
 * When pos = 0, Mhat is not read (the next token sets Mhat = M) and the
 * library writes Mhat = M. A state from M and S alone is therefore
 * [M | S | anything | 0 | ...]; NULL state_in is all zeros. Because the
 * state carries Mhat and pos, a sequence split anywhere, inside a
 * mini-batch included, and continued from the state (in either mode)
 * equals one call over the whole.
 *
 *   mode        SEQK_MODE_RECURRENT or SEQK_MODE_PARALLEL
 *   B, T, H     batch, tokens, heads (B = 1 with cu_seqlens); T >= 0
 *   K, V        head dims of q/k and of v/o, 1 <= K <= 1024, V >= 1
 *   scale       multiplies q (after the L2 norm); finite
 *   flags       0 or SEQK_TITANS_L2NORM_QK
 *   minibatch   b, 1 <= b <= 1024 (INVALID_ARGUMENT outside)
 *   q, k        [B,T,H,K]
 *   v, o        [B,T,H,V]; o must not overlap any input
 *   eta         [B,T,H] momentum factors in [0, 1]
 *   theta       [B,T,H] learning rates, finite and >= 0
 *   alpha       [B,T,H] forgetting factors in [0, 1] (M decays by 1 - alpha)
 *               On a CPU context every eta, theta, alpha and every pos of
 *               state_in (an integer in [0, b)) is checked before anything
 *               is written (INVALID_ARGUMENT; the message names the first
 *               bad index and value; NaN is out of range). On a CUDA context
 *               they are NOT checked (that would cost device-to-host copies
 *               on every decoding step): out-of-range gates give what the
 *               formulas give, and a pos outside [0, b) is taken as 0 (a
 *               fractional one is truncated).
 *   state_in    [N,H,E] or NULL (zeros)
 *   state_out   [N,H,E] or NULL (not written); may be state_in (in place)
 *   cu_seqlens  [N+1] or NULL; N as in seqk_scan
 *
 * Workspace (seqk_titans_workspace_size gives the exact bound for a call):
 * on the CPU the recurrent mode needs none for a decoding call (fewer than 8
 * tokens, state_out given) and per-thread scratch of about 3 K V + 64 (K + V)
 * floats otherwise; the parallel mode needs per-thread mini-batch scratch.
 * On CUDA the recurrent mode runs a token-by-token kernel (one block per
 * sequence, head and block of state columns, the state slice in shared
 * memory; K <= 1024) with no workspace, and the parallel mode the chunked
 * form (all mini-batches' gates, mixing matrices and Q K^T at once, then
 * one state pass per block of columns), with about (T/b + 1) H (b^2 + 5 b)
 * floats of workspace per sequence.
 */
SEQK_API seqk_status seqk_titans(seqk_context *ctx, seqk_mode mode, int64_t B, int64_t T,
                                 int64_t H, int64_t K, int64_t V, float scale, unsigned flags,
                                 int64_t minibatch, const float *q, const float *k,
                                 const float *v, const float *eta, const float *theta,
                                 const float *alpha, float *o, const float *state_in,
                                 float *state_out, const int32_t *cu_seqlens, int64_t N);
/* seqk_titans with a dtype ("Dtypes"): q, k, v, o take it. */
SEQK_API seqk_status seqk_titans_ex(seqk_context *ctx, seqk_dtype dtype, seqk_mode mode, int64_t B,
                                    int64_t T, int64_t H, int64_t K, int64_t V, float scale,
                                    unsigned flags, int64_t minibatch, const void *q,
                                    const void *k, const void *v, const float *eta,
                                    const float *theta, const float *alpha, void *o,
                                    const float *state_in, float *state_out,
                                    const int32_t *cu_seqlens, int64_t N);

/* Floats per (sequence, head) of seqk_titans' state, E = 3 K V + 8, written
 * to *floats (K, V >= 1; INVALID_ARGUMENT if it overflows). A state holds
 * N * H * E floats. */
SEQK_API seqk_status seqk_titans_state_size(int64_t K, int64_t V, size_t *floats);

/* An upper bound of the workspace bytes seqk_titans needs for these sizes,
 * mode and mini-batch size on this context (N: sequences with varlen, else
 * 0; on the CPU it depends on the context's thread count). */
SEQK_API seqk_status seqk_titans_workspace_size(seqk_context *ctx, seqk_mode mode, int64_t B,
                                                int64_t T, int64_t H, int64_t K, int64_t V,
                                                int64_t minibatch, int64_t N, size_t *bytes);
/* seqk_titans_workspace_size with a dtype: the fp32 bytes plus the fp32
 * copies of the dtype tensors (none for SEQK_DTYPE_F32; see "Dtypes"). */
SEQK_API seqk_status seqk_titans_workspace_size_ex(seqk_context *ctx, seqk_dtype dtype,
                                                   seqk_mode mode, int64_t B, int64_t T, int64_t H,
                                                   int64_t K, int64_t V, int64_t minibatch,
                                                   int64_t N, size_t *bytes);

/*
 * seqk_titans_backward: the gradients of seqk_titans' function (both modes
 * compute the same one for a given minibatch) for the same sizes, flags,
 * minibatch and inputs, given dout = dL/do and optionally dstate_out =
 * dL/d(final state). Every gradient is overwritten (never accumulated), for
 * every token.
 *
 * Math per sequence and head (a_t = 1 - alpha_t; q~ = scale n(q), k~ = n(k),
 * n the optional L2 norm; H_t the Mhat token t's error is taken at,
 * e_t = H_t^T k~_t - v_t): the forward S_t = eta_t S_{t-1} - theta_t k~_t e_t^T,
 * M_t = a_t M_{t-1} + S_t, o_t = M_t^T q~_t has the adjoint (walking t
 * backwards from dM = dM_fin, dS = dS_fin, dH = dMhat_fin, the last two
 * swapped into dM when the final pos is 0)
 *   dM += q~_t do_t^T;  dq~_t = M_t do_t;  G = dS + dM
 *   dalpha_t = -<dM, M_{t-1}>;  deta_t = <G, S_{t-1}>;  w = G^T k~_t
 *   dv_t = theta_t w;  de = -theta_t w;  z = G e_t;  dtheta_t = -k~_t . z
 *   dk~_t = H_t de - theta_t z;  dH += k~_t de^T
 *   dM = a_t dM;  dS = eta_t G;  if token t starts a mini-batch: dM += dH, dH = 0
 * with dstate_in = (dM, dS, dH) at the start (dMhat_in = 0 when state_in's pos
 * is 0: Mhat is not read then), and through the L2 norm (x~ = x / r,
 * r = sqrt(x . x + 1e-6)): dx = (dx~ - x~ (x~ . dx~)) / r.
 *
 * Computed per mini-batch with matrix products (docs/titans-backward.md,
 * section 4): per (sequence, head) the states before the mini-batches are
 * recomputed by the parallel forward's update (all of them kept, with each
 * mini-batch's errors e_t, while they fit 16 MiB per thread, else one before
 * every ~sqrt(mini-batches)-th and the ones between recomputed), then the
 * mini-batches are walked in reverse, carrying the gradients of M and S:
 * per mini-batch about 20 K V flops per token in products (26 K V with
 * the recomputed states, against the forward's 10 K V), and O(b^2) for the
 * gate gradients, which are
 * formed from products of gates over ranges (never divided by a gate, so
 * eta = 0 and alpha = 1 are exact). Deterministic: the same bits for any
 * thread count (one (sequence, head) per thread, fixed orders). Work: about
 * three times the parallel forward's.
 *
 *   B, T, H, K, V, scale, flags, minibatch, q, k, v, eta, theta, alpha,
 *   state_in, cu_seqlens, N
 *               exactly as the forward call (gates and positions checked as
 *               there)
 *   dout        [B,T,H,V]   dL/do
 *   dstate_out  [N,H,E] or NULL (zero)   dL/d state_out: dM_fin, dS_fin,
 *               dMhat_fin in the state layout; its pos and reserved floats
 *               are ignored
 *   dq, dk      [B,T,H,K]   outputs (dL/d of the raw q, k: through the L2 norm
 *               with the flag)
 *   dv          [B,T,H,V]   output
 *   deta, dtheta, dalpha  [B,T,H]  outputs
 *   dstate_in   [N,H,E] or NULL (not computed)   dL/d state_in (at a zero
 *               state when state_in is NULL): [dM_0 | dS_0 | dMhat_in | pos |
 *               reserved] with pos and the reserved floats written 0
 * Every input but state_in, dstate_out and cu_seqlens, and every output but
 * dstate_in, is required when B*T > 0. No output may overlap another output
 * or an input.
 * Workspace (seqk_titans_backward_workspace_size), per thread: the
 * mini-batch scratch (about 8 b^2 + 11 b K + 2 b V + 5 K V floats) plus the
 * kept states and errors (2 K V + b V floats per mini-batch, at most 16 MiB,
 * or ~2 sqrt(T / b) states when checkpointed).
 * CUDA backend (gpu/titans_backward.cu): every shape and option the CPU takes
 * (no UNSUPPORTED case), the same results to fp32 rounding, deterministic (no
 * atomics: one block per (sequence, head), fixed orders; two runs give the
 * same bits). The gates' ranges and state_in's positions are not checked
 * there (device memory; an out-of-range pos is taken as 0), as in the
 * forward. Workspace: per block (min(N H, 1024) blocks) the mini-batch
 * scratch (about 7 b^2 + 13 b K + 2 b V + 5 K V floats) plus the kept states
 * and errors: all of them (2 K V + b V floats per mini-batch of the longest
 * sequence, +1 mini-batch) when they fit min(16 MiB, 1 GiB / blocks), else a
 * state before every R-th mini-batch (R the smallest with R^2 >= the
 * mini-batches) and R states and errors for the group recomputed. Verified
 * on the CPU emulator (tools/cuda_emu) against the float64 reference; not
 * yet run on a GPU.
 */
SEQK_API seqk_status seqk_titans_backward(
    seqk_context *ctx, int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, float scale,
    unsigned flags, int64_t minibatch, const float *q, const float *k, const float *v,
    const float *eta, const float *theta, const float *alpha, const float *state_in,
    const float *dout, const float *dstate_out, float *dq, float *dk, float *dv, float *deta,
    float *dtheta, float *dalpha, float *dstate_in, const int32_t *cu_seqlens, int64_t N);
/* seqk_titans_backward with a dtype ("Dtypes"): q, k, v, dout, dq, dk, dv take it. */
SEQK_API seqk_status seqk_titans_backward_ex(seqk_context *ctx, seqk_dtype dtype, int64_t B,
                                             int64_t T, int64_t H, int64_t K, int64_t V,
                                             float scale, unsigned flags, int64_t minibatch,
                                             const void *q, const void *k, const void *v,
                                             const float *eta, const float *theta,
                                             const float *alpha, const float *state_in,
                                             const void *dout, const float *dstate_out, void *dq,
                                             void *dk, void *dv, float *deta, float *dtheta,
                                             float *dalpha, float *dstate_in,
                                             const int32_t *cu_seqlens, int64_t N);

/* An upper bound of the workspace bytes seqk_titans_backward needs for these
 * sizes and mini-batch size on this context (N: sequences with varlen, else
 * 0; on a CPU context it depends on the thread count; on a CUDA context it
 * follows the rule above). */
SEQK_API seqk_status seqk_titans_backward_workspace_size(seqk_context *ctx, int64_t B,
                                                         int64_t T, int64_t H, int64_t K,
                                                         int64_t V, int64_t minibatch, int64_t N,
                                                         size_t *bytes);
/* seqk_titans_backward_workspace_size with a dtype: the fp32 bytes plus the fp32
 * copies of the dtype tensors (none for SEQK_DTYPE_F32; see "Dtypes"). */
SEQK_API seqk_status seqk_titans_backward_workspace_size_ex(seqk_context *ctx, seqk_dtype dtype,
                                                            int64_t B, int64_t T, int64_t H,
                                                            int64_t K, int64_t V,
                                                            int64_t minibatch, int64_t N,
                                                            size_t *bytes);

/* ------------------------------------------------------------------------ */
/* Softmax attention (DESIGN 3.5)                                            */
/* ------------------------------------------------------------------------ */

/* Flags for seqk_attention_parallel; combine with |. Values only grow. */
#define SEQK_ATTN_CAUSAL 1u  /* query t attends to keys s <= t (else to every key) */

/*
 * seqk_attention_parallel: softmax attention over whole sequences (prefill,
 * training forward), FlashAttention-style (the T x T scores are never stored)
 *
 *   o[t]   = sum_{s in S(t)} softmax_s(scale q[t].k[s]) v[s]
 *          = sum_s exp(scale q[t].k[s] - lse[t]) v[s]
 *   lse[t] = log sum_{s in S(t)} exp(scale q[t].k[s])     (natural log)
 *
 * per batch entry (or sequence) and query head h, with the key/value head
 * h / (Hq / Hkv) (grouped-query attention; Hq == Hkv is multi-head attention,
 * Hkv == 1 multi-query attention). S(t) is every token of t's sequence, or
 * with SEQK_ATTN_CAUSAL only s <= t (so S(t) is never empty). With cu_seqlens
 * the sequences are packed along T and no token attends across a boundary;
 * empty sequences write nothing.
 *
 *   B          batch (>= 1); must be 1 when cu_seqlens is given
 *   T          tokens per batch entry (>= 0; T = 0 writes nothing)
 *   Hq         query heads (>= 1)
 *   Hkv        key/value heads (>= 1), Hq % Hkv == 0
 *   K          query/key head dimension (>= 1)
 *   V          value head dimension (>= 1)
 *              The CUDA backend takes K <= 256 and V <= 256 (else UNSUPPORTED);
 *              the CPU backend has no limit.
 *   scale      multiplies q.k (finite; the usual choice is 1/sqrt(K))
 *   flags      0 or SEQK_ATTN_CAUSAL
 *   q          [B, T, Hq, K]
 *   k          [B, T, Hkv, K]
 *   v          [B, T, Hkv, V]
 *   o          [B, T, Hq, V]    output; must not overlap q, k, v or lse
 *   lse        [B, Hq, T] or NULL   the log-sum-exp above (what a backward
 *                               pass needs), in the natural-log units of the
 *                               scaled scores; NULL = not written
 *   cu_seqlens [N+1] or NULL    varlen boundaries (see top of file)
 *   N          number of sequences when cu_seqlens != NULL (>= 1); ignored
 *              (N = B) otherwise
 *
 * Workspace: the CPU backend uses the context's workspace for per-thread
 * tiles and for a packed copy of the keys and values of as many key/value
 * heads as fit 32 MiB (at least one head) at a time
 * (seqk_attention_parallel_workspace_size); CUDA uses none.
 */
SEQK_API seqk_status seqk_attention_parallel(seqk_context *ctx, int64_t B, int64_t T,
                                             int64_t Hq, int64_t Hkv, int64_t K, int64_t V,
                                             float scale, unsigned flags, const float *q,
                                             const float *k, const float *v, float *o,
                                             float *lse, const int32_t *cu_seqlens, int64_t N);
/* seqk_attention_parallel with a dtype ("Dtypes"): q, k, v, o take it. */
SEQK_API seqk_status seqk_attention_parallel_ex(seqk_context *ctx, seqk_dtype dtype, int64_t B,
                                                int64_t T, int64_t Hq, int64_t Hkv, int64_t K,
                                                int64_t V, float scale, unsigned flags,
                                                const void *q, const void *k, const void *v,
                                                void *o, float *lse, const int32_t *cu_seqlens,
                                                int64_t N);

/* Workspace bytes that seqk_attention_parallel needs for these sizes on this
 * context (on the CPU it depends on the context's thread count). */
SEQK_API seqk_status seqk_attention_parallel_workspace_size(seqk_context *ctx, int64_t B,
                                                            int64_t T, int64_t Hq, int64_t Hkv,
                                                            int64_t K, int64_t V, unsigned flags,
                                                            int64_t N, size_t *bytes);
/* seqk_attention_parallel_workspace_size with a dtype: the fp32 bytes plus the fp32
 * copies of the dtype tensors (none for SEQK_DTYPE_F32; see "Dtypes"). */
SEQK_API seqk_status seqk_attention_parallel_workspace_size_ex(seqk_context *ctx, seqk_dtype dtype,
                                                               int64_t B, int64_t T, int64_t Hq,
                                                               int64_t Hkv, int64_t K, int64_t V,
                                                               unsigned flags, int64_t N,
                                                               size_t *bytes);

/*
 * seqk_attention_parallel_backward: the gradients of seqk_attention_parallel
 * (same sizes, flags, varlen), FlashAttention-2's backward: from the
 * forward's output o and log-sum-exp lse, per query token t and head h,
 *
 *   p[t,s]  = exp(scale q[t].k[s] - lse[t])          (s in S(t))
 *   D[t]    = dout[t] . o[t]
 *   dv[s]  += p[t,s] dout[t]
 *   ds[t,s] = p[t,s] (dout[t] . v[s] - D[t])
 *   dq[t]   = scale sum_s ds[t,s] k[s],   dk[s] += scale ds[t,s] q[t]
 *
 * with dk, dv of a key/value head summed over its Hq / Hkv query heads in a
 * fixed order (deterministic). The T x T matrices are never stored.
 *
 *   q, k, v    the forward's inputs
 *   o          [B,T,Hq,V]   the forward's output
 *   lse        [B,Hq,T]     the forward's log-sum-exp (required)
 *   dout       [B,T,Hq,V]   dL/do
 *   dq         [B,T,Hq,K], dk [B,T,Hkv,K], dv [B,T,Hkv,V]   outputs
 *              (overwritten; must not overlap each other or an input)
 * Workspace: seqk_attention_parallel_backward_workspace_size.
 */
SEQK_API seqk_status seqk_attention_parallel_backward(
    seqk_context *ctx, int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t K, int64_t V,
    float scale, unsigned flags, const float *q, const float *k, const float *v, const float *o,
    const float *lse, const float *dout, float *dq, float *dk, float *dv,
    const int32_t *cu_seqlens, int64_t N);
/* seqk_attention_parallel_backward with a dtype ("Dtypes"):
 * q, k, v, o, dout, dq, dk, dv take it. */
SEQK_API seqk_status seqk_attention_parallel_backward_ex(seqk_context *ctx, seqk_dtype dtype,
                                                         int64_t B, int64_t T, int64_t Hq,
                                                         int64_t Hkv, int64_t K, int64_t V,
                                                         float scale, unsigned flags,
                                                         const void *q, const void *k,
                                                         const void *v, const void *o,
                                                         const float *lse, const void *dout,
                                                         void *dq, void *dk, void *dv,
                                                         const int32_t *cu_seqlens, int64_t N);

/* Workspace bytes that seqk_attention_parallel_backward needs for these
 * sizes on this context. */
SEQK_API seqk_status seqk_attention_parallel_backward_workspace_size(
    seqk_context *ctx, int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t K, int64_t V,
    unsigned flags, int64_t N, size_t *bytes);
/* seqk_attention_parallel_backward_workspace_size with a dtype: the fp32 bytes plus the fp32
 * copies of the dtype tensors (none for SEQK_DTYPE_F32; see "Dtypes"). */
SEQK_API seqk_status seqk_attention_parallel_backward_workspace_size_ex(seqk_context *ctx,
                                                                        seqk_dtype dtype,
                                                                        int64_t B, int64_t T,
                                                                        int64_t Hq, int64_t Hkv,
                                                                        int64_t K, int64_t V,
                                                                        unsigned flags, int64_t N,
                                                                        size_t *bytes);

/*
 * seqk_attention_decode: one recurrent (decoding) step of softmax attention
 * with a key/value cache owned by the caller. For each batch entry b, with
 * p = cache_len[b] (tokens already in the cache) and each query head h
 * (key/value head g = h / (Hq / Hkv)):
 *
 *   k_cache[b, p, g] = k_new[b, g]          (append; entries < p are kept)
 *   v_cache[b, p, g] = v_new[b, g]
 *   o[b, h]   = sum_{s=0..p} exp(scale q[b,h].k_cache[b,s,g] - lse[b,h]) v_cache[b,s,g]
 *   lse[b, h] = log sum_{s=0..p} exp(scale q[b,h].k_cache[b,s,g])
 *
 * i.e. the last row of seqk_attention_parallel (causal) over the p+1 tokens.
 * The step does NOT increment cache_len: the caller owns it and adds 1 after
 * the step (entries may differ per batch entry: ragged batches). Prefill the
 * cache by copying k, v of the prompt (or with a parallel call plus copies),
 * then call this once per generated token.
 * Cost per step grows with p (it reads the whole cache). Both backends split
 * each cache by token ranges (the CPU: ranges of >= 256 tokens, each walked
 * over all kv heads, so that a thread streams whole rows; CUDA: across
 * blocks) and merge the partial softmaxes by their log-sum-exp
 * (Flash-Decoding), with the partials in the context's workspace
 * (seqk_attention_decode_workspace_size): reserve it once and the steps
 * allocate nothing.
 *
 *   B          batch (>= 1)
 *   Hq, Hkv    query and key/value heads (>= 1), Hq % Hkv == 0
 *   K, V       head dimensions (>= 1); CUDA takes K, V <= 256 (else UNSUPPORTED)
 *   max_len    capacity of the cache in tokens (>= 1)
 *   scale      multiplies q.k (finite)
 *   q          [B, Hq, K]        the new token's queries
 *   k_new      [B, Hkv, K]       the new token's keys
 *   v_new      [B, Hkv, V]       the new token's values
 *   k_cache    [B, max_len, Hkv, K]   read and written (position cache_len[b])
 *   v_cache    [B, max_len, Hkv, V]   read and written (position cache_len[b])
 *   cache_len  [B] int32         0 <= cache_len[b] < max_len (else
 *                                INVALID_ARGUMENT, nothing written); backend
 *                                memory like every array (on CUDA the library
 *                                copies the B ints to the host to check them,
 *                                which waits for the context's stream)
 *   o          [B, Hq, V]        output
 *   lse        [B, Hq] or NULL   natural-log log-sum-exp of the scaled scores
 */
SEQK_API seqk_status seqk_attention_decode(seqk_context *ctx, int64_t B, int64_t Hq,
                                           int64_t Hkv, int64_t K, int64_t V, int64_t max_len,
                                           float scale, const float *q, const float *k_new,
                                           const float *v_new, float *k_cache, float *v_cache,
                                           const int32_t *cache_len, float *o, float *lse);
/* seqk_attention_decode with a dtype ("Dtypes"): q, k_new, v_new, k_cache,
 * v_cache, o take it. With a reduced dtype the converting path widens the
 * whole caches (B * max_len rows, entries past cache_len[b] included: they
 * are read, never used) into the workspace at every step and, after the
 * fp32 step succeeded, copies k_new, v_new into the caller's caches at
 * cache_len[b] (the only cache entries written; exactly what the fp32 step
 * stores, rounded). A step costs O(max_len) conversions: reserve the
 * workspace once (seqk_attention_decode_workspace_size_ex). */
SEQK_API seqk_status seqk_attention_decode_ex(seqk_context *ctx, seqk_dtype dtype, int64_t B,
                                              int64_t Hq, int64_t Hkv, int64_t K, int64_t V,
                                              int64_t max_len, float scale, const void *q,
                                              const void *k_new, const void *v_new, void *k_cache,
                                              void *v_cache, const int32_t *cache_len, void *o,
                                              float *lse);

/* Workspace bytes that seqk_attention_decode needs for these sizes on this
 * context: the split-KV partials for a cache of up to max_len tokens (on the
 * CPU, for the context's current thread count: about
 * B * min(4 threads / B, max_len / 256) * Hq * (V + 2) floats, plus Hq * 65
 * floats per thread). Reserve it once (seqk_context_reserve_workspace) so
 * that the steps allocate nothing; with a caller-provided workspace that is
 * smaller, the step fails with SEQK_ERROR_WORKSPACE_TOO_SMALL. */
SEQK_API seqk_status seqk_attention_decode_workspace_size(seqk_context *ctx, int64_t B,
                                                          int64_t Hq, int64_t Hkv, int64_t K,
                                                          int64_t V, int64_t max_len,
                                                          size_t *bytes);
/* seqk_attention_decode_workspace_size with a dtype: the fp32 bytes plus the fp32
 * copies of the dtype tensors (none for SEQK_DTYPE_F32; see "Dtypes"). */
SEQK_API seqk_status seqk_attention_decode_workspace_size_ex(seqk_context *ctx, seqk_dtype dtype,
                                                             int64_t B, int64_t Hq, int64_t Hkv,
                                                             int64_t K, int64_t V, int64_t max_len,
                                                             size_t *bytes);

#ifdef __cplusplus
}
#endif

#endif /* SEQK_H */
