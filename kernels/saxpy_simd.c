/*
 * saxpy_simd: y = a * x + y over float32, four elements at a time with f32x4,
 * then a scalar tail.
 *
 *     SW_KERNEL(saxpy, start, end, float a, const float *x, float *y)
 *
 * An element is one index i of x and y: saxpy(start, end, a, x, y) updates
 * y[start:end] and only reads x. pool.run("step", a, x, y, entry="saxpy")
 * runs it over len(x) elements. v128 loads and stores need no alignment, so
 * any range works; arrays of the pool's heap start on a cache line anyway.
 *
 * Each lane is a multiply rounded to float32, then an add rounded to float32,
 * never fused: bit-identical to numpy's float32 `a * x + y`.
 */
#include <sharedwasm.h>
#include <wasm_simd128.h>

#pragma STDC FP_CONTRACT OFF

SW_KERNEL(saxpy, start, end, float a, const float *x, float *y) {
    const v128_t va = wasm_f32x4_splat(a);
    uint32_t i = start;
    for (; i + 4 <= end; i += 4) {
        v128_t vx = wasm_v128_load(x + i);
        v128_t vy = wasm_v128_load(y + i);
        wasm_v128_store(y + i, wasm_f32x4_add(wasm_f32x4_mul(va, vx), vy));
    }
    for (; i < end; i++) y[i] = a * x[i] + y[i];
}
