/*
 * rows.c - decoding weight rows: FP8 e4m3 with 128x128 block scales, FP4
 * e2m1 with a scale per 32, BF16 and F32, exactly, into F32.
 *
 * A weight stays in the checkpoint's format (memory-mapped) and a row is
 * decoded right before use, so a model is never expanded in memory.  The
 * scalar reference and the AVX2 decoders give the same values (decoding is
 * exact: every code times its power-of-two scale is a float), and NaN codes
 * decode to NaN.
 */
#include "engine/internal.h"
#include "engine/kernels/avx2_formats.h"
#include "engine/kernels/blocks.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

/* Reference decoders, one per storage format. */
static void row_fp8_scalar(const uint8_t *row, const uint8_t *sc, int64_t cols, float *out)
{
    for (int64_t c0 = 0; c0 < cols; c0 += 128) {
        float s = v4_e8m0_to_f32(sc[c0 / V4_FP8_BLOCK]);
        int64_t end = c0 + 128 < cols ? c0 + 128 : cols;
        for (int64_t c = c0; c < end; c++) out[c] = v4_e4m3_table[row[c]] * s;
    }
}

static void row_fp4_scalar(const uint8_t *row, const uint8_t *sc, int64_t cols, float *out)
{
    for (int64_t c0 = 0; c0 < cols; c0 += 32) {
        float s = v4_e8m0_to_f32(sc[c0 / V4_FP4_BLOCK]);
        for (int64_t c = c0; c < c0 + 32; c += 2) {
            uint8_t b = row[c / 2];
            out[c] = v4_e2m1_values[b & 15] * s;
            out[c + 1] = v4_e2m1_values[b >> 4] * s;
        }
    }
}

static void row_bf16_scalar(const uint8_t *row, int64_t cols, float *out)
{
    for (int64_t c = 0; c < cols; c++)
        out[c] = v4_bf16_to_f32((uint16_t)(row[2 * c] | (row[2 * c + 1] << 8)));
}

#ifdef V4_HAVE_X86
/* The same decoders, 8 values at a time; exact like the scalar ones (every
 * step is a table lookup, a bit move or a multiply by a power of two). */
__attribute__((target("avx2,fma"))) static void row_fp8_avx2(const uint8_t *row, const uint8_t *sc,
                                                             int64_t cols, float *out)
{
    int64_t c = 0;
    for (; c + 8 <= cols; c += 8) {
        __m128i b = _mm_loadl_epi64((const __m128i *)(const void *)(row + c));
        __m256 v = e4m3x8(_mm256_cvtepu8_epi32(b));
        _mm256_storeu_ps(out + c,
                         _mm256_mul_ps(v, _mm256_set1_ps(v4_e8m0_to_f32(sc[c / V4_FP8_BLOCK]))));
    }
    for (; c < cols; c++) out[c] = v4_e4m3_table[row[c]] * v4_e8m0_to_f32(sc[c / V4_FP8_BLOCK]);
}

__attribute__((target("avx2,fma"))) static void row_fp4_avx2(const uint8_t *row, const uint8_t *sc,
                                                             int64_t cols, float *out)
{
    for (int64_t c = 0; c < cols; c += 8) {
        __m256 v = e2m1x8(nibbles8(row + c / 2));
        _mm256_storeu_ps(out + c,
                         _mm256_mul_ps(v, _mm256_set1_ps(v4_e8m0_to_f32(sc[c / V4_FP4_BLOCK]))));
    }
}

__attribute__((target("avx2,fma"))) static void row_bf16_avx2(const uint8_t *row, int64_t cols,
                                                              float *out)
{
    int64_t c = 0;
    for (; c + 8 <= cols; c += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(row + 2 * c));
        __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
        _mm256_storeu_ps(out + c, _mm256_castsi256_ps(w));
    }
    row_bf16_scalar(row + 2 * c, cols - c, out + c);
}
#endif

/* AVX2 and FMA, asked of the CPU once. */
static int avx2_present;
static pthread_once_t avx2_once = PTHREAD_ONCE_INIT;

static void probe_avx2(void)
{
#ifdef V4_HAVE_X86
    __builtin_cpu_init();
    avx2_present = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
}

int v4_cpu_has_avx2(void)
{
    pthread_once(&avx2_once, probe_avx2);
    return avx2_present;
}

void v4_weight_row_scalar(const v4_weight *w, int64_t r, float *out)
{
    switch (w->dtype) {
    case V4_F8_E4M3:
        row_fp8_scalar(w->data + r * w->cols, w->scale + (r / V4_FP8_BLOCK) * w->scale_stride,
                       w->cols, out);
        break;
    case V4_I8:
        row_fp4_scalar(w->data + r * (w->cols / 2), w->scale + r * w->scale_stride, w->cols, out);
        break;
    case V4_BF16:
        row_bf16_scalar(w->data + r * w->cols * 2, w->cols, out);
        break;
    case V4_F32:
        memcpy(out, w->data + r * w->cols * 4, (size_t)w->cols * 4);
        break;
    default: /* GGUF's half and block types */
        v4_gguf_row_scalar(w->dtype, w->data + r * v4_dtype_row_bytes(w->dtype, w->cols), w->cols,
                           out);
        break;
    }
}

void v4_weight_row(const v4_weight *w, int64_t r, float *out)
{
    int simd = v4_cpu_has_avx2();
    switch (w->dtype) {
    case V4_F8_E4M3: {
        const uint8_t *row = w->data + r * w->cols,
                      *sc = w->scale + (r / V4_FP8_BLOCK) * w->scale_stride;
#ifdef V4_HAVE_X86
        if (simd) {
            row_fp8_avx2(row, sc, w->cols, out);
            break;
        }
#endif
        row_fp8_scalar(row, sc, w->cols, out);
        break;
    }
    case V4_I8: {
        const uint8_t *row = w->data + r * (w->cols / 2), *sc = w->scale + r * w->scale_stride;
#ifdef V4_HAVE_X86
        if (simd) {
            row_fp4_avx2(row, sc, w->cols, out);
            break;
        }
#endif
        row_fp4_scalar(row, sc, w->cols, out);
        break;
    }
    case V4_BF16: {
        const uint8_t *row = w->data + r * w->cols * 2;
#ifdef V4_HAVE_X86
        if (simd) {
            row_bf16_avx2(row, w->cols, out);
            break;
        }
#endif
        row_bf16_scalar(row, w->cols, out);
        break;
    }
    case V4_F32:
        memcpy(out, w->data + r * w->cols * 4, (size_t)w->cols * 4);
        break;
    default:
        v4_gguf_row(w->dtype, w->data + r * v4_dtype_row_bytes(w->dtype, w->cols), w->cols, out);
        break;
    }
    (void)simd;
}
