/* fp32 CPU kernels for cached autoregressive decoding, loaded by vfmtok/accel/cpu_kernels.py through ctypes.
 *
 * Written with GCC/Clang vector extensions (16-float vectors) rather than intrinsics, so one source builds for any
 * target (-march=native picks AVX-512, AVX2 or NEON); nothing here allocates tensors or touches Python.
 *
 * 1. gemm_packed: y = x W^T for few rows (a decode step has batch-many), W pre-packed as (ceil(N/32), K, 32) panels.
 *    Every panel is one contiguous stream; it is prefetched while the previous panel is multiplied, so reading the
 *    weights from DRAM overlaps the arithmetic (oneDNN's plain-layout kernels leave it exposed at 32 rows).
 * 2. decode_attention: one query per (batch, head) row against a cache laid out per row as blocks of 16 positions,
 *    [K (D, 16) | V (16, D)], so the filled prefix of a row is one contiguous range; online softmax over blocks.
 * 3. rms_norm, silu_mul: one call each instead of 8 and 2 torch ops on the small tensors of a decode step.
 */
#include <math.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64), aligned(4)));
typedef int i16 __attribute__((vector_size(64), aligned(4)));

#define NR 32 /* weight panel width: two vectors */
#define MR 8  /* rows per register tile: 8 x 2 accumulators */
#define BLK 16 /* cache positions per block */

/* wp (ceil(N/NR), K, NR) <- W (N, K), columns past N zero: the panels gemm_packed streams. One pass at memory speed
 * (torch's strided copy of the same permutation took 0.19 s for GPT-B's 390 MB). */
void pack_weight(const float *restrict w, float *restrict wp, long N, long K)
{
    const long np = (N + NR - 1) / NR;
#pragma omp parallel for schedule(static)
    for (long p = 0; p < np; p++) {
        float *dst = wp + p * K * NR;
        for (long c = 0; c < NR; c++) {
            const long n = p * NR + c;
            if (n < N)
                for (long k = 0; k < K; k++) dst[k * NR + c] = w[n * K + k];
            else
                for (long k = 0; k < K; k++) dst[k * NR + c] = 0.f;
        }
    }
}

/* xp (ceil(M/MR), K, MR) <- x (M, K), rows past M zero: broadcasts in the inner loop then read consecutive floats. */
void pack_rows(const float *restrict x, float *restrict xp, long M, long K)
{
    const long mb = (M + MR - 1) / MR;
    for (long b = 0; b < mb; b++)
        for (long r = 0; r < MR; r++) {
            const long m = b * MR + r;
            float *dst = xp + b * K * MR + r;
            if (m < M)
                for (long k = 0; k < K; k++) dst[k * MR] = x[m * K + k];
            else
                for (long k = 0; k < K; k++) dst[k * MR] = 0.f;
        }
}

/* y (M, N) row-major = x W^T, xp from pack_rows, wp the (ceil(N/32), K, 32) panels; panels split across OpenMP
 * threads when `parallel` (built with -fopenmp the library shares torch's libgomp, so its thread count). */
void gemm_packed(const float *restrict xp, const float *restrict wp, float *restrict y, long M, long N, long K,
                 int parallel)
{
    const long mb = (M + MR - 1) / MR, np = (N + NR - 1) / NR;
#pragma omp parallel for schedule(static) if (parallel)
    for (long p = 0; p < np; p++) {
        const float *w = wp + p * K * NR;
        const float *next = p + 1 < np ? w + K * NR : w;
        const long cols = N - p * NR < NR ? N - p * NR : NR;
        for (long b = 0; b < mb; b++) {
            v16 c[MR][2];
            memset(c, 0, sizeof(c));
            const float *a = xp + b * K * MR;
            for (long k = 0; k < K; k++) {
                /* The first row tile streams this panel (prefetch ahead in it); later tiles find it in L2 and
                 * spread prefetches of the next panel over their k loop. */
                if (b == 0)
                    __builtin_prefetch(w + k * NR + 512, 0, 3);
                else
                    __builtin_prefetch(next + ((b - 1) * K + k) * NR / (mb - 1), 0, 3);
                const v16 w0 = *(const v16 *)(w + k * NR), w1 = *(const v16 *)(w + k * NR + 16);
                const float *ak = a + k * MR;
                for (int r = 0; r < MR; r++) {
                    c[r][0] += ak[r] * w0;
                    c[r][1] += ak[r] * w1;
                }
            }
            for (long r = 0; r < MR && b * MR + r < M; r++) {
                float *yr = y + (b * MR + r) * N + p * NR;
                if (cols == NR) {
                    *(v16 *)yr = c[r][0];
                    *(v16 *)(yr + 16) = c[r][1];
                } else {
                    memcpy(yr, c[r], sizeof(float) * cols);
                }
            }
        }
    }
}

/* e^x for x <= 0 (x < -87 gives 2^-126 instead of 0); relative error ~2e-7. */
static inline v16 vexp(v16 x)
{
    v16 t = x * 1.44269504088896341f;
    const i16 low = t < -126.f;
    const v16 floor_ = (v16){0} - 126.f;
    t = (v16)(((i16)t & ~low) | ((i16)floor_ & low));
    const i16 n = __builtin_convertvector(t - 0.5f, i16); /* t <= 0: truncating t - 0.5 rounds to nearest */
    const v16 g = (t - __builtin_convertvector(n, v16)) * 0.693147180559945309f;
    v16 p = (v16){0} + 1.f / 720.f;
    p = p * g + 1.f / 120.f;
    p = p * g + 1.f / 24.f;
    p = p * g + 1.f / 6.f;
    p = p * g + 0.5f;
    p = p * g + 1.f;
    p = p * g + 1.f;
    return p * (v16)((n + 127) << 23);
}

typedef float v8 __attribute__((vector_size(32), aligned(4)));
typedef int i8 __attribute__((vector_size(32), aligned(4)));

/* out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w for rows of length n (any n). */
void rms_norm(const float *restrict x, const float *restrict w, float *restrict out, long rows, long n, float eps)
{
    for (long r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *o = out + r * n;
        v16 acc = {0};
        long i = 0;
        for (; i + 16 <= n; i += 16) {
            const v16 v = *(const v16 *)(xr + i);
            acc += v * v;
        }
        float ss = 0.f;
        for (int t = 0; t < 16; t++) ss += acc[t];
        for (; i < n; i++) ss += xr[i] * xr[i];
        const float inv = 1.f / sqrtf(ss / n + eps);
        for (i = 0; i + 16 <= n; i += 16) *(v16 *)(o + i) = *(const v16 *)(xr + i) * inv * *(const v16 *)(w + i);
        for (; i < n; i++) o[i] = xr[i] * inv * w[i];
    }
}

/* out = silu(a) * b = a / (1 + e^-a) * b, elementwise over n floats (SwiGLU's gate). */
void silu_mul(const float *restrict a, const float *restrict b, float *restrict out, long n)
{
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        const v16 x = *(const v16 *)(a + i);
        const i16 neg = x < 0.f, sign = (i16){0} + (-2147483647 - 1);
        const v16 e = vexp((v16)((i16)x | sign)); /* e^-|x| */
        /* sigmoid(x) = 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0 */
        const v16 num = (v16)(((i16)e & neg) | ((i16)((v16){0} + 1.f) & ~neg));
        *(v16 *)(out + i) = x * num / (1.f + e) * *(const v16 *)(b + i);
    }
    for (; i < n; i++) out[i] = a[i] / (1.f + expf(-a[i])) * b[i];
}

/* Largest lane of v (a tree of halving vector maxima rather than 15 dependent scalar steps). */
static inline float hmax(v16 v)
{
    union { v16 w; v8 h[2]; } u = {v};
    const i8 gt = u.h[0] > u.h[1];
    const v8 m = (v8)(((i8)u.h[0] & gt) | ((i8)u.h[1] & ~gt));
    float r = m[0];
    for (int t = 1; t < 8; t++) r = m[t] > r ? m[t] : r;
    return r;
}

/* One row of decode_attention; inlined with nv (= D / 16) a constant so the accumulators stay in registers. */
static inline __attribute__((always_inline)) void attend_row(const float *restrict qi, const float *base,
                                                             const float *ahead_row, float *restrict oi, long len,
                                                             float scale, const long nv)
{
    const long D = 16 * nv, nb = (len + BLK - 1) / BLK, bsz = 2 * D * BLK;
    v16 o0[16], o1[16], total = {0};
    for (long e = 0; e < nv; e++) o0[e] = o1[e] = (v16){0};
    float m = -INFINITY;
    for (long j = 0; j < nb; j++) {
        const float *kb = base + j * bsz, *vb = kb + D * BLK;
        /* Prefetch one block ahead, continuing into the next row's first block at the end of the filled prefix
         * (a plain distance would fetch the row's unused tail and start every row cold). */
        const float *ahead = j + 1 < nb ? kb + bsz : ahead_row;
        v16 a[8] = {{0}};
        for (long d = 0; d < D; d += 8) {
            for (int c = 0; c < 16; c++) /* the next block's 2 D cache lines, 16 per 8 rows of K */
                __builtin_prefetch(ahead + (2 * d + c) * 16, 0, 0);
            for (int c = 0; c < 8; c++) a[c] += qi[d + c] * *(const v16 *)(kb + (d + c) * BLK);
        }
        v16 s = (((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))) * scale;
        const long valid = len - j * BLK < BLK ? len - j * BLK : BLK;
        for (long t = valid; t < BLK; t++) s[t] = -INFINITY;
        const float bm = hmax(s);
        if (bm > m) { /* rescale what was accumulated under the old maximum */
            const float f = expf(m - bm);
            for (long e = 0; e < nv; e++) o0[e] *= f, o1[e] *= f;
            total *= f;
            m = bm;
        }
        v16 p = vexp(s - m);
        for (long t = valid; t < BLK; t++) p[t] = 0.f;
        total += p;
        long t = 0;
        for (; t + 1 < valid; t += 2) {
            const float p0 = p[t], p1 = p[t + 1];
            const float *r0 = vb + t * D, *r1 = r0 + D;
            for (long e = 0; e < nv; e++) {
                o0[e] += p0 * *(const v16 *)(r0 + 16 * e);
                o1[e] += p1 * *(const v16 *)(r1 + 16 * e);
            }
        }
        if (t < valid)
            for (long e = 0; e < nv; e++) o0[e] += p[t] * *(const v16 *)(vb + t * D + 16 * e);
    }
    float sum = 0.f;
    for (int t = 0; t < BLK; t++) sum += total[t];
    const float inv = 1.f / sum;
    for (long e = 0; e < nv; e++) *(v16 *)(oi + 16 * e) = (o0[e] + o1[e]) * inv;
}

/* out[r] = softmax(q[r] . K[r]^T * scale) V[r] over the first `len` positions, rows split across threads if `parallel`.
 * q, out, knew, vnew: (rows, D); cache row r starts at kv + r * row_stride and holds blocks [K (D, 16) | V (16, D)].
 * Unless knew is NULL, knew / vnew are first written at position len - 1: the K column touches D cache lines, which
 * this pass then reads anyway (a separate strided copy cost ~70 us per GPT-B layer at batch 32).
 * Requires D % 16 == 0 and D <= 256. */
void decode_attention(const float *restrict q, const float *knew, const float *vnew, float *kv, float *restrict out,
                      long rows, long D, long len, long row_stride, float scale, int parallel)
{
    const long bsz = 2 * D * BLK;
#pragma omp parallel for schedule(static) if (parallel)
    for (long i = 0; i < rows; i++) {
        if (knew) {
            const long j = (len - 1) / BLK, t = (len - 1) % BLK;
            float *kb = kv + i * row_stride + j * bsz, *vb = kb + D * BLK + t * D;
            for (long d = 0; d < D; d++) kb[d * BLK + t] = knew[i * D + d];
            for (long d = 0; d < D; d++) vb[d] = vnew[i * D + d];
        }
        const float *base = kv + i * row_stride, *next = kv + (i + 1 < rows ? i + 1 : i) * row_stride;
        switch (D) { /* the usual head sizes get constant trip counts */
        case 32: attend_row(q + i * D, base, next, out + i * D, len, scale, 2); break;
        case 64: attend_row(q + i * D, base, next, out + i * D, len, scale, 4); break;
        case 128: attend_row(q + i * D, base, next, out + i * D, len, scale, 8); break;
        default: attend_row(q + i * D, base, next, out + i * D, len, scale, D / 16);
        }
    }
}
