/*
 * tests/fuzz/fuzz_common.h -- what the libFuzzer harnesses of seqk share.
 *
 * Each harness (fuzz_<family>.c) decodes the fuzzer's byte string into one
 * call of a public entry point: tiny shapes (the float64 references of
 * tests/ref are instant on them), flags with unknown bits, modes, scales
 * (NaN, inf), cu_seqlens of every kind (valid, first != 0, decreasing, out
 * of range, last != T, a wrong N), NULL pointers and aliased ones
 * (state_in == state_out, an output on an input, a partial overlap), the
 * thread count and a caller workspace of exactly the queried size. The
 * oracle:
 *
 * - the harness says from the header's rules whether the call is valid;
 *   a valid call must succeed, an invalid one must fail;
 * - a failed call leaves every buffer (inputs and outputs) byte-identical
 *   to its contents before the call, and seqk_last_error names the function;
 * - a successful call leaves its inputs untouched and matches the float64
 *   reference within an fp32-aware tolerance.
 *
 * Any violation prints what it was and aborts (a libFuzzer finding).
 * Buffers are allocated at their exact size, so AddressSanitizer sees any
 * access past them.
 */
#ifndef SEQK_FUZZ_COMMON_H
#define SEQK_FUZZ_COMMON_H

#include "seqk.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define FZ_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define FZ_PRINTF(f, a)
#endif

/* ---- decoding the byte string ----------------------------------------------- */

typedef struct fz_in {
    const uint8_t *d;
    size_t n, i;
} fz_in;

/* The next byte (0 once the string is used up). */
unsigned fz_byte(fz_in *in);
/* An integer in [lo, hi] from the next byte. */
int64_t fz_pick(fz_in *in, int64_t lo, int64_t hi);
/* True with probability about per256 / 256. */
bool fz_chance(fz_in *in, unsigned per256);
/* A scale: usually 1/sqrt(K)-like, sometimes 0, negative, NaN or inf
 * (*finite says which). */
float fz_scale(fz_in *in, int64_t K, bool *finite);
/* Flags: usually a subset of known, sometimes with an unknown bit
 * (*ok says which). */
unsigned fz_flags(fz_in *in, unsigned known, bool *ok);
/* A mode: usually one of the two, sometimes not a seqk_mode (*ok). */
int fz_mode(fz_in *in, bool *ok);

/* Forward or backward (about 100/256 backward), then the mode (of a forward
 * only: *ok cleared when it is not a seqk_mode). Returns the mode. */
int fz_bwd_mode(fz_in *in, bool *bwd, bool *ok);

/* The sizes of the linear-state-like families, in this order: B (0, or
 * 1..3), T (-2, or 0..17), H (1..3), K (1..5, or 0 or 1025), V (0, or
 * 1..5); clears *ok when one is invalid (B < 1, T < 0, K outside
 * [1, 1024], V < 1). */
typedef struct fz_dims {
    int64_t B, T, H, K, V;
} fz_dims;
fz_dims fz_dims_lin(fz_in *in, bool *ok);
/* A chunk size: 0..19, sometimes -1 or 1025 (*ok cleared: outside [0, 1024]). */
int64_t fz_chunk(fz_in *in, bool *ok);

/* ---- the call's random data ---------------------------------------------------- */

/* Seeds the generator of the data from the next 4 bytes. */
void fz_seed_data(fz_in *in);
double fz_unif(double lo, double hi);

/* ---- buffers ------------------------------------------------------------------ */

/* Frees every buffer of the previous call. */
void fz_reset(void);
/* An input of n floats from [lo, hi) (n may be 0). */
float *fz_input(size_t n, double lo, double hi);
/* An output of n floats, every byte 0xFF (a NaN) before the call. */
float *fz_output(size_t n);
/* An int32 input of n values (uninitialised: the caller fills it). */
int32_t *fz_ints(size_t n);
/* Marks the buffer that holds p as written by the call (an output aliased to
 * an input, e.g. state_out == state_in). */
void fz_mark_written(const void *p);

/* cu_seqlens for T tokens: usually valid (1..4 sequences, empty ones too),
 * sometimes broken in one way (first != 0, decreasing, out of range,
 * last != T, N < 1). Writes N (the count passed to seqk) and *ok. */
int32_t *fz_cu_seqlens(fz_in *in, int64_t T, int64_t *N, bool *ok);

/* With probability 80/256 a varlen call: cu_seqlens from fz_cu_seqlens (the
 * call is then valid only with B == 1); else NULL and *N = B (0 if B < 0).
 * Writes N and clears *ok when the call is invalid. */
const int32_t *fz_varlen(fz_in *in, int64_t B, int64_t T, int64_t *N, bool *ok);

/* Usually p, sometimes NULL (then *ok = false when the pointer is required). */
const void *fz_maybe_null(fz_in *in, const void *p, bool required, bool *ok);

/* The aliasing cases a forward with a state shares, from the next byte
 * (most often none), for output o [no] and optional state_out [ns]:
 *   0  state_out = state_in (in place: valid; when state_in is given)
 *   1  o = x, an input (invalid when full)
 *   2  state_out = o (invalid)
 *   3  state_out = state_in + 1, a partial overlap (invalid)
 *   4  o = y + 1, across an input of ny floats (invalid when y is given)
 * Returns the case (5..15: none here; the harness may add its own). */
int fz_alias_forward(fz_in *in, bool full, float **o, const float *x, const float *y, size_t ny,
                     const float *s_in, float **s_out, size_t ns, bool *ok);
/* The same for a backward with gradients dq, dk [nq] of q, dv [nv], and
 * the optional dstate_in [ns]:
 *   0  dk = dq (invalid)              1  dstate_in = state_in (invalid)
 *   2  dv = dout (invalid)            3  dq = q + 1 (invalid)
 * Returns the case (4..15: none here). */
int fz_alias_backward(fz_in *in, bool full, float **dq, float **dk, const float *q, size_t nq,
                      float **dv, const float *dout, size_t nv, const float *s_in,
                      float **ds_in, size_t ns, bool *ok);

/* ---- the oracle ------------------------------------------------------------------ */

/* Prints "seqk fuzz finding: ..." and aborts. */
void fz_fail(const char *fmt, ...) FZ_PRINTF(1, 2);
/* Records every buffer's contents (call right before the seqk call). */
void fz_snapshot(void);
/* The call's status against its validity (valid must succeed, invalid must
 * fail); on failure every buffer is unchanged and seqk_last_error starts
 * with fn. Returns true when the call succeeded (compare with the
 * reference then). */
bool fz_outcome(const char *fn, seqk_status st, bool valid);
/* A forward's outcome (fz_outcome), then, when it succeeded, o [no] and the
 * optional state_out [ns] against their references (relative 5e-4, floor
 * 1e-2). Returns true when it succeeded. */
bool fz_forward_outcome(const char *fn, seqk_status st, bool valid, const float *o,
                        const double *ro, size_t no, const float *s_out, const double *rs,
                        size_t ns);
/* The output against its float64 reference: norm-wise relative error
 * <= tol, with the denominator at least floor * sqrt(n) (a gradient that
 * is small against the terms it sums). */
void fz_close(const char *what, const float *out, const double *ref, size_t n, double tol,
              double floor);

/* ---- context ----------------------------------------------------------------------- */

/* The fuzzers' CPU context (created once), with a thread count from the
 * next byte (1..3). */
seqk_context *fz_ctx(fz_in *in);
/* Gives the context a caller workspace of exactly `bytes` (0: the owned
 * workspace) for the next call, when the next byte says so; the call must
 * then not fail with WORKSPACE_TOO_SMALL. fz_reset takes it back. */
void fz_workspace(fz_in *in, seqk_context *ctx, seqk_status query_status, size_t bytes);

/* RMS of x[n] (0 for NULL or n = 0): the size of a gradient's summands, for
 * the floor of fz_close. */
double fz_rms(const double *x, size_t n);

/* Zeroed doubles for the references, and a double copy of n floats (NULL
 * stays NULL); freed by fz_reset. */
double *fz_doubles(size_t n);
double *fz_to_double(const float *x, size_t n);

#endif
