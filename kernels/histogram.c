/*
 * histogram: counts of each byte value of a uint8 array, into 256 shared bins.
 *
 *     SW_KERNEL(histogram, start, end, const uint8_t *data, uint32_t *bins)
 *
 * An element is one byte of `data`; histogram(start, end, data, bins) counts
 * data[start:end] into bins[256]. The bins are added to, never overwritten,
 * so every chunk of a dynamic run adds its share, and a second run without
 * zeroing them counts everything twice.
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
 * reports a share done with an atomic store after the entry returns, so the
 * host reads complete bins once the run has returned. Nothing reads the bins
 * during a run, so the order of the adds between workers does not matter:
 * addition commutes, and the counts are exact.
 */
#include <sharedwasm.h>

#define BINS 256

SW_KERNEL(histogram, start, end, const uint8_t *data, uint32_t *bins) {
    uint32_t local[BINS];
    __builtin_memset(local, 0, sizeof local);
    for (uint32_t i = start; i < end; i++) local[data[i]]++;
    for (uint32_t b = 0; b < BINS; b++) {
        if (local[b]) sw_atomic_add_u32(&bins[b], local[b]);
    }
}
