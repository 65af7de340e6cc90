/*
 * poly_scalar: in place over a float32 array, 64 times x = x * 1.0001f + 0.5f.
 *
 *     SW_KERNEL(poly_scalar, start, end, float *x)
 *
 * An element is one float32: poly_scalar(start, end, x) updates x[start:end].
 *
 * Compute-bound: 128 float operations per 8 bytes moved. Each step is a
 * multiply rounded to float32, then an add rounded to float32; nothing is
 * fused, so 64 steps are bit-identical to numpy's float32
 * `x = x * np.float32(1.0001) + np.float32(0.5)` repeated 64 times. The
 * literal 1.0001f rounds to the same float32 as np.float32(1.0001).
 */
#include <sharedwasm.h>

#pragma STDC FP_CONTRACT OFF

#define STEPS 64

SW_KERNEL(poly_scalar, start, end, float *x) {
    for (uint32_t i = start; i < end; i++) {
        float v = x[i];
        for (int s = 0; s < STEPS; s++) v = v * 1.0001f + 0.5f;
        x[i] = v;
    }
}
