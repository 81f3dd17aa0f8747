/*
 * scan/scan.h -- the scan primitive's CPU backend, for seqk_scan's dispatch
 * and for the ops that run on it (chunk-state scans, selective scan).
 */
#ifndef SEQK_SCAN_SCAN_H
#define SEQK_SCAN_SCAN_H

#include "../core/internal.h"

/* CPU backend of seqk_scan; arguments already validated. cu is the host
 * cu_seqlens (NULL: B sequences of length T). */
seqk_status seqk__cpu_scan(seqk_context *ctx, int64_t B, int64_t T, int64_t C, int64_t block,
                           unsigned flags, const float *a, const float *b, const float *h0,
                           float *h, float *h_final, const int32_t *cu, int64_t N);

#endif
