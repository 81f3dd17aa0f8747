/*
 * mpi/ring_attention.c -- softmax attention over the ranks of an MPI
 * communicator by ring passing of key/value blocks, forward and backward.
 *
 * Rank r holds the queries, keys and values of tokens [off_r, off_r + T_r).
 * Its output is the softmax over every visible key, i.e. a merge of the
 * partial softmaxes of the key blocks: with (o_j, lse_j) the output and
 * log-sum-exp of the queries against block j alone,
 *
 *   lse = log sum_j exp(lse_j),   o = sum_j exp(lse_j - lse) o_j
 *
 * (the FlashAttention / Flash-Decoding merge), accumulated in double. The
 * own block's partial is seqk_attention_parallel on the slice (causal when
 * asked). The blocks of the other ranks arrive around the ring: P - 1
 * steps, each sending the block in hand to rank r + 1 and receiving the
 * next from rank r - 1 (nonblocking; the next block is in flight while the
 * current one is computed). With SEQK_ATTN_CAUSAL a block from an earlier
 * rank is entirely in the past (fully visible) and one from a later rank
 * entirely in the future (skipped, only forwarded).
 *
 * A fully visible block j against the queries of the slice is computed by
 * seqk_attention_parallel too, which only takes queries and keys of the
 * same tokens: on the sequence [the T_j keys of block j ; T_r query rows]
 * (length L = T_j + T_r) in its causal mode, with one extra dimension:
 *
 *   q'_t = 0 (t < T_j),             [q_{t - T_j}, 1] (t >= T_j)
 *   k'_t = [k^(j)_t, 0] (t < T_j),  [0, -1e30 / scale] (t >= T_j)
 *   v'_t = v^(j)_t (t < T_j),       0 (t >= T_j)
 *
 * Row T_j + i sees every key of block j with its own score scale q_i.k_s
 * (the extra coordinate adds exactly 0) and the query rows' keys with a
 * score of -1e30, whose weight is below 2^-125 of the largest (the
 * kernel's exp floor) and whose value is 0: its (o, lse) are those of q_i
 * against block j. The rows t < T_j are wasted work, as are the masked
 * query-row keys: about (T_j + T_r)^2 / 2 scores for T_j T_r useful ones.
 * scale = 0 (every score 0) takes the mean of the block's values directly.
 *
 * Backward (seqk_mpi_attention_ring_backward): with the forward's final o
 * and lse, softmax attention's gradients split over the key blocks exactly
 * (p = exp(s - lse) and D = dout . o are global), so each block's share is
 * seqk_attention_parallel_backward on the same concatenation (the query
 * rows carry o, lse, dout; the key rows dout = 0, which gives them no
 * gradient). Each block travels once around the ring with its dk, dv
 * accumulators (P steps) and comes back to its owner; dq sums in double.
 */
#include "common.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char FN[] = "seqk_mpi_attention_ring";

typedef struct ring_args {
    int64_t B, T, Hq, Hkv, K, V;
    float scale;
    const float *q;
    double *acc_o, *acc_l; /* [B,T,Hq,V], [B,Hq,T] */
} ring_args;

/* Merges a partial (o [B,L,Hq,V] rows row0.., lse [B,Hq,L]) into the
 * accumulators. */
static void merge(const ring_args *a, const float *o, const float *lse, int64_t L, int64_t row0)
{
    for (int64_t b = 0; b < a->B; b++)
        for (int64_t h = 0; h < a->Hq; h++)
            for (int64_t t = 0; t < a->T; t++) {
                double *l1 = &a->acc_l[(b * a->Hq + h) * a->T + t];
                const double l2 = lse[(b * a->Hq + h) * L + row0 + t];
                const double m = fmax(*l1, l2), l = m + log(exp(*l1 - m) + exp(l2 - m));
                const double w1 = exp(*l1 - l), w2 = exp(l2 - l);
                double *acc = &a->acc_o[((b * a->T + t) * a->Hq + h) * a->V];
                const float *x = &o[((b * L + row0 + t) * a->Hq + h) * a->V];
                for (int64_t j = 0; j < a->V; j++) acc[j] = w1 * acc[j] + w2 * (double)x[j];
                *l1 = l;
            }
}

/* Buffers of the cross-block call for up to L tokens. */
typedef struct cross_bufs {
    float *q, *k, *v, *o, *lse;
} cross_bufs;

/* The concatenated sequence [block j's Tj keys ; the slice's T query rows]
 * with the extra key dimension (the top of this file) into w->q, w->k, w->v. */
static void concat(const ring_args *a, const float *kj, const float *vj, int64_t Tj,
                   const cross_bufs *w)
{
    const int64_t B = a->B, T = a->T, Hq = a->Hq, Hkv = a->Hkv, K = a->K, V = a->V;
    const int64_t L = Tj + T, K1 = K + 1;
    const float big = fabsf(a->scale) < 1e-7f ? copysignf(FLT_MAX / 4, a->scale) : 1e30f / a->scale;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < L; t++) {
            const bool key = t < Tj;
            for (int64_t h = 0; h < Hq; h++) {
                float *qp = w->q + ((b * L + t) * Hq + h) * K1;
                if (key) memset(qp, 0, (size_t)K1 * sizeof(float));
                else {
                    memcpy(qp, a->q + ((b * T + t - Tj) * Hq + h) * K, (size_t)K * sizeof(float));
                    qp[K] = 1.0f;
                }
            }
            for (int64_t g = 0; g < Hkv; g++) {
                float *kp = w->k + ((b * L + t) * Hkv + g) * K1, *vp = w->v + ((b * L + t) * Hkv + g) * V;
                if (key) {
                    memcpy(kp, kj + ((b * Tj + t) * Hkv + g) * K, (size_t)K * sizeof(float));
                    kp[K] = 0.0f;
                    memcpy(vp, vj + ((b * Tj + t) * Hkv + g) * V, (size_t)V * sizeof(float));
                } else {
                    memset(kp, 0, (size_t)K * sizeof(float));
                    kp[K] = -big;
                    memset(vp, 0, (size_t)V * sizeof(float));
                }
            }
        }
}

/* The partial of the slice's queries against all Tj keys/values of kv
 * ([B,Tj,Hkv,K] then [B,Tj,Hkv,V]), merged into the accumulators. */
static seqk_status cross_block(seqk_context *ctx, const ring_args *a, const float *kv, int64_t Tj,
                               const cross_bufs *w)
{
    const int64_t B = a->B, T = a->T, Hq = a->Hq, Hkv = a->Hkv, K = a->K, V = a->V;
    const float *kj = kv, *vj = kv + B * Tj * Hkv * K;
    if (a->scale == 0.0f) { /* every score 0: the mean of the values, lse = log Tj */
        for (int64_t b = 0; b < B; b++)
            for (int64_t g = 0; g < Hkv; g++) {
                float *mean = w->o + (b * Hkv + g) * V;
                for (int64_t j = 0; j < V; j++) {
                    double s = 0.0;
                    for (int64_t t = 0; t < Tj; t++) s += vj[((b * Tj + t) * Hkv + g) * V + j];
                    mean[j] = (float)(s / (double)Tj);
                }
            }
        /* spread over the queries as a partial of T rows */
        float *o = w->o + B * Hkv * V, *lse = w->lse;
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < T; t++)
                for (int64_t h = 0; h < Hq; h++) {
                    memcpy(o + ((b * T + t) * Hq + h) * V, w->o + (b * Hkv + h / (Hq / Hkv)) * V,
                           (size_t)V * sizeof(float));
                    lse[(b * Hq + h) * T + t] = (float)log((double)Tj);
                }
        merge(a, o, lse, T, 0);
        return SEQK_SUCCESS;
    }
    const int64_t L = Tj + T, K1 = K + 1;
    concat(a, kj, vj, Tj, w);
    seqk_status st = seqk_attention_parallel(ctx, B, L, Hq, Hkv, K1, V, a->scale, SEQK_ATTN_CAUSAL,
                                             w->q, w->k, w->v, w->o, w->lse, NULL, 0);
    if (st) return st;
    merge(a, w->o, w->lse, L, Tj);
    return SEQK_SUCCESS;
}

/* The entry checks and the agreement of the arguments of both entry
 * points; *Ts (allocated) receives every rank's T, *maxT the largest.
 * per_kv: floats per token and key/value head of a ring message. */
static seqk_status ring_begin(const char *fn, seqk_context *ctx, MPI_Comm comm, int64_t B,
                              int64_t T, int64_t Hq, int64_t Hkv, int64_t K, int64_t V,
                              float scale, unsigned flags, int64_t per_kv, seqkm_comm *c,
                              int64_t **Ts, int64_t *maxT)
{
    seqk_status st = seqkm_begin(fn, ctx, comm, c);
    if (c->comm == MPI_COMM_NULL) return st;
    if (!st && !(st = seqk__check_min(fn, "B", B, 1)) && !(st = seqk__check_min(fn, "T", T, 0)) &&
        !(st = seqk__check_min(fn, "Hq", Hq, 1)) && !(st = seqk__check_min(fn, "Hkv", Hkv, 1)) &&
        !(st = seqk__check_min(fn, "K", K, 1)))
        st = seqk__check_min(fn, "V", V, 1);
    seqkm_desc d = {.T = T};
    seqkm_desc_add(&d, "B", B);
    seqkm_desc_add(&d, "Hq", Hq);
    seqkm_desc_add(&d, "Hkv", Hkv);
    seqkm_desc_add(&d, "K", K);
    seqkm_desc_add(&d, "V", V);
    seqkm_desc_add(&d, "flags", flags);
    uint32_t sb;
    memcpy(&sb, &scale, sizeof sb);
    seqkm_desc_add(&d, "scale (bits)", (int64_t)sb);
    int64_t want = 0;
    *Ts = NULL;
    if (!st) st = seqkm_alloc(fn, "the ranks' lengths", (size_t)c->size * sizeof(int64_t), (void **)Ts);
    if ((st = seqkm_agree_args(fn, c, &d, st, *Ts, &want))) {
        free(*Ts);
        *Ts = NULL;
        return st;
    }
    for (int r = 0; r < c->size; r++) *maxT = (*Ts)[r] > *maxT ? (*Ts)[r] : *maxT;
    /* the largest block in one message */
    if ((st = seqkm_check_message(fn, "a key/value block", B * *maxT * Hkv * per_kv * 4))) {
        free(*Ts);
        *Ts = NULL;
    }
    return st;
}

seqk_status seqk_mpi_attention_ring(seqk_context *ctx, MPI_Comm comm, int64_t B, int64_t T,
                                    int64_t Hq, int64_t Hkv, int64_t K, int64_t V, float scale,
                                    unsigned flags, const float *q, const float *k, const float *v,
                                    float *o, float *lse)
{
    seqkm_comm c;
    int64_t *Ts = NULL;
    int64_t maxT = 0;
    seqk_status st = ring_begin(FN, ctx, comm, B, T, Hq, Hkv, K, V, scale, flags, K + V, &c,
                                 &Ts, &maxT);
    if (st) return st;
    const int64_t blk = B * maxT * Hkv * (K + V), L = maxT + T, nq = B * T * Hq * K;
    const int64_t no = B * T * Hq * V, nkv = B * T * Hkv;
    float *bufs = NULL, *kv[2] = {NULL, NULL};
    cross_bufs w = {0};
    ring_args a = {.B = B, .T = T, .Hq = Hq, .Hkv = Hkv, .K = K, .V = V, .scale = scale, .q = q};
    /* 1. scratch; the own block's partial (the library checks the inputs) */
    const int64_t nb = 2 * blk + B * L * (Hq * (K + 1) + Hkv * (K + 1 + V) + Hq * V + Hq) +
                       B * T * Hq * V + B * Hq * T + B * Hkv * V;
    st = seqkm_alloc(FN, "the ring's buffers", (size_t)nb * sizeof(float), (void **)&bufs);
    if (!st) st = seqkm_alloc(FN, "the accumulators", (size_t)(no + B * Hq * T) * sizeof(double),
                              (void **)&a.acc_o);
    if (!st) {
        a.acc_l = a.acc_o + no;
        kv[0] = bufs, kv[1] = bufs + blk;
        w.q = bufs + 2 * blk;
        w.k = w.q + B * L * Hq * (K + 1);
        w.v = w.k + B * L * Hkv * (K + 1);
        w.o = w.v + B * L * Hkv * V;
        w.lse = w.o + B * L * Hq * V + B * T * Hq * V + B * Hkv * V; /* room for scale = 0 */
        st = seqk_attention_parallel(ctx, B, T, Hq, Hkv, K, V, scale, flags, q, k, v, w.o, w.lse,
                                     NULL, 0);
    }
    if (!st && no) st = seqk__check_ptr(FN, "o", o);
    if (!st) {
        const seqk__arg outs[2] = {{"o", o, (size_t)no * 4}, {"lse", lse, (size_t)(B * Hq * T) * 4}};
        const seqk__arg ins[3] = {{"q", q, (size_t)nq * 4},
                                  {"k", k, (size_t)(nkv * K) * 4},
                                  {"v", v, (size_t)(nkv * V) * 4}};
        st = seqk__check_disjoint(FN, outs, 2, ins, 3);
    }
    if ((st = seqkm_agree(FN, &c, st))) goto done;
    for (int64_t i = 0; i < no; i++) a.acc_o[i] = w.o[i];
    for (int64_t i = 0; i < B * Hq * T; i++) a.acc_l[i] = w.lse[i];
    /* 2. the ring */
    seqk_status stc = SEQK_SUCCESS;
    if (c.size > 1) {
        const int right = (c.rank + 1) % c.size, left = (c.rank + c.size - 1) % c.size;
        if (nkv) { /* an empty slice may pass NULL */
            memcpy(kv[0], k, (size_t)(nkv * K) * sizeof(float));
            memcpy(kv[0] + nkv * K, v, (size_t)(nkv * V) * sizeof(float));
        }
        MPI_Request req[2];
        int cur = 0;
        /* the block in hand (from rank `have`) goes right, the next comes from the left */
        int have = c.rank;
        int64_t bytes_have = B * Ts[have] * Hkv * (K + V) * 4;
        int64_t bytes_next = B * Ts[(have + c.size - 1) % c.size] * Hkv * (K + V) * 4;
        if (!(st = seqkm_irecv(FN, &c, kv[1], bytes_next, left, &req[0])))
            st = seqkm_isend(FN, &c, kv[0], bytes_have, right, &req[1]);
        for (int s = 1; s < c.size && !st; s++) {
            if ((st = seqkm_waitall(FN, 2, req))) break;
            cur ^= 1;
            have = (c.rank - s + c.size) % c.size;
            if (s + 1 < c.size) {
                bytes_have = B * Ts[have] * Hkv * (K + V) * 4;
                bytes_next = B * Ts[(have + c.size - 1) % c.size] * Hkv * (K + V) * 4;
                if ((st = seqkm_irecv(FN, &c, kv[cur ^ 1], bytes_next, left, &req[0]))) break;
                if ((st = seqkm_isend(FN, &c, kv[cur], bytes_have, right, &req[1]))) break;
            }
            /* a failing call stops the computing, not the passing on */
            const bool visible = !(flags & SEQK_ATTN_CAUSAL) || have < c.rank;
            if (!stc && visible && Ts[have] > 0 && T > 0)
                stc = cross_block(ctx, &a, kv[cur], Ts[have], &w);
        }
    }
    st = seqkm_agree(FN, &c, st ? st : stc);
    if (!st) {
        for (int64_t i = 0; i < no; i++) o[i] = (float)a.acc_o[i];
        if (lse)
            for (int64_t i = 0; i < B * Hq * T; i++) lse[i] = (float)a.acc_l[i];
    }
done:
    free(Ts);
    free(bufs);
    free(a.acc_o);
    return st;
}

/* ---- backward ---------------------------------------------------------------------- */

static const char FNB[] = "seqk_mpi_attention_ring_backward";

/* Buffers of the cross-block backward for up to L tokens. */
typedef struct cross_grads {
    cross_bufs f; /* q', k', v' (concat), o', lse' */
    float *dout, *dq, *dk, *dv;
} cross_grads;

/* The gradients of the slice's queries' softmax restricted to block j
 * (keys kj, values vj, Tj tokens), given the forward's final o and lse:
 * added to dq_acc and to the block's dkj, dvj. */
static seqk_status cross_block_backward(seqk_context *ctx, const ring_args *a, const float *o,
                                        const float *lse, const float *dout, const float *kj,
                                        const float *vj, int64_t Tj, float *dkj, float *dvj,
                                        const cross_grads *w)
{
    const int64_t B = a->B, T = a->T, Hq = a->Hq, Hkv = a->Hkv, K = a->K, V = a->V, G = Hq / Hkv;
    if (a->scale == 0.0f) { /* every score 0: p = exp(-lse); dq, dk are scale times something */
        for (int64_t b = 0; b < B; b++)
            for (int64_t g = 0; g < Hkv; g++)
                for (int64_t j = 0; j < V; j++) {
                    double s = 0.0;
                    for (int64_t h = g * G; h < (g + 1) * G; h++)
                        for (int64_t t = 0; t < T; t++)
                            s += exp(-(double)lse[(b * Hq + h) * T + t]) *
                                 dout[((b * T + t) * Hq + h) * V + j];
                    for (int64_t t = 0; t < Tj; t++) dvj[((b * Tj + t) * Hkv + g) * V + j] += (float)s;
                }
        return SEQK_SUCCESS;
    }
    const int64_t L = Tj + T, K1 = K + 1;
    concat(a, kj, vj, Tj, &w->f);
    for (int64_t b = 0; b < B; b++) {
        memset(w->f.o + b * L * Hq * V, 0, (size_t)(Tj * Hq * V) * sizeof(float));
        memcpy(w->f.o + (b * L + Tj) * Hq * V, o + b * T * Hq * V, (size_t)(T * Hq * V) * sizeof(float));
        memset(w->dout + b * L * Hq * V, 0, (size_t)(Tj * Hq * V) * sizeof(float));
        memcpy(w->dout + (b * L + Tj) * Hq * V, dout + b * T * Hq * V,
               (size_t)(T * Hq * V) * sizeof(float));
        for (int64_t h = 0; h < Hq; h++) {
            memset(w->f.lse + (b * Hq + h) * L, 0, (size_t)Tj * sizeof(float));
            memcpy(w->f.lse + (b * Hq + h) * L + Tj, lse + (b * Hq + h) * T, (size_t)T * sizeof(float));
        }
    }
    seqk_status st = seqk_attention_parallel_backward(ctx, B, L, Hq, Hkv, K1, V, a->scale,
                                                      SEQK_ATTN_CAUSAL, w->f.q, w->f.k, w->f.v,
                                                      w->f.o, w->f.lse, w->dout, w->dq, w->dk,
                                                      w->dv, NULL, 0);
    if (st) return st;
    for (int64_t b = 0; b < B; b++) {
        for (int64_t t = 0; t < T; t++)
            for (int64_t h = 0; h < Hq; h++)
                for (int64_t i = 0; i < K; i++)
                    a->acc_o[((b * T + t) * Hq + h) * K + i] += w->dq[((b * L + Tj + t) * Hq + h) * K1 + i];
        for (int64_t t = 0; t < Tj; t++)
            for (int64_t g = 0; g < Hkv; g++) {
                for (int64_t i = 0; i < K; i++)
                    dkj[((b * Tj + t) * Hkv + g) * K + i] += w->dk[((b * L + t) * Hkv + g) * K1 + i];
                for (int64_t i = 0; i < V; i++)
                    dvj[((b * Tj + t) * Hkv + g) * V + i] += w->dv[((b * L + t) * Hkv + g) * V + i];
            }
    }
    return SEQK_SUCCESS;
}

seqk_status seqk_mpi_attention_ring_backward(seqk_context *ctx, MPI_Comm comm, int64_t B,
                                             int64_t T, int64_t Hq, int64_t Hkv, int64_t K,
                                             int64_t V, float scale, unsigned flags,
                                             const float *q, const float *k, const float *v,
                                             const float *o, const float *lse, const float *dout,
                                             float *dq, float *dk, float *dv)
{
    seqkm_comm c;
    int64_t *Ts = NULL;
    int64_t maxT = 0;
    seqk_status st = ring_begin(FNB, ctx, comm, B, T, Hq, Hkv, K, V, scale, flags, 2 * (K + V),
                                 &c, &Ts, &maxT);
    if (st) return st;
    const int64_t W = 2 * (K + V), blk = B * maxT * Hkv * W, L = maxT + T, K1 = K + 1;
    const int64_t nq = B * T * Hq * K, no = B * T * Hq * V, nkv = B * T * Hkv;
    float *bufs = NULL, *kv[2] = {NULL, NULL};
    cross_grads w;
    memset(&w, 0, sizeof w);
    ring_args a = {.B = B, .T = T, .Hq = Hq, .Hkv = Hkv, .K = K, .V = V, .scale = scale, .q = q};
    /* block layout: [k | v | dk | dv] of its Tj tokens */
    const int64_t nb = 2 * blk + B * L * (2 * Hq * K1 + 2 * Hkv * (K1 + V) + 2 * Hq * V + Hq) + nq;
    st = seqkm_alloc(FNB, "the ring's buffers", (size_t)nb * sizeof(float), (void **)&bufs);
    if (!st) st = seqkm_alloc(FNB, "the dq accumulator", (size_t)(nq ? nq : 1) * sizeof(double),
                              (void **)&a.acc_o);
    float *dq_own = NULL;
    if (!st) {
        kv[0] = bufs, kv[1] = bufs + blk;
        w.f.q = bufs + 2 * blk;
        w.f.k = w.f.q + B * L * Hq * K1;
        w.f.v = w.f.k + B * L * Hkv * K1;
        w.f.o = w.f.v + B * L * Hkv * V;
        w.f.lse = w.f.o + B * L * Hq * V;
        w.dout = w.f.lse + B * L * Hq;
        w.dq = w.dout + B * L * Hq * V;
        w.dk = w.dq + B * L * Hq * K1;
        w.dv = w.dk + B * L * Hkv * K1;
        dq_own = w.dv + B * L * Hkv * V;
        /* the own block (the library checks the inputs): dq, and the block's dk, dv */
        float *own = kv[0], *ok = own, *ov = ok + nkv * K, *odk = ov + nkv * V, *odv = odk + nkv * K;
        if (nkv) {
            memcpy(ok, k, (size_t)(nkv * K) * sizeof(float));
            memcpy(ov, v, (size_t)(nkv * V) * sizeof(float));
        }
        st = seqk_attention_parallel_backward(ctx, B, T, Hq, Hkv, K, V, scale, flags, q, k, v, o,
                                              lse, dout, dq_own, odk, odv, NULL, 0);
    }
    if (!st && nq) {
        const char *names[3] = {"dq", "dk", "dv"};
        const float *ptrs[3] = {dq, dk, dv};
        for (int i = 0; i < 3 && !st; i++) st = seqk__check_ptr(FNB, names[i], ptrs[i]);
    }
    if (!st) {
        const seqk__arg outs[3] = {{"dq", dq, (size_t)nq * 4},
                                   {"dk", dk, (size_t)(nkv * K) * 4},
                                   {"dv", dv, (size_t)(nkv * V) * 4}};
        const seqk__arg ins[6] = {{"q", q, (size_t)nq * 4},        {"k", k, (size_t)(nkv * K) * 4},
                                  {"v", v, (size_t)(nkv * V) * 4}, {"o", o, (size_t)no * 4},
                                  {"lse", lse, (size_t)(B * Hq * T) * 4},
                                  {"dout", dout, (size_t)no * 4}};
        st = seqk__check_disjoint(FNB, outs, 3, ins, 6);
    }
    if ((st = seqkm_agree(FNB, &c, st))) goto done;
    for (int64_t i = 0; i < nq; i++) a.acc_o[i] = dq_own[i];
    /* the ring: each block travels with its dk, dv once around, back to its owner */
    seqk_status stc = SEQK_SUCCESS;
    int cur = 0;
    if (c.size > 1) {
        const int right = (c.rank + 1) % c.size, left = (c.rank + c.size - 1) % c.size;
        for (int s = 1; s <= c.size && !st; s++) {
            const int sent = (c.rank - s + 1 + c.size) % c.size, have = (c.rank - s + c.size) % c.size;
            MPI_Request req[2];
            if ((st = seqkm_irecv(FNB, &c, kv[cur ^ 1], B * Ts[have] * Hkv * W * 4, left, &req[0])))
                break;
            if ((st = seqkm_isend(FNB, &c, kv[cur], B * Ts[sent] * Hkv * W * 4, right, &req[1])))
                break;
            if ((st = seqkm_waitall(FNB, 2, req))) break;
            cur ^= 1;
            const int64_t Tj = Ts[have], nj = B * Tj * Hkv;
            float *bk = kv[cur], *bv = bk + nj * K, *bdk = bv + nj * V, *bdv = bdk + nj * K;
            const bool visible = s < c.size && (!(flags & SEQK_ATTN_CAUSAL) || have < c.rank);
            if (!stc && visible && Tj > 0 && T > 0)
                stc = cross_block_backward(ctx, &a, o, lse, dout, bk, bv, Tj, bdk, bdv, &w);
        }
    }
    st = seqkm_agree(FNB, &c, st ? st : stc);
    if (!st && nkv) {
        const float *own = kv[cur] + nkv * (K + V); /* the own block, back with every dk, dv */
        for (int64_t i = 0; i < nq; i++) dq[i] = (float)a.acc_o[i];
        memcpy(dk, own, (size_t)(nkv * K) * sizeof(float));
        memcpy(dv, own + nkv * K, (size_t)(nkv * V) * sizeof(float));
    }
done:
    free(Ts);
    free(bufs);
    free(a.acc_o);
    return st;
}
