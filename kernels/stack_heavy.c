/*
 * stack_heavy: a recursive checksum whose frames each hold a 1 KiB array on
 * the stack, to show that every worker has a stack of its own.
 *
 *     SW_KERNEL(stack_heavy, start, end, const uint32_t *seeds,
 *               const uint32_t *depths, uint32_t *results)
 *
 * An element is one index i of the three arrays: stack_heavy(start, end, ...)
 * writes results[start:end], results[i] being the checksum of a recursion
 * depths[i] frames deep from seeds[i].
 *
 * frame(level) fills a local uint32[256] from its seed and from its parent's
 * array (passed by pointer, so the array must live in memory, on the stack),
 * calls frame(level + 1) unless level + 1 == depth, and only after that call
 * returns reads its own array back into the checksum. If two workers pushed
 * frames onto the same stack, one worker's frames would overwrite the other's
 * arrays between the fill and the read-back, and the results would be wrong.
 *
 * A frame takes a little over 1 KiB of stack, so the default 64 KiB stack per
 * worker holds about 60 frames: depths up to 32 are safe. A depth in the
 * thousands overflows the stack; with the stack checks sharedwasm builds in
 * (binaryen's --stack-check) that is a trap, which the pool reports as
 * KernelTrap, never a write past the worker's stack. depth 0 gives result 0.
 */
#include <sharedwasm.h>

#define WORDS 256

/* A 32-bit integer hash ("lowbias32"). */
static inline uint32_t mix(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

/* noinline: every level must be a real call with a real frame. */
__attribute__((noinline)) static uint32_t frame(const uint32_t *parent, uint32_t seed,
                                                uint32_t level, uint32_t depth) {
    uint32_t local[WORDS];
    for (uint32_t k = 0; k < WORDS; k++) {
        uint32_t v = mix(seed + k * 0x9e3779b9u);
        if (parent) v ^= parent[(k * 7 + 3) & (WORDS - 1)];
        local[k] = v;
    }
    uint32_t acc = 0;
    if (level + 1 < depth) acc = frame(local, mix(seed ^ (level + 1)), level + 1, depth);
    for (uint32_t k = 0; k < WORDS; k++) acc = acc * 31u + local[k];
    return acc;
}

SW_KERNEL(stack_heavy, start, end, const uint32_t *seeds, const uint32_t *depths,
          uint32_t *results) {
    for (uint32_t i = start; i < end; i++) {
        const uint32_t depth = depths[i];
        results[i] = depth ? frame(0, seeds[i], 0, depth) : 0;
    }
}
