/* tests/fuzz/fuzz_scan.c -- libFuzzer harness of seqk_scan (and its
 * workspace query) with the float64 reference as the oracle; see
 * fuzz_common.h. */
#include "fuzz_common.h"
#include "ref/ref_scan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size, 0};
    fz_reset();
    seqk_context *ctx = fz_ctx(&in);
    bool ok = true, t;
    const int64_t B = fz_chance(&in, 8) ? fz_pick(&in, -1, 0) : fz_pick(&in, 1, 3);
    const int64_t T = fz_chance(&in, 8) ? -1 : fz_pick(&in, 0, 17);
    const int64_t C = fz_chance(&in, 8) ? 0 : fz_pick(&in, 1, 6);
    int64_t block = fz_pick(&in, 0, 7);
    if (fz_chance(&in, 192)) block = C > 0 && block >= 1 ? (C % block ? 1 : block) : 1;
    ok = B >= 1 && T >= 0 && C >= 1 && block >= 1 && block <= C && C % block == 0;
    const unsigned flags = fz_flags(&in, SEQK_SCAN_REVERSE, &t);
    ok &= t;
    const bool varlen = fz_chance(&in, 80);
    int64_t N = B;
    const int32_t *cu = NULL;
    fz_seed_data(&in);
    const int64_t Bp = B > 0 ? B : 0, Tp = T > 0 ? T : 0, Cp = C > 0 ? C : 0;
    const int64_t bl = block >= 1 && C >= 1 && block <= C && C % block == 0 ? block : 1;
    if (varlen) {
        cu = fz_cu_seqlens(&in, Tp, &N, &t);
        ok &= t && B == 1;
    }
    const size_t numel = (size_t)(Bp * Tp * Cp), nst = (size_t)((N > 0 ? N : 0) * Cp);
    const float *a = fz_input(numel / (size_t)bl, -1.1, 1.1);
    const float *b = fz_input(numel, -1, 1);
    const float *h0 = fz_chance(&in, 128) ? fz_input(nst, -1, 1) : NULL;
    float *h = fz_output(numel);
    float *hf = fz_chance(&in, 160) ? fz_output(nst) : NULL;
    switch (fz_pick(&in, 0, 15)) {
    case 0: h = (float *)b; fz_mark_written(b); break; /* in place: allowed */
    case 1:
        if (numel > 0) h = (float *)a, ok = false;
        break;
    case 2:
        if (numel > 0 && hf) hf = h, ok = false;
        break;
    case 3: /* partially over b */
        if (numel >= 2) h = (float *)b + 1, ok = false;
        break;
    default: break;
    }
    const bool rows = numel > 0;
    a = fz_maybe_null(&in, a, rows, &ok);
    b = fz_maybe_null(&in, b, rows, &ok);
    h = (float *)fz_maybe_null(&in, h, rows, &ok);
    if (fz_chance(&in, 4)) ctx = NULL, ok = false;

    size_t ws = 0;
    const seqk_status wst = seqk_scan_workspace_size(ctx, B, T, C, block, flags,
                                                     varlen ? N : 0, &ws);
    if (ctx) fz_workspace(&in, ctx, wst, ws);

    double *rh = NULL, *rf = NULL;
    if (ok) {
        rh = fz_doubles(numel);
        rf = fz_doubles(nst);
        ref_scan(B, T, C, block, (int)(flags & SEQK_SCAN_REVERSE), a, b, h0, rh, rf, cu, N);
    }
    fz_snapshot();
    const seqk_status st = seqk_scan(ctx, B, T, C, block, flags, a, b, h0, h, hf, cu, N);
    if (fz_outcome("seqk_scan", st, ok)) {
        fz_close("seqk_scan h", h, rh, numel, 2e-4, 1e-3);
        if (hf) fz_close("seqk_scan h_final", hf, rf, nst, 2e-4, 1e-3);
    }
    return 0;
}
