/*
 * box_blur: 3x3 box blur of a uint8 image into a second image.
 *
 *     SW_KERNEL(box_blur, start, end, const uint8_t *image, uint8_t *out,
 *               uint32_t width, uint32_t height)
 *
 * `image` and `out` are uint8[height][width], row-major. An element is one
 * output row: box_blur(start, end, ...) writes out rows start..end-1. Passed
 * (height, width) arrays, a run covers the first axis, the rows.
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

static inline uint32_t column(const uint8_t *a, const uint8_t *b, const uint8_t *c,
                              uint32_t x) {
    return (uint32_t)a[x] + b[x] + c[x];
}

static inline uint8_t mean9(uint32_t sum) { return (uint8_t)((sum + 4) / 9); }

SW_KERNEL(box_blur, start, end, const uint8_t *image, uint8_t *out, uint32_t width,
          uint32_t height) {
    if (width == 0) return;
    for (uint32_t y = start; y < end; y++) {
        const uint8_t *above = image + (size_t)(y > 0 ? y - 1 : 0) * width;
        const uint8_t *here = image + (size_t)y * width;
        const uint8_t *below = image + (size_t)(y + 1 < height ? y + 1 : y) * width;
        uint8_t *row = out + (size_t)y * width;
        if (width == 1) {
            row[0] = mean9(3 * column(above, here, below, 0));
            continue;
        }
        row[0] = mean9(2 * column(above, here, below, 0) + column(above, here, below, 1));
        for (uint32_t x = 1; x + 1 < width; x++) {
            row[x] = mean9(column(above, here, below, x - 1) + column(above, here, below, x) +
                           column(above, here, below, x + 1));
        }
        const uint32_t last = width - 1;
        row[last] =
            mean9(column(above, here, below, last - 1) + 2 * column(above, here, below, last));
    }
}
