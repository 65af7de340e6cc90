/*
 * stack_heavy: a recursive checksum whose frames each hold a 1 KiB array on
 * the stack, to show that every worker has a stack of its own.
 *
 * Data layout, in bytes from the start of the data region:
 *
 *   0    records: n x 16 bytes, record i at 16 * i:
 *          +0  uint32 seed     input
 *          +4  uint32 depth    input: how many frames element i recurses through
 *          +8  uint32 result   output
 *          +12 uint32 unused
 *
 * An element is one record; compute_partition(start, end) writes the result of
 * records start..end-1. Run it with `elements=n, element_size=16`.
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

struct record {
    uint32_t seed;
    uint32_t depth;
    uint32_t result;
    uint32_t unused;
};

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

SW_KERNEL(start, end) {
    struct record *records = SW_DATA(struct record);
    for (uint32_t i = start; i < end; i++) {
        const uint32_t depth = records[i].depth;
        records[i].result = depth ? frame(0, records[i].seed, 0, depth) : 0;
    }
}
