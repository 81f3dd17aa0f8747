/*
 * tests/mpi/test_mpi_context_parallel.c -- split == whole for the context-
 * parallel ops of libseqk_mpi (seqk_mpi.h): linear attention, retention,
 * gated retention, Mamba2, DeltaNet and gated DeltaNet, forward and
 * backward. Run under mpiexec (CTest: 4 ranks).
 *
 * Every rank builds the same whole-sequence inputs (same seed); rank 0
 * computes the single-process call on the whole sequence (the reference:
 * the single-process ops are checked against float64 in the other tests);
 * every rank then runs the split call on its slice; rank 0 gathers the
 * slices' outputs and gradients and compares them, with the final state
 * and the initial state's gradient, to relative error 1e-5. Outputs are
 * poisoned (NaN) before every call.
 *
 * Cases: one sequence of 1,048,576 tokens (B = 1, H = 2, K = V = 16;
 * SEQK_MPI_TEST_T overrides) split evenly, with an initial state and a
 * final-state gradient; gates chosen so that a slice's transition keeps
 * O(1) of the incoming state (g ~ -1e-5, DeltaNet's beta ~ 1e-4: else the
 * state passing would be invisible after 2^18 tokens). Then 10,000 tokens
 * split unevenly with an empty rank and a one-token rank, strong gates, no
 * initial state, the recurrent mode for the forward.
 */
#include "fixtures.h"
#include "mpi_util.h"
#include "seqk_mpi.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum op { OP_LINATTN, OP_RETENTION, OP_GATED, OP_MAMBA2, OP_DELTANET, OP_GATED_DELTANET };

typedef struct tcase {
    enum op op;
    const char *name;
    seqk_mode mode;
    int64_t H, Hqk, K, V, chunk;
    unsigned flags;
    float scale;
    double g_lo, beta_hi;  /* log-gates in [g_lo, 0]; DeltaNet's beta in [0, beta_hi] */
    bool with_state;       /* initial state and final-state gradient given */
    const float *gamma, *A, *D, *dt_bias; /* per-head constants */
} tcase;

/* One call's arrays: inputs already at the slice, outputs of the slice. */
typedef struct io {
    int64_t T;
    const float *q, *k, *v, *g, *beta, *dout;
    const float *s_in, *z_in, *ds_out, *dz_out;
    float *o, *s_out, *z_out;
    float *dq, *dk, *dv, *dg, *dbeta, *dA, *dD, *ddtb, *ds_in, *dz_in;
} io;

static bool norm(const tcase *c) { return c->op == OP_LINATTN && (c->flags & SEQK_LINATTN_NORMALIZE); }
static bool gated(const tcase *c) { return c->op == OP_GATED || c->op == OP_MAMBA2 || c->op == OP_GATED_DELTANET; }
static bool delta(const tcase *c) { return c->op == OP_DELTANET || c->op == OP_GATED_DELTANET; }

/* The forward: single-process (split = false) or over MPI_COMM_WORLD. */
static seqk_status fwd(seqk_context *ctx, const tcase *c, bool split, const io *x)
{
    const MPI_Comm w = MPI_COMM_WORLD;
    const int64_t H = c->H, K = c->K, V = c->V, T = x->T;
    switch (c->op) {
    case OP_LINATTN:
        return split ? seqk_mpi_linear_attention(ctx, w, c->mode, 1, T, H, K, V, c->scale, c->flags, x->q, x->k, x->v, x->o, x->s_in, x->s_out, x->z_in, x->z_out, c->chunk)
                     : seqk_linear_attention(ctx, c->mode, 1, T, H, K, V, c->scale, c->flags, x->q, x->k, x->v, x->o, x->s_in, x->s_out, x->z_in, x->z_out, NULL, 0, c->chunk);
    case OP_RETENTION:
        return split ? seqk_mpi_retention(ctx, w, c->mode, 1, T, H, K, V, c->scale, c->gamma, x->q, x->k, x->v, x->o, x->s_in, x->s_out, c->chunk)
                     : seqk_retention(ctx, c->mode, 1, T, H, K, V, c->scale, c->gamma, x->q, x->k, x->v, x->o, x->s_in, x->s_out, NULL, 0, c->chunk);
    case OP_GATED:
        return split ? seqk_mpi_gated_retention(ctx, w, c->mode, 1, T, H, K, V, c->scale, x->q, x->k, x->v, x->g, x->o, x->s_in, x->s_out, c->chunk)
                     : seqk_gated_retention(ctx, c->mode, 1, T, H, K, V, c->scale, x->q, x->k, x->v, x->g, x->o, x->s_in, x->s_out, NULL, 0, c->chunk);
    case OP_MAMBA2:
        return split ? seqk_mpi_mamba2(ctx, w, c->mode, 1, T, H, V, c->Hqk, K, c->flags, x->v, x->g, c->A, x->k, x->q, c->D, c->dt_bias, x->o, x->s_in, x->s_out, c->chunk)
                     : seqk_mamba2(ctx, c->mode, 1, T, H, V, c->Hqk, K, c->flags, x->v, x->g, c->A, x->k, x->q, c->D, c->dt_bias, x->o, x->s_in, x->s_out, NULL, 0, c->chunk);
    case OP_DELTANET:
    case OP_GATED_DELTANET:
        return split ? seqk_mpi_deltanet(ctx, w, c->mode, 1, T, H, K, V, c->scale, c->flags, x->q, x->k, x->v, x->beta, x->g, x->o, x->s_in, x->s_out, c->chunk)
                     : seqk_deltanet(ctx, c->mode, 1, T, H, K, V, c->scale, c->flags, x->q, x->k, x->v, x->beta, x->g, x->o, x->s_in, x->s_out, NULL, 0, c->chunk);
    }
    return SEQK_ERROR_INTERNAL;
}

static seqk_status bwd(seqk_context *ctx, const tcase *c, bool split, const io *x)
{
    const MPI_Comm w = MPI_COMM_WORLD;
    const int64_t H = c->H, K = c->K, V = c->V, T = x->T;
    switch (c->op) {
    case OP_LINATTN:
        return split ? seqk_mpi_linear_attention_backward(ctx, w, 1, T, H, K, V, c->scale, c->flags, x->q, x->k, x->v, x->dout, x->s_in, x->z_in, x->ds_out, x->dz_out, x->dq, x->dk, x->dv, x->ds_in, x->dz_in, c->chunk)
                     : seqk_linear_attention_backward(ctx, 1, T, H, K, V, c->scale, c->flags, x->q, x->k, x->v, x->dout, x->s_in, x->z_in, x->ds_out, x->dz_out, x->dq, x->dk, x->dv, x->ds_in, x->dz_in, NULL, 0, c->chunk);
    case OP_RETENTION:
        return split ? seqk_mpi_retention_backward(ctx, w, 1, T, H, K, V, c->scale, c->gamma, x->q, x->k, x->v, x->dout, x->s_in, x->ds_out, x->dq, x->dk, x->dv, x->ds_in, c->chunk)
                     : seqk_retention_backward(ctx, 1, T, H, K, V, c->scale, c->gamma, x->q, x->k, x->v, x->dout, x->s_in, x->ds_out, x->dq, x->dk, x->dv, x->ds_in, NULL, 0, c->chunk);
    case OP_GATED:
        return split ? seqk_mpi_gated_retention_backward(ctx, w, 1, T, H, K, V, c->scale, x->q, x->k, x->v, x->g, x->dout, x->s_in, x->ds_out, x->dq, x->dk, x->dv, x->dg, x->ds_in, c->chunk)
                     : seqk_gated_retention_backward(ctx, 1, T, H, K, V, c->scale, x->q, x->k, x->v, x->g, x->dout, x->s_in, x->ds_out, x->dq, x->dk, x->dv, x->dg, x->ds_in, NULL, 0, c->chunk);
    case OP_MAMBA2:
        return split ? seqk_mpi_mamba2_backward(ctx, w, 1, T, H, V, c->Hqk, K, c->flags, x->v, x->g, c->A, x->k, x->q, c->D, c->dt_bias, x->s_in, x->dout, x->ds_out, x->dv, x->dg, x->dA, x->dk, x->dq, x->dD, x->ddtb, x->ds_in, c->chunk)
                     : seqk_mamba2_backward(ctx, 1, T, H, V, c->Hqk, K, c->flags, x->v, x->g, c->A, x->k, x->q, c->D, c->dt_bias, x->s_in, x->dout, x->ds_out, x->dv, x->dg, x->dA, x->dk, x->dq, x->dD, x->ddtb, x->ds_in, NULL, 0, c->chunk);
    case OP_DELTANET:
    case OP_GATED_DELTANET:
        return split ? seqk_mpi_deltanet_backward(ctx, w, 1, T, H, K, V, c->scale, c->flags, x->q, x->k, x->v, x->beta, x->g, x->s_in, x->dout, x->ds_out, x->dq, x->dk, x->dv, x->dbeta, x->dg, x->ds_in, c->chunk)
                     : seqk_deltanet_backward(ctx, 1, T, H, K, V, c->scale, c->flags, x->q, x->k, x->v, x->beta, x->g, x->s_in, x->dout, x->ds_out, x->dq, x->dk, x->dv, x->dbeta, x->dg, x->ds_in, NULL, 0, c->chunk);
    }
    return SEQK_ERROR_INTERNAL;
}

/* Output arrays of a call for T tokens (poisoned), host memory. */
static void outputs(tf_arrays *A, const tcase *c, int64_t T, io *x)
{
    const size_t nq = (size_t)(T * c->Hqk * c->K), nv = (size_t)(T * c->H * c->V),
                 ng = (size_t)(T * c->H), nS = (size_t)(c->H * c->K);
    float **outs[13] = {&x->o, &x->dq, &x->dk, &x->dv, &x->dg, &x->dbeta, &x->dA, &x->dD, &x->ddtb,
                        &x->s_out, &x->ds_in, &x->z_out, &x->dz_in};
    const size_t n[13] = {nv, nq, nq, nv, ng, ng, (size_t)c->H, (size_t)c->H, (size_t)c->H,
                          nS * c->V, nS * c->V, nS, nS};
    const bool on[13] = {true, true, true, true, gated(c), delta(c), c->op == OP_MAMBA2,
                         c->op == OP_MAMBA2 && c->D, c->op == OP_MAMBA2 && c->dt_bias, true, true,
                         norm(c), norm(c)};
    for (int i = 0; i < 13; i++) {
        *outs[i] = NULL;
        if (!on[i]) continue;
        *outs[i] = tf_floats(A, n[i] ? n[i] : 1);
        th_poison(*outs[i], n[i] ? n[i] : 1);
    }
}

static void run_case(seqk_context *ctx, const tcase *c, const tm_split *sp)
{
    tf_arrays A = tf_arrays_on(NULL), Aref = tf_arrays_on(NULL), Ax = tf_arrays_on(NULL),
              Aall = tf_arrays_on(NULL);
    const int64_t T = sp->T, H = c->H, K = c->K, V = c->V;
    const int64_t pq = c->Hqk * K, pv = H * V, pg = H; /* floats per token */
    const size_t nS = (size_t)(H * K);
    char what[256];
    snprintf(what, sizeof what, "%s %s, %s", c->name, th_mode_name(c->mode), sp->label);
    th_seed(1234 + (uint64_t)c->op);
    /* whole-sequence inputs, the same on every rank */
    float *q = tf_random(&A, (size_t)(T * pq), -1, 1), *k = tf_random(&A, (size_t)(T * pq), -1, 1);
    float *v = tf_random(&A, (size_t)(T * pv), -1, 1), *dout = tf_random(&A, (size_t)(T * pv), -1, 1);
    float *g = NULL, *beta = NULL;
    if (delta(c)) {
        tf_unit_rows(k, T * H, K);
        beta = tf_random(&A, (size_t)(T * pg), 0, c->beta_hi);
    }
    if (gated(c)) {
        g = tf_random(&A, (size_t)(T * pg), c->g_lo, 0);
        if (c->op == OP_MAMBA2) /* raw dt: any sign through the softplus, else >= 0 */
            th_fill(g, (size_t)(T * pg), (c->flags & SEQK_MAMBA2_DT_SOFTPLUS) ? -3 : 0, 1);
    }
    float *s0 = NULL, *z0 = NULL, *dsT = NULL, *dzT = NULL;
    if (c->with_state) {
        s0 = tf_random(&A, nS * V, -1, 1);
        dsT = tf_random(&A, nS * V, -1, 1);
        if (norm(c)) {
            z0 = tf_random(&A, nS, 0, 1);
            dzT = tf_random(&A, nS, -1, 1);
        }
    }
    /* the reference on rank 0 */
    io ref = {.T = T, .q = q, .k = k, .v = v, .g = g, .beta = beta, .dout = dout, .s_in = s0,
              .z_in = z0, .ds_out = dsT, .dz_out = dzT};
    if (tm_rank == 0) {
        outputs(&Aref, c, T, &ref);
        seqk_status st = fwd(ctx, c, false, &ref);
        if (st == SEQK_SUCCESS) st = bwd(ctx, c, false, &ref);
        if (st != SEQK_SUCCESS) {
            th_check(false, "%s: reference: %s", what, seqk_last_error());
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
    }
    tm_quiet_barrier();
    /* the split call on this rank's slice */
    const int64_t o0 = sp->off[tm_rank], Tl = sp->len[tm_rank];
    io x = {.T = Tl, .q = q + o0 * pq, .k = k + o0 * pq, .v = v + o0 * pv, .g = g ? g + o0 * pg : NULL,
            .beta = beta ? beta + o0 * pg : NULL, .dout = dout + o0 * pv, .s_in = s0, .z_in = z0,
            .ds_out = dsT, .dz_out = dzT};
    outputs(&Ax, c, Tl, &x);
    if (Tl == 0) { /* an empty slice may pass NULL for every per-token array */
        x.q = x.k = x.v = x.g = x.beta = x.dout = NULL;
        x.o = x.dq = x.dk = x.dv = NULL;
        if (x.dg) x.dg = NULL;
        if (x.dbeta) x.dbeta = NULL;
    }
    seqk_status st = fwd(ctx, c, true, &x);
    th_check(st == SEQK_SUCCESS, "%s: forward: %s", what, st ? seqk_last_error() : "");
    st = bwd(ctx, c, true, &x);
    th_check(st == SEQK_SUCCESS, "%s: backward: %s", what, st ? seqk_last_error() : "");
    /* gather and compare on rank 0 */
    io all = {.T = T};
    if (tm_rank == 0) outputs(&Aall, c, T, &all);
    const struct {
        const char *name;
        bool on;
        float *loc, *whole, *ref;
        int64_t per_token;
    } tok[6] = {{"o", true, x.o, all.o, ref.o, pv},
                {"dq", true, x.dq, all.dq, ref.dq, pq},
                {"dk", true, x.dk, all.dk, ref.dk, pq},
                {"dv", true, x.dv, all.dv, ref.dv, pv},
                {"dg", gated(c), x.dg, all.dg, ref.dg, pg},
                {"dbeta", delta(c), x.dbeta, all.dbeta, ref.dbeta, pg}};
    for (int i = 0; i < 6; i++) {
        if (!tok[i].on) continue;
        tm_gather(sp, tok[i].loc, tok[i].per_token, tok[i].whole);
        if (tm_rank == 0)
            th_check_close_f(tok[i].whole, tok[i].ref, (size_t)(T * tok[i].per_token), 1e-5,
                             "%s: %s", what, tok[i].name);
    }
    /* per-sequence results: every rank holds them */
    const struct {
        const char *name;
        const float *got, *ref;
        size_t n;
    } seq[7] = {{"state_out", x.s_out, ref.s_out, nS * V}, {"dstate_in", x.ds_in, ref.ds_in, nS * V},
                {"z_out", x.z_out, ref.z_out, nS},       {"dz_in", x.dz_in, ref.dz_in, nS},
                {"dA", x.dA, ref.dA, (size_t)H},         {"dD", x.dD, ref.dD, (size_t)H},
                {"ddt_bias", x.ddtb, ref.ddtb, (size_t)H}};
    float *buf = tf_floats(&A, nS * V);
    for (int i = 0; i < 7; i++) {
        if (!seq[i].got) continue;
        /* rank 0 compares its own and the last rank's copy */
        if (tm_rank == tm_size - 1 && tm_size > 1)
            MPI_Send(seq[i].got, (int)seq[i].n, MPI_FLOAT, 0, 7, MPI_COMM_WORLD);
        if (tm_rank == 0) {
            th_check_close_f(seq[i].got, seq[i].ref, seq[i].n, 1e-5, "%s: %s (rank 0)", what,
                             seq[i].name);
            if (tm_size > 1) {
                MPI_Recv(buf, (int)seq[i].n, MPI_FLOAT, tm_size - 1, 7, MPI_COMM_WORLD,
                         MPI_STATUS_IGNORE);
                th_check_close_f(buf, seq[i].ref, seq[i].n, 1e-5, "%s: %s (rank %d)", what,
                                 seq[i].name, tm_size - 1);
            }
        }
    }
    tf_arrays_free(&A);
    tf_arrays_free(&Aref);
    tf_arrays_free(&Ax);
    tf_arrays_free(&Aall);
}

int main(int argc, char **argv)
{
    th_backend *be = tm_init(argc, argv);
    seqk_context *ctx = be->ctx;
    const char *env = getenv("SEQK_MPI_TEST_T");
    const int64_t T = env && atoll(env) > 0 ? atoll(env) : (int64_t)1 << 20;
    const float gam[2] = {1.0f - 1e-6f, 1.0f - 3e-6f}, A[2] = {-1e-5f, -3e-6f},
                D[2] = {0.5f, -1.0f}, dtb[2] = {0.1f, -0.2f};
    const float gam_s[2] = {0.9f, 0.99f}, A_s[2] = {-0.5f, -0.05f};
    const float sc = 0.25f;
    /* long: 2^20 tokens, even split, states given */
    const tcase lng[6] = {
        {OP_LINATTN, "linear attention", SEQK_MODE_PARALLEL, 2, 2, 16, 16, 0, 0, sc, 0, 0, true, NULL, NULL, NULL, NULL},
        {OP_RETENTION, "retention", SEQK_MODE_PARALLEL, 2, 2, 16, 16, 0, 0, sc, 0, 0, true, gam, NULL, NULL, NULL},
        {OP_GATED, "gated retention", SEQK_MODE_PARALLEL, 2, 2, 16, 16, 0, 0, sc, -1e-5, 0, true, NULL, NULL, NULL, NULL},
        {OP_MAMBA2, "mamba2", SEQK_MODE_PARALLEL, 2, 1, 16, 16, 0, SEQK_MAMBA2_DT_SOFTPLUS, 1, 0, 0,
         true, NULL, A, D, dtb},
        {OP_DELTANET, "deltanet", SEQK_MODE_PARALLEL, 2, 2, 16, 16, 0, 0, sc, 0, 1e-4, true, NULL, NULL, NULL, NULL},
        {OP_GATED_DELTANET, "gated deltanet (l2norm)", SEQK_MODE_PARALLEL, 2, 2, 16, 16, 0,
         SEQK_DELTANET_L2NORM_QK, sc, -1e-5, 1e-4, true, NULL, NULL, NULL, NULL}};
    /* short: uneven slices, an empty rank, strong gates, recurrent mode */
    const tcase sht[6] = {
        {OP_LINATTN, "linear attention (normalize, elu+1)", SEQK_MODE_RECURRENT, 2, 2, 8, 4, 32,
         SEQK_LINATTN_NORMALIZE | SEQK_LINATTN_ELU1, sc, 0, 0, true, NULL, NULL, NULL, NULL},
        {OP_RETENTION, "retention (default gammas)", SEQK_MODE_RECURRENT, 2, 2, 8, 4, 32, 0, sc, 0,
         0, false, NULL, NULL, NULL, NULL},
        {OP_RETENTION, "retention", SEQK_MODE_PARALLEL, 2, 2, 8, 4, 32, 0, sc, 0, 0, true, gam_s, NULL, NULL, NULL},
        {OP_GATED, "gated retention", SEQK_MODE_RECURRENT, 2, 2, 8, 4, 32, 0, sc, -0.5, 0, false, NULL, NULL, NULL, NULL},
        {OP_MAMBA2, "mamba2 (no softplus, no D)", SEQK_MODE_PARALLEL, 2, 2, 8, 4, 32, 0, 1, 0, 0,
         true, NULL, A_s, NULL, NULL},
        {OP_GATED_DELTANET, "gated deltanet", SEQK_MODE_RECURRENT, 2, 2, 8, 4, 32, 0, sc, -0.5, 1,
         true, NULL, NULL, NULL, NULL}};
    const tm_split even = tm_even(T);
    for (int i = 0; i < 6; i++) run_case(ctx, &lng[i], &even);
    /* rank 1 empty, rank 0 one token, the rest uneven */
    int w[TM_MAX_RANKS];
    for (int r = 0; r < tm_size; r++) w[r] = r + 2;
    if (tm_size > 1) w[1] = 0;
    tm_split uneven = tm_weighted(10000, w);
    if (tm_size > 2) { /* rank 0 holds one token: move the rest to rank 2 */
        uneven.len[2] += uneven.len[0] - 1;
        uneven.len[0] = 1;
        for (int r = 1; r < tm_size; r++) uneven.off[r] = uneven.off[r - 1] + uneven.len[r - 1];
        snprintf(uneven.label, sizeof uneven.label, "T=10000 as 1, 0, %lld, ...",
                 (long long)uneven.len[2]);
    }
    for (int i = 0; i < 6; i++) run_case(ctx, &sht[i], &uneven);
    const tcase dn = {OP_DELTANET, "deltanet (neg eigval)", SEQK_MODE_PARALLEL, 2, 2, 8, 4, 16,
                      SEQK_DELTANET_ALLOW_NEG_EIGVAL, sc, 0, 2, true, NULL, NULL, NULL, NULL};
    run_case(ctx, &dn, &uneven);
    return tm_finish();
}
