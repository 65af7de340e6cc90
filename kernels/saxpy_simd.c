/*
 * saxpy_simd: y = a * x + y over float32, four elements at a time with f32x4,
 * then a scalar tail.
 *
 * Data layout, in bytes from the start of the data region:
 *
 *   0        header, 64 bytes: n (uint32 at +0), a (float32 at +4), the rest 0
 *   64       x: float32[n], read only
 *   64 + 4n  y: float32[n], read and overwritten
 *
 * An element is one index i of x and y; compute_partition(start, end) updates
 * y[start:end]. Run it with `elements=n`. The header keeps x on a cache line
 * of its own; y starts on one too when n is a multiple of 16 (v128 accesses
 * need no alignment, so any n works).
 *
 * Each lane is a multiply rounded to float32, then an add rounded to float32,
 * never fused: bit-identical to numpy's float32 `a * x + y`.
 */
#include <sharedwasm.h>
#include <wasm_simd128.h>

#pragma STDC FP_CONTRACT OFF

struct saxpy_header {
    uint32_t n;
    float a;
};

#define HEADER_BYTES 64

SW_KERNEL(start, end) {
    const struct saxpy_header *h = SW_DATA(const struct saxpy_header);
    const uint32_t n = h->n;
    const float a = h->a;
    const float *x = SW_DATA_AT(const float, HEADER_BYTES);
    float *y = SW_DATA_AT(float, HEADER_BYTES + 4 * n);
    const v128_t va = wasm_f32x4_splat(a);
    uint32_t i = start;
    for (; i + 4 <= end; i += 4) {
        v128_t vx = wasm_v128_load(x + i);
        v128_t vy = wasm_v128_load(y + i);
        wasm_v128_store(y + i, wasm_f32x4_add(wasm_f32x4_mul(va, vx), vy));
    }
    for (; i < end; i++) y[i] = a * x[i] + y[i];
}
