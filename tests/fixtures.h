/*
 * tests/fixtures.h -- the pieces the per-module tests build their cases from,
 * on top of the harness (harness.h):
 *
 * - tf_arrays: the arrays of one case, on the host and on a backend,
 *   allocated through it and freed together by one call.
 * - tf_check_result: download one output, compare it with its float64
 *   reference, and check that nothing was written past its end.
 * - tf_split_plan: the calls of a split == whole run (two parts chained
 *   through the state, then the last tokens decoded one at a time in place).
 * - tf_workspace_begin/end: a context workspace of exactly the queried size.
 * - tf_expect_rejected: one validation rule (status, message, outputs
 *   untouched).
 * - inputs of the delta-rule modules (DeltaNet, Titans): keys in their stable
 *   range, unit-norm rows; varlen layouts with empty and length-1 sequences.
 *
 * Random values come from the harness generator (th_seed, th_fill), in the
 * order the calls are made.
 */
#ifndef SEQK_TEST_FIXTURES_H
#define SEQK_TEST_FIXTURES_H

#include "harness.h"

/* ---- the arrays of one case --------------------------------------------------- */

enum { TF_ARRAYS_MAX = 32 };

/* Host arrays and backend buffers, freed together by tf_arrays_free. */
typedef struct tf_arrays {
    th_backend *be; /* where tf_upload / tf_poisoned allocate (NULL: host arrays only) */
    int n;
    struct {
        void *p;
        bool on_backend;
    } a[TF_ARRAYS_MAX];
} tf_arrays;

/* An empty set whose backend arrays go to be (NULL: host arrays only). */
tf_arrays tf_arrays_on(th_backend *be);
/* Frees every array of s (host and backend); s can be used again. */
void tf_arrays_free(tf_arrays *s);
/* Host arrays: uninitialised, th_fill'ed from [lo, hi), zeroed. */
float *tf_floats(tf_arrays *s, size_t n);
float *tf_random(tf_arrays *s, size_t n, double lo, double hi);
double *tf_doubles(tf_arrays *s, size_t n);
/* Backend buffers: a copy of host[bytes] (th_upload), NaN-filled floats (th_poisoned). */
void *tf_upload(tf_arrays *s, const void *host, size_t bytes);
float *tf_poisoned(tf_arrays *s, size_t n);

/* ---- checking an output ------------------------------------------------------- */

/* Downloads the n floats of the output `name` from dev into host and checks
 * them against ref within tol ("<what>: <name>: rel err ..."). With `past`,
 * dev and host hold n + 1 floats, the last one poisoned before the call: it
 * is downloaded too and must still be NaN ("<what>: nothing written past
 * <name>"). */
void tf_check_result(th_backend *be, float *host, const float *dev, size_t n, const double *ref,
                     double tol, bool past, const char *what, const char *name);
/* True when none of x[0..n) is inf or NaN. */
bool tf_all_finite(const float *x, size_t n);

/* ---- split == whole ------------------------------------------------------------- */

enum { TF_SPLIT_MAX = 16 };

/* One call of a split run: tokens [t0, t1) in `mode`. */
typedef struct tf_segment {
    int64_t t0, t1;
    seqk_mode mode;
} tf_segment;

/* The calls that process the T tokens of one sequence (B = 1) in parts:
 * [0, s) in mode m1, then [s, T - decode) in mode m2, then each of the last
 * `decode` tokens alone in the recurrent mode (from s on when s > T - decode);
 * empty parts are left out. The first call reads the initial state and
 * writes a state buffer; every later call continues from that buffer in
 * place (state_in == state_out). Its outputs, and the final state, must equal
 * one call over the whole sequence. Writes the calls into seg (decode <=
 * TF_SPLIT_MAX - 2) and returns their number; writes a description, "split
 * at <s> (<m1> then <m2>, <decode> decoded in place)", into label. */
int tf_split_plan(int64_t T, int64_t s, seqk_mode m1, seqk_mode m2, int64_t decode,
                  tf_segment seg[TF_SPLIT_MAX], char *label, size_t label_size);

/* ---- workspace ------------------------------------------------------------------- */

/* Gives be's context a workspace of exactly `bytes` (a backend buffer; none
 * for 0) until tf_workspace_end, which takes it back and frees it. */
void *tf_workspace_begin(th_backend *be, size_t bytes);
void tf_workspace_end(th_backend *be, void *buf);

/* ---- validation rules -------------------------------------------------------------- */

/* The value outputs hold before a call that must be rejected. */
#define TF_UNTOUCHED 7.0f
void tf_fill_untouched(float *x, size_t n);

/* One rule: got == want, the error message names `needle`, and the host
 * outputs o [no] and s [ns] (s may be NULL with ns = 0) still hold
 * TF_UNTOUCHED. Checks are named "validation: <rule>...". */
void tf_expect_rejected(seqk_status got, seqk_status want, const char *needle, const char *rule,
                        const float *o, size_t no, const float *s, size_t ns);

/* ---- inputs of the delta-rule modules ------------------------------------------------ */

/* Keys k [rows, K] for DeltaNet and Titans, from [-1, 1]: with the in-kernel
 * L2 norm (l2) any scale does (times 3); without it each row is scaled to a
 * norm in [0.6, 1], the stable regime of the delta rule. */
void tf_delta_keys(float *k, int64_t rows, int64_t K, int l2);
/* Scales each row of x [rows, K] to unit norm exactly (long-sequence stability). */
void tf_unit_rows(float *x, int64_t rows, int64_t K);
/* DeltaNet's beta [n] from [0, 1] ([0, 2] with neg, SEQK_DELTANET_ALLOW_NEG_EIGVAL),
 * with the edges of the range (0, the top, and 1 with neg) at fixed places. */
void tf_delta_beta(float *beta, size_t n, int neg);

/* Varlen layouts with empty and length-1 sequences: 5 sequences over 133
 * tokens (lengths 0, 1, 69, 0, 63) and 3 over 91 (90, 0, 1). */
extern const int32_t tf_cu_133[6];
extern const int32_t tf_cu_91[4];

/* ---- dtypes (seqk.h, "Dtypes"): the tests' own arithmetic, from double -------------- */

/* The unit roundoff u: 2^-8 (bf16), 2^-11 (f16). */
double tf_dt_unit(seqk_dtype dt);
/* x rounded to the dtype (nearest, ties to even; overflow to inf), as a double. */
double tf_dt_round(seqk_dtype dt, double x);
/* The encoding of a value the dtype holds exactly (NaN: the canonical one). */
uint16_t tf_dt_encode(seqk_dtype dt, double x);
double tf_dt_decode(seqk_dtype dt, uint16_t h);

#endif
