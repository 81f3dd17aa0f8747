/*
 * gpu/gpu.h -- the CUDA backend's entry points, callable from the C side.
 * Each op's dispatch (e.g. scan/scan.c) calls seqk__cuda_<op> after it has
 * validated every argument; these functions only launch work.
 * SEQK__HAVE_CUDA is 1 when the build has the CUDA backend.
 */
#ifndef SEQK_GPU_H
#define SEQK_GPU_H

#include "../core/internal.h"

#ifndef SEQK__HAVE_CUDA
#define SEQK__HAVE_CUDA 0
#endif

#ifdef __cplusplus
extern "C" {
#endif

#if SEQK__HAVE_CUDA
/* gpu/convert.cu: n elements dtype -> fp32 (to_f32) or fp32 -> dtype on the
 * context's stream (core/dtype.c's conversions, the same bits). */
seqk_status seqk__cuda_convert(const char *fn, seqk_context *ctx, seqk_dtype dtype, int to_f32,
                               const void *src, void *dst, int64_t n);

/* gpu/gemm.cu: row-major batched products on ctx's cuBLAS handle and stream,
 *   C_b = alpha op(A_b) op(B_b) + beta C_b,  b < batch,
 * C_b M x N fp32 at C + b sC (row i at i ldc); op(A_b) M x K, A_b stored
 * M x K (ta = 0) or K x M (ta = 1) at A + b sA; op(B_b) K x N, B_b stored
 * K x N (tb = 0) or N x K (tb = 1) at B + b sB; A and B in dtype (strides in
 * elements). fp32: CUBLAS_COMPUTE_32F, no TF32; bf16 / f16: CUBLAS_COMPUTE_32F
 * with CUBLAS_GEMM_DEFAULT_TENSOR_OP (tensor cores, fp32 accumulation).
 * M, N or batch <= 0: nothing. A cuBLAS failure: SEQK_ERROR_BACKEND with a
 * message naming fn and the call; sizes past int: SEQK_ERROR_UNSUPPORTED. */
seqk_status seqk__cuda_gemm(const char *fn, seqk_context *ctx, seqk_dtype dtype, int ta, int tb,
                            int64_t M, int64_t N, int64_t K, float alpha, const void *A,
                            int64_t lda, int64_t sA, const void *B, int64_t ldb, int64_t sB,
                            float beta, float *C, int64_t ldc, int64_t sC, int64_t batch);

/* gpu/context.cu */
seqk_status seqk__cuda_device_count(int *count);
seqk_status seqk__cuda_context_init(seqk_context *ctx);
void seqk__cuda_context_fini(seqk_context *ctx);
seqk_status seqk__cuda_set_stream(seqk_context *ctx, void *stream);
seqk_status seqk__cuda_synchronize(seqk_context *ctx);
seqk_status seqk__cuda_malloc(const char *fn, seqk_context *ctx, size_t bytes, void **ptr);
void seqk__cuda_free(seqk_context *ctx, void *ptr);
seqk_status seqk__cuda_memcpy(seqk_context *ctx, void *dst, const void *src, size_t bytes,
                              seqk_copy_kind kind);

/* gpu/scan.cu: arguments as seqk_scan, already validated; cu_host is the
 * host copy of cu_seqlens (NULL without varlen); cu is the device array. */
seqk_status seqk__cuda_scan(seqk_context *ctx, int64_t B, int64_t T, int64_t C, int64_t block,
                            unsigned flags, const float *a, const float *b, const float *h0,
                            float *h, float *h_final, const int32_t *cu,
                            const int32_t *cu_host, int64_t N);
size_t seqk__cuda_scan_workspace_size(int64_t B, int64_t T, int64_t C, int64_t block,
                                      unsigned flags, int64_t N);
#endif

#if SEQK__HAVE_CUDA
/* gpu/softmax_attention.cu: arguments as seqk_attention_parallel and
 * seqk_attention_decode, already validated (K, V <= SEQK__CUDA_ATTN_MAX_DIM).
 * cu is the device cu_seqlens (NULL without varlen), cu_host its host copy;
 * cache_len is the device array, cache_len_host its host copy. */
#define SEQK__CUDA_ATTN_MAX_DIM 256
seqk_status seqk__cuda_attention_parallel(seqk_context *ctx, int64_t B, int64_t T, int64_t Hq,
                                          int64_t Hkv, int64_t K, int64_t V, float scale,
                                          unsigned flags, const float *q, const float *k,
                                          const float *v, float *o, float *lse,
                                          const int32_t *cu, const int32_t *cu_host, int64_t N);
seqk_status seqk__cuda_attention_decode(seqk_context *ctx, int64_t B, int64_t Hq, int64_t Hkv,
                                        int64_t K, int64_t V, int64_t max_len, float scale,
                                        const float *q, const float *k_new, const float *v_new,
                                        float *k_cache, float *v_cache,
                                        const int32_t *cache_len,
                                        const int32_t *cache_len_host, float *o, float *lse);
size_t seqk__cuda_attention_decode_workspace_size(int64_t B, int64_t Hq, int64_t V,
                                                  int64_t max_len);
#endif

#if SEQK__HAVE_CUDA
/* gpu/softmax_attention_backward.cu: arguments as
 * seqk_attention_parallel_backward, already validated (K, V <=
 * SEQK__CUDA_ATTN_MAX_DIM, T > 0); cu is the device cu_seqlens (NULL without
 * varlen), cu_host its host copy. Deterministic (no float atomics). The
 * workspace holds D = dout . o, [B, Hq, T] floats. */
seqk_status seqk__cuda_attention_parallel_backward(
    seqk_context *ctx, int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t K, int64_t V,
    float scale, unsigned flags, const float *q, const float *k, const float *v, const float *o,
    const float *lse, const float *dout, float *dq, float *dk, float *dv, const int32_t *cu,
    const int32_t *cu_host, int64_t N);
size_t seqk__cuda_attention_backward_workspace_size(int64_t B, int64_t T, int64_t Hq);
#endif

#if SEQK__HAVE_CUDA
/* gpu/linear_state.cu: the linear-state engine (scan/linear_state.h) on a CUDA
 * context. P is validated; its arrays are device pointers except P->cu (the
 * host copy of cu_seqlens) and P->log_gamma (host [H]); cu_device is the
 * device cu_seqlens (NULL without varlen). The workspace size is an upper
 * bound when P->cu is NULL and P->N != P->B (a varlen query). */
struct seqk__lin;
seqk_status seqk__cuda_lin(seqk_context *ctx, int mode, const struct seqk__lin *P,
                           const int32_t *cu_device);
size_t seqk__cuda_lin_workspace(const struct seqk__lin *P, int mode);
/* gpu/linear_state_backward.cu: seqk__lin_backward (scan/linear_state.h,
 * DESIGN 3.7) on a CUDA context: P and Gr validated, device arrays except
 * P->cu and P->log_gamma (host), cu_device the device cu_seqlens (NULL
 * without varlen). Deterministic (no float atomics). P->dtype BF16 / F16:
 * the native path (seqk__lin_native; q, k, v, dout, dq, dk, dv in the
 * dtype; Gr->skip and Gr->dskip_tok honoured as on the CPU), whose
 * workspace seqk__cuda_lin_backward_workspace answers for that dtype. */
struct seqk__lin_grad;
seqk_status seqk__cuda_lin_backward(seqk_context *ctx, const struct seqk__lin *P,
                                    const struct seqk__lin_grad *Gr, const int32_t *cu_device);
size_t seqk__cuda_lin_backward_workspace(const struct seqk__lin *P);
/* Mamba2's backward around the engine (rows = B*T, device arrays): with
 * dtp = dt after bias and softplus, dld = the engine's dlogdecay and dvs its
 * dv_scale ([rows,H] each),
 *   d      = dld[r,h] A[h] + dvs[r,h]                       (dL/d dtp)
 *   ddt    = d * sigmoid(dt + dt_bias) with softplus, else d   [rows,H]
 *   dA[h]  = sum_r dld[r,h] dtp[r,h];  ddt_bias[h] = sum_r ddt[r,h] (if not NULL)
 *   dD[h]  = sum_{r,p} dy[r,h,p] x[r,h,p] (if not NULL); dx[r,h,:] += D[h] dy[r,h,:] (if D)
 * sums in a fixed order (deterministic). dt_bias may be NULL (zero). With
 * dskip ([rows,H], the native path's per-token dy . x, the engine having
 * added D dy to dx): dD[h] = sum_r dskip[r,h], dx untouched, x and dy not
 * read. */
seqk_status seqk__cuda_mamba2_backward_epilogue(seqk_context *ctx, int64_t rows, int64_t H,
                                                int64_t Pd, int softplus, const float *dt,
                                                const float *dt_bias, const float *A,
                                                const float *D, const float *x, const float *dy,
                                                const float *dskip, const float *dtp,
                                                const float *dld,
                                                const float *dvs, float *ddt, float *dA,
                                                float *dD, float *ddt_bias, float *dx);
/* Mamba2: dt_out[r,h] = softplus(dt[r,h] + dt_bias[h]) (or without softplus),
 * dt_bias may be NULL; and y[r,h,:] += D[h] x[r,h,:]. Device arrays. */
seqk_status seqk__cuda_mamba2_dt(seqk_context *ctx, int64_t rows, int64_t H, const float *dt,
                                 const float *dt_bias, int softplus, float *dt_out);
seqk_status seqk__cuda_mamba2_skip(seqk_context *ctx, int64_t rows, int64_t H, int64_t Pd,
                                   const float *D, const float *x, float *y);
#endif

#if SEQK__HAVE_CUDA
/* gpu/deltanet.cu: seqk_deltanet on a CUDA context (DESIGN 3.3). P describes
 * the problem as for the linear-state engine (q, k, v, g = log-gates or NULL,
 * o, s_in, s_out device pointers; P->cu the host copy of cu_seqlens or NULL;
 * flags SEQK__LIN_L2NORM or 0; chunk already defaulted); beta is the device
 * [B*T, H] array, cu_device the device cu_seqlens (NULL without varlen).
 * Everything is validated. The workspace size is an upper bound when P->cu
 * is NULL and P->N != P->B (a varlen query). */
struct seqk__lin;
seqk_status seqk__cuda_deltanet(seqk_context *ctx, int mode, const struct seqk__lin *P,
                                const float *beta, const int32_t *cu_device);
size_t seqk__cuda_deltanet_workspace(const struct seqk__lin *P, int mode);
#endif

#if SEQK__HAVE_CUDA
/* gpu/deltanet_backward.cu: seqk_deltanet_backward on a CUDA context. P as
 * for seqk__cuda_deltanet (q, k, v, g, s_in device pointers, P->cu the host
 * cu_seqlens or NULL, flags SEQK__LIN_L2NORM or 0, chunk defaulted; o,
 * s_out unused); beta, dout, dstate_out (or NULL) and the outputs dq, dk,
 * dv, dbeta, dg (NULL without g), dstate_in (or NULL) device arrays as the
 * public call's; cu_device the device cu_seqlens (NULL without varlen).
 * With P->dtype BF16 / F16 (the native path) q, k, v (in P), dout, dq, dk,
 * dv hold elements of that dtype (cast to float pointers) and the
 * workspace query answers the native path's size.
 * Everything is validated. Deterministic (no atomics). The workspace size is
 * an upper bound when P->cu is NULL and P->N != P->B (a varlen query). */
struct seqk__lin;
seqk_status seqk__cuda_deltanet_backward(seqk_context *ctx, const struct seqk__lin *P,
                                         const float *beta, const float *dout,
                                         const float *dstate_out, float *dq, float *dk, float *dv,
                                         float *dbeta, float *dg, float *dstate_in,
                                         const int32_t *cu_device);
size_t seqk__cuda_deltanet_backward_workspace(const struct seqk__lin *P);
#endif

#if SEQK__HAVE_CUDA
/* gpu/titans.cu: seqk_titans on a CUDA context (DESIGN 3.4): the recurrent
 * mode runs a token-by-token kernel (one block per sequence, head and block
 * of state columns, the state slice in shared memory), the parallel mode the
 * chunked form (per mini-batch: the gates, mixing matrix and Q K^T of all
 * mini-batches at once, then the state pass). P describes the problem as for
 * the linear-state engine (q, k, v, o device pointers; P->cu the host copy of
 * cu_seqlens or NULL; flags SEQK__LIN_L2NORM or 0; P->s_in, P->s_out unused);
 * eta, theta, alpha are the device [B*T, H] arrays, state_in / state_out the
 * device [N, H, 3KV+8] states (or NULL), cu_device the device cu_seqlens
 * (NULL without varlen). Everything is validated. Workspace: none for the
 * recurrent mode; seqk__cuda_titans_workspace bytes for the parallel mode
 * (an upper bound when P->cu is NULL and P->N != P->B, a varlen query). */
struct seqk__lin;
seqk_status seqk__cuda_titans(seqk_context *ctx, int mode, const struct seqk__lin *P,
                              const float *eta, const float *theta, const float *alpha,
                              int64_t minibatch, const float *state_in, float *state_out,
                              const int32_t *cu_device);
size_t seqk__cuda_titans_workspace(const struct seqk__lin *P, int mode, int64_t minibatch);
#endif

#if SEQK__HAVE_CUDA
/* gpu/titans_backward.cu: seqk_titans_backward on a CUDA context. P as for
 * seqk__cuda_titans (q, k, v device pointers; P->cu the host copy of
 * cu_seqlens or NULL; flags SEQK__LIN_L2NORM or 0); eta, theta, alpha,
 * state_in (or NULL), dout, dstate_out (or NULL) and the outputs dq, dk, dv,
 * deta, dtheta, dalpha, dstate_in (or NULL) device arrays as the public
 * call's; cu_device the device cu_seqlens (NULL without varlen). Everything
 * is validated. Deterministic (no atomics). The workspace size (bytes, all
 * of it: the call takes no more) is an upper bound when P->cu is NULL and
 * P->N != P->B (a varlen query). */
struct seqk__lin;
seqk_status seqk__cuda_titans_backward(seqk_context *ctx, const struct seqk__lin *P,
                                       const float *eta, const float *theta, const float *alpha,
                                       int64_t minibatch, const float *state_in,
                                       const float *dout, const float *dstate_out, float *dq,
                                       float *dk, float *dv, float *deta, float *dtheta,
                                       float *dalpha, float *dstate_in, const int32_t *cu_device);
size_t seqk__cuda_titans_backward_workspace(const struct seqk__lin *P, int64_t minibatch);
#endif

#if SEQK__HAVE_CUDA
/* gpu/selective_scan.cu: seqk_selective_scan on a CUDA context (DESIGN 3.2).
 * mode is SEQK_MODE_RECURRENT or SEQK_MODE_PARALLEL; arrays as
 * seqk_selective_scan (device pointers), already validated (Nst <= 256);
 * cu is the device cu_seqlens (NULL without varlen), cu_host its host copy;
 * N the number of sequences (B without varlen). The parallel mode with few
 * channels takes workspace from the context (one state per time chunk). */
seqk_status seqk__cuda_selective_scan(seqk_context *ctx, int mode, int64_t B, int64_t T,
                                      int64_t D, int64_t Nst, int64_t G, unsigned flags,
                                      const float *u, const float *dt, const float *A,
                                      const float *Bm, const float *Cm, const float *Dskip,
                                      const float *z, const float *dt_bias, float *y,
                                      const float *state_in, float *state_out,
                                      const int32_t *cu, const int32_t *cu_host, int64_t N);
/* An upper bound of the workspace the call above takes for these sizes and
 * any cu_seqlens of N sequences (N = B without varlen). */
size_t seqk__cuda_selective_scan_workspace(int mode, int64_t B, int64_t T, int64_t D, int64_t Nst,
                                           int64_t N);
#endif

#if SEQK__HAVE_CUDA
/* gpu/selective_scan_backward.cu: seqk_selective_scan_backward on a CUDA
 * context (DESIGN 3.2 / 3.7), arguments as the public call (device
 * pointers), already validated (Nst <= 256); cu is the device cu_seqlens
 * (NULL without varlen), cu_host its host copy; N the number of sequences
 * (B without varlen). Deterministic (no atomics). The workspace size is
 * exact with cu_host, an upper bound without it when N != B (a varlen
 * query). */
seqk_status seqk__cuda_selective_scan_backward(
    seqk_context *ctx, int64_t B, int64_t T, int64_t D, int64_t Nst, int64_t G, unsigned flags,
    const float *u, const float *dt, const float *A, const float *Bm, const float *Cm,
    const float *Dskip, const float *z, const float *dt_bias, const float *state_in,
    const float *dy, const float *dstate_out, float *du, float *ddt, float *dA, float *dBm,
    float *dCm, float *dDskip, float *dz, float *ddt_bias, float *dstate_in, const int32_t *cu,
    const int32_t *cu_host, int64_t N);
size_t seqk__cuda_selective_scan_backward_workspace(int64_t B, int64_t T, int64_t D, int64_t Nst,
                                                    int64_t G, int64_t N, const int32_t *cu_host);
#endif

#ifdef __cplusplus
}
#endif

#endif /* SEQK_GPU_H */
