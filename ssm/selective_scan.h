/* ssm/selective_scan.h -- what the selective scan's forward
 * (ssm/selective_scan.c) shares with its backward
 * (ssm/selective_scan_backward.c). Not installed. */
#ifndef SEQK_SSM_SELECTIVE_SCAN_H
#define SEQK_SSM_SELECTIVE_SCAN_H

#include "../core/internal.h"

#include <stdint.h>

/* The largest state size (an item's state tile lives on the stack). */
#define SEQK__SSCAN_MAX_NST 256

/* B >= 1, T >= 0, D >= 1, 1 <= Nst <= SEQK__SSCAN_MAX_NST, 1 <= G <= D,
 * D a multiple of G, checked in that order; the failure names fn. */
seqk_status seqk__sscan_check_dims(const char *fn, int64_t B, int64_t T, int64_t D, int64_t Nst,
                                   int64_t G);

#endif
