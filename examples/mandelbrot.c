/*
 * mandelbrot.c: escape-time counts of the Mandelbrot set, one image row per element.
 *
 * examples/mandelbrot.py builds this file when examples/mandelbrot.wasm is
 * missing or stale. To build it by hand:
 *
 *     sharedwasm build examples/mandelbrot.c -O3
 *
 * Data region (byte offsets from sw_data_offset(), which is 64-byte aligned):
 *
 *     0    struct mandelbrot_params (40 bytes; the first 64 are reserved for it)
 *     64   counts: height rows of width uint32, row-major
 *
 * counts[y][x] is the number of iterations of z = z*z + c, from z = 0, before
 * |z| > 2, for c = (x_min + x*step) + (y_max - y*step)i; points that never
 * escape get max_iter. Rows inside the set cost max_iter iterations a pixel
 * and rows far from it a few, so the host runs this with the dynamic schedule:
 * workers claim rows from a shared counter until none are left.
 */
#include <sharedwasm.h>

struct mandelbrot_params {
    uint32_t width;
    uint32_t height;
    uint32_t max_iter;
    uint32_t reserved; /* 0; aligns the doubles */
    double x_min;      /* real part of column 0 */
    double y_max;      /* imaginary part of row 0 */
    double step;       /* distance between neighbouring pixels, both axes */
};

#define COUNTS_OFFSET 64

SW_KERNEL(start, end) {
    const struct mandelbrot_params *p = SW_DATA(const struct mandelbrot_params);
    const uint32_t width = p->width, max_iter = p->max_iter;
    const double x_min = p->x_min, y_max = p->y_max, step = p->step;
    uint32_t *counts = SW_DATA_AT(uint32_t, COUNTS_OFFSET);
    for (uint32_t y = start; y < end; y++) {
        const double ci = y_max - y * step;
        uint32_t *row = counts + y * width;
        for (uint32_t x = 0; x < width; x++) {
            const double cr = x_min + x * step;
            double zr = 0.0, zi = 0.0, zr2 = 0.0, zi2 = 0.0;
            uint32_t n = 0;
            while (n < max_iter && zr2 + zi2 <= 4.0) {
                zi = 2.0 * zr * zi + ci;
                zr = zr2 - zi2 + cr;
                zr2 = zr * zr;
                zi2 = zi * zi;
                n++;
            }
            row[x] = n;
        }
    }
}
