/*
 * poly_scalar: in place over float32 elements, 64 times x = x * 1.0001f + 0.5f.
 *
 * Data layout, in bytes from the start of the data region:
 *
 *   0    x: float32[n], read and overwritten in place
 *
 * There is no header: an element is one float32, and compute_partition(start,
 * end) updates x[start:end]. Run it with `elements=n`.
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

SW_KERNEL(start, end) {
    float *x = SW_DATA(float);
    for (uint32_t i = start; i < end; i++) {
        float v = x[i];
        for (int s = 0; s < STEPS; s++) v = v * 1.0001f + 0.5f;
        x[i] = v;
    }
}
