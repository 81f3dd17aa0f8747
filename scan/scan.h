/*
 * scan/scan.h -- the scan primitive's CPU backend, for seqk_scan's dispatch
 * and for the ops that run on it (chunk-state scans, selective scan).
 *
 * The recurrence, per channel c (DESIGN 3.6):
 *
 *     h_r[c] = a_r[c] * h_{r-1}[c] + b_r[c]
 *
 * over rows r (time steps, or chunks), forward (r = 0, 1, ...) or reverse
 * (r = rows-1, rows-2, ...; then h_{r+1} takes the place of h_{r-1}, with
 * the same a_r). The associative operator is
 * (a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2).
 *
 * Row layout shared by the kernels below: row r of an operand starts at
 * ptr + r * row_stride (strides in floats, >= 0; consecutive rows need not be
 * contiguous), channels contiguous inside a row. The coefficient of channel c
 * in row r is a[r * a_row_stride + c / block] (block = 1: per element; block
 * divides C; block = C: one scalar per row, e.g. the decay of a K*V chunk
 * state).
 */
#ifndef SEQK_SCAN_SCAN_H
#define SEQK_SCAN_SCAN_H

#include "../core/internal.h"

/* CPU backend of seqk_scan; arguments already validated. cu is the host
 * cu_seqlens (NULL: B sequences of length T). */
seqk_status seqk__cpu_scan(seqk_context *ctx, int64_t B, int64_t T, int64_t C, int64_t block,
                           unsigned flags, const float *a, const float *b, const float *h0,
                           float *h, float *h_final, const int32_t *cu, int64_t N);

/* Flags of the kernels below (combine with |). */
#define SEQK__SCAN_REVERSE 1u /* = SEQK_SCAN_REVERSE: walk rows from the last to the first */
#define SEQK__SCAN_STREAM 2u  /* h is large and not re-read soon: it may be written with
                               * non-temporal stores (fenced before the call returns) */
#define SEQK__SCAN_KEEP_CARRY 4u /* carry is only read (the state before the rows); the
                                  * rows go to h alone (a chunk walk's step from a kept
                                  * state to the next: no copy of it first) */

/*
 * seqk__scan_rows: the recurrence over `rows` rows of C channels, on the
 * calling thread (SIMD, no threads, no allocation).
 *
 *   forward:  for r = 0 .. rows-1:   carry = a_r * carry + b_r;  h_r = carry
 *   reverse:  for r = rows-1 .. 0:   the same
 *
 *   rows          number of rows (<= 0: nothing happens)
 *   C             channels per row (>= 1)
 *   block         coefficient block, C % block == 0
 *   flags         SEQK__SCAN_REVERSE, SEQK__SCAN_STREAM, SEQK__SCAN_KEEP_CARRY
 *   a             [rows, C/block] coefficients, row r at a + r * a_row_stride
 *   b             [rows, C] inputs, row r at b + r * b_row_stride
 *   h             [rows, C] outputs, row r at h + r * h_row_stride; may be b
 *                 exactly (same pointer and stride); NULL: only carry is
 *                 computed
 *   carry         [C] in: the state before the first row walked (forward:
 *                 h_{-1}, reverse: h_rows); out: the state after the last
 *                 (forward: h_{rows-1}, reverse: h_0). It is read before
 *                 and written after the rows, so it may be the memory of the
 *                 last row walked (e.g. h itself when rows == 1); it must
 *                 not overlap a or b otherwise. With SEQK__SCAN_KEEP_CARRY
 *                 it is only read (h must not be NULL then, and must not
 *                 overlap it; h may be b).
 *
 * Chaining calls over consecutive row ranges through carry equals one call
 * over the whole range (up to fp32 rounding): that is how an op walks
 * cache-sized time chunks and carries the chunk-end state.
 */
void seqk__scan_rows(int64_t rows, int64_t C, int64_t block, unsigned flags, const float *a,
                     int64_t a_row_stride, const float *b, int64_t b_row_stride, float *h,
                     int64_t h_row_stride, float *carry);

/*
 * seqk__scan_rows_aggregate: the composed element of `rows` rows, per channel,
 * on the calling thread: with the same arguments as seqk__scan_rows,
 *
 *   prod[c] = product of a_r[c] over the rows
 *   end[c]  = the carry seqk__scan_rows leaves when it starts from zero
 *
 * so that seqk__scan_rows from any carry ends at prod * carry + end
 * (elementwise). prod and end are [C] outputs. Nothing else is written.
 */
void seqk__scan_rows_aggregate(int64_t rows, int64_t C, int64_t block, unsigned flags,
                               const float *a, int64_t a_row_stride, const float *b,
                               int64_t b_row_stride, float *prod, float *end);

/*
 * seqk__scan_rows_parallel: seqk__scan_rows for one (long) sequence on up to
 * `threads` OpenMP threads (it opens its own parallel region; inside another
 * one it runs on the threads it gets). Wide rows are split across threads by
 * channel tiles; few channels over many rows are split in time, cache-blocked:
 * per L2-sized block of rows each thread composes its sub-range's aggregate,
 * takes its carry-in from the aggregates before it, and re-runs its sub-range
 * from L2 writing h, so that a, b are read and h written once from memory.
 * Arguments as seqk__scan_rows; threads >= 1.
 */
void seqk__scan_rows_parallel(int threads, int64_t rows, int64_t C, int64_t block,
                              unsigned flags, const float *a, int64_t a_row_stride,
                              const float *b, int64_t b_row_stride, float *h,
                              int64_t h_row_stride, float *carry);

#endif
