/*
 * mandelbrot: escape counts of a Mandelbrot image, one element per image row.
 *
 *     SW_KERNEL(mandelbrot, start, end, int32_t *image, uint32_t width,
 *               uint32_t max_iter, double x0, double dx, double y0, double dy)
 *
 * `image` is int32[height][width], row-major; element r is row r, and
 * mandelbrot(start, end, ...) writes rows start..end-1. Passed a (height,
 * width) array, a run covers its first axis, the rows. Pixel (row, col) is
 * the point c = (x0 + col*dx) + (y0 + row*dy)i, and its count is the first
 * n < max_iter with |z_n|^2 > 4, or max_iter if there is none.
 *
 * A row costs anything from a few to width * max_iter iterations, so a static
 * split is uneven; this is the kernel to run with schedule="dynamic".
 *
 * All arithmetic is double, in the order of the numpy float64 reference
 * (kernels/library.py), and with contraction off so that no multiply-add is
 * fused: the counts match numpy exactly.
 */
#include <sharedwasm.h>

#pragma STDC FP_CONTRACT OFF

SW_KERNEL(mandelbrot, start, end, int32_t *image, uint32_t width, uint32_t max_iter, double x0,
          double dx, double y0, double dy) {
    for (uint32_t row = start; row < end; row++) {
        const double ci = y0 + (double)row * dy;
        int32_t *out = image + (size_t)row * width;
        for (uint32_t col = 0; col < width; col++) {
            const double cr = x0 + (double)col * dx;
            double zr = 0.0, zi = 0.0;
            uint32_t n = 0;
            for (; n < max_iter; n++) {
                const double zr2 = zr * zr, zi2 = zi * zi;
                if (zr2 + zi2 > 4.0) break;
                zi = (zr + zr) * zi + ci;
                zr = (zr2 - zi2) + cr;
            }
            out[col] = (int32_t)n;
        }
    }
}
