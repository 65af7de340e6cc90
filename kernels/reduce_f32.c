/*
 * reduce_f32: reductions of a float32 array, two entries in one module.
 *
 *     SW_KERNEL(sum_f32, start, end, const float *x, double *partial)
 *     SW_KERNEL(max_f32, start, end, const float *x, float *partial)
 *
 * An element is one float32 of x. Each call reduces x[start:end] and folds
 * the result into its worker's slot of `partial`, an array of one element
 * per worker made with pool.partials (fill 0 for the sum, -inf for the max),
 * which the pool resets before every run it is passed to. The host combines
 * the slots after the run, in worker order:
 *
 *     acc = pool.partials(np.float64)
 *     pool.run("sum", x, acc, entry="sum_f32")
 *     total = acc.sum()
 *
 * No atomics: every worker writes only its own slot (each slot is 8 bytes;
 * two workers' slots share a cache line, which costs one line transfer per
 * call, not per element).
 *
 * The sum adds in float64, left to right within a call (clang does not
 * reorder floating-point adds without -ffast-math, and does not vectorise
 * this loop). A static run gives each worker one contiguous range, so its
 * slot and the combined total are the same bits on every run for a given
 * worker count. A dynamic run adds each chunk's sum to the slot of whichever
 * worker claimed it, so the grouping, and the last bits, vary from run to
 * run; the error stays within that of any order of float64 additions.
 *
 * The max uses f32.max (IEEE 754-2019 maximum: NaN in, NaN out), whose
 * result does not depend on the order of the operands, so it is exact under
 * any schedule, and equals numpy's float32 max.
 */
#include <sharedwasm.h>

#pragma STDC FP_CONTRACT OFF

SW_KERNEL(sum_f32, start, end, const float *x, double *partial) {
    double s = 0.0;
    for (uint32_t i = start; i < end; i++) s += (double)x[i];
    SW_PARTIAL(partial) += s;
}

SW_KERNEL(max_f32, start, end, const float *x, float *partial) {
    float m = -__builtin_inff();
    for (uint32_t i = start; i < end; i++) m = __builtin_wasm_max_f32(m, x[i]);
    SW_PARTIAL(partial) = __builtin_wasm_max_f32(SW_PARTIAL(partial), m);
}
