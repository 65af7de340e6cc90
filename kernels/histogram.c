/*
 * histogram: counts of each byte value of a uint8 input, into 256 shared bins.
 *
 * Data layout, in bytes from the start of the data region:
 *
 *   0      bins: uint32[256], added to (the host zeroes them before a run)
 *   1024   input: uint8[n], read only
 *
 * An element is one input byte; compute_partition(start, end) counts
 * input[start:end] into the bins. Run it with `elements=n, element_size=1`.
 * The bins are added to, never overwritten, so every chunk of a dynamic run
 * adds its share, and a second run without zeroing counts everything twice.
 *
 * Every worker writes every bin, so the bins are updated with atomic adds
 * (i32.atomic.rmw.add). Doing that once per byte would make each increment a
 * locked read-modify-write on cache lines that bounce between the CPUs, and
 * would serialise the workers on the 16 lines of bins. Instead each call
 * counts its range into a local array on its own stack (each worker has its
 * own stack, so no one else sees it), with plain increments, and then adds
 * the 256 partial counts with one atomic add each, skipping zeros: n plain
 * increments and at most 256 atomics per call, whatever n is.
 *
 * Ordering: WebAssembly atomics are sequentially consistent, and the pool
 * reports a share done with an atomic store after compute_partition returns,
 * so the host reads complete bins once the run has returned. Nothing reads
 * the bins during a run, so the order of the adds between workers does not
 * matter: addition commutes, and the counts are exact.
 */
#include <sharedwasm.h>

#define BINS 256
#define INPUT_OFFSET (BINS * 4)

SW_KERNEL(start, end) {
    uint32_t *bins = SW_DATA(uint32_t);
    const uint8_t *input = SW_DATA_AT(const uint8_t, INPUT_OFFSET);
    uint32_t local[BINS];
    __builtin_memset(local, 0, sizeof local);
    for (uint32_t i = start; i < end; i++) local[input[i]]++;
    for (uint32_t b = 0; b < BINS; b++) {
        if (local[b]) sw_atomic_add_u32(&bins[b], local[b]);
    }
}
