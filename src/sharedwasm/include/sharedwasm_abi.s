# The sharedwasm kernel ABI, the part C cannot say: the three immutable i32
# globals the pool gives each worker's instance, imported from "env", and a
# function per global that reads it. `sharedwasm build` links this file into
# every kernel; link it yourself when you drive clang by hand.
#
# A call to one of these costs a few instructions; read each value once per
# compute_partition call, not once per element.

	.globaltype	__sharedwasm_data_offset, i32, immutable
	.import_module	__sharedwasm_data_offset, env
	.import_name	__sharedwasm_data_offset, data_offset

	.globaltype	__sharedwasm_worker_index, i32, immutable
	.import_module	__sharedwasm_worker_index, env
	.import_name	__sharedwasm_worker_index, worker_index

	.globaltype	__sharedwasm_total_workers, i32, immutable
	.import_module	__sharedwasm_total_workers, env
	.import_name	__sharedwasm_total_workers, total_workers

	.section	.text.sw_data_offset,"",@
	.globl	sw_data_offset
	.type	sw_data_offset,@function
sw_data_offset:
	.functype	sw_data_offset () -> (i32)
	global.get	__sharedwasm_data_offset
	end_function

	.section	.text.sw_worker_index,"",@
	.globl	sw_worker_index
	.type	sw_worker_index,@function
sw_worker_index:
	.functype	sw_worker_index () -> (i32)
	global.get	__sharedwasm_worker_index
	end_function

	.section	.text.sw_total_workers,"",@
	.globl	sw_total_workers
	.type	sw_total_workers,@function
sw_total_workers:
	.functype	sw_total_workers () -> (i32)
	global.get	__sharedwasm_total_workers
	end_function

# The ABI version this kernel was built for, exported as a global holding its
# address. Being data, it also makes wasm-ld import the memory in a kernel
# that would otherwise never touch it (an empty one, say), which the pool
# requires of every kernel.
	.section	.rodata.__sharedwasm_abi_version,"",@
	.globl	__sharedwasm_abi_version
	.p2align	2
__sharedwasm_abi_version:
	.int32	1
	.size	__sharedwasm_abi_version, 4
