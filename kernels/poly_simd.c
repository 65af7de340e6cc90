/*
 * poly_simd: poly_scalar with f32x4: 64 times x = x * 1.0001f + 0.5f per
 * float32 element, in place, sixteen elements at a time, then four at a time,
 * then a scalar tail.
 *
 *     SW_KERNEL(poly_simd, start, end, float *x)
 *
 * An element is one float32: poly_simd(start, end, x) updates x[start:end].
 * A range need not start on a multiple of four: v128 loads and stores have
 * no alignment requirement, so the vector loops start at `start`.
 *
 * Each step depends on the one before, so a single vector would wait on the
 * latency of every multiply and add. The main loop steps four independent
 * vectors together to keep the floating-point units busy; it is about twice
 * as fast as one vector at a time.
 *
 * f32x4.mul and f32x4.add round each lane to float32 exactly as the scalar
 * operations do, and nothing is fused, so the output is bit-identical to
 * poly_scalar and to numpy's float32 loop, whichever loop an element is in.
 */
#include <sharedwasm.h>
#include <wasm_simd128.h>

#pragma STDC FP_CONTRACT OFF

#define STEPS 64

static inline v128_t step(v128_t v, v128_t mul, v128_t add) {
    return wasm_f32x4_add(wasm_f32x4_mul(v, mul), add);
}

SW_KERNEL(poly_simd, start, end, float *x) {
    const v128_t mul = wasm_f32x4_splat(1.0001f);
    const v128_t add = wasm_f32x4_splat(0.5f);
    uint32_t i = start;
    for (; i + 16 <= end; i += 16) {
        v128_t a = wasm_v128_load(x + i), b = wasm_v128_load(x + i + 4);
        v128_t c = wasm_v128_load(x + i + 8), d = wasm_v128_load(x + i + 12);
        for (int s = 0; s < STEPS; s++) {
            a = step(a, mul, add);
            b = step(b, mul, add);
            c = step(c, mul, add);
            d = step(d, mul, add);
        }
        wasm_v128_store(x + i, a);
        wasm_v128_store(x + i + 4, b);
        wasm_v128_store(x + i + 8, c);
        wasm_v128_store(x + i + 12, d);
    }
    for (; i + 4 <= end; i += 4) {
        v128_t v = wasm_v128_load(x + i);
        for (int s = 0; s < STEPS; s++) v = step(v, mul, add);
        wasm_v128_store(x + i, v);
    }
    for (; i < end; i++) {
        float v = x[i];
        for (int s = 0; s < STEPS; s++) v = v * 1.0001f + 0.5f;
        x[i] = v;
    }
}
