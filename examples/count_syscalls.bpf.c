// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * A BPF program of your own, loaded with percpu (README, "Loading your own compiled BPF object"): every
 * system call on the machine adds 1 to a PERCPU_ARRAY, each CPU to its own copy of the value.
 *
 * Build it from the repository's root (clang and libbpf-dev: scripts/setup.sh --dev installs them):
 *
 *   clang -O2 -g -target bpf -I/usr/include/$(clang -print-multiarch) \
 *         -c examples/count_syscalls.bpf.c -o examples/count_syscalls.bpf.o
 *
 * -g gives the object BTF, from which percpu types the map (u32 key, u64 value). The -I is the machine's
 * multiarch include directory (/usr/include/x86_64-linux-gnu on x86_64 Debian): <linux/bpf.h> includes
 * <asm/types.h>, which Debian keeps there, and -target bpf does not look there by itself.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

/* raw_tp rather than tp_btf or a classic tracepoint: it needs neither kernel BTF nor tracefs mounted */
SEC("raw_tp/sys_enter")
int count_sys_enter(void *ctx)
{
	__u32 key = 0;
	__u64 *n = bpf_map_lookup_elem(&counts, &key);

	/* this CPU's own copy: no lock and no atomic add, nothing shared between CPUs */
	if (n)
		*n += 1;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
