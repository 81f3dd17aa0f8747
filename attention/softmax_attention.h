/* attention/softmax_attention.h -- what softmax attention's forward
 * (attention/softmax_attention.c) shares with its backward
 * (attention/softmax_attention_backward.c). Not installed. */
#ifndef SEQK_ATTENTION_SOFTMAX_ATTENTION_H
#define SEQK_ATTENTION_SOFTMAX_ATTENTION_H

#include "../core/internal.h"

#include <stdint.h>

/* The backend's limits on the head dimensions K, V: at most
 * SEQK__CUDA_ATTN_MAX_DIM on CUDA; on the CPU at most INT32_MAX / tile
 * (tile: the CPU kernel's key tile). UNSUPPORTED naming fn otherwise. */
seqk_status seqk__attn_check_head_dims(const char *fn, const seqk_context *ctx, int64_t K,
                                       int64_t V, int tile);

#endif
