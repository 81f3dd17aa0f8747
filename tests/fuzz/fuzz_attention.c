/* tests/fuzz/fuzz_attention.c -- libFuzzer harness of softmax attention:
 * seqk_attention_parallel (causal or not, grouped-query heads, scales, lse
 * or not, varlen), seqk_attention_parallel_backward and
 * seqk_attention_decode (ragged cache lengths), with their workspace
 * queries, and the float64 references of tests/ref as the oracle; see
 * fuzz_common.h. */
#include "fuzz_common.h"
#include "ref/ref_attention.h"
#include "ref/ref_attention_backward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* x as floats into a fresh input of n floats. */
static float *from_double(const double *x, size_t n)
{
    float *f = fz_input(n, 0, 0);
    for (size_t i = 0; i < n; i++) f[i] = (float)x[i];
    return f;
}

/* seqk_attention_decode: one step over caches of max_len tokens. */
static void decode(fz_in *in, seqk_context *ctx, int64_t B, int64_t Hq, int64_t Hkv, int64_t K,
                   int64_t V, float scale, bool ok)
{
    int64_t max_len = fz_pick(in, 1, 9);
    if (fz_chance(in, 6)) max_len = 0;
    ok &= max_len >= 1;
    fz_seed_data(in);
    const int64_t Bp = B > 0 ? B : 0, L = max_len > 0 ? max_len : 0;
    const int64_t Hkv_ = Hkv, K_ = K, V_ = V; /* the call's; the buffers' below */
    Hkv = Hkv > 0 ? Hkv : 1, K = K > 0 ? K : 1, V = V > 0 ? V : 1;
    const size_t nq = (size_t)(Bp * Hq * K), nkn = (size_t)(Bp * Hkv * K),
                 nvn = (size_t)(Bp * Hkv * V), nkc = (size_t)(Bp * L * Hkv * K),
                 nvc = (size_t)(Bp * L * Hkv * V), no = (size_t)(Bp * Hq * V);
    const float *q = fz_input(nq, -1, 1), *kn = fz_input(nkn, -1, 1), *vn = fz_input(nvn, -1, 1);
    float *kc = fz_input(nkc, -1, 1), *vc = fz_input(nvc, -1, 1);
    fz_mark_written(kc), fz_mark_written(vc);
    int32_t *len = fz_ints((size_t)Bp);
    for (int64_t b = 0; b < Bp; b++) len[b] = (int32_t)fz_pick(in, 0, L > 0 ? L - 1 : 0);
    if (Bp && fz_chance(in, 10)) {
        len[fz_pick(in, 0, Bp - 1)] = fz_chance(in, 128) ? -1 : (int32_t)L;
        ok = false;
    }
    float *o = fz_output(no), *lse = fz_chance(in, 160) ? fz_output((size_t)(Bp * Hq)) : NULL;
    switch (fz_pick(in, 0, 15)) {
    case 0:
        if (no && nq) o = (float *)q, ok = false;
        break;
    case 1: /* v_cache overlapping k_cache (kc + 1 lies inside kc's nkc >= 2 floats;
             * with nkc = 1 it would be a different, too small, array: no overlap) */
        if (nkc >= 2 && nvc >= 2) vc = kc + 1, ok = false;
        break;
    case 2:
        if (lse && no) lse = o, ok = false;
        break;
    case 3:
        if (no && nkc) o = kc, ok = false;
        break;
    default: break;
    }
    q = fz_maybe_null(in, q, true, &ok);
    kn = fz_maybe_null(in, kn, true, &ok);
    vn = fz_maybe_null(in, vn, true, &ok);
    kc = (float *)fz_maybe_null(in, kc, true, &ok);
    vc = (float *)fz_maybe_null(in, vc, true, &ok);
    const int32_t *lp = fz_maybe_null(in, len, true, &ok);
    o = (float *)fz_maybe_null(in, o, true, &ok);
    size_t ws = 0;
    const seqk_status wst =
        seqk_attention_decode_workspace_size(ctx, B, Hq, Hkv_, K_, V_, max_len, &ws);
    fz_workspace(in, ctx, wst, ws);
    /* the reference: the last row of causal attention over the cache with
     * the new token appended, per batch entry; the caches after the call */
    double *ro = NULL, *rl = NULL;
    float *kc_want = NULL, *vc_want = NULL;
    if (ok) {
        ro = fz_doubles(no), rl = fz_doubles((size_t)(Bp * Hq));
        kc_want = fz_input(nkc, 0, 0), vc_want = fz_input(nvc, 0, 0);
        memcpy(kc_want, kc, nkc * sizeof(float));
        memcpy(vc_want, vc, nvc * sizeof(float));
        for (int64_t b = 0; b < Bp; b++) {
            const int64_t p = len[b], n = p + 1;
            memcpy(kc_want + (b * L + p) * Hkv * K, kn + b * Hkv * K,
                   (size_t)(Hkv * K) * sizeof(float));
            memcpy(vc_want + (b * L + p) * Hkv * V, vn + b * Hkv * V,
                   (size_t)(Hkv * V) * sizeof(float));
            float *qf = fz_input((size_t)(n * Hq * K), 0, 0);
            memcpy(qf + p * Hq * K, q + b * Hq * K, (size_t)(Hq * K) * sizeof(float));
            double *of = fz_doubles((size_t)(n * Hq * V)), *lf = fz_doubles((size_t)(Hq * n));
            ref_attention(1, n, Hq, Hkv, K, V, scale, 1, qf, kc_want + b * L * Hkv * K,
                          vc_want + b * L * Hkv * V, of, lf, NULL, 0);
            memcpy(ro + b * Hq * V, of + p * Hq * V, (size_t)(Hq * V) * sizeof(double));
            for (int64_t h = 0; h < Hq; h++) rl[b * Hq + h] = lf[h * n + p];
        }
    }
    fz_snapshot();
    const seqk_status st =
        seqk_attention_decode(ctx, B, Hq, Hkv_, K_, V_, max_len, scale, q, kn, vn, kc, vc, lp, o,
                              lse);
    if (!fz_outcome("seqk_attention_decode", st, ok)) return;
    fz_close("o", o, ro, no, 5e-4, 1e-2);
    if (lse) fz_close("lse", lse, rl, (size_t)(Bp * Hq), 5e-4, 1e-2);
    if (memcmp(kc, kc_want, nkc * sizeof(float)) || memcmp(vc, vc_want, nvc * sizeof(float)))
        fz_fail("seqk_attention_decode: the caches after the step are not the old ones with "
                "the new token at cache_len");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size, 0};
    fz_reset();
    seqk_context *ctx = fz_ctx(&in);
    bool ok = true, t;
    const int op = (int)fz_pick(&in, 0, 2); /* parallel, its backward, decode */
    const int64_t B = fz_chance(&in, 6) ? 0 : fz_pick(&in, 1, 3);
    int64_t Hkv = fz_pick(&in, 1, 2), Hq = Hkv * fz_pick(&in, 1, 3);
    if (fz_chance(&in, 6)) Hkv = 0;
    if (Hkv > 1 && fz_chance(&in, 6)) Hq += 1; /* not a multiple */
    int64_t K = fz_pick(&in, 1, 6), V = fz_pick(&in, 1, 6);
    if (fz_chance(&in, 6)) K = 0;
    if (fz_chance(&in, 6)) V = 0;
    ok &= B >= 1 && Hkv >= 1 && K >= 1 && V >= 1 && Hq % (Hkv ? Hkv : 1) == 0;
    const float scale = fz_scale(&in, K, &t);
    ok &= t;
    const int64_t Hkp = Hkv > 0 ? Hkv : 1; /* sizes of the buffers of invalid calls */
    if (op == 2) {
        decode(&in, ctx, B, Hq, Hkv, K, V, scale, ok);
        return 0;
    }
    const int64_t T = fz_chance(&in, 6) ? -1 : fz_pick(&in, 0, 17);
    ok &= T >= 0;
    const unsigned flags = fz_flags(&in, SEQK_ATTN_CAUSAL, &t);
    ok &= t;
    const bool causal = (flags & SEQK_ATTN_CAUSAL) != 0;
    int64_t N;
    const int32_t *cu = fz_varlen(&in, B, T, &N, &ok);
    fz_seed_data(&in);
    const int64_t Bp = B > 0 ? B : 0, Tp = T > 0 ? T : 0, Kp = K > 0 ? K : 0,
                  Vp = V > 0 ? V : 0, rows = Bp * Tp;
    const size_t nq = (size_t)(rows * Hq * Kp), nk = (size_t)(rows * Hkp * Kp),
                 nv = (size_t)(rows * Hkp * Vp), no = (size_t)(rows * Hq * Vp),
                 nl = (size_t)(Bp * Hq * Tp);
    const float *q = fz_input(nq, -2, 2), *k = fz_input(nk, -2, 2), *v = fz_input(nv, -1, 1);
    const bool full = T > 0; /* the pointers are required when T > 0 */
    if (getenv("SEQK_FUZZ_TRACE"))
        fprintf(stderr, "op %d B %lld T %lld Hq %lld Hkv %lld K %lld V %lld flags %u varlen %d "
                "N %lld\n", op, (long long)B, (long long)T, (long long)Hq, (long long)Hkv,
                (long long)K, (long long)V, flags, cu != NULL, (long long)N);
    size_t ws = 0;
    seqk_status wst;

    if (op == 0) {
        float *o = fz_output(no), *lse = fz_chance(&in, 160) ? fz_output(nl) : NULL;
        switch (fz_pick(&in, 0, 15)) {
        case 0:
            if (full && no && nq) o = (float *)q, ok = false;
            break;
        case 1:
            if (full && lse && no) lse = o, ok = false;
            break;
        case 2:
            if (full && no && nv >= 2) o = (float *)v + 1, ok = false;
            break;
        case 3:
            if (full && lse && nl && nk) lse = (float *)k, ok = false;
            break;
        default: break;
        }
        q = fz_maybe_null(&in, q, full, &ok);
        k = fz_maybe_null(&in, k, full, &ok);
        v = fz_maybe_null(&in, v, full, &ok);
        o = (float *)fz_maybe_null(&in, o, full, &ok);
        wst = seqk_attention_parallel_workspace_size(ctx, B, T, Hq, Hkv, K, V, flags,
                                                     cu ? N : 0, &ws);
        fz_workspace(&in, ctx, wst, ws);
        double *ro = NULL, *rl = NULL;
        if (ok) {
            ro = fz_doubles(no), rl = fz_doubles(nl);
            ref_attention(B, T, Hq, Hkv, K, V, scale, causal, q, k, v, ro, rl, cu, N);
        }
        fz_snapshot();
        const seqk_status st = seqk_attention_parallel(ctx, B, T, Hq, Hkv, K, V, scale, flags, q,
                                                       k, v, o, lse, cu, N);
        if (fz_outcome("seqk_attention_parallel", st, ok)) {
            fz_close("o", o, ro, no, 5e-4, 1e-2);
            if (lse) fz_close("lse", lse, rl, nl, 5e-4, 1e-2);
        }
        return 0;
    }

    /* ---- backward: o and lse of the float64 forward (random for an invalid call) ---- */
    const float *o, *lse;
    double *qd = fz_to_double(q, nq), *kd = fz_to_double(k, nk), *vd = fz_to_double(v, nv);
    if (ok) {
        double *od = fz_doubles(no), *ld = fz_doubles(nl);
        ref_attention(B, T, Hq, Hkv, K, V, scale, causal, q, k, v, od, ld, cu, N);
        o = from_double(od, no), lse = from_double(ld, nl);
    } else {
        o = fz_input(no, -1, 1), lse = fz_input(nl, 0, 2);
    }
    const float *dout = fz_input(no, -1, 1);
    float *dq = fz_output(nq), *dk = fz_output(nk), *dv = fz_output(nv);
    switch (fz_pick(&in, 0, 15)) {
    case 0:
        if (full && nk && nq) dk = dq, ok = false;
        break;
    case 1:
        if (full && nv && no) dv = (float *)dout, ok = false;
        break;
    case 2:
        if (full && nq && nl) dq = (float *)lse, ok = false;
        break;
    case 3:
        if (full && nk && no >= 2) dk = (float *)o + 1, ok = false;
        break;
    default: break;
    }
    q = fz_maybe_null(&in, q, full, &ok);
    k = fz_maybe_null(&in, k, full, &ok);
    v = fz_maybe_null(&in, v, full, &ok);
    o = fz_maybe_null(&in, o, full, &ok);
    lse = fz_maybe_null(&in, lse, full, &ok);
    dout = fz_maybe_null(&in, dout, full, &ok);
    dq = (float *)fz_maybe_null(&in, dq, full, &ok);
    dk = (float *)fz_maybe_null(&in, dk, full, &ok);
    dv = (float *)fz_maybe_null(&in, dv, full, &ok);
    wst = seqk_attention_parallel_backward_workspace_size(ctx, B, T, Hq, Hkv, K, V, flags,
                                                          cu ? N : 0, &ws);
    fz_workspace(&in, ctx, wst, ws);
    double *rq = NULL, *rk = NULL, *rv = NULL;
    if (ok) {
        rq = fz_doubles(nq), rk = fz_doubles(nk), rv = fz_doubles(nv);
        ref_attention_backward(B, T, Hq, Hkv, K, V, scale, causal, qd, kd, vd,
                               fz_to_double(dout, no), rq, rk, rv, cu, N);
    }
    fz_snapshot();
    const seqk_status st = seqk_attention_parallel_backward(
        ctx, B, T, Hq, Hkv, K, V, scale, flags, q, k, v, o, lse, dout, dq, dk, dv, cu, N);
    if (!fz_outcome("seqk_attention_parallel_backward", st, ok)) return 0;
    fz_close("dq", dq, rq, nq, 2e-3, 1e-2);
    fz_close("dk", dk, rk, nk, 2e-3, 1e-2);
    fz_close("dv", dv, rv, nv, 2e-3, 1e-2);
    return 0;
}
