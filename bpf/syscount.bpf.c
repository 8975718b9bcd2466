// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * percpu's system-call counter.
 *
 * Counts every system call per CPU by syscall number in a PERCPU_ARRAY. Opt-in modes add per-process
 * counts (PERCPU_HASH), failures by errno (PERCPU_HASH) and log2 latency histograms (PERCPU_ARRAY
 * rows, PERCPU_HASH when a CPU's rows run out). Each CPU only
 * ever touches its own slot of a per-CPU map, so a plain increment is race-free without atomics: a BPF
 * program is not preempted by another program on the same CPU at these hooks (tracing programs do not
 * nest: a recursive entry is skipped by the kernel and counted as a miss in the program's stats), and no
 * other CPU writes this CPU's slot. Shared counters would need atomic adds and bounce cache lines.
 *
 * Configuration is one struct in .rodata, written by user space before load. The verifier treats it as
 * constants and removes every disabled branch, so the default path is: read the id, check its range,
 * look up this CPU's counter, increment.
 *
 * The structs and enums user space shares (struct percpu_config, the map keys and rows, enum percpu_consts,
 * enum percpu_lost) reach Python through this object's BTF: tools/gen_contract.py writes
 * src/percpu/_contract.py from it, and a unit test fails when the two drift apart.
 *
 * task_btf and task_storage say what this kernel has (probed by user space): bpf_get_current_task_btf()
 * and task local storage both arrived in Linux 5.11. Without them the code under them is dead and the
 * verifier never sees those helpers: tgid and comm come from helpers, and latency start times from an LRU
 * hash keyed by thread id (starts_tid), whose map user space creates only when it is used.
 *
 * Three flavours of each program, so user space can fall back on older kernels:
 *   tp_btf/sys_{enter,exit}      (BTF-typed raw tracepoint, cheapest, Linux 5.5 with BTF)
 *   raw_tp/sys_{enter,exit}      (raw tracepoint, Linux 4.17)
 *   tracepoint/raw_syscalls/...  (classic tracepoint, needs tracefs)
 * User space enables one flavour with autoload, and the exit program only when a mode needs sys_exit.
 */
#include <linux/bpf.h>
#include <linux/types.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#define MAX_ERRNO 4095

/* Constants user space needs too. Enumerators, not macros, so that BTF records them (as a type user space
 * reads) while the compiled code is the same as with literals. */
enum percpu_consts {
	NR_SLOTS = 2048, /* entries of counts: native syscalls, then compat ones */
	COMPAT_BASE = 1024, /* slot of compat syscall 0 */
	/* Latency buckets are log2 of nanoseconds (0..LAT_BUCKETS - 1). A histogram row holds buckets
	 * ROW_FIRST_BUCKET to ROW_FIRST_BUCKET + ROW_BUCKETS - 1 (16 ns to 68 s); other buckets, and syscalls
	 * beyond a CPU's LAT_ROWS, go to the latency hash. */
	LAT_BUCKETS = 64,
	ROW_FIRST_BUCKET = 4,
	ROW_BUCKETS = 32,
	LAT_ROWS = 128,
	PROC_LINES = 64, /* lines of a CPU's per-process cache (a power of two) */
};

/* Calls an opt-in table could not take, by table (the lost map's keys): the table was full (an
 * unprivileged process can fill the errno and latency tables, e.g. with seccomp RET_ERRNO on many numbers)
 * or the kernel had no memory for the entry. Shown with the counts, so a report never hides what it missed. */
enum percpu_lost {
	LOST_PROCESSES,
	LOST_ERRORS,
	LOST_LATENCY,
	LOST_TABLES,
};

/* Clang records an enum in BTF only when something has its type. These variables are that something, in a
 * section of their own that libbpf skips (it loads no data section it does not know): no map, no code. */
const enum percpu_consts percpu_consts SEC(".percpu.contract") = NR_SLOTS;
const enum percpu_lost percpu_lost SEC(".percpu.contract") = LOST_TABLES;

/* Built twice (scripts/build-bpf): syscount.bpf.o for kernels with BTF (/sys/kernel/btf/vmlinux), and
 * syscount_nobtf.bpf.o (bpf/syscount_nobtf.bpf.c defines PERCPU_NO_BTF) for kernels without it. The latter
 * has no CO-RE relocation and calls no BTF-only helper, so libbpf loads it without kernel BTF: raw_tp
 * programs only, registers read at their fixed ABI offsets, tgid and comm from helpers, and latency start
 * times in an LRU hash keyed by thread id instead of task storage. */
#ifdef PERCPU_NO_BTF
#if defined(__TARGET_ARCH_x86)
/* struct pt_regs on x86_64: r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di orig_ax ip cs ..., the layout
 * ptrace has always exposed (arch/x86/include/asm/ptrace.h). */
#define REGS_NR_OFF 120
#define REGS_CS_OFF 136
/* Without BTF the task's TS_COMPAT status (see below) has no fixed offset: thread_info.status is at 8
 * before Linux 5.11 and at 16 from 5.11 (syscall_work came before it). What is fixed is the code segment
 * a 32-bit task enters with, so this object tells 32-bit tasks apart, and not a 64-bit task's int $0x80
 * calls (named from the 64-bit table; percpu doctor says so). */
#define USER32_CS 0x23
#elif defined(__TARGET_ARCH_arm64)
/* struct pt_regs on arm64: regs[31], sp, pc, pstate, orig_x0, then s32 syscallno. */
#define REGS_NR_OFF 280
#else
#error "percpu's syscall counter supports x86_64 and arm64"
#endif
struct pt_regs;
struct task_struct;

static __always_inline long regs_nr(struct pt_regs *regs)
{
	long v = 0;

#if defined(__TARGET_ARCH_arm64)
	int nr = 0;

	bpf_probe_read(&nr, sizeof(nr), (char *)regs + REGS_NR_OFF);
	v = nr;
#else
	bpf_probe_read(&v, sizeof(v), (char *)regs + REGS_NR_OFF);
#endif
	return v;
}
#else /* with kernel BTF */

/* The few kernel types used, matched against the running kernel's BTF by CO-RE (no vmlinux.h). */
#if defined(__TARGET_ARCH_x86)
struct pt_regs {
	unsigned long orig_ax; /* syscall_get_nr() on x86 */
} __attribute__((preserve_access_index));
#define REGS_NR(regs) ((regs)->orig_ax)
#define REGS_NR_FIELD orig_ax
/* A call is an i386 one when the kernel runs it as one: the entry code of every 32-bit way in (int $0x80,
 * sysenter, syscall from a 32-bit task) sets TS_COMPAT in the task's thread_info.status before the
 * sys_enter tracepoint, and it is cleared on the way back to user space, after sys_exit
 * (arch_exit_to_user_mode_prepare). in_ia32_syscall() reads that bit, and so does this program, on every
 * kernel from 5.10 to 7.x. The code segment would not do: a 64-bit task that makes an int $0x80 call
 * keeps the 64-bit one. */
#define TS_COMPAT 0x0002
struct thread_info {
	__u32 status;
} __attribute__((preserve_access_index));
#elif defined(__TARGET_ARCH_arm64)
struct pt_regs {
	int syscallno;
} __attribute__((preserve_access_index));
#define REGS_NR(regs) ((regs)->syscallno)
#define REGS_NR_FIELD syscallno
#else
#error "percpu's syscall counter supports x86_64 and arm64"
#endif

struct task_struct {
#if defined(__TARGET_ARCH_x86)
	struct thread_info thread_info;
#endif
	int pid;
	int tgid;
	char comm[16];
} __attribute__((preserve_access_index));
#endif /* PERCPU_NO_BTF */

struct percpu_config {
	__u32 filter_tgid;
	__u32 filter_tid;
	__u64 filter_cgroup;
	char filter_comm[16];
	__u8 use_syscall_mask;
	__u8 failed_only;
	__u8 per_process;
	__u8 errors;
	__u8 latency;
	__u8 detect_compat;
	__u8 task_btf;
	__u8 task_storage;
	/* Latency start times in a per-CPU slot, spilled by the sched_switch program (tp_btf only). */
	__u8 lat_percpu;
	/* Per-process counts gather in a per-CPU cache first (proc_cache), flushed to proc_counts. */
	__u8 proc_cache;
	__u64 syscall_mask[16];
	/* When percpu runs in a pid namespace other than the initial one, filter_tgid and filter_tid are
	 * pids of that namespace, and so are the per-process tgids (device and inode of /proc/self/ns/pid);
	 * 0: the kernel's own pids. */
	__u64 pidns_dev;
	__u64 pidns_ino;
};

const volatile struct percpu_config cfg = {};

struct proc_key {
	__u32 tgid;
	__u32 slot;
	char comm[16];
};

struct err_key {
	__u32 slot;
	__u32 err;
};

struct lat_key {
	__u32 slot;
	__u32 bucket;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NR_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LOST_TABLES);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/* Per-process counts. Not an LRU: an LRU makes room by dropping the counts of the least recently used key
 * without a word, and with many short processes (a build) most counts went that way. A full table instead
 * counts what it could not take as lost, and user space keeps it from filling: it takes the rows of
 * processes that have exited out of the table while counting (and keeps them), watching proc_inserts to
 * know when. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 10240);
	__type(key, struct proc_key);
	__type(value, __u64);
} proc_counts SEC(".maps");

/* Keys inserted into proc_counts, per CPU: with the rows user space has left in the table, an upper bound
 * of how full the table is, read without reading the table. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} proc_inserts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct err_key);
	__type(value, __u64);
} errors SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct lat_key);
	__type(value, __u64);
} latency SEC(".maps");

/* The per-process cache (cfg.proc_cache). A call's key (tgid, slot, comm) goes to one line of this CPU's
 * cache, chosen by tgid and slot; a line holding that key takes the call with one inlined array access,
 * instead of a hash lookup of the 24-byte key (measured: about 70 ns). A line taken over by another key
 * first adds what it holds to proc_counts. User space flushes every line into proc_counts before it reads
 * them: it runs flush_procs on each online CPU (BPF_PROG_TEST_RUN with BPF_F_TEST_RUN_ON_CPU, an
 * interrupt on that CPU), so a snapshot holds every call made before that CPU's flush, exactly once.
 * busy is set while a counting program works on the cache: the interrupt may land in the middle of one,
 * and then the flush refuses (returns 1) and user space runs it again. Only the CPU's own programs and
 * its flush touch a line, so nothing here needs atomics. */
struct proc_line {
	struct proc_key key;
	__u64 n; /* calls not yet in proc_counts; 0: the line is free */
};

struct proc_cache {
	__u32 busy;
	__u32 _pad;
	struct proc_line line[PROC_LINES];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct proc_cache);
} proc_cache SEC(".maps");

/* Latency histograms are rows of ROW_BUCKETS counters in a PERCPU_ARRAY, so the per-call update is two
 * inlined array lookups instead of a hash lookup (measured: about 25 ns less per call on the benchmark
 * VM). Each CPU hands out its own rows in the order it first sees syscalls: no atomics, and the row
 * numbers of different CPUs are independent (user space maps them back through lat_index). The size read
 * per scrape stays bounded: LAT_ROWS x ROW_BUCKETS x 8 bytes per possible CPU (32 KiB; a full latency
 * hash holds more). Buckets outside a row, and syscalls on a CPU that has used all its rows, are counted
 * in the latency hash, so nothing is lost. */
struct lat_index {
	__u8 row[NR_SLOTS]; /* row + 1 of each slot on this CPU; 0 = none yet */
	__u32 used; /* rows taken on this CPU */
};

struct lat_row {
	__u64 n[ROW_BUCKETS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lat_index);
} lat_index SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LAT_ROWS);
	__type(key, __u32);
	__type(value, struct lat_row);
} lat_rows SEC(".maps");

/* Start times by thread id, for kernels without task local storage (before 5.11, or without BTF); least
 * recently used threads make room for new ones. A thread that dies in exit() leaves its entry behind, and
 * a new thread may get its id: the slot stored with the time makes the new thread's first sys_exit (of
 * clone, never of exit) ignore it. */
struct start {
	__u64 ts;
	__u32 slot;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct start);
} starts_tid SEC(".maps");

#ifndef PERCPU_NO_BTF
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct start);
} starts SEC(".maps");

/* The start time of the call in flight on this CPU (lat_percpu, tp_btf only). A call's sys_enter and
 * sys_exit run on the same CPU unless the task is switched out in between, and the sched_switch program
 * (switch_btf) moves the slot's contents to the task's own store (task storage, or starts_tid before 5.11)
 * whenever a task leaves the CPU. So the slot only ever holds a start of the task running on its CPU, and
 * the common path, a call that does not block, costs two inlined array lookups instead of two task
 * storage (or hash) lookups; only a call that was switched out pays for its store, at sys_exit.
 * regs (the task's user registers on its kernel stack, the tracepoint's first argument) tells the owner
 * apart without a helper call: unique among live tasks. */
struct inflight {
	__u64 regs;
	__u64 ts; /* 0: nothing in flight */
	__u32 slot;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct inflight);
} inflight SEC(".maps");
#endif

static __always_inline bool skip_task(void)
{
	if (cfg.filter_tgid || cfg.filter_tid) {
		__u64 id = bpf_get_current_pid_tgid();
		__u32 tgid = id >> 32, tid = (__u32)id;

#ifndef PERCPU_NO_BTF
		if (cfg.pidns_ino) {
			struct bpf_pidns_info ns = {};

			/* Fails for a task outside that namespace: not the one asked for. */
			if (bpf_get_ns_current_pid_tgid(cfg.pidns_dev, cfg.pidns_ino, &ns, sizeof(ns)))
				return true;
			tgid = ns.tgid;
			tid = ns.pid;
		}
#endif
		if (cfg.filter_tgid && tgid != cfg.filter_tgid)
			return true;
		if (cfg.filter_tid && tid != cfg.filter_tid)
			return true;
	}
	if (cfg.filter_cgroup && bpf_get_current_cgroup_id() != cfg.filter_cgroup)
		return true;
	if (cfg.filter_comm[0]) {
		char comm[16];

		bpf_get_current_comm(comm, sizeof(comm));
#pragma unroll
		for (int i = 0; i < 16; i++) {
			if (comm[i] != cfg.filter_comm[i])
				return true;
			if (!comm[i])
				break;
		}
	}
	return false;
}

/* Slot of a call, or -1 when it is not to be counted (out of range, or outside the syscall subset). */
static __always_inline long slot_of(long id, bool compat)
{
	if (id < 0 || id >= COMPAT_BASE) {
		__u32 zero = 0;
		__u64 *d = bpf_map_lookup_elem(&dropped, &zero);

		if (d)
			*d += 1;
		return -1;
	}
	if (cfg.use_syscall_mask) {
		if (compat)
			return -1;
		if (!((cfg.syscall_mask[(id >> 6) & 15] >> (id & 63)) & 1))
			return -1;
	}
	return compat ? id + COMPAT_BASE : id;
}

static __always_inline void count_slot(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&counts, &slot);

	if (v)
		*v += 1; /* this CPU's slot only: no atomic needed */
}

static __always_inline void bump_hash(void *map, void *key, __u32 table)
{
	__u64 *v = bpf_map_lookup_elem(map, key);

	if (v) {
		*v += 1;
		return;
	}
	__u64 one = 1;

	/* Inserting sets this CPU's value and zeroes the others. If another CPU inserted the key between our
	 * lookup and update, NOEXIST fails: look up again so the call is still counted. If the key is still
	 * not there, the table is full (or out of memory): count the call as lost. */
	if (bpf_map_update_elem(map, key, &one, BPF_NOEXIST)) {
		v = bpf_map_lookup_elem(map, key);
		if (!v)
			v = bpf_map_lookup_elem(&lost, &table);
		if (v)
			*v += 1;
	}
}

#define barrier() asm volatile("" ::: "memory")

/* Adds n calls to this CPU's value of a process key; what the table cannot take is counted as lost. Counts
 * the keys it inserts (proc_inserts), so that user space knows when to take exited processes out. */
static __always_inline void add_proc(struct proc_key *k, __u64 n)
{
	__u32 zero = 0;
	__u64 *v = bpf_map_lookup_elem(&proc_counts, k);

	if (v) {
		*v += n;
		return;
	}
	if (!bpf_map_update_elem(&proc_counts, k, &n, BPF_NOEXIST)) {
		v = bpf_map_lookup_elem(&proc_inserts, &zero);
		if (v)
			*v += 1;
		return;
	}
	v = bpf_map_lookup_elem(&proc_counts, k); /* another CPU inserted it meanwhile */
	if (!v) {
		__u32 table = LOST_PROCESSES;

		v = bpf_map_lookup_elem(&lost, &table);
	}
	if (v)
		*v += n;
}

static __always_inline void count_process_key(struct proc_key *k)
{
	if (!cfg.proc_cache) {
		add_proc(k, 1);
		return;
	}
	__u32 zero = 0;
	struct proc_cache *c = bpf_map_lookup_elem(&proc_cache, &zero);

	if (!c) {
		add_proc(k, 1);
		return;
	}
	/* The compiler must not move the cache's loads and stores out from between the two stores of
	 * busy (the CPU itself sees its own stores in order, an interrupt included). */
	*(volatile __u32 *)&c->busy = 1;
	barrier();
	struct proc_line *l = &c->line[(k->tgid * 31 + k->slot) & (PROC_LINES - 1)];
	__u64 *a = (__u64 *)&l->key, *b = (__u64 *)k;

	if (l->n && a[0] == b[0] && a[1] == b[1] && a[2] == b[2]) {
		l->n += 1;
	} else {
		if (l->n)
			add_proc(&l->key, l->n);
		l->key = *k;
		l->n = 1;
	}
	barrier();
	*(volatile __u32 *)&c->busy = 0;
}

/* tgid and comm are read straight from the task: with tp_btf these are plain loads through a trusted
 * BTF pointer, far cheaper than the bpf_get_current_pid_tgid() and bpf_get_current_comm() helpers
 * (measured in docs/benchmarks.md). A comm being renamed at that moment can be read torn: harmless. */
/* The tgid as percpu's pid namespace numbers it, when that is not the initial one: 0 for a task outside
 * it (a process the container cannot see has no pid there). */
static __always_inline __u32 ns_tgid(__u32 tgid)
{
#ifndef PERCPU_NO_BTF
	if (cfg.pidns_ino) {
		struct bpf_pidns_info ns = {};

		return bpf_get_ns_current_pid_tgid(cfg.pidns_dev, cfg.pidns_ino, &ns, sizeof(ns)) ? 0 : ns.tgid;
	}
#endif
	return tgid;
}

static __always_inline void count_process(__u32 slot, struct task_struct *task, bool btf)
{
	struct proc_key k __attribute__((aligned(8))) = { .slot = slot };

#ifndef PERCPU_NO_BTF
	if (cfg.task_btf) {
		if (btf) {
			k.tgid = task->tgid;
			__builtin_memcpy(k.comm, task->comm, sizeof(k.comm));
		} else {
			k.tgid = BPF_CORE_READ(task, tgid);
			BPF_CORE_READ_STR_INTO(&k.comm, task, comm);
		}
		k.tgid = ns_tgid(k.tgid);
		count_process_key(&k);
		return;
	}
#endif
	k.tgid = ns_tgid(bpf_get_current_pid_tgid() >> 32);
	bpf_get_current_comm(k.comm, sizeof(k.comm));
	count_process_key(&k);
}

static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0;

	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) { r += 1; }
	return r;
}

static __always_inline void count_latency(__u32 slot, __u32 bucket)
{
	__u32 zero = 0;
	__u32 b = bucket - ROW_FIRST_BUCKET; /* wraps below the first bucket */
	struct lat_index *ix = bpf_map_lookup_elem(&lat_index, &zero);

	if (b < ROW_BUCKETS && ix && slot < NR_SLOTS) {
		__u32 row = ix->row[slot];

		if (!row && ix->used < LAT_ROWS) {
			row = ++ix->used; /* this CPU's own index: no other CPU writes it */
			ix->row[slot] = row;
		}
		if (row) {
			__u32 r = row - 1;
			struct lat_row *h = bpf_map_lookup_elem(&lat_rows, &r);

			if (h) {
				h->n[b] += 1;
				return;
			}
		}
	}
	struct lat_key k = { .slot = slot, .bucket = bucket };

	bump_hash(&latency, &k, LOST_LATENCY);
}

/* Whether the call in progress is an i386 one (see TS_COMPAT above). With kernel BTF: the task's status,
 * read from task when the caller fetched it (a plain load at tp_btf, a CO-RE read elsewhere), else from
 * bpf_get_current_task_btf() (5.11), else through bpf_get_current_task(), which every hook has. Without
 * BTF: the code segment in regs. Called after the filters, so a call they skip costs no task fetch. */
static __always_inline bool compat_call(struct task_struct *task, struct pt_regs *regs, bool btf)
{
#if defined(__TARGET_ARCH_x86)
	if (cfg.detect_compat) {
#ifdef PERCPU_NO_BTF
		unsigned long cs = 0;

		bpf_probe_read(&cs, sizeof(cs), (char *)regs + REGS_CS_OFF);
		return cs == USER32_CS;
#else
		if (cfg.task_btf) {
			if (!task)
				task = bpf_get_current_task_btf();
			return (btf ? task->thread_info.status : BPF_CORE_READ(task, thread_info.status)) & TS_COMPAT;
		}
		task = (struct task_struct *)bpf_get_current_task();
		return BPF_CORE_READ(task, thread_info.status) & TS_COMPAT;
#endif
	}
#endif
	return false;
}

static __always_inline int on_enter(long id, struct task_struct *task, bool btf, void *regs)
{
	if (skip_task())
		return 0;
	long slot = slot_of(id, compat_call(task, regs, btf));

	if (slot < 0)
		return 0;
	if (cfg.latency) {
#ifndef PERCPU_NO_BTF
		if (cfg.lat_percpu && btf) {
			__u32 zero = 0;
			struct inflight *f = bpf_map_lookup_elem(&inflight, &zero);

			if (f) {
				f->regs = (__u64)regs;
				f->slot = slot;
				f->ts = bpf_ktime_get_ns();
			}
		} else if (cfg.task_storage) {
			struct start *st = bpf_task_storage_get(&starts, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);

			if (st) {
				st->slot = slot;
				st->ts = bpf_ktime_get_ns();
			}
		} else
#endif
		{
			__u32 tid = (__u32)bpf_get_current_pid_tgid();
			struct start st = { .ts = bpf_ktime_get_ns(), .slot = slot };

			bpf_map_update_elem(&starts_tid, &tid, &st, BPF_ANY);
		}
	}
	if (cfg.failed_only)
		return 0; /* counted on sys_exit, where the result is known */
	count_slot(slot);
	if (cfg.per_process)
		count_process(slot, task, btf);
	return 0;
}

static __always_inline int on_exit(long id, long ret, struct task_struct *task, bool btf, void *regs)
{
	if (skip_task())
		return 0;
	if (id < 0 || id >= COMPAT_BASE)
		return 0; /* already counted as dropped on entry */
	bool failed = ret < 0 && ret >= -MAX_ERRNO;

	if (!failed && !cfg.latency)
		return 0; /* nothing is recorded at exit for a call that succeeded */
	long slot = -1;

#ifndef PERCPU_NO_BTF
	if (cfg.latency && cfg.lat_percpu && btf) {
		__u32 zero = 0;
		struct inflight *f = bpf_map_lookup_elem(&inflight, &zero);

		/* This call's start is still in this CPU's slot (it never left the CPU): its slot, taken at
		 * entry, says already whether it is an i386 call, without fetching the task again. */
		if (f && f->ts && f->regs == (__u64)regs && (f->slot & (COMPAT_BASE - 1)) == id)
			slot = f->slot & (NR_SLOTS - 1); /* (a slot is below NR_SLOTS: the mask says so to the verifier) */
	}
#endif
	if (slot < 0)
		slot = slot_of(id, compat_call(task, regs, btf));
	if (slot < 0)
		return 0;

	if (cfg.failed_only && failed) {
		count_slot(slot);
		if (cfg.per_process)
			count_process(slot, task, btf);
	}
	if (cfg.errors && failed) {
		struct err_key k = { .slot = slot, .err = (__u32)-ret };

		bump_hash(&errors, &k, LOST_ERRORS);
	}
	if (cfg.latency) {
#ifndef PERCPU_NO_BTF
		if (cfg.lat_percpu && btf) {
			__u32 zero = 0;
			struct inflight *f = bpf_map_lookup_elem(&inflight, &zero);

			if (f && f->ts && f->regs == (__u64)regs && f->slot == slot) {
				__u64 delta = bpf_ktime_get_ns() - f->ts;

				f->ts = 0;
				count_latency(slot, log2_u64(delta));
				return 0;
			}
			/* Not in this CPU's slot: the task was switched out during the call, and switch_btf
			 * moved the start to the task's store, read below. */
			if (cfg.task_storage)
				task = bpf_get_current_task_btf();
		}
		if (cfg.task_storage) {
			struct start *st = bpf_task_storage_get(&starts, task, 0, 0);

			if (st && st->ts && st->slot == slot) {
				__u64 delta = bpf_ktime_get_ns() - st->ts;

				st->ts = 0;
				count_latency(slot, log2_u64(delta));
			}
			return 0;
		}
#endif
		__u32 tid = (__u32)bpf_get_current_pid_tgid();
		struct start *st = bpf_map_lookup_elem(&starts_tid, &tid);

		if (st && st->ts && st->slot == slot) {
			__u64 delta = bpf_ktime_get_ns() - st->ts;

			st->ts = 0;
			count_latency(slot, log2_u64(delta));
		}
	}
	return 0;
}

/* Never attached: user space runs it on one CPU at a time (BPF_PROG_TEST_RUN) to move that CPU's cached
 * per-process counts into proc_counts before reading them. Returns 1 when it interrupted a counting
 * program on that CPU (nothing moved: run it again). */
SEC("raw_tp/sys_enter")
int flush_procs(void *ctx)
{
	__u32 zero = 0;
	struct proc_cache *c = bpf_map_lookup_elem(&proc_cache, &zero);

	if (!c)
		return 0;
	if (*(volatile __u32 *)&c->busy)
		return 1;
	for (int i = 0; i < PROC_LINES; i++) {
		struct proc_line *l = &c->line[i];

		if (l->n) {
			add_proc(&l->key, l->n);
			l->n = 0;
		}
	}
	return 0;
}

#ifdef PERCPU_NO_BTF
SEC("raw_tp/sys_enter")
int BPF_PROG(enter_raw, struct pt_regs *regs, long id)
{
	return on_enter(id, 0, false, regs);
}

SEC("raw_tp/sys_exit")
int BPF_PROG(exit_raw, struct pt_regs *regs, long ret)
{
	return on_exit(regs_nr(regs), ret, 0, false, regs);
}
#else /* with kernel BTF */

/* --- tp_btf: typed arguments, direct reads through BTF pointers ----------------------------------- */

/* The task pointer is fetched only when a mode reads from it and the kernel has the helper (5.11); the
 * verifier drops the call otherwise. */
#define LAT_TASK(btf) (cfg.latency && cfg.task_storage && !(cfg.lat_percpu && (btf)))
#define NEED_TASK_ENTER(btf) (cfg.task_btf && (LAT_TASK(btf) || (cfg.per_process && !cfg.failed_only)))
#define NEED_TASK_EXIT(btf) (cfg.task_btf && (LAT_TASK(btf) || (cfg.per_process && cfg.failed_only)))

SEC("tp_btf/sys_enter")
int BPF_PROG(enter_btf, struct pt_regs *regs, long id)
{
	return on_enter(id, NEED_TASK_ENTER(true) ? bpf_get_current_task_btf() : 0, true, regs);
}

/* The default mode (no filter, no opt-in dimension) on its own: the fewest instructions that count a call,
 * as close to an empty program as a counter gets. User space picks it when nothing else is asked for. */
SEC("tp_btf/sys_enter")
int BPF_PROG(enter_btf_fast, struct pt_regs *regs, long id)
{
	__u32 slot = (__u32)id;

	if (slot >= COMPAT_BASE) {
		__u32 zero = 0;
		__u64 *d = bpf_map_lookup_elem(&dropped, &zero);

		if (d)
			*d += 1;
		return 0;
	}
	if (compat_call(0, regs, true))
		slot += COMPAT_BASE;
	count_slot(slot);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(exit_btf, struct pt_regs *regs, long ret)
{
	return on_exit(REGS_NR(regs), ret, NEED_TASK_EXIT(true) ? bpf_get_current_task_btf() : 0, true, regs);
}

/* Moves the start time of a call in flight out of this CPU's slot when its task leaves the CPU (it blocked
 * or was preempted in the call, or it exits), into the task's own store, where its sys_exit finds it on
 * whichever CPU it returns. Attached before sys_enter (user space) so that the slot never holds a start
 * of a task that is not running. A start the store could not take is counted as lost. */
SEC("tp_btf/sched_switch")
int BPF_PROG(switch_btf, bool preempt, struct task_struct *prev)
{
	__u32 zero = 0;
	struct inflight *f = bpf_map_lookup_elem(&inflight, &zero);

	if (!f || !f->ts)
		return 0;
	struct start st = { .ts = f->ts, .slot = f->slot };
	bool stored = false;

	f->ts = 0;
	if (cfg.task_storage) {
		struct start *s = bpf_task_storage_get(&starts, prev, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);

		if (s) {
			*s = st;
			stored = true;
		}
	} else {
		__u32 tid = prev->pid;

		stored = !bpf_map_update_elem(&starts_tid, &tid, &st, BPF_ANY);
	}
	if (!stored) {
		__u32 table = LOST_LATENCY;
		__u64 *v = bpf_map_lookup_elem(&lost, &table);

		if (v)
			*v += 1;
	}
	return 0;
}

/* --- raw_tp and classic tracepoints: probe reads ------------------------------------------------- */

SEC("raw_tp/sys_enter")
int BPF_PROG(enter_raw, struct pt_regs *regs, long id)
{
	return on_enter(id, NEED_TASK_ENTER(false) ? bpf_get_current_task_btf() : 0, false, regs);
}

SEC("raw_tp/sys_exit")
int BPF_PROG(exit_raw, struct pt_regs *regs, long ret)
{
	long id = BPF_CORE_READ(regs, REGS_NR_FIELD);

	return on_exit(id, ret, NEED_TASK_EXIT(false) ? bpf_get_current_task_btf() : 0, false, regs);
}

/* Layouts of the raw_syscalls tracepoint records (tracefs events/raw_syscalls/sys_enter/format and sys_exit/format). */
struct sys_enter_args {
	__u64 common;
	long id;
	unsigned long args[6];
};

struct sys_exit_args {
	__u64 common;
	long id;
	long ret;
};

SEC("tracepoint/raw_syscalls/sys_enter")
int enter_tp(struct sys_enter_args *ctx)
{
	return on_enter(ctx->id, NEED_TASK_ENTER(false) ? bpf_get_current_task_btf() : 0, false, 0);
}

SEC("tracepoint/raw_syscalls/sys_exit")
int exit_tp(struct sys_exit_args *ctx)
{
	return on_exit(ctx->id, ctx->ret, NEED_TASK_EXIT(false) ? bpf_get_current_task_btf() : 0, false, 0);
}
#endif /* PERCPU_NO_BTF */

char LICENSE[] SEC("license") = "Dual BSD/GPL";
