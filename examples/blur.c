/*
 * blur.c: a 3x3 box blur of an 8-bit image, one output row per element, and a threshold.
 *
 * examples/blur.py builds this file when examples/blur.wasm is missing or
 * stale. To build it by hand:
 *
 *     sharedwasm build examples/blur.c -O3 --simd
 *
 * (--simd lets clang vectorise the two inner loops; without it the kernel
 * is the same, about 2.5 times slower.)
 *
 * Two entries, one module:
 *
 *     blur(start, end, src, dst, width, height, channels)
 *         src and dst are images of height rows of width * channels uint8,
 *         row-major. Each output byte is the mean of the 3x3 neighbourhood
 *         in its channel, rounded to nearest; pixels past an edge repeat the
 *         edge pixel. Element y is output row y: blur(start, end, ...)
 *         writes rows [start, end) of dst and reads rows start - 1 to end of
 *         src. Workers write disjoint rows and only read src, so no atomics
 *         are needed; src and dst must be different arrays (blur.py swaps
 *         them between passes).
 *     threshold(start, end, src, dst, t)
 *         one element per byte: dst[i] = 255 if src[i] >= t, else 0.
 *
 * blur.py runs them as a pipeline over arrays of the pool's heap, so the
 * image never leaves the shared memory between the steps.
 */
#include <sharedwasm.h>

#define MAX_CHANNELS 4 /* grey, RGB, RGBA */
/* Bytes of a row per step: a multiple of 3 and 4, so a block holds whole pixels. */
#define BLOCK 1536

/* The sum of byte i of the three rows. */
static inline uint16_t column(const uint8_t *up, const uint8_t *mid, const uint8_t *down,
                              uint32_t i) {
    return (uint16_t)(up[i] + mid[i] + down[i]);
}

SW_KERNEL(blur, start, end, const uint8_t *src, uint8_t *dst, uint32_t width, uint32_t height,
          uint32_t channels) {
    if (channels == 0 || channels > MAX_CHANNELS) __builtin_trap();
    const uint32_t ch = channels, stride = width * ch;
    /* Column sums of one block, with a pixel either side. A local, so it is on
     * this worker's own stack (3 KiB of the 64 KiB each worker has). */
    uint16_t sums[MAX_CHANNELS + BLOCK + MAX_CHANNELS];
    uint16_t *const s = sums + MAX_CHANNELS;
    for (uint32_t y = start; y < end; y++) {
        const uint8_t *up = src + (y > 0 ? y - 1 : 0) * stride;
        const uint8_t *mid = src + y * stride;
        const uint8_t *down = src + (y + 1 < height ? y + 1 : y) * stride;
        uint8_t *out = dst + y * stride;
        for (uint32_t b = 0; b < stride; b += BLOCK) {
            const uint32_t n = stride - b < BLOCK ? stride - b : BLOCK;
            uint16_t *const left = s - ch;
            const uint16_t *const right = s + ch;
            for (uint32_t k = 0; k < n; k++) s[k] = column(up, mid, down, b + k);
            /* The pixels either side of the block; past an end of the row,
             * the end pixel again. */
            for (uint32_t c = 0; c < ch; c++) {
                left[c] = b > 0 ? column(up, mid, down, b - ch + c) : s[c];
                s[n + c] = b + n < stride ? column(up, mid, down, b + n + c) : s[n - ch + c];
            }
            for (uint32_t k = 0; k < n; k++)
                out[b + k] = (uint8_t)((left[k] + s[k] + right[k] + 4) / 9);
        }
    }
}

SW_KERNEL(threshold, start, end, const uint8_t *src, uint8_t *dst, uint8_t t) {
    for (uint32_t i = start; i < end; i++) dst[i] = src[i] >= t ? 255 : 0;
}
