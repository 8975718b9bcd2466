// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Maps with BTF-typed values for percpu's inspection tests: `percpu dump` must decode them field by field
 * and agree with bpftool. The program fills them on each system call of one chosen process (target_tgid,
 * set in .rodata before load), so tests can drive known values on a known CPU.
 */
#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

enum proto_kind {
	PROTO_NONE = 0,
	PROTO_TCP = 6,
	PROTO_UDP = 17,
};

struct stat_val {
	__u64 packets;
	__u64 bytes;
	__u32 flags;
	__u16 port;
	__u8 proto;
	__u8 tag[3];
};

struct small_val { /* 12 bytes: per-CPU slots are padded to 16 */
	__u32 a;
	__u16 b[4];
};

struct inner {
	__s32 lo;
	__s32 hi;
};

struct nested_val {
	enum proto_kind kind;
	struct inner range;
	__u64 hist[4];
};

/*
 * Every kind of BTF a value can hold, for the exact decoding of `percpu dump`: no program writes the maps
 * of these types; the tests write their bytes raw and check the decoding field by field.
 */
enum color {
	RED = 1,
	GREEN = 7,
	BLUE = -3, /* makes the enum signed; clang before 15 has no kind_flag to say so */
};

typedef const volatile __s16 cv_s16;

struct bits {
	int s4 : 4;
	unsigned int u3 : 3;
	enum color c4 : 4;
	long long s40 : 40;
	unsigned long long u21 : 21;
	_Bool flag : 1;
};

union word {
	__u32 u;
	__s32 s;
	float f;
	__u8 b[4];
};

struct kinds_val {
	enum color color;
	enum color other; /* the tests put a value here that no enumerator has */
	struct bits bits;
	union word word;
	float f;
	double d;
	char name[6];
	char names[2][4];
	cv_s16 cv;
	_Bool yes;
	char *restrict rp;
	int __attribute__((btf_type_tag("user"))) *tagged;
	unsigned __int128 big;
	__s8 small;
	union {
		__u16 half;
		__s16 shalf;
	};
};

const volatile __u32 target_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct stat_val);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct small_val);
} small SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct nested_val);
} nested SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct kinds_val);
} kinds SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, enum color);
	__type(value, struct kinds_val);
} kinds_by_color SEC(".maps");

SEC("tp_btf/sys_enter")
int BPF_PROG(fill, struct pt_regs *regs, long id)
{
	if ((__u32)(bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	__u32 key = (__u32)id & 63;
	struct stat_val *s = bpf_map_lookup_elem(&stats, &key);

	if (!s) {
		struct stat_val init = { .packets = 1, .bytes = 100, .flags = 0xabc, .port = 443, .proto = 6,
					 .tag = { 1, 2, 3 } };

		bpf_map_update_elem(&stats, &key, &init, BPF_NOEXIST);
	} else {
		s->packets += 1;
		s->bytes += 100;
	}
	struct small_val *m = bpf_map_lookup_elem(&small, &key);

	if (!m) {
		struct small_val init = { .a = (__u32)id, .b = { 1, 2, 3, 4 } };

		bpf_map_update_elem(&small, &key, &init, BPF_NOEXIST);
	} else {
		m->a += 1;
	}
	__u32 zero = 0;
	struct nested_val *n = bpf_map_lookup_elem(&nested, &zero);

	if (n) {
		n->kind = PROTO_UDP;
		n->range.lo = -5;
		n->range.hi += 1;
		n->hist[id & 3] += 1;
	}
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
