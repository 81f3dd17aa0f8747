/* tests/fixtures.c -- see fixtures.h. */
#include "fixtures.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the arrays of one case ----------------------------------------------------- */

tf_arrays tf_arrays_on(th_backend *be)
{
    tf_arrays s;
    memset(&s, 0, sizeof s);
    s.be = be;
    return s;
}

static void *keep(tf_arrays *s, void *p, bool on_backend)
{
    if (s->n == TF_ARRAYS_MAX) {
        fprintf(stderr, "test: more than %d arrays in one tf_arrays\n", TF_ARRAYS_MAX);
        exit(1);
    }
    s->a[s->n].p = p;
    s->a[s->n].on_backend = on_backend;
    s->n++;
    return p;
}

void tf_arrays_free(tf_arrays *s)
{
    for (int i = 0; i < s->n; i++) {
        if (s->a[i].on_backend) th_free(s->be, s->a[i].p);
        else free(s->a[i].p);
    }
    s->n = 0;
}

float *tf_floats(tf_arrays *s, size_t n) { return keep(s, th_floats(n), false); }

float *tf_random(tf_arrays *s, size_t n, double lo, double hi)
{
    float *x = tf_floats(s, n);
    th_fill(x, n, lo, hi);
    return x;
}

double *tf_doubles(tf_arrays *s, size_t n) { return keep(s, th_doubles(n), false); }

void *tf_upload(tf_arrays *s, const void *host, size_t bytes)
{
    return keep(s, th_upload(s->be, host, bytes), true);
}

float *tf_poisoned(tf_arrays *s, size_t n) { return keep(s, th_poisoned(s->be, n), true); }

/* ---- checking an output --------------------------------------------------------- */

void tf_check_result(th_backend *be, float *host, const float *dev, size_t n, const double *ref,
                     double tol, bool past, const char *what, const char *name)
{
    th_download(be, host, dev, (n + (past ? 1 : 0)) * sizeof(float));
    th_check_close(host, ref, n, tol, "%s: %s", what, name);
    if (past) th_check(isnan(host[n]), "%s: nothing written past %s", what, name);
}

bool tf_all_finite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return false;
    return true;
}

/* ---- split == whole --------------------------------------------------------------- */

int tf_split_plan(int64_t T, int64_t s, seqk_mode m1, seqk_mode m2, int64_t decode,
                  tf_segment seg[TF_SPLIT_MAX], char *label, size_t label_size)
{
    snprintf(label, label_size, "split at %lld (%s then %s, %lld decoded in place)", (long long)s,
             th_mode_name(m1), th_mode_name(m2), (long long)decode);
    if (decode > TF_SPLIT_MAX - 2) {
        fprintf(stderr, "test: tf_split_plan decodes at most %d tokens\n", TF_SPLIT_MAX - 2);
        exit(1);
    }
    const int64_t t2 = T - decode; /* the second part ends here */
    int n = 0;
    if (s > 0) seg[n++] = (tf_segment){0, s, m1};
    if (t2 > s) seg[n++] = (tf_segment){s, t2, m2};
    for (int64_t t = t2 > s ? t2 : s; t < T; t++)
        seg[n++] = (tf_segment){t, t + 1, SEQK_MODE_RECURRENT};
    return n;
}

/* ---- workspace ---------------------------------------------------------------------- */

void *tf_workspace_begin(th_backend *be, size_t bytes)
{
    void *buf = bytes ? th_upload(be, NULL, bytes) : NULL;
    const seqk_status st = seqk_context_set_workspace(be->ctx, buf, bytes);
    th_check(st == SEQK_SUCCESS, "%s: the caller workspace of %zu bytes is taken: %s", be->name,
             bytes, st ? seqk_last_error() : "");
    return buf;
}

void tf_workspace_end(th_backend *be, void *buf)
{
    seqk_context_set_workspace(be->ctx, NULL, 0);
    if (buf) th_free(be, buf);
}

/* ---- validation rules ------------------------------------------------------------------ */

void tf_fill_untouched(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = TF_UNTOUCHED;
}

void tf_expect_rejected(seqk_status got, seqk_status want, const char *needle, const char *rule,
                        const float *o, size_t no, const float *s, size_t ns)
{
    char what[200];
    snprintf(what, sizeof what, "validation: %s", rule);
    th_check_status(got, want, what);
    th_check(strstr(seqk_last_error(), needle) != NULL, "validation: %s: message names '%s': %s",
             rule, needle, seqk_last_error());
    bool untouched = true;
    for (size_t i = 0; i < no; i++) untouched &= o[i] == TF_UNTOUCHED;
    for (size_t i = 0; i < ns; i++) untouched &= s[i] == TF_UNTOUCHED;
    th_check(untouched, "validation: %s: outputs untouched", rule);
}

/* ---- inputs of the delta-rule modules ----------------------------------------------------- */

void tf_delta_beta(float *beta, size_t n, int neg)
{
    const double hi = neg ? 2.0 : 1.0;
    th_fill(beta, n, 0, hi);
    for (size_t i = 0; i < n; i++) {
        if (i % 7 == 3) beta[i] = 0.0f; /* the edges of the range */
        if (i % 5 == 1) beta[i] = (float)hi;
        if (neg && i % 11 == 2) beta[i] = 1.0f;
    }
}

void tf_delta_keys(float *k, int64_t rows, int64_t K, int l2)
{
    th_fill(k, (size_t)(rows * K), -1, 1);
    if (l2) {
        for (int64_t i = 0; i < rows * K; i++) k[i] *= 3.0f;
        return;
    }
    for (int64_t r = 0; r < rows; r++) {
        double s = 0.0;
        for (int64_t i = 0; i < K; i++) s += (double)k[r * K + i] * k[r * K + i];
        const double f = th_uniform(0.6, 1.0) / sqrt(s + 1e-30);
        for (int64_t i = 0; i < K; i++) k[r * K + i] = (float)(k[r * K + i] * f);
    }
}

void tf_unit_rows(float *x, int64_t rows, int64_t K)
{
    for (int64_t r = 0; r < rows; r++) {
        double s = 0.0;
        for (int64_t i = 0; i < K; i++) s += (double)x[r * K + i] * x[r * K + i];
        for (int64_t i = 0; i < K; i++) x[r * K + i] = (float)(x[r * K + i] / sqrt(s));
    }
}

const int32_t tf_cu_133[6] = {0, 0, 1, 70, 70, 133};
const int32_t tf_cu_91[4] = {0, 90, 90, 91};

/* ---- dtypes: the tests' own arithmetic (from double, ldexp / nearbyint) ------ */

double tf_dt_unit(seqk_dtype dt) { return dt == SEQK_DTYPE_BF16 ? 0x1p-8 : 0x1p-11; }

/* x rounded to the dtype (nearest, ties to even), as a double. */
double tf_dt_round(seqk_dtype dt, double x)
{
    if (isnan(x) || isinf(x) || x == 0) return x;
    const int p = dt == SEQK_DTYPE_BF16 ? 8 : 11, emin = dt == SEQK_DTYPE_BF16 ? -126 : -14;
    const double maxv = dt == SEQK_DTYPE_BF16 ? ldexp(2.0 - ldexp(1.0, -7), 127) : 65504.0;
    int e;
    (void)frexp(fabs(x), &e); /* |x| = m 2^e, m in [0.5, 1) */
    e -= 1;
    if (e < emin) e = emin;
    const double q = ldexp(1.0, e - (p - 1));
    const double r = nearbyint(fabs(x) / q) * q;
    if (r > maxv) return copysign(INFINITY, x);
    return copysign(r, x);
}

/* The encoding of a value the dtype holds exactly (NaN: the canonical one). */
uint16_t tf_dt_encode(seqk_dtype dt, double x)
{
    const uint16_t sign = signbit(x) ? 0x8000u : 0u;
    const double a = fabs(x);
    if (dt == SEQK_DTYPE_BF16) {
        if (isnan(x)) return 0x7fc0u;
        const float f = (float)x;
        uint32_t u;
        memcpy(&u, &f, 4);
        return (uint16_t)(u >> 16);
    }
    if (isnan(x)) return 0x7e00u;
    if (isinf(x)) return sign | 0x7c00u;
    if (a == 0) return sign;
    if (a < ldexp(1.0, -14)) return sign | (uint16_t)(a / ldexp(1.0, -24));
    int e;
    const double m = frexp(a, &e); /* a = m 2^e */
    return sign | (uint16_t)((e - 1 + 15) << 10) | (uint16_t)(m * 2048.0 - 1024.0);
}

double tf_dt_decode(seqk_dtype dt, uint16_t h)
{
    if (dt == SEQK_DTYPE_BF16) {
        const uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    const double s = (h & 0x8000u) ? -1.0 : 1.0;
    if (e == 31) return m ? NAN : s * INFINITY;
    if (e == 0) return s * ldexp((double)m, -24);
    return s * ldexp(1024.0 + m, e - 25);
}
