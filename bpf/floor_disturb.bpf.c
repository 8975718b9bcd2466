// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Empty programs at the hooks percpu's disturbance counter uses (bpf/disturb.bpf.c): the floor that
 * benchmarks/bench_disturb.py compares each of its programs against, attached beside it at the same hook in
 * the same run; and the price of one clock read there (ktime_*), for the programs that time handlers.
 * Not used by percpu itself.
 */
#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define EMPTY(hook)                                                                                        \
	SEC("tp_btf/" #hook)                                                                               \
	int BPF_PROG(floor_##hook)                                                                         \
	{                                                                                                  \
		return 0;                                                                                  \
	}

EMPTY(irq_handler_entry)
EMPTY(irq_handler_exit)
EMPTY(softirq_entry)
EMPTY(softirq_exit)
EMPTY(sched_switch)
EMPTY(local_timer_entry)
EMPTY(local_timer_exit)
EMPTY(reschedule_entry)
EMPTY(reschedule_exit)
EMPTY(call_function_entry)
EMPTY(call_function_exit)
EMPTY(call_function_single_entry)
EMPTY(call_function_single_exit)
EMPTY(irq_work_entry)
EMPTY(irq_work_exit)

SEC("raw_tp/csd_function_entry")
int BPF_PROG(floor_csd_function_entry)
{
	return 0;
}

/* Results go to a global so the compiler keeps the call (as in bench_parts.bpf.c). */
__u64 floor_sink;

SEC("tp_btf/softirq_entry")
int BPF_PROG(ktime_softirq_entry)
{
	floor_sink = bpf_ktime_get_ns();
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(ktime_sched_switch)
{
	floor_sink = bpf_ktime_get_ns();
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
