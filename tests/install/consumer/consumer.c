/* A program built against the *installed* seqk: runs a small scan on the CPU. */
#include <seqk.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    if (strcmp(seqk_version(), "") == 0 || seqk_version_number() != SEQK_VERSION_NUMBER) {
        fprintf(stderr, "header/library version mismatch: %s\n", seqk_version());
        return 1;
    }
    seqk_context *ctx = NULL;
    if (seqk_context_create(&ctx, SEQK_BACKEND_CPU, 0) != SEQK_SUCCESS) {
        fprintf(stderr, "context: %s\n", seqk_last_error());
        return 1;
    }
    /* h[t] = 0.5 h[t-1] + 1 from h0 = 0: 1, 1.5, 1.75, 1.875 */
    float a[4] = {0.5f, 0.5f, 0.5f, 0.5f}, b[4] = {1, 1, 1, 1}, h[4];
    seqk_status st = seqk_scan(ctx, 1, 4, 1, 1, 0, a, b, NULL, h, NULL, NULL, 0);
    seqk_context_destroy(ctx);
    if (st != SEQK_SUCCESS || fabsf(h[3] - 1.875f) > 1e-6f) {
        fprintf(stderr, "scan: %s %s h[3]=%g\n", seqk_status_string(st), seqk_last_error(),
                (double)h[3]);
        return 1;
    }
    printf("seqk %s: installed library works (h[3] = %g)\n", seqk_version(), (double)h[3]);
    return 0;
}
