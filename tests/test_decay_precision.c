/* tests/test_decay_precision.c -- the chunked (parallel) modes under strong
 * decay (issue #19): the error of the output and of the final state against
 * the float64 token loops, as a function of the per-token log-gate's
 * magnitude, for every op whose parallel mode forms decays from the
 * cumulative log-gate of a chunk: gated retention, Mamba2 (log-gate dt A)
 * and gated DeltaNet. The recurrent mode's error on the same inputs is
 * printed beside it (it multiplies one decay per token and has no
 * cumulative sum to lose digits in).
 *
 * The bound checked is the one seqk.h states for the parallel modes: a
 * relative error under TOL for any log-gates (finite, <= 0), whatever their
 * magnitude. Before the fix of #19 the cumulative log-gate of a chunk was a
 * float sum, whose rounding (an ulp of |G|, i.e. |G| * 6e-8) went straight
 * into every decay exp(G_i - G_j): 1.5e-5 with gates in [-15, 0] and 5e-3
 * with gates in [-1000, 0] (the sweep's "before" column in the issue note).
 *
 * Run with -v to see every error. */
#include "fixtures.h"
#include "ref/ref_deltanet.h"
#include "ref/ref_linear.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-6 /* seqk.h: both modes' relative error here, for any log-gates */

enum op { GATED, MAMBA2, DELTANET, NOPS };
static const char *op_name[NOPS] = {"gated_retention", "mamba2", "gated_deltanet"};

/* Per-token log-gates drawn from [lo, hi]. */
typedef struct {
    double lo, hi;
} grange;

static const grange ranges[] = {{-0.01, 0.0}, {-1.0, 0.0},      {-15.0, 0.0},
                                {-21.0, -19.0}, {-1000.0, 0.0}, {-1001.0, -999.0}};
enum { NRANGES = sizeof ranges / sizeof ranges[0] };

enum { B = 2, T = 300, H = 2, K = 32, V = 24 };
static const int64_t chunks[] = {64, 256};

typedef struct {
    float *q, *k, *v, *g, *beta, *A, *s0;
    double *ro, *rs;
    size_t nq, nv, ng, ns;
} inputs;

static void make_inputs(tf_arrays *h, int op, const grange *r, inputs *in)
{
    in->nq = (size_t)B * T * H * K, in->nv = (size_t)B * T * H * V, in->ng = (size_t)B * T * H;
    in->ns = (size_t)B * H * K * V;
    in->q = tf_random(h, in->nq, -1, 1);
    in->k = tf_random(h, in->nq, -1, 1);
    in->v = tf_random(h, in->nv, -1, 1);
    in->s0 = tf_random(h, in->ns, -0.5, 0.5);
    in->beta = tf_random(h, in->ng, 0, 1);
    in->A = tf_floats(h, H);
    for (int i = 0; i < H; i++) in->A[i] = -1.0f;
    /* the log-gates; Mamba2's dt (no softplus) is their magnitude, A = -1 */
    in->g = tf_random(h, in->ng, op == MAMBA2 ? -r->hi : r->lo, op == MAMBA2 ? -r->lo : r->hi);
    in->ro = tf_doubles(h, in->nv);
    in->rs = tf_doubles(h, in->ns);
    const double scale = 1.0 / sqrt((double)K);
    if (op == GATED) {
        ref_decay dec = {2, NULL, in->g};
        ref_linear_state(B, T, H, K, V, scale, 0, 0, dec, in->q, in->k, in->v, in->s0, NULL,
                         in->ro, in->rs, NULL, NULL, 0);
    } else if (op == MAMBA2) { /* q = C, k = B with one group per head, P = V, Nst = K */
        ref_mamba2(B, T, H, V, H, K, 0, in->v, in->g, in->A, in->k, in->q, NULL, NULL, in->s0,
                   in->ro, in->rs, NULL, 0);
    } else {
        ref_deltanet(B, T, H, K, V, scale, 1, in->q, in->k, in->v, in->beta, in->g, in->s0,
                     in->ro, in->rs, NULL, 0);
    }
}

static seqk_status call(seqk_context *ctx, int op, seqk_mode mode, int64_t chunk, const float *q,
                        const float *k, const float *v, const float *g, const float *beta,
                        const float *A, const float *s0, float *o, float *s1)
{
    const float scale = (float)(1.0 / sqrt((double)K));
    switch (op) {
    case GATED:
        return seqk_gated_retention(ctx, mode, B, T, H, K, V, scale, q, k, v, g, o, s0, s1, NULL,
                                    0, chunk);
    case MAMBA2:
        return seqk_mamba2(ctx, mode, B, T, H, V, H, K, 0, v, g, A, k, q, NULL, NULL, o, s0, s1,
                           NULL, 0, chunk);
    default:
        return seqk_deltanet(ctx, mode, B, T, H, K, V, scale, SEQK_DELTANET_L2NORM_QK, q, k, v,
                             beta, g, o, s0, s1, NULL, 0, chunk);
    }
}

/* One op, one gate range, both modes on be: errors of o and of the final state. */
static void sweep_case(th_backend *be, int op, const grange *r, int64_t chunk)
{
    char what[160];
    snprintf(what, sizeof what, "%s %s g~U[%g,%g] B=%d T=%d H=%d K=%d V=%d chunk=%lld", be->name,
             op_name[op], r->lo, r->hi, B, T, H, K, V, (long long)chunk);
    if (th_skipped(be, what)) return;
    tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
    inputs in;
    make_inputs(&h, op, r, &in);
    float *q = tf_upload(&d, in.q, in.nq * 4), *k = tf_upload(&d, in.k, in.nq * 4);
    float *v = tf_upload(&d, in.v, in.nv * 4), *g = tf_upload(&d, in.g, in.ng * 4);
    float *beta = tf_upload(&d, in.beta, in.ng * 4), *A = tf_upload(&d, in.A, H * 4);
    float *s0 = tf_upload(&d, in.s0, in.ns * 4);
    float *ho = tf_floats(&h, in.nv), *hs = tf_floats(&h, in.ns);
    double err_o[2], err_s[2];
    for (int m = 0; m < 2; m++) {
        const seqk_mode mode = m ? SEQK_MODE_PARALLEL : SEQK_MODE_RECURRENT;
        th_poison(ho, in.nv), th_poison(hs, in.ns);
        float *o_m = tf_poisoned(&d, in.nv), *s_m = tf_poisoned(&d, in.ns);
        seqk_status st = call(be->ctx, op, mode, chunk, q, k, v, g, beta, A, s0, o_m, s_m);
        char w2[200];
        snprintf(w2, sizeof w2, "%s %s: status", what, th_mode_name(mode));
        if (!th_check_status(st, SEQK_SUCCESS, w2)) {
            err_o[m] = err_s[m] = INFINITY;
            continue;
        }
        th_download(be, ho, o_m, in.nv * 4);
        th_download(be, hs, s_m, in.ns * 4);
        err_o[m] = th_rel_err(ho, in.ro, in.nv);
        err_s[m] = th_rel_err(hs, in.rs, in.ns);
    }
    printf("  %-5s %-16s chunk %3lld g~U[%7g,%5g]  o: parallel %.2e recurrent %.2e   state: "
           "parallel %.2e recurrent %.2e\n",
           be->name, op_name[op], (long long)chunk, r->lo, r->hi, err_o[1], err_o[0], err_s[1],
           err_s[0]);
    th_check(err_o[1] <= TOL, "%s: parallel o rel err %.3g <= %g", what, err_o[1], TOL);
    th_check(err_s[1] <= TOL, "%s: parallel final state rel err %.3g <= %g", what, err_s[1], TOL);
    th_check(err_o[0] <= TOL, "%s: recurrent o rel err %.3g <= %g", what, err_o[0], TOL);
    th_check(err_s[0] <= TOL, "%s: recurrent final state rel err %.3g <= %g", what, err_s[0],
             TOL);
    tf_arrays_free(&d);
    tf_arrays_free(&h);
}

int main(int argc, char **argv)
{
    th_backend *bes;
    const int nb = th_init(argc, argv, &bes);
    printf("relative error against the float64 token loop, per-token log-gates g ~ U[lo, hi]\n");
    for (int b = 0; b < nb; b++)
        for (int op = 0; op < NOPS; op++)
            for (int c = 0; c < 2; c++)
                for (int r = 0; r < NRANGES; r++) {
                    th_seed(1900 + (uint64_t)(op * 16 + r));
                    sweep_case(&bes[b], op, &ranges[r], chunks[c]);
                }
    return th_finish();
}
