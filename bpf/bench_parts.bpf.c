// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The parts percpu's syscall counter is built from, one per program, each at tp_btf/sys_enter: the
 * benchmark (benchmarks/bench_syscalls.py --parts) reads each program's own run time from the kernel's
 * BPF statistics and subtracts the empty program's, which prices one helper call, clock read or map
 * access on the running kernel (whether the verifier inlines it or calls it, and what the machine's
 * return-thunk mitigations make a call cost). Not used by percpu itself.
 */
#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct task_struct {
	int tgid;
	char comm[16];
} __attribute__((preserve_access_index));

struct proc_key {
	__u32 tgid;
	__u32 slot;
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} part_starts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} part_array SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} part_tids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct proc_key);
	__type(value, __u64);
} part_procs SEC(".maps");

/* Results go to a global so the compiler keeps the call; a store costs next to nothing. */
__u64 part_sink;

SEC("tp_btf/sys_enter")
int BPF_PROG(part_empty)
{
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(part_ktime)
{
	part_sink = bpf_ktime_get_ns();
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(part_cpu)
{
	part_sink = bpf_get_smp_processor_id();
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(part_task)
{
	part_sink = (unsigned long)bpf_get_current_task_btf();
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(part_pid_tgid)
{
	part_sink = bpf_get_current_pid_tgid();
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(part_array_inc, void *regs, long id)
{
	__u32 k = (__u32)id & 1023;
	__u64 *v = bpf_map_lookup_elem(&part_array, &k);

	if (v)
		*v += 1;
	return 0;
}

/* The latency mode's start-time store on entry: this task's storage, created on first use. */
SEC("tp_btf/sys_enter")
int BPF_PROG(part_task_storage)
{
	__u64 *v = bpf_task_storage_get(&part_starts, bpf_get_current_task_btf(), 0,
					BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (v)
		*v += 1;
	return 0;
}

/* The start-time store of kernels without BTF or task storage: a hash keyed by thread id. */
SEC("tp_btf/sys_enter")
int BPF_PROG(part_tid_hash)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 *v = bpf_map_lookup_elem(&part_tids, &tid);
	__u64 one = 1;

	if (v)
		*v += 1;
	else
		bpf_map_update_elem(&part_tids, &tid, &one, BPF_ANY);
	return 0;
}

/* The per-process mode's count: key from the task through its BTF pointer, LRU per-CPU hash. */
SEC("tp_btf/sys_enter")
int BPF_PROG(part_proc_hash, void *regs, long id)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct proc_key k = { .tgid = task->tgid, .slot = (__u32)id };
	__u64 one = 1;
	__u64 *v;

	__builtin_memcpy(k.comm, task->comm, sizeof(k.comm));
	v = bpf_map_lookup_elem(&part_procs, &k);
	if (v)
		*v += 1;
	else
		bpf_map_update_elem(&part_procs, &k, &one, BPF_NOEXIST);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
