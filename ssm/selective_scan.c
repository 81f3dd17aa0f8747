/*
 * ssm/selective_scan.c -- the Mamba selective scan (Mamba1), DESIGN 3.2, CPU.
 *
 *   dt_t[d]  = softplus(dt_raw_t[d] + dt_bias[d])            (optional softplus)
 *   h_t[d,n] = exp(dt_t[d] A[d,n]) h_{t-1}[d,n] + dt_t[d] B_t[g,n] u_t[d]
 *   y_t[d]   = sum_n C_t[g,n] h_t[d,n] + Dskip[d] u_t[d],  then * silu(z_t[d])
 *
 * Work items are (sequence, tile of DT channels of one group); the state of an
 * item, DT x Nst floats, stays in L1/L2 while it walks its tokens.
 *
 * Recurrent mode: token by token; per token and channel the Nst coefficients
 * exp(dt A) are formed, the state updated and reduced with C in one pass.
 * Parallel mode: the scan primitive over time chunks of TC tokens: the
 * chunk's coefficients a = exp(dt A) and inputs b = dt B u, [TC, DT*Nst],
 * are formed in a cache-resident scratch, seqk__scan_rows runs the
 * recurrence in place carrying the chunk-end state, and y is reduced with C
 * from the scratch. h is never stored for every token.
 */
#include "../core/vmath.h"
#include "../scan/scan.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

enum {
    DT = 16,            /* channels per work item */
    TC = 64,            /* tokens per chunk of the parallel mode */
    MAX_NST = 256       /* largest state size (the recurrent state tile lives on the stack) */
};

static const char FN[] = "seqk_selective_scan";

typedef struct {
    int64_t B, T, D, Nst, G, N;
    const int32_t *cu; /* host cu_seqlens or NULL */
    unsigned flags;
    const float *u, *dt, *A, *Bm, *Cm, *Dskip, *z, *dt_bias;
    float *y;
    const float *s_in;
    float *s_out;
} sscan;

static void seq_range(const sscan *P, int64_t n, int64_t *r0, int64_t *len)
{
    *r0 = P->cu ? P->cu[n] : n * P->T;
    *len = P->cu ? (int64_t)P->cu[n + 1] - P->cu[n] : P->T;
}

static float step_size(const sscan *P, int64_t r, int64_t d)
{
    const float x = P->dt[r * P->D + d] + (P->dt_bias ? P->dt_bias[d] : 0.0f);
    return (P->flags & SEQK_SSCAN_DT_SOFTPLUS) ? seqk__softplus(x) : x;
}

/* y_t[d] from the reduction sum_n C h: adds the skip and the gate, stores. */
static void finish_output(const sscan *P, int64_t r, int64_t d, float acc)
{
    const float ud = P->u[r * P->D + d];
    float yv = acc + (P->Dskip ? P->Dskip[d] * ud : 0.0f);
    if (P->z) yv *= seqk__silu(P->z[r * P->D + d]);
    P->y[r * P->D + d] = yv;
}

/* The state tile of an item, [w, Nst], from state_in (or zeros). */
static void load_state(const sscan *P, int64_t n, int64_t d0, int64_t w, float *h)
{
    const int64_t Ns = P->Nst;
    if (P->s_in) memcpy(h, P->s_in + (n * P->D + d0) * Ns, (size_t)(w * Ns) * sizeof(float));
    else memset(h, 0, (size_t)(w * Ns) * sizeof(float));
}

static void store_state(const sscan *P, int64_t n, int64_t d0, int64_t w, const float *h)
{
    if (P->s_out)
        memcpy(P->s_out + (n * P->D + d0) * P->Nst, h, (size_t)(w * P->Nst) * sizeof(float));
}

/* exp(x * A[0..Ns)) into out. */
static void exp_scaled(int64_t Ns, float x, const float *A, float *out)
{
    int64_t n = 0;
#ifdef __AVX2__
    const __m256 vx = _mm256_set1_ps(x);
    for (; n + 8 <= Ns; n += 8)
        _mm256_storeu_ps(out + n, seqk__exp8(_mm256_mul_ps(vx, _mm256_loadu_ps(A + n))));
#endif
    for (; n < Ns; n++) out[n] = expf(x * A[n]);
}

/* ---- recurrent mode ----------------------------------------------------------- */

/* One token of one channel: h[n] = exp(dt A[n]) h[n] + x B[n]; returns sum_n C[n] h[n].
 * dA is [Nst] scratch for the scalar tail. */
static float update_and_read(int64_t Ns, float dtv, float x, const float *A, const float *Bt,
                             const float *Ct, float *h, float *dA)
{
    int64_t s = 0;
    float acc = 0.0f;
#ifdef __AVX2__
    const __m256 vdt = _mm256_set1_ps(dtv), vx = _mm256_set1_ps(x);
    __m256 vacc = _mm256_setzero_ps();
    for (; s + 8 <= Ns; s += 8) {
        const __m256 a = seqk__exp8(_mm256_mul_ps(vdt, _mm256_loadu_ps(A + s)));
        const __m256 hv = _mm256_fmadd_ps(a, _mm256_loadu_ps(h + s),
                                          _mm256_mul_ps(vx, _mm256_loadu_ps(Bt + s)));
        _mm256_storeu_ps(h + s, hv);
        vacc = _mm256_fmadd_ps(_mm256_loadu_ps(Ct + s), hv, vacc);
    }
    acc = seqk__hsum8(vacc);
#endif
    if (s < Ns) {
        exp_scaled(Ns - s, dtv, A + s, dA);
        for (int64_t j = 0; s + j < Ns; j++) {
            h[s + j] = dA[j] * h[s + j] + x * Bt[s + j];
            acc += Ct[s + j] * h[s + j];
        }
    }
    return acc;
}

static void item_recurrent(const sscan *P, int64_t n, int64_t d0, int64_t w)
{
    const int64_t Ns = P->Nst, g = d0 / (P->D / P->G);
    float h[DT * MAX_NST], dA[MAX_NST];
    int64_t r0, len;
    seq_range(P, n, &r0, &len);
    load_state(P, n, d0, w, h);
    for (int64_t r = r0; r < r0 + len; r++) {
        const float *Bt = P->Bm + (r * P->G + g) * Ns, *Ct = P->Cm + (r * P->G + g) * Ns;
        for (int64_t j = 0; j < w; j++) {
            const int64_t d = d0 + j;
            const float dtv = step_size(P, r, d), x = dtv * P->u[r * P->D + d];
            float *hd = h + j * Ns;
            finish_output(P, r, d, update_and_read(Ns, dtv, x, P->A + d * Ns, Bt, Ct, hd, dA));
        }
    }
    store_state(P, n, d0, w, h);
}

/* ---- parallel mode -------------------------------------------------------------- */

/* Per-thread scratch: a and b of one chunk, [TC, DT*Nst] each, and the carry. */
static size_t scratch_floats(int64_t Nst) { return (size_t)(2 * TC * DT * Nst + DT * Nst + 16); }

static void item_parallel(const sscan *P, int64_t n, int64_t d0, int64_t w, float *scratch)
{
    const int64_t Ns = P->Nst, g = d0 / (P->D / P->G), E = w * Ns; /* state elements */
    float *a = scratch, *b = a + TC * DT * Ns, *carry = b + TC * DT * Ns;
    int64_t r0, len;
    seq_range(P, n, &r0, &len);
    load_state(P, n, d0, w, carry);
    for (int64_t c0 = 0; c0 < len; c0 += TC) {
        const int64_t L = len - c0 < TC ? len - c0 : TC;
        /* a [L, E] = exp(dt A), b [L, E] = dt B u */
        for (int64_t i = 0; i < L; i++) {
            const int64_t r = r0 + c0 + i;
            const float *Bt = P->Bm + (r * P->G + g) * Ns;
            for (int64_t j = 0; j < w; j++) {
                const int64_t d = d0 + j;
                const float dtv = step_size(P, r, d), x = dtv * P->u[r * P->D + d];
                exp_scaled(Ns, dtv, P->A + d * Ns, a + i * E + j * Ns);
                float *bi = b + i * E + j * Ns;
                for (int64_t s = 0; s < Ns; s++) bi[s] = x * Bt[s];
            }
        }
        /* h over the chunk, in place of b, from the carried state */
        seqk__scan_rows(L, E, 1, 0, a, E, b, E, b, E, carry);
        /* y = C h + skip, gate */
        for (int64_t i = 0; i < L; i++) {
            const int64_t r = r0 + c0 + i;
            const float *Ct = P->Cm + (r * P->G + g) * Ns;
            for (int64_t j = 0; j < w; j++) {
                finish_output(P, r, d0 + j, seqk__dot(Ct, b + i * E + j * Ns, Ns));
            }
        }
    }
    store_state(P, n, d0, w, carry);
}

/* ---- validation and dispatch -------------------------------------------------------- */

seqk_status seqk_selective_scan(seqk_context *ctx, seqk_mode mode, int64_t B, int64_t T,
                                int64_t D, int64_t Nst, int64_t G, unsigned flags, const float *u,
                                const float *dt, const float *A, const float *Bm, const float *Cm,
                                const float *Dskip, const float *z, const float *dt_bias,
                                float *y, const float *state_in, float *state_out,
                                const int32_t *cu_seqlens, int64_t N)
{
    seqk_status st;
    if ((st = seqk__check_ctx(FN, ctx))) return st;
    if (mode != SEQK_MODE_RECURRENT && mode != SEQK_MODE_PARALLEL)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: mode=%d is not a seqk_mode", FN,
                          (int)mode);
    if ((st = seqk__check_min(FN, "B", B, 1))) return st;
    if ((st = seqk__check_min(FN, "T", T, 0))) return st;
    if ((st = seqk__check_min(FN, "D", D, 1))) return st;
    if ((st = seqk__check_min(FN, "Nst", Nst, 1))) return st;
    if (Nst > MAX_NST)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: Nst=%" PRId64 ", at most %d is supported",
                          FN, Nst, MAX_NST);
    if ((st = seqk__check_range(FN, "G", G, 1, D))) return st;
    if (D % G)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                          "%s: D=%" PRId64 " is not a multiple of G=%" PRId64, FN, D, G);
    if (flags & ~SEQK_SSCAN_DT_SOFTPLUS)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: flags=0x%x has unknown bits 0x%x", FN,
                          flags, flags & ~SEQK_SSCAN_DT_SOFTPLUS);
    const int64_t d_bc[4] = {B, T, G, Nst}, d_s[3] = {cu_seqlens ? N : B, D, Nst};
    const int64_t d_u[3] = {B, T, D};
    if ((st = seqk__check_numel(FN, "u [B,T,D]", 3, d_u, sizeof(float), NULL))) return st;
    if ((st = seqk__check_numel(FN, "Bm [B,T,G,Nst]", 4, d_bc, sizeof(float), NULL))) return st;
    if (cu_seqlens && (st = seqk__check_min(FN, "N", N, 1))) return st;
    if ((st = seqk__check_numel(FN, "state [N,D,Nst]", 3, d_s, sizeof(float), NULL))) return st;
    if (!cu_seqlens) N = B;
    const int64_t rows = B * T;
    if (rows > 0) {
        const struct { const void *p; const char *name; } req[] = {
            {u, "u"}, {dt, "dt"}, {A, "A"}, {Bm, "Bm"}, {Cm, "Cm"}, {y, "y"}};
        for (size_t i = 0; i < sizeof req / sizeof req[0]; i++)
            if ((st = seqk__check_ptr(FN, req[i].name, req[i].p))) return st;
        const size_t yb = (size_t)(rows * D) * sizeof(float), bcb = (size_t)(rows * G * Nst) * 4;
        const struct { const void *p; size_t bytes; const char *name; } in[] = {
            {u, yb, "u"}, {dt, yb, "dt"}, {z, yb, "z"}, {Bm, bcb, "Bm"}, {Cm, bcb, "Cm"},
            {A, (size_t)(D * Nst) * 4, "A"}, {Dskip, (size_t)D * 4, "Dskip"},
            {dt_bias, (size_t)D * 4, "dt_bias"}};
        for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
            if (in[i].p && seqk__overlap(y, yb, in[i].p, in[i].bytes))
                return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: y=%p overlaps %s=%p", FN,
                                  (void *)y, in[i].name, in[i].p);
    }
    const size_t sb = (size_t)(N * D * Nst) * sizeof(float);
    if ((st = seqk__check_state_io(FN, state_in, state_out, sb, "y", y,
                                   (size_t)(rows * D) * sizeof(float))))
        return st;
    if (ctx->backend != SEQK_BACKEND_CPU)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED,
                          "%s: the CUDA backend of the selective scan is not built yet "
                          "(backend=CUDA)",
                          FN);
    int32_t *cu_host = NULL;
    if (cu_seqlens) {
        if ((st = seqk__copy_cu_seqlens(FN, ctx, cu_seqlens, N, B, T, &cu_host))) return st;
    }
    const sscan P = {B, T, D, Nst, G, N, cu_host, flags, u, dt, A, Bm, Cm, Dskip, z, dt_bias,
                     y, state_in, state_out};
    const int threads = seqk__threads(ctx);
    /* items: (sequence, tile of <= DT channels inside one group) */
    const int64_t per_group = D / G, tiles_per_group = (per_group + DT - 1) / DT;
    const int64_t items = N * G * tiles_per_group;
    float *ws = NULL;
    if (mode == SEQK_MODE_PARALLEL &&
        (st = seqk__workspace(FN, ctx, scratch_floats(Nst) * (size_t)threads * sizeof(float),
                              (void **)&ws))) {
        free(cu_host);
        return st;
    }
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t it = 0; it < items; it++) {
        const int64_t n = it / (G * tiles_per_group), gt = it % (G * tiles_per_group);
        const int64_t d0 = (gt / tiles_per_group) * per_group + (gt % tiles_per_group) * DT;
        const int64_t gend = (gt / tiles_per_group + 1) * per_group;
        const int64_t w = gend - d0 < DT ? gend - d0 : DT;
        if (mode == SEQK_MODE_RECURRENT) item_recurrent(&P, n, d0, w);
        else item_parallel(&P, n, d0, w, ws + scratch_floats(Nst) * (size_t)seqk__omp_thread());
    }
    free(cu_host);
    return SEQK_SUCCESS;
}
