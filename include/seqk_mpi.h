/*
 * seqk_mpi.h -- context parallelism over MPI: one sequence split across the
 * ranks of a communicator (libseqk_mpi, an optional companion of libseqk).
 *
 * Why a separate header and library: these entry points take an MPI_Comm,
 * so they need mpi.h and an MPI library at build and link time. The core
 * library (libseqk) and seqk.h must build and load on machines without MPI;
 * only programs that use context parallelism include this header and link
 * libseqk_mpi (built when CMake finds MPI: option SEQK_MPI=AUTO|ON|OFF).
 *
 * Layout: every rank holds a contiguous slice of the sequence, in the same
 * layout as the single-process call (q, k [B,T,H,K] with T the rank's own
 * token count, ...). Slices follow rank order (rank 0 holds the first
 * tokens); T may differ between ranks and may be 0. Every other size, flag,
 * scale, chunk size, mode and per-head constant (gamma, A, D, dt_bias) must
 * be the same on every rank (sizes, flags, scale, chunk, mode and which
 * optional arrays are given are checked; the per-head values are not). A
 * rank whose slice is empty may pass NULL for every per-token array.
 * There is no varlen (cu_seqlens) form: each of the B batch entries is one
 * sequence split across the ranks.
 *
 * Every function is collective over comm: every rank calls it with the same
 * op and sizes. The result equals the single-process call on the whole
 * sequence (the concatenation of the slices) up to fp32 rounding:
 * tests/mpi checks it at 1,048,576 tokens over 4 ranks to 1e-5.
 *
 * Algorithm (docs/context-parallel.md): each rank computes the transition
 * of its slice, the affine map S_out = M S_in + C of the state, with
 * M a scalar decay per (batch, head) for the linear-state family and the
 * K x K product prod_t exp(g_t) (I - beta_t k_t k_t^T) for DeltaNet, by
 * one library call with extra value columns (1, or K for DeltaNet); an
 * exclusive scan of these maps over the ranks (recursive doubling,
 * ceil(log2 P) rounds of point-to-point messages, combine in double) gives
 * each rank its incoming state; the rank then computes its slice with that
 * initial state. The backward runs the mirror image: the gradient of a
 * slice's initial state is affine in the gradient of its final state,
 * dS_in = M^T dS_out + g, scanned over the ranks in reverse order. Per rank
 * and scan round the messages carry B H (K V + 1) doubles (linear-state
 * family; + B H K with the linear-attention normaliser) or B H (K K + K V)
 * doubles (DeltaNet): independent of T.
 *
 * Work per rank (local slice of T tokens, one call's cost = the
 * single-process op on T tokens): forward 2 calls (rank 0: 1), the first
 * with V + 1 value columns; DeltaNet 1 call with V + K value columns plus a
 * K x V product per token (its outputs corrected by the incoming state);
 * backward 1 forward + 2 backward calls (the last rank: 1 + 1).
 *
 * States: state_in / z_in are read on rank 0 only (ignored elsewhere);
 * state_out / z_out (the final state of the whole sequence, computed on the
 * last rank) are written on every rank that passes them non-NULL. In the
 * backward, dstate_out / dz_out are read on the last rank only, and
 * dstate_in / dz_in (the gradient at rank 0's state_in) are written on every
 * rank that passes them non-NULL. Mamba2's dA, dD, ddt_bias are sums over
 * all tokens: every rank receives the whole sum.
 *
 * Contexts: CPU contexts only (arrays in host memory; a CUDA context gets
 * SEQK_ERROR_UNSUPPORTED). docs/context-parallel.md says how the same
 * algorithm maps onto NCCL for GPU buffers. Give each rank its own context
 * with a thread count that fits the cores the rank owns.
 *
 * Errors: the status is agreed over the communicator, so every rank returns
 * the same status. Arguments are checked (by seqk_mpi and by the library
 * calls on the local slice, whose output goes to scratch first) before any
 * output is written on any rank; a failure on rank r is reported on every
 * rank as "seqk_mpi_<op>: rank r: <the message>" (indices in it are local
 * to rank r's slice). Only an error after that point (out of memory in the
 * last local call) can leave outputs partly written. MPI errors: calls on a
 * communicator with the default handler (MPI_ERRORS_ARE_FATAL) abort as MPI
 * does; with MPI_ERRORS_RETURN a failing call gives SEQK_ERROR_BACKEND.
 * A message that one MPI call cannot carry (more than INT_MAX bytes: a
 * ring attention key/value block, the transitions) gives
 * SEQK_ERROR_UNSUPPORTED on every rank before anything is sent.
 * The library never prints.
 *
 * Softmax attention: seqk_mpi_attention_ring passes the key/value blocks
 * around the ring of ranks and merges the partial softmaxes by their
 * log-sum-exp; seqk_mpi_attention_ring_backward sends each block once around
 * with its key/value gradients.
 */
#ifndef SEQK_MPI_H
#define SEQK_MPI_H

#include <mpi.h>

#include "seqk.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- linear-state family (seqk.h: seqk_linear_attention ... seqk_mamba2) ---- */

/* seqk_linear_attention over the ranks of comm (z_in / z_out: the
 * normaliser's state with SEQK_LINATTN_NORMALIZE, as there). */
SEQK_API seqk_status seqk_mpi_linear_attention(seqk_context *ctx, MPI_Comm comm, seqk_mode mode,
                                               int64_t B, int64_t T, int64_t H, int64_t K,
                                               int64_t V, float scale, unsigned flags,
                                               const float *q, const float *k, const float *v,
                                               float *o, const float *state_in,
                                               float *state_out, const float *z_in, float *z_out,
                                               int64_t chunk);

/* seqk_retention over the ranks of comm. */
SEQK_API seqk_status seqk_mpi_retention(seqk_context *ctx, MPI_Comm comm, seqk_mode mode,
                                        int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
                                        float scale, const float *gamma, const float *q,
                                        const float *k, const float *v, float *o,
                                        const float *state_in, float *state_out, int64_t chunk);

/* seqk_gated_retention over the ranks of comm. */
SEQK_API seqk_status seqk_mpi_gated_retention(seqk_context *ctx, MPI_Comm comm, seqk_mode mode,
                                              int64_t B, int64_t T, int64_t H, int64_t K,
                                              int64_t V, float scale, const float *q,
                                              const float *k, const float *v, const float *g,
                                              float *o, const float *state_in, float *state_out,
                                              int64_t chunk);

/* seqk_mamba2 over the ranks of comm. */
SEQK_API seqk_status seqk_mpi_mamba2(seqk_context *ctx, MPI_Comm comm, seqk_mode mode, int64_t B,
                                     int64_t T, int64_t H, int64_t P, int64_t G, int64_t Nst,
                                     unsigned flags, const float *x, const float *dt,
                                     const float *A, const float *Bm, const float *Cm,
                                     const float *D, const float *dt_bias, float *y,
                                     const float *state_in, float *state_out, int64_t chunk);

/* The backward of each (seqk.h's *_backward with the local slice's
 * arguments; the gradients of the slice's tokens are written on its rank). */
SEQK_API seqk_status seqk_mpi_linear_attention_backward(
    seqk_context *ctx, MPI_Comm comm, int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
    float scale, unsigned flags, const float *q, const float *k, const float *v,
    const float *dout, const float *state_in, const float *z_in, const float *dstate_out,
    const float *dz_out, float *dq, float *dk, float *dv, float *dstate_in, float *dz_in,
    int64_t chunk);

SEQK_API seqk_status seqk_mpi_retention_backward(
    seqk_context *ctx, MPI_Comm comm, int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
    float scale, const float *gamma, const float *q, const float *k, const float *v,
    const float *dout, const float *state_in, const float *dstate_out, float *dq, float *dk,
    float *dv, float *dstate_in, int64_t chunk);

SEQK_API seqk_status seqk_mpi_gated_retention_backward(
    seqk_context *ctx, MPI_Comm comm, int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
    float scale, const float *q, const float *k, const float *v, const float *g,
    const float *dout, const float *state_in, const float *dstate_out, float *dq, float *dk,
    float *dv, float *dg, float *dstate_in, int64_t chunk);

SEQK_API seqk_status seqk_mpi_mamba2_backward(
    seqk_context *ctx, MPI_Comm comm, int64_t B, int64_t T, int64_t H, int64_t P, int64_t G,
    int64_t Nst, unsigned flags, const float *x, const float *dt, const float *A,
    const float *Bm, const float *Cm, const float *D, const float *dt_bias,
    const float *state_in, const float *dy, const float *dstate_out, float *dx, float *ddt,
    float *dA, float *dBm, float *dCm, float *dD, float *ddt_bias, float *dstate_in,
    int64_t chunk);

/* ---- DeltaNet and gated DeltaNet (seqk.h: seqk_deltanet) ------------------- */

SEQK_API seqk_status seqk_mpi_deltanet(seqk_context *ctx, MPI_Comm comm, seqk_mode mode,
                                       int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
                                       float scale, unsigned flags, const float *q,
                                       const float *k, const float *v, const float *beta,
                                       const float *g, float *o, const float *state_in,
                                       float *state_out, int64_t chunk);

SEQK_API seqk_status seqk_mpi_deltanet_backward(
    seqk_context *ctx, MPI_Comm comm, int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
    float scale, unsigned flags, const float *q, const float *k, const float *v,
    const float *beta, const float *g, const float *state_in, const float *dout,
    const float *dstate_out, float *dq, float *dk, float *dv, float *dbeta, float *dg,
    float *dstate_in, int64_t chunk);

/* ---- softmax attention: ring passing of key/value blocks --------------------- */

/*
 * seqk_mpi_attention_ring: seqk_attention_parallel (no varlen) over the
 * ranks of comm. Rank r holds the queries, keys and values of its slice;
 * the key/value blocks travel around the ring r -> r+1 (nonblocking, the
 * next block in flight while the current one is computed), P - 1 steps.
 * With SEQK_ATTN_CAUSAL the blocks of earlier ranks are fully visible, the
 * own block is causal and later blocks are skipped; without it every block
 * is fully visible. Each visible block gives a partial (o_j, lse_j) from
 * seqk_attention_parallel; the partials are merged in double:
 *   lse = log sum_j exp(lse_j),   o = sum_j exp(lse_j - lse) o_j.
 * A cross block (queries of one slice against all keys of another) is
 * computed by seqk_attention_parallel's causal mode on the concatenation
 * [block keys ; the queries] with one extra key dimension that gives the
 * query positions' own keys a score of -1e30 (seqk.h has no rectangular
 * entry point yet): about twice the block's useful work.
 *
 *   B, T, Hq, Hkv, K, V, scale, flags   as seqk_attention_parallel, T local
 *   q [B,T,Hq,K], k [B,T,Hkv,K], v [B,T,Hkv,V]   the rank's slice
 *   o [B,T,Hq,V]   output;  lse [B,Hq,T] or NULL   (the slice's rows)
 * Traffic per rank: (P - 1) blocks of B T_j Hkv (K + V) floats.
 */
SEQK_API seqk_status seqk_mpi_attention_ring(seqk_context *ctx, MPI_Comm comm, int64_t B,
                                             int64_t T, int64_t Hq, int64_t Hkv, int64_t K,
                                             int64_t V, float scale, unsigned flags,
                                             const float *q, const float *k, const float *v,
                                             float *o, float *lse);

/*
 * seqk_mpi_attention_ring_backward: the gradients of seqk_mpi_attention_ring
 * (seqk_attention_parallel_backward over the ranks), from the forward's o
 * and lse of the slice (required). Each key/value block travels once around
 * the ring with its dk, dv accumulators (P steps: blocks of B T_j Hkv
 * 2 (K + V) floats), every visible block adding the slice's queries' share
 * (seqk_attention_parallel_backward on the same concatenation as the
 * forward's cross blocks); dq sums in double. dq [B,T,Hq,K], dk [B,T,Hkv,K],
 * dv [B,T,Hkv,V] of the rank's slice are overwritten.
 */
SEQK_API seqk_status seqk_mpi_attention_ring_backward(
    seqk_context *ctx, MPI_Comm comm, int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t K,
    int64_t V, float scale, unsigned flags, const float *q, const float *k, const float *v,
    const float *o, const float *lse, const float *dout, float *dq, float *dk, float *dv);

/* ---- traffic counters ----------------------------------------------------------- */

/*
 * The payload this thread has handed to MPI as sender in seqk_mpi calls
 * since the last reset: bytes and messages of the point-to-point sends (the
 * scans, the ring) and of this rank's contributions to collectives (the
 * argument and status agreement, the broadcast of final states, counted
 * once at the root). What the MPI library adds inside a collective (tree
 * forwarding) is not counted. Any pointer may be NULL; reset != 0 zeroes
 * the counters after reading them.
 */
SEQK_API void seqk_mpi_traffic(uint64_t *bytes_sent, uint64_t *messages_sent, int reset);

#ifdef __cplusplus
}
#endif

#endif /* SEQK_MPI_H */
