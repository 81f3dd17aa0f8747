/*
 * tools/cuda_emu/test_cublas.cpp -- the emulator's cublasGemmStridedBatchedEx
 * (include/cublas_v2.h) against plain loops written here from cuBLAS'
 * documented column-major definition: every transa x transb (N, T, C),
 * m, n, k from 0 to past 16, leading dimensions wider than the matrices,
 * batch strides wider than a matrix (and 0: a broadcast operand), alpha and
 * beta (beta = 0 with NaN in C: never read), A/B in fp32, bf16, f16 with C
 * fp32 or the operands' type. Each result is checked
 *   - against a float64 loop: |C - ref| <= k 2^-24 sum_l |a b| |alpha| +
 *     |beta C0| 2^-23 + u |ref| (u the unit roundoff of C's type; plus
 *     2^-25 for f16, whose subnormals have an absolute spacing), and
 *   - bit for bit against a float loop in the header's stated order,
 * and every element of C's buffer outside the m x n matrices of the batch is
 * checked untouched. Then the argument checks: INVALID_VALUE / NOT_SUPPORTED /
 * NOT_INITIALIZED where cuBLAS documents them, with C untouched.
 * Built and run by run.sh (g++, the emulator's headers; no library needed).
 */
#include <cublas_v2.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

static int failures, checks;
static uint64_t rng = 0x243f6a8885a308d3ull;
static float urand()
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

static size_t esize(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : 2; }

/* f16 / bf16 values from floats, written independently of the header: via
 * _Float16 and, for bf16, by rounding the float to 8 significant bits with
 * nearbyint (nearest even) on the scaled value. */
static float round_bf16(float x)
{
    if (x == 0.0f || !std::isfinite(x)) return x;
    int e;
    std::frexp(x, &e);
    const double s = std::ldexp(1.0, 8 - e); /* 8 bits of significand */
    return (float)(std::nearbyint((double)x * s) / s);
}
static float round_to(cudaDataType_t t, float x)
{
    if (t == CUDA_R_32F) return x;
    if (t == CUDA_R_16F) return (float)(_Float16)x;
    return round_bf16(x);
}
static void put(std::vector<unsigned char> &buf, cudaDataType_t t, size_t i, float x)
{
    if (t == CUDA_R_32F) {
        std::memcpy(&buf[4 * i], &x, 4);
    } else if (t == CUDA_R_16F) {
        _Float16 h = (_Float16)x;
        std::memcpy(&buf[2 * i], &h, 2);
    } else {
        uint32_t u;
        std::memcpy(&u, &x, 4); /* x is already a bf16 value: the top half is exact */
        const uint16_t h = (uint16_t)(u >> 16);
        std::memcpy(&buf[2 * i], &h, 2);
    }
}
static float get(const std::vector<unsigned char> &buf, cudaDataType_t t, size_t i)
{
    if (t == CUDA_R_32F) {
        float x;
        std::memcpy(&x, &buf[4 * i], 4);
        return x;
    }
    uint16_t h;
    std::memcpy(&h, &buf[2 * i], 2);
    if (t == CUDA_R_16F) {
        _Float16 y;
        std::memcpy(&y, &h, 2);
        return (float)y;
    }
    const uint32_t u = (uint32_t)h << 16;
    float x;
    std::memcpy(&x, &u, 4);
    return x;
}
static double unit(cudaDataType_t t)
{
    return t == CUDA_R_32F ? std::ldexp(1.0, -24) : t == CUDA_R_16F ? std::ldexp(1.0, -11)
                                                                     : std::ldexp(1.0, -8);
}

static void fail(const char *what, int ta, int tb, int m, int n, int k, int ab, int c)
{
    if (failures < 20)
        std::fprintf(stderr, "FAIL %s: ta=%d tb=%d m=%d n=%d k=%d types %d/%d\n", what, ta, tb, m,
                     n, k, ab, c);
    failures++;
}

static void one(cublasHandle_t h, int ta, int tb, int m, int n, int k, int pad, int sgap,
                int batch, float alpha, float beta, cudaDataType_t tab, cudaDataType_t tc,
                bool broadcast_b)
{
    const bool TA = ta != CUBLAS_OP_N, TB = tb != CUBLAS_OP_N;
    const int arows = TA ? k : m, acols = TA ? m : k, brows = TB ? n : k, bcols = TB ? k : n;
    const int lda = (arows > 1 ? arows : 1) + pad, ldb = (brows > 1 ? brows : 1) + pad,
              ldc = (m > 1 ? m : 1) + pad;
    const long long sa = (long long)lda * acols + sgap, sb = broadcast_b ? 0 : (long long)ldb * bcols + sgap,
                    sc = (long long)ldc * n + sgap;
    const size_t na = (size_t)(sa * batch + 1), nb = (size_t)((broadcast_b ? (long long)ldb * bcols : sb * batch) + 1),
                 nc = (size_t)(sc * batch + 1);
    std::vector<unsigned char> A(na * esize(tab)), B(nb * esize(tab)), C(nc * esize(tc));
    std::vector<float> Af(na), Bf(nb), C0(nc);
    for (size_t i = 0; i < na; i++) put(A, tab, i, Af[i] = round_to(tab, urand()));
    for (size_t i = 0; i < nb; i++) put(B, tab, i, Bf[i] = round_to(tab, urand()));
    for (size_t i = 0; i < nc; i++) {
        C0[i] = beta == 0.0f ? NAN : round_to(tc, urand());
        put(C, tc, i, C0[i]);
    }
    const std::vector<unsigned char> Cbefore = C;
    const cublasStatus_t st = cublasGemmStridedBatchedEx(
        h, (cublasOperation_t)ta, (cublasOperation_t)tb, m, n, k, &alpha, A.data(), tab, lda, sa,
        B.data(), tab, ldb, sb, &beta, C.data(), tc, ldc, sc, batch, CUBLAS_COMPUTE_32F,
        CUBLAS_GEMM_DEFAULT_TENSOR_OP);
    checks++;
    if (st != CUBLAS_STATUS_SUCCESS) {
        fail("status", ta, tb, m, n, k, tab, tc);
        return;
    }
    std::vector<char> inside(nc, 0);
    for (int b = 0; b < batch; b++)
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                const size_t ic = (size_t)(b * sc + i + (long long)j * ldc);
                inside[ic] = 1;
                double ref = 0.0, mag = 0.0;
                float s = 0.0f;
                for (int l = 0; l < k; l++) {
                    const size_t ia = (size_t)(b * sa + (TA ? l + (long long)i * lda : i + (long long)l * lda));
                    const size_t ib = (size_t)(b * sb + (TB ? j + (long long)l * ldb : l + (long long)j * ldb));
                    ref += (double)Af[ia] * Bf[ib];
                    mag += std::fabs((double)Af[ia] * Bf[ib]);
                    s = std::fmaf(Af[ia], Bf[ib], s);
                }
                ref *= alpha;
                float r = alpha * s;
                if (beta != 0.0f) {
                    ref += (double)beta * C0[ic];
                    r = std::fmaf(beta, C0[ic], r);
                }
                const float got = get(C, tc, ic);
                const double bound = (k + 1) * std::ldexp(1.0, -24) * mag * std::fabs(alpha) +
                                     (beta != 0.0f ? std::fabs(beta * C0[ic]) * std::ldexp(1.0, -23) : 0.0) +
                                     unit(tc) * std::fabs(ref) +
                                     (tc == CUDA_R_16F ? std::ldexp(1.0, -25) : 0.0) + 1e-30; /* f16 subnormals */
                if (!(std::fabs(got - ref) <= bound)) fail("float64 bound", ta, tb, m, n, k, tab, tc);
                const float want = round_to(tc, r);
                if (std::memcmp(&got, &want, 4) != 0) fail("stated order", ta, tb, m, n, k, tab, tc);
            }
    for (size_t i = 0; i < nc; i++)
        if (!inside[i] &&
            std::memcmp(&C[i * esize(tc)], &Cbefore[i * esize(tc)], esize(tc)) != 0) {
            fail("wrote outside C", ta, tb, m, n, k, tab, tc);
            break;
        }
}

static void expect(const char *what, cublasStatus_t got, cublasStatus_t want)
{
    checks++;
    if (got != want) {
        std::fprintf(stderr, "FAIL %s: status %d, expected %d\n", what, (int)got, (int)want);
        failures++;
    }
}

int main()
{
    cublasHandle_t h = nullptr;
    expect("create", cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
    expect("math mode", cublasSetMathMode(h, CUBLAS_DEFAULT_MATH), CUBLAS_STATUS_SUCCESS);
    const cudaDataType_t types[3] = {CUDA_R_32F, CUDA_R_16BF, CUDA_R_16F};
    const int ops[3] = {CUBLAS_OP_N, CUBLAS_OP_T, CUBLAS_OP_C};
    const int dims[][3] = {{0, 3, 2}, {3, 0, 2}, {2, 3, 0}, {1, 1, 1}, {5, 3, 7},
                           {17, 9, 16}, {16, 17, 33}, {4, 20, 1}};
    for (int t = 0; t < 3; t++)
        for (int ct = 0; ct < 2; ct++) {
            const cudaDataType_t tc = ct ? types[t] : CUDA_R_32F;
            if (ct && t == 0) continue; /* fp32 / fp32 once */
            for (int a = 0; a < 3; a++)
                for (int b = 0; b < 3; b++)
                    for (const auto &d : dims) {
                        one(h, ops[a], ops[b], d[0], d[1], d[2], 0, 0, 1, 1.0f, 0.0f, types[t], tc, false);
                        one(h, ops[a], ops[b], d[0], d[1], d[2], 3, 5, 3, 0.75f, 0.0f, types[t], tc, false);
                        one(h, ops[a], ops[b], d[0], d[1], d[2], 1, 0, 2, -1.5f, 0.5f, types[t], tc, false);
                        one(h, ops[a], ops[b], d[0], d[1], d[2], 2, 1, 3, 1.0f, 1.0f, types[t], tc, true);
                    }
        }

    /* argument checks: status, C untouched */
    float A[64], B[64], C[64], Cs[64], one_f = 1.0f, zero = 0.0f;
    for (int i = 0; i < 64; i++) A[i] = B[i] = 1.0f, C[i] = Cs[i] = 7.0f;
    auto call = [&](cublasHandle_t hh, int ta, int tb, int m, int n, int k, int lda, int ldb,
                    int ldc, int batch, cudaDataType_t tab, cudaDataType_t tc,
                    cublasComputeType_t ct, const float *al) {
        return cublasGemmStridedBatchedEx(hh, (cublasOperation_t)ta, (cublasOperation_t)tb, m, n,
                                          k, al, A, tab, lda, 16, B, tab, ldb, 16, &zero, C, tc,
                                          ldc, 16, batch, ct, CUBLAS_GEMM_DEFAULT);
    };
    const cudaDataType_t F = CUDA_R_32F;
    const cublasComputeType_t C32 = CUBLAS_COMPUTE_32F;
    expect("m < 0", call(h, 0, 0, -1, 2, 2, 2, 2, 2, 1, F, F, C32, &one_f), CUBLAS_STATUS_INVALID_VALUE);
    expect("n < 0", call(h, 0, 0, 2, -1, 2, 2, 2, 2, 1, F, F, C32, &one_f), CUBLAS_STATUS_INVALID_VALUE);
    expect("k < 0", call(h, 0, 0, 2, 2, -1, 2, 2, 2, 1, F, F, C32, &one_f), CUBLAS_STATUS_INVALID_VALUE);
    expect("batch < 0", call(h, 0, 0, 2, 2, 2, 2, 2, 2, -1, F, F, C32, &one_f), CUBLAS_STATUS_INVALID_VALUE);
    expect("bad op", call(h, 5, 0, 2, 2, 2, 2, 2, 2, 1, F, F, C32, &one_f), CUBLAS_STATUS_INVALID_VALUE);
    expect("lda < m (N)", call(h, 0, 0, 3, 2, 2, 2, 2, 3, 1, F, F, C32, &one_f), CUBLAS_STATUS_INVALID_VALUE);
    expect("lda < k (T)", call(h, 1, 0, 2, 2, 3, 2, 3, 2, 1, F, F, C32, &one_f), CUBLAS_STATUS_INVALID_VALUE);
    expect("ldb < k (N)", call(h, 0, 0, 2, 2, 3, 2, 2, 2, 1, F, F, C32, &one_f), CUBLAS_STATUS_INVALID_VALUE);
    expect("ldb < n (T)", call(h, 0, 1, 2, 3, 2, 2, 2, 2, 1, F, F, C32, &one_f), CUBLAS_STATUS_INVALID_VALUE);
    expect("ldc < m", call(h, 0, 0, 3, 2, 2, 3, 2, 2, 1, F, F, C32, &one_f), CUBLAS_STATUS_INVALID_VALUE);
    expect("lda = 0, m = 0", call(h, 0, 0, 0, 2, 2, 0, 2, 1, 1, F, F, C32, &one_f), CUBLAS_STATUS_INVALID_VALUE);
    expect("alpha NULL", call(h, 0, 0, 2, 2, 2, 2, 2, 2, 1, F, F, C32, nullptr), CUBLAS_STATUS_INVALID_VALUE);
    expect("mixed A/B types", cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one_f, A, CUDA_R_16BF, 2, 16, B, CUDA_R_16F, 2, 16, &zero, C, F, 2, 16, 1, C32, CUBLAS_GEMM_DEFAULT), CUBLAS_STATUS_NOT_SUPPORTED);
    expect("C f16 with bf16 A/B", call(h, 0, 0, 2, 2, 2, 2, 2, 2, 1, CUDA_R_16BF, CUDA_R_16F, C32, &one_f), CUBLAS_STATUS_NOT_SUPPORTED);
    expect("fp32 A/B with bf16 C", call(h, 0, 0, 2, 2, 2, 2, 2, 2, 1, F, CUDA_R_16BF, C32, &one_f), CUBLAS_STATUS_NOT_SUPPORTED);
    expect("compute type", call(h, 0, 0, 2, 2, 2, 2, 2, 2, 1, F, F, (cublasComputeType_t)0, &one_f), CUBLAS_STATUS_NOT_SUPPORTED);
    expect("NULL handle", call(nullptr, 0, 0, 2, 2, 2, 2, 2, 2, 1, F, F, C32, &one_f), CUBLAS_STATUS_NOT_INITIALIZED);
    checks++;
    if (std::memcmp(C, Cs, sizeof C) != 0) {
        std::fprintf(stderr, "FAIL: a rejected call wrote C\n");
        failures++;
    }
    expect("valid", call(h, 0, 0, 2, 2, 2, 2, 2, 2, 1, F, F, C32, &one_f), CUBLAS_STATUS_SUCCESS);
    checks++;
    if (C[0] != 2.0f || C[3] != 2.0f || C[4] != 7.0f) {
        std::fprintf(stderr, "FAIL: valid 2x2 call: C = %g %g %g\n", C[0], C[3], C[4]);
        failures++;
    }
    expect("set workspace", cublasSetWorkspace(h, nullptr, 0), CUBLAS_STATUS_SUCCESS);
    expect("destroy", cublasDestroy(h), CUBLAS_STATUS_SUCCESS);
    std::printf("test_cublas: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
