/*
 * sharedwasm.h: what a C kernel needs to run on a sharedwasm pool.
 *
 * A kernel module exports entries that the pool calls on every worker with a
 * half-open range of element indices and the run's arguments: arrays (as
 * pointers into the shared memory) and numbers. Which worker is calling and
 * how many there are come from the pool at instantiation (sharedwasm_abi.s
 * imports them).
 *
 *     #include <sharedwasm.h>
 *
 *     SW_KERNEL(saxpy, start, end, float a, const float *x, float *y) {
 *         for (uint32_t i = start; i < end; i++) y[i] = a * x[i] + y[i];
 *     }
 *
 * and in Python: pool.run("step", 2.0, x, y, entry="saxpy").
 *
 * Build with `sharedwasm build kernel.c`. The build is freestanding: there is
 * no libc. The clang builtins that wasm has instructions for are free
 * (__builtin_sqrtf, __builtin_fabsf, __builtin_floorf, __builtin_ceilf,
 * __builtin_truncf, __builtin_copysignf and their double forms;
 * __builtin_wasm_min_f32/_f64 and __builtin_wasm_max_f32/_f64 for f32.min and
 * friends, since __builtin_fminf calls libm's fminf; __builtin_memcpy and
 * __builtin_memset become memory.copy and memory.fill); anything else (expf,
 * fminf, printf, malloc) is an undefined symbol at link time.
 *
 * Static and global variables live in the shared memory, so every worker sees
 * the same ones: write them with the atomics below, or only from one worker.
 * Locals and _Thread_local variables are per worker: each worker has its own
 * stack and its own thread-local block inside the memory.
 */
#ifndef SHAREDWASM_H
#define SHAREDWASM_H

#if !defined(__wasm32__)
#error "sharedwasm.h is for wasm32 kernels: build with `sharedwasm build` or clang --target=wasm32"
#endif
#if !defined(__wasm_atomics__) || !defined(__wasm_bulk_memory__)
#error "sharedwasm kernels need -matomics and -mbulk-memory: build with `sharedwasm build`"
#endif

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHAREDWASM_ABI_VERSION 1

#ifdef __cplusplus
extern "C" {
#endif

/* Byte address of the first byte of the data region (64-byte aligned). */
uint32_t sw_data_offset(void);
/* This worker's index, 0 .. sw_total_workers() - 1. */
uint32_t sw_worker_index(void);
/* The pool's worker count. */
uint32_t sw_total_workers(void);

#ifdef __cplusplus
}
#endif

/* A pointer of type `type *` to the start of the data region. */
#define SW_DATA(type) ((type *)(uintptr_t)sw_data_offset())

/* A pointer of type `type *` to `byte_offset` bytes into the data region:
 * for kernels whose data region starts with a parameter header. */
#define SW_DATA_AT(type, byte_offset) \
    ((type *)(uintptr_t)(sw_data_offset() + (uint32_t)(byte_offset)))

/* Defines an entry point.
 *
 *   SW_KERNEL(name, start, end, params...) { ... }
 *       the entry `name` (exported as "entry:name"), called with its range and
 *       the run's arguments: pool.run("id", args..., entry="name"). Pointer
 *       parameters receive arrays; `const` ones are only read.
 *   SW_KERNEL(start, end) { ... }
 *       the module's single unnamed entry, compute_partition(start, end).
 *
 * A module may define several named entries. `sharedwasm build` records each
 * one's parameter names and C types, so the pool checks every argument.
 */
#ifdef __cplusplus
#define SW__LINKAGE extern "C"
#else
#define SW__LINKAGE
#endif
#define SW__ENTRY(start, end)                                                     \
    SW__LINKAGE __attribute__((export_name("compute_partition"))) void          \
    compute_partition(uint32_t start, uint32_t end)
#define SW__ENTRY_NAMED(name, start, end, ...)                                    \
    SW__LINKAGE __attribute__((export_name("entry:" #name))) void name(          \
        uint32_t start, uint32_t end __VA_OPT__(, ) __VA_ARGS__)
/* Two arguments: the unnamed entry; three or more: a named one. */
#define SW_KERNEL(first, second, ...)                                             \
    SW__ENTRY##__VA_OPT__(_NAMED)(first, second __VA_OPT__(, ) __VA_ARGS__)

/* This worker's element of a per-worker array: the slot of a reduction's
 * partial result (`pool.partials(...)` in Python, which resets every slot
 * before each run it is passed to). Add to it once per call:
 *
 *   SW_KERNEL(sum, start, end, const float *x, double *partial) {
 *       double s = 0;
 *       for (uint32_t i = start; i < end; i++) s += x[i];
 *       SW_PARTIAL(partial) += s;
 *   }
 */
#define SW_PARTIAL(array) ((array)[sw_worker_index()])

/* Atomics on the shared memory. WebAssembly's atomic instructions are
 * sequentially consistent, so these are the whole ordering story: a plain
 * store made before sw_atomic_store_u32 is visible to a worker that sees the
 * stored value through sw_atomic_load_u32. */
static inline uint32_t sw_atomic_load_u32(const uint32_t *p) {
    return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}
static inline void sw_atomic_store_u32(uint32_t *p, uint32_t value) {
    __atomic_store_n(p, value, __ATOMIC_SEQ_CST);
}
/* Adds `value` to *p and returns the old value (i32.atomic.rmw.add). */
static inline uint32_t sw_atomic_add_u32(uint32_t *p, uint32_t value) {
    return __atomic_fetch_add(p, value, __ATOMIC_SEQ_CST);
}
/* Stores `desired` if *p == expected; returns the value *p held before. */
static inline uint32_t sw_atomic_cas_u32(uint32_t *p, uint32_t expected, uint32_t desired) {
    __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_SEQ_CST,
                                __ATOMIC_SEQ_CST);
    return expected;
}
static inline uint64_t sw_atomic_add_u64(uint64_t *p, uint64_t value) {
    return __atomic_fetch_add(p, value, __ATOMIC_SEQ_CST);
}

#endif /* SHAREDWASM_H */
