/*
 * mandelbrot.c: escape-time counts of the Mandelbrot set, one image row per element.
 *
 * examples/mandelbrot.py builds this file when examples/mandelbrot.wasm is
 * missing or stale. To build it by hand:
 *
 *     sharedwasm build examples/mandelbrot.c -O3
 *
 *     SW_KERNEL(mandelbrot, start, end, uint32_t *counts, uint32_t width,
 *               uint32_t max_iter, double x_min, double y_max, double step)
 *
 * counts is height rows of width uint32, row-major, and element y is row y.
 * counts[y][x] is the number of iterations of z = z*z + c, from z = 0, before
 * |z| > 2, for c = (x_min + x*step) + (y_max - y*step)i; points that never
 * escape get max_iter. Rows inside the set cost max_iter iterations a pixel
 * and rows far from it a few, so the host runs this with the dynamic schedule:
 * workers claim rows from a shared counter until none are left.
 */
#include <sharedwasm.h>

SW_KERNEL(mandelbrot, start, end, uint32_t *counts, uint32_t width, uint32_t max_iter,
          double x_min, double y_max, double step) {
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
