// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Empty programs at the hooks percpu's syscall counter uses: the cost floor that benchmarks compare the
 * counter against (the price of entering a BPF program at that hook at all).
 */
#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

SEC("tp_btf/sys_enter")
int BPF_PROG(enter_btf)
{
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(exit_btf)
{
	return 0;
}

SEC("raw_tp/sys_enter")
int BPF_PROG(enter_raw)
{
	return 0;
}

SEC("raw_tp/sys_exit")
int BPF_PROG(exit_raw)
{
	return 0;
}

SEC("tracepoint/raw_syscalls/sys_enter")
int enter_tp(void *ctx)
{
	return 0;
}

SEC("tracepoint/raw_syscalls/sys_exit")
int exit_tp(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Not a floor but a reference: the least any per-CPU syscall counter can do (bounds check, this CPU's
 * slot, increment). Benchmarks show how close percpu's default mode comes to it. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} ref_counts SEC(".maps");

SEC("tp_btf/sys_enter")
int BPF_PROG(count_btf, void *regs, long id)
{
	__u32 slot = (__u32)id;
	__u64 *v;

	if (slot >= 1024)
		return 0;
	v = bpf_map_lookup_elem(&ref_counts, &slot);
	if (v)
		*v += 1;
	return 0;
}
