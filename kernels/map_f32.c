/*
 * map_f32: in place over a float32 array, x = (x * x) * 0.25f + sqrtf(x).
 *
 *     SW_KERNEL(map_f32, start, end, float *x)
 *
 * An element is one float32: map_f32(start, end, x) updates x[start:end].
 * pool.run("map", x, entry="map_f32") runs it over all of x.
 *
 * The operations are those of the built-in map_f32.wat, in its order: a
 * multiply, a multiply by 0.25, a square root, an add, each rounded to
 * float32. WebAssembly has no fused multiply-add, and contraction is off
 * below anyway, so the result is bit-identical to numpy's float32
 * `(x * x) * np.float32(0.25) + np.sqrt(x)`.
 *
 * Built with simd=True (kernels/library.py), clang vectorises the loop into
 * f32x4 operations with a scalar remainder; f32x4.sqrt and the others round
 * each lane exactly like their scalar forms, so the bits do not change, and
 * the loop runs about four times faster.
 */
#include <sharedwasm.h>

#pragma STDC FP_CONTRACT OFF

SW_KERNEL(map_f32, start, end, float *x) {
    for (uint32_t i = start; i < end; i++) {
        float v = x[i];
        x[i] = (v * v) * 0.25f + __builtin_sqrtf(v);
    }
}
