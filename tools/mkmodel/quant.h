/*
 * quant.h - the number formats tome-mkmodel writes (private to
 * engine/mkmodel*.c and their tests).
 *
 * Every encoder rounds to nearest with ties to even, as the official
 * DeepSeek V4 quantiser does, so a random checkpoint made here is stored
 * exactly as a real one would be.  The engine's loader has its own
 * decoders (engine/kernels/quant.c); these are encoders only, kept apart so that
 * each side checks the other.
 */
#ifndef TOME_TOOLS_MKMODEL_QUANT_H
#define TOME_TOOLS_MKMODEL_QUANT_H

#include <stddef.h>
#include <stdint.h>

/* Largest finite magnitudes of the two element formats. */
#define MK_E4M3_MAX 448.0f
#define MK_E2M1_MAX 6.0f

/* Smallest block amax the official scale rules accept (below it the block
 * is treated as if its amax were this, so an all-zero block gets a finite
 * scale). */
#define MK_FP8_AMAX_FLOOR 1e-4f
#define MK_FP4_AMAX_FLOOR (6.0f * 0x1p-126f)

/* BF16 bits of a float (NaN stays a quiet NaN, overflow becomes inf). */
uint16_t mk_bf16_encode(float x);
/* The same for n floats. */
void mk_bf16_encode_n(const float *x, size_t n, uint16_t *out);

/* FP8 e4m3 ("fn": no inf, 0x7F/0xFF are NaN) byte of x, saturating at
 * +-448.  x must not be NaN. */
uint8_t mk_e4m3_encode(float x);

/* FP4 e2m1 code of x (bit 3 = sign, bits 0-2 index {0,.5,1,1.5,2,3,4,6}),
 * saturating at +-6.  x must not be NaN. */
uint8_t mk_e2m1_encode(float x);

/* The power-of-two exponent e of a block scale 2^e, from the block's amax
 * and the format's largest value: e = ceil(log2(max(amax, floor) * (1/qmax))),
 * taken from the float bits the way the official kernels do.  The F8_E8M0
 * byte of the scale is e + 127. */
int mk_scale_exponent(float amax, float amax_floor, float qmax);

/* Quantise a rows x cols tile of floats (row stride ld) that shares one
 * e4m3 scale: writes the e4m3 bytes (row stride ldq) and returns the scale
 * exponent. */
int mk_fp8_tile(const float *x, size_t ld, size_t rows, size_t cols, uint8_t *q, size_t ldq);

/* Quantise n consecutive floats (n even) that share one e2m1 scale into
 * n/2 bytes, element 2j in the low nibble and 2j+1 in the high nibble;
 * returns the scale exponent. */
int mk_fp4_group(const float *x, size_t n, uint8_t *packed);

#endif
