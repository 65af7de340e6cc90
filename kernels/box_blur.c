/*
 * box_blur: 3x3 box blur of a uint8 image into a second image.
 *
 * Data layout, in bytes from the start of the data region:
 *
 *   0                     header, 64 bytes: width (uint32 at +0), height (uint32 at +4)
 *   64                    input: uint8[height][width], row-major, read only
 *   64 + pad(w * h)       output: uint8[height][width], row-major, written
 *
 * where pad(k) rounds k up to a multiple of 64, so the output starts on a
 * cache line of its own. An element is one output row; compute_partition(start,
 * end) writes output rows start..end-1. Run it with `elements=height`.
 *
 * Output pixel (x, y) is the mean of the 3x3 input pixels around (x, y),
 * rounded to the nearest integer: (sum + 4) / 9 in integers (a ninth is never
 * exactly one half, so there are no ties). Outside the image a coordinate is
 * clamped to the nearest edge (numpy's np.pad(mode="edge")), so an edge pixel
 * counts its nearest neighbours twice and a 1x1 image is its own blur.
 *
 * Row y reads input rows y-1 and y+1, which belong to other workers'
 * partitions at the ends of a range. That is safe because the input is never
 * written during a run: the blur goes into a separate output image, whose
 * rows each belong to exactly one worker. Blurring in place would race.
 */
#include <sharedwasm.h>

#define HEADER_BYTES 64

struct blur_header {
    uint32_t width;
    uint32_t height;
};

static inline uint32_t column(const uint8_t *a, const uint8_t *b, const uint8_t *c,
                              uint32_t x) {
    return (uint32_t)a[x] + b[x] + c[x];
}

static inline uint8_t mean9(uint32_t sum) { return (uint8_t)((sum + 4) / 9); }

SW_KERNEL(start, end) {
    const struct blur_header *h = SW_DATA(const struct blur_header);
    const uint32_t width = h->width, height = h->height;
    const uint8_t *input = SW_DATA_AT(const uint8_t, HEADER_BYTES);
    const uint32_t pixels = width * height;
    uint8_t *output = SW_DATA_AT(uint8_t, HEADER_BYTES + ((pixels + 63) & ~63u));
    if (width == 0) return;
    for (uint32_t y = start; y < end; y++) {
        const uint8_t *above = input + (size_t)(y > 0 ? y - 1 : 0) * width;
        const uint8_t *here = input + (size_t)y * width;
        const uint8_t *below = input + (size_t)(y + 1 < height ? y + 1 : y) * width;
        uint8_t *out = output + (size_t)y * width;
        if (width == 1) {
            out[0] = mean9(3 * column(above, here, below, 0));
            continue;
        }
        out[0] = mean9(2 * column(above, here, below, 0) + column(above, here, below, 1));
        for (uint32_t x = 1; x + 1 < width; x++) {
            out[x] = mean9(column(above, here, below, x - 1) + column(above, here, below, x) +
                           column(above, here, below, x + 1));
        }
        const uint32_t last = width - 1;
        out[last] =
            mean9(column(above, here, below, last - 1) + 2 * column(above, here, below, last));
    }
}
