/*
 * mandelbrot: escape counts of a Mandelbrot image, one element per image row.
 *
 * Data layout, in bytes from the start of the data region:
 *
 *   0    header, 64 bytes:
 *          +0  uint32 width    +4  uint32 height   +8  uint32 max_iter
 *          +16 double x0       +24 double dx       +32 double y0       +40 double dy
 *   64   image: int32[height][width] iteration counts, row-major, written
 *
 * Element r is row r; compute_partition(start, end) writes rows start..end-1.
 * Run it with `elements=height`. Pixel (row, col) is the point
 * c = (x0 + col*dx) + (y0 + row*dy)i, and its count is the first n < max_iter
 * with |z_n|^2 > 4, or max_iter if there is none.
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

struct mandelbrot_header {
    uint32_t width;
    uint32_t height;
    uint32_t max_iter;
    uint32_t unused;
    double x0, dx, y0, dy;
};

#define HEADER_BYTES 64

SW_KERNEL(start, end) {
    const struct mandelbrot_header *h = SW_DATA(const struct mandelbrot_header);
    const uint32_t width = h->width, max_iter = h->max_iter;
    const double x0 = h->x0, dx = h->dx, y0 = h->y0, dy = h->dy;
    int32_t *image = SW_DATA_AT(int32_t, HEADER_BYTES);
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
