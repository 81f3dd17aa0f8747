/* scan/scan_cpu.c -- CPU backend of the scan primitive (plain version). */
#include "scan.h"

seqk_status seqk__cpu_scan(seqk_context *ctx, int64_t B, int64_t T, int64_t C, int64_t block,
                           unsigned flags, const float *a, const float *b, const float *h0,
                           float *h, float *h_final, const int32_t *cu, int64_t N)
{
    const int rev = (flags & SEQK_SCAN_REVERSE) != 0;
    const int64_t CA = C / block;
#pragma omp parallel for num_threads(seqk__threads(ctx)) schedule(static)
    for (int64_t nc = 0; nc < N * C; nc++) {
        const int64_t n = nc / C, c = nc % C;
        const int64_t t0 = cu ? cu[n] : 0, t1 = cu ? cu[n + 1] : T;
        const int64_t base = cu ? 0 : n * T;
        float s = h0 ? h0[n * C + c] : 0.0f;
        for (int64_t i = 0; i < t1 - t0; i++) {
            const int64_t t = base + (rev ? t1 - 1 - i : t0 + i);
            s = a[t * CA + c / block] * s + b[t * C + c];
            h[t * C + c] = s;
        }
        if (h_final) h_final[n * C + c] = s;
    }
    (void)B;
    return SEQK_SUCCESS;
}
