// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * percpu's disturbance counter: what takes a CPU away from the task it runs, per CPU.
 *
 *   hard interrupts  irq:irq_handler_entry/exit, by IRQ number (count, and time in the handlers)
 *   x86 vectors      irq_vectors:{local_timer,reschedule,call_function,call_function_single,irq_work}_entry
 *                    and _exit (count, time), and TLB shootdowns received (flush_tlb_func run for another
 *                    CPU, seen at csd_function_entry or fentry)
 *   softirqs         irq:softirq_entry/exit, by vector (count, time)
 *   task switches    sched:sched_switch: switches per CPU, and (opt-in) which task was switched in, how
 *                    often, and how long it ran
 *
 * Each count is placed where the kernel's own counter is incremented, so that the two can be equal over the
 * same window (docs/disturbances.md has the kernel functions, per version):
 *   - /proc/interrupts counts one per flow-handler run (kstat_incr_irqs_this_cpu), while irq_handler_entry
 *     fires once per action of a shared line: an IRQ is counted at the entry of its last action (next ==
 *     NULL), which runs exactly once per flow-handler run. Time is the sum of every action's handler.
 *   - LOC, RES, CAL, IWI are the irq_stat fields their sysvec handlers increment next to the tracepoints;
 *     CAL is call_function + call_function_single. TLB (irq_tlb_count) is incremented in flush_tlb_func
 *     (flush_tlb_func_remote before 5.17) on every CPU but the initiating one, before the early returns
 *     that skip tlb:tlb_flush: see the TLB programs below.
 *   - /proc/softirqs: kstat_incr_softirqs_this_cpu() right before softirq_entry.
 *   - nr_switches: incremented in __schedule() in the prev != next branch that fires sched_switch.
 *   - A task's time is its own se.sum_exec_runtime, read at sched_switch (the scheduler has updated it for
 *     prev by then): time on the CPU as /proc/PID/schedstat counts it, with no clock read. The idle task's
 *     time is not kept there, so it is not measured.
 *
 * Nesting: hard interrupts, vectors and sched_switch run with interrupts off; softirqs run with them on,
 * so a hard interrupt or vector can interrupt a softirq program. Every per-CPU word is therefore written
 * by one class of program only (the softirq counters, their start slot and their lost count are the
 * softirq programs' own), and plain increments of this CPU's slot need no atomics. A program that would
 * re-enter itself on a CPU is skipped by the kernel and counted in the program's recursion misses.
 *
 * Configuration is one struct in .rodata (times, the address of flush_tlb_func, the expected
 * workload, percpu's pid namespace); the verifier removes what it switches off. Whether a program counts
 * or also times, and whether sched_switch keeps the tasks table, is a program of its own rather than a
 * field read (user space loads only the programs of the dimensions and options asked for), so that a
 * program of counts alone reads no configuration at every event. The structs and enums shared with user
 * space reach Python through this object's BTF (tools/gen_contract.py -> src/percpu/disturb/_contract.py).
 *
 * Two flavours of each program but the TLB ones: tp_btf (typed arguments, plain loads through BTF pointers,
 * Linux 5.5) and raw_tp (the same through CO-RE probe reads); both need kernel BTF.
 */
#include <linux/bpf.h>
#include <linux/types.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

enum disturb_consts {
	SOFTIRQ_SLOTS = 16, /* entries of softirqs: NR_SOFTIRQS is 10 in every kernel so far */
	COMM_LEN = 16,
	TASK_KTHREAD = 1, /* task_stat.flags: PF_KTHREAD was set */
	TASK_IDLE = 2, /* task_stat.flags: the idle task (pid 0), whose time is not measured */
	TASK_EXPECTED = 4, /* task_stat.flags: the expected workload (cfg.expect_*) when switched in */
	TASK_OUTSIDE = 8, /* task_stat.flags: not in percpu's pid namespace (cfg.pidns_ino): no pid there */
	PIDNS_LEVELS = 32, /* MAX_PID_NS_LEVEL: how deep pid namespaces nest */
};

/* Slots of the vectors map; CAL in /proc/interrupts is VEC_CALL_FUNCTION + VEC_CALL_FUNCTION_SINGLE. */
enum disturb_vector {
	VEC_LOCAL_TIMER,
	VEC_RESCHEDULE,
	VEC_CALL_FUNCTION,
	VEC_CALL_FUNCTION_SINGLE,
	VEC_IRQ_WORK,
	VEC_TLB, /* counted only: its time is inside the call-function vector that carried it */
	VECTOR_SLOTS,
};

/* Clang records an enum in BTF only when something has its type (see syscount.bpf.c): no map, no code. */
const enum disturb_consts disturb_consts SEC(".percpu.contract") = SOFTIRQ_SLOTS;
const enum disturb_vector disturb_vector SEC(".percpu.contract") = VECTOR_SLOTS;

/* The expected workload (what the CPUs are for; every other task switched in is a disturbance): a task
 * is expected when its process id, its name or its cgroup is the one given (any of those set). Pids are
 * numbered in percpu's own pid namespace when that is not the initial one (pidns_ino: a container), as
 * the syscall counter's filters are: then the task keys hold those pids too. */
struct disturb_config {
	__u64 flush_tlb_func; /* its address (/proc/kallsyms), for the csd_function_entry program */
	__u64 expect_cgroup; /* cgroup v2 id (0: none) */
	__u32 expect_tgid; /* process id (0: none) */
	__u32 pidns_ino; /* percpu's pid namespace's inode number, when not the initial one (0) */
	char expect_comm[COMM_LEN]; /* task name, NUL-padded ("": none) */
	__u8 times; /* tasks' time on the CPU (the tasks programs; the handlers' time has programs of its own) */
};

const volatile struct disturb_config cfg = {};

/* One source (an IRQ number, a softirq vector, an x86 vector) on one CPU: runs, nanoseconds in its
 * handler, and the start of the run in progress (0: none). A source does not nest with itself on a CPU,
 * so one start slot per source is enough, and a program touches one cache line per event. */
struct runs {
	__u64 count;
	__u64 ns;
	__u64 start;
};

/* Per CPU counts of the interrupt programs, each word written by one class of them (see the top of the
 * file). lost_*: events a table could not take (IRQ numbers beyond the irqs map, softirq vectors beyond
 * SOFTIRQ_SLOTS). untimed_*: handler runs whose exit found no start (the run began before counting). */
struct cpu_counts {
	__u64 lost_irqs;
	__u64 lost_softirqs;
	__u64 untimed_irqs;
	__u64 untimed_softirqs;
	__u64 untimed_vectors;
};

/* Per CPU state and counts of the sched_switch program. task is the task switched in last (its address),
 * task_runtime its sum_exec_runtime then, and key its row's key (charged its time when it leaves: a
 * thread on its way out has no pid in a namespace any more, and a renamed one has another name; pid 0
 * while the idle task runs). gaps:
 * switches whose prev was not that task, so the kernel had switched without the tracepoint in between.
 * lost_tasks: switch-ins the full tasks table had no room for; untimed_tasks: stints whose time is
 * missing (switched in before counting began or unseen, or no room in the table). inserts: rows this CPU
 * added to the tasks table (user space watches them to take the rows of exited tasks out before it
 * fills). What every switch touches comes first (one cache line). */
struct sched_cpu {
	__u64 switches;
	__u64 task;
	__u64 task_runtime;
	__u64 key[3]; /* a struct task_key */
	__u64 idle_switches; /* switch-ins of the idle task, kept here, not in the tasks table (tasks only) */
	__u64 gaps;
	__u64 lost_tasks;
	__u64 untimed_tasks;
	__u64 inserts;
	__u64 pidns; /* with cfg.pidns_ino: that namespace's address, once a pid in it was found */
	__u64 pidns_level; /* ... and its level */
};

struct task_key {
	__u32 pid;
	__u32 tgid;
	char comm[COMM_LEN];
};

struct task_stat {
	__u64 switches; /* times switched in */
	__u64 ns; /* time on the CPU (se.sum_exec_runtime), charged when the task leaves it */
	__u32 untimed; /* stints whose time is not in ns: their switch-in was not seen */
	__u32 flags; /* TASK_KTHREAD, TASK_IDLE, TASK_EXPECTED, TASK_OUTSIDE */
};

/* Sized by user space (set_max_entries) from the IRQ numbers the machine has; larger ones are lost_irqs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct runs);
} irqs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SOFTIRQ_SLOTS);
	__type(key, __u32);
	__type(value, struct runs);
} softirqs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VECTOR_SLOTS);
	__type(key, __u32);
	__type(value, struct runs);
} vectors SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cpu_counts);
} cpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sched_cpu);
} sched SEC(".maps");

/* Never evicts: a task the full table cannot take is counted in lost_tasks (preallocated, as tracing
 * programs on Linux 5.10 require of a hash). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct task_key);
	__type(value, struct task_stat);
} tasks SEC(".maps");

/* The few kernel types read, matched against the running kernel's BTF by CO-RE (no vmlinux.h). */
struct irqaction {
	struct irqaction *next;
} __attribute__((preserve_access_index));

struct sched_entity {
	__u64 sum_exec_runtime;
} __attribute__((preserve_access_index));

struct pid_namespace;

struct upid {
	int nr;
	struct pid_namespace *ns;
} __attribute__((preserve_access_index));

struct pid {
	unsigned int level;
	struct upid numbers[1];
} __attribute__((preserve_access_index));

struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct pid_namespace {
	struct ns_common ns;
} __attribute__((preserve_access_index));

struct kernfs_node {
	__u64 id;
} __attribute__((preserve_access_index));

struct cgroup {
	struct kernfs_node *kn;
} __attribute__((preserve_access_index));

struct css_set {
	struct cgroup *dfl_cgrp;
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;
	int tgid;
	unsigned int flags;
	char comm[16];
	struct sched_entity se;
	struct task_struct *group_leader;
	struct pid *thread_pid;
	struct css_set *cgroups;
} __attribute__((preserve_access_index));

#define PF_KTHREAD 0x00200000 /* the same in every kernel since 2.6 */

static __always_inline struct cpu_counts *cpu_counts(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&cpu, &zero);
}

/* A run of one source starts: counted (when count), and its start taken (when timed). NULL row: a source
 * beyond the table. timed is a constant of each program, never read from cfg: a program of counts alone
 * touches no configuration at all (the verifier would remove a branch on cfg.times, but not the load of
 * it, one more cache line at every event: docs/benchmarks.md). */
static __always_inline void run_entry(struct runs *r, bool count, bool timed)
{
	if (!r)
		return;
	if (count)
		r->count += 1;
	if (timed)
		r->start = bpf_ktime_get_ns();
}

/* A run ends: its time added. False when its start is unknown (it began before counting). */
static __always_inline bool run_exit(struct runs *r)
{
	if (!r)
		return true; /* beyond the table: already counted as lost at the entry */
	__u64 start = r->start;

	if (!start)
		return false;
	r->start = 0;
	r->ns += bpf_ktime_get_ns() - start;
	return true;
}

/* --- hard interrupts -------------------------------------------------------------------------------- */

static __always_inline void irq_entry(int irq, bool last, bool timed)
{
	__u32 key = irq;
	struct runs *r = bpf_map_lookup_elem(&irqs, &key);

	if (!r && last) {
		struct cpu_counts *c = cpu_counts();

		if (c)
			c->lost_irqs += 1;
	}
	run_entry(r, last, timed);
}

static __always_inline void irq_exit(int irq)
{
	__u32 key = irq;

	if (!run_exit(bpf_map_lookup_elem(&irqs, &key))) {
		struct cpu_counts *c = cpu_counts();

		if (c)
			c->untimed_irqs += 1;
	}
}

/* --- softirqs --------------------------------------------------------------------------------------- */

static __always_inline void softirq_entry(__u32 vec, bool timed)
{
	struct runs *r = bpf_map_lookup_elem(&softirqs, &vec);

	if (!r) {
		struct cpu_counts *c = cpu_counts();

		if (c)
			c->lost_softirqs += 1;
	}
	run_entry(r, true, timed);
}

static __always_inline void softirq_exit(__u32 vec)
{
	if (!run_exit(bpf_map_lookup_elem(&softirqs, &vec))) {
		struct cpu_counts *c = cpu_counts();

		if (c)
			c->untimed_softirqs += 1;
	}
}

/* --- x86 vectors ------------------------------------------------------------------------------------ */

static __always_inline void vector_count(__u32 vec)
{
	struct runs *r = bpf_map_lookup_elem(&vectors, &vec);

	if (r)
		r->count += 1;
}

static __always_inline void vector_entry(__u32 vec, bool timed)
{
	run_entry(bpf_map_lookup_elem(&vectors, &vec), true, timed);
}

static __always_inline void vector_exit(__u32 vec)
{
	if (!run_exit(bpf_map_lookup_elem(&vectors, &vec))) {
		struct cpu_counts *c = cpu_counts();

		if (c)
			c->untimed_vectors += 1;
	}
}

/* --- task switches ---------------------------------------------------------------------------------- */

/* A pid as percpu's pid namespace numbers it (pid_nr_ns()): the number at that namespace's level of the
 * pid, 0 when the pid has none there (a task outside it, or one released on its way out). The level is
 * not known to user space (a namespace cannot see its ancestors): the first pid found in it tells it, by
 * a search from the initial namespace down, and each CPU keeps the level and the namespace's address
 * (c->pidns) to read one number, and compare one pointer, for the next. */
static __always_inline __u32 ns_nr(struct sched_cpu *c, struct pid *p, bool btf)
{
	unsigned int level = btf ? p->level : BPF_CORE_READ(p, level);
	struct upid *numbers = btf ? &p->numbers[0] : __builtin_preserve_access_index(&p->numbers[0]);
	struct upid up = {};

	if (c->pidns) {
		if (level < c->pidns_level || bpf_probe_read_kernel(&up, sizeof(up), numbers + c->pidns_level))
			return 0;
		return (__u64)up.ns == c->pidns ? up.nr : 0;
	}
	/* A loop, not unrolled 32 times into every program: the verifier bounds it (Linux 5.3). */
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < PIDNS_LEVELS; i++) {
		if (i > level || bpf_probe_read_kernel(&up, sizeof(up), numbers + i))
			break;
		if (BPF_CORE_READ(up.ns, ns.inum) == cfg.pidns_ino) {
			c->pidns = (__u64)up.ns;
			c->pidns_level = i;
			return up.nr;
		}
	}
	return 0;
}

static __always_inline void task_key_of(struct sched_cpu *c, struct task_key *k, struct task_struct *t, bool btf)
{
	if (btf) {
		k->pid = t->pid;
		k->tgid = t->tgid;
		__builtin_memcpy(k->comm, t->comm, sizeof(k->comm));
	} else {
		k->pid = BPF_CORE_READ(t, pid);
		k->tgid = BPF_CORE_READ(t, tgid);
		BPF_CORE_READ_STR_INTO(&k->comm, t, comm);
	}
	if (cfg.pidns_ino) {
		/* Numbered in percpu's namespace, as its users (and kill(), /proc) know them. A thread group's
		 * leader has its tgid for pid in every namespace. */
		bool leader = k->pid == k->tgid;

		k->pid = ns_nr(c, btf ? t->thread_pid : BPF_CORE_READ(t, thread_pid), btf);
		if (leader)
			k->tgid = k->pid;
		else
			k->tgid = ns_nr(c, btf ? t->group_leader->thread_pid : BPF_CORE_READ(t, group_leader, thread_pid),
					btf);
	}
}

/* The name compared up to its NUL: bytes after it can be a longer former name's (strlcpy before 6.x). */
static __always_inline bool comm_is(const char *comm)
{
	for (int i = 0; i < COMM_LEN; i++) {
		if (comm[i] != cfg.expect_comm[i])
			return false;
		if (!comm[i])
			break;
	}
	return true;
}

static __always_inline bool expected(struct task_key *k, struct task_struct *t, bool btf)
{
	if (cfg.expect_tgid && k->tgid == cfg.expect_tgid)
		return true;
	if (cfg.expect_comm[0] && comm_is(k->comm))
		return true;
	if (!cfg.expect_cgroup)
		return false;
	/* bpf_get_current_cgroup_id() reads the same id, but only of the current task (prev, not next). */
	__u64 id = btf ? t->cgroups->dfl_cgrp->kn->id : BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id);

	return id == cfg.expect_cgroup;
}

static __always_inline __u32 task_flags(struct task_key *k, struct task_struct *t, int pid, bool btf)
{
	unsigned int flags = btf ? t->flags : BPF_CORE_READ(t, flags);

	return (flags & PF_KTHREAD ? TASK_KTHREAD : 0) | (pid == 0 ? TASK_IDLE : 0) |
	       (cfg.pidns_ino && !k->pid ? TASK_OUTSIDE : 0) | (expected(k, t, btf) ? TASK_EXPECTED : 0);
}

enum task_added { TASK_LOST, TASK_FOUND, TASK_INSERTED };

/* Adds to a task's row, creating it when it has none; TASK_LOST when the table has no room (or the kernel
 * no memory). The switch-in passes the task's flags, added to its row (a task that joins the expected
 * cgroup becomes expected); the switch-out passes none (lazy: the task's flags are read only to create
 * a row). */
static __always_inline enum task_added task_add(struct task_key *k, struct task_struct *t, int pid, bool btf,
						bool lazy, __u32 flags, __u64 switches, __u64 ns, __u32 untimed)
{
	struct task_stat *v = bpf_map_lookup_elem(&tasks, k);
	enum task_added added = TASK_FOUND;

	if (!v) {
		struct task_stat init = { .flags = lazy ? task_flags(k, t, pid, btf) : flags };

		/* Inserting sets this CPU's value and zeroes the others'. Only this CPU's programs write its
		 * slot, and another CPU inserting the same key first only makes NOEXIST fail: look up again. */
		if (!bpf_map_update_elem(&tasks, k, &init, BPF_NOEXIST))
			added = TASK_INSERTED;
		v = bpf_map_lookup_elem(&tasks, k);
		if (!v)
			return TASK_LOST;
	}
	v->switches += switches;
	v->ns += ns;
	v->untimed += untimed;
	v->flags |= flags;
	return added;
}

/* Each switch ends prev's stint and starts next's. The CPU's state remembers the task switched in last
 * (and its sum_exec_runtime then): prev is that task unless the kernel switched without this tracepoint
 * in between (a gap: seen on a patched 6.18 whose switches away from some tasks fire no sched_switch,
 * while nr_switches counts them). Then prev was switched in unseen: its switch-in is counted now, at its
 * switch-out, and that stint's time is missing (untimed). */
static __always_inline void on_switch(struct task_struct *prev, struct task_struct *next, bool btf, bool tasks)
{
	__u32 zero = 0;
	struct sched_cpu *c = bpf_map_lookup_elem(&sched, &zero);

	if (!c)
		return;
	c->switches += 1;
	bool known = c->task == (__u64)prev;
	bool gap = c->task && !known; /* before the first switch seen, nothing is known */

	if (gap)
		c->gaps += 1;
	c->task = (__u64)next;
	if (!tasks)
		return;
	__u64 now = 0;

	if (cfg.times) {
		/* The scheduler has updated prev's sum_exec_runtime for this stint before the tracepoint. */
		now = btf ? prev->se.sum_exec_runtime : BPF_CORE_READ(prev, se.sum_exec_runtime);
		__u64 start = c->task_runtime;

		c->task_runtime = btf ? next->se.sum_exec_runtime : BPF_CORE_READ(next, se.sum_exec_runtime);
		now = known ? now - start : 0;
	}
	int pid = btf ? prev->pid : BPF_CORE_READ(prev, pid);
	/* The idle task's time is not kept in its sum_exec_runtime: it is not measured. */
	bool timed = cfg.times && pid != 0;

	if (timed && !known)
		c->untimed_tasks += 1;
	/* The idle task (pid 0, one per CPU) is the other end of most switches on a quiet CPU: its switch-ins
	 * are counted in this CPU's own counter instead of a table lookup (user space shows it as a row). */
	if (gap && pid == 0) {
		c->idle_switches += 1;
	} else if (gap || timed) {
		struct task_key pk __attribute__((aligned(8))) = {};

		if (known)
			__builtin_memcpy(&pk, c->key, sizeof(pk));
		else
			task_key_of(c, &pk, prev, btf);
		enum task_added added = task_add(&pk, prev, pid, btf, true, 0, gap, now, timed && !known);

		if (added == TASK_LOST) {
			if (gap)
				c->lost_tasks += 1;
			if (timed && known)
				c->untimed_tasks += 1;
		}
		c->inserts += added == TASK_INSERTED;
	}
	int next_pid = btf ? next->pid : BPF_CORE_READ(next, pid);

	if (next_pid == 0) {
		c->idle_switches += 1;
		/* No task's stint is in progress here: pid 0 in the key says so to user space, which credits the
		 * stint of the task in the key to the windows it runs through (the key is not read again before
		 * the next switch-in writes it). */
		c->key[0] = 0;
		return;
	}
	struct task_key k __attribute__((aligned(8))) = {};

	task_key_of(c, &k, next, btf);
	__builtin_memcpy(c->key, &k, sizeof(k));
	__u32 flags = task_flags(&k, next, next_pid, btf);
	enum task_added added = task_add(&k, next, next_pid, btf, false, flags, 1, 0, 0);

	if (added == TASK_LOST)
		c->lost_tasks += 1;
	c->inserts += added == TASK_INSERTED;
}

/* --- tp_btf ----------------------------------------------------------------------------------------- */

/* Each entry program comes twice: *_count_* counts, *_entry_* counts and takes the start for the exit
 * program's time (times on). User space loads one of the two. */
SEC("tp_btf/irq_handler_entry")
int BPF_PROG(irq_count_btf, int irq, struct irqaction *action)
{
	irq_entry(irq, !action->next, false);
	return 0;
}

SEC("tp_btf/irq_handler_entry")
int BPF_PROG(irq_entry_btf, int irq, struct irqaction *action)
{
	irq_entry(irq, !action->next, true);
	return 0;
}

SEC("tp_btf/irq_handler_exit")
int BPF_PROG(irq_exit_btf, int irq)
{
	irq_exit(irq);
	return 0;
}

SEC("tp_btf/softirq_entry")
int BPF_PROG(softirq_count_btf, unsigned int vec)
{
	softirq_entry(vec, false);
	return 0;
}

SEC("tp_btf/softirq_entry")
int BPF_PROG(softirq_entry_btf, unsigned int vec)
{
	softirq_entry(vec, true);
	return 0;
}

SEC("tp_btf/softirq_exit")
int BPF_PROG(softirq_exit_btf, unsigned int vec)
{
	softirq_exit(vec);
	return 0;
}

/* switch_count_*: switches and gaps only (tasks off); switch_*: the tasks table too. */
SEC("tp_btf/sched_switch")
int BPF_PROG(switch_count_btf, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	on_switch(prev, next, true, false);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(switch_btf, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	on_switch(prev, next, true, true);
	return 0;
}

/* The x86 vectors: one program per tracepoint, the slot a constant (so each is one inlined lookup). */
#define VECTOR_PROGS(name, slot)                                                                           \
	SEC("tp_btf/" #name "_entry")                                                                      \
	int BPF_PROG(name##_count_btf)                                                                     \
	{                                                                                                  \
		vector_entry(slot, false);                                                                 \
		return 0;                                                                                  \
	}                                                                                                  \
	SEC("tp_btf/" #name "_entry")                                                                      \
	int BPF_PROG(name##_entry_btf)                                                                     \
	{                                                                                                  \
		vector_entry(slot, true);                                                                  \
		return 0;                                                                                  \
	}                                                                                                  \
	SEC("tp_btf/" #name "_exit")                                                                       \
	int BPF_PROG(name##_exit_btf)                                                                      \
	{                                                                                                  \
		vector_exit(slot);                                                                         \
		return 0;                                                                                  \
	}                                                                                                  \
	SEC("raw_tp/" #name "_entry")                                                                      \
	int BPF_PROG(name##_count_raw)                                                                     \
	{                                                                                                  \
		vector_entry(slot, false);                                                                 \
		return 0;                                                                                  \
	}                                                                                                  \
	SEC("raw_tp/" #name "_entry")                                                                      \
	int BPF_PROG(name##_entry_raw)                                                                     \
	{                                                                                                  \
		vector_entry(slot, true);                                                                  \
		return 0;                                                                                  \
	}                                                                                                  \
	SEC("raw_tp/" #name "_exit")                                                                       \
	int BPF_PROG(name##_exit_raw)                                                                      \
	{                                                                                                  \
		vector_exit(slot);                                                                         \
		return 0;                                                                                  \
	}

VECTOR_PROGS(local_timer, VEC_LOCAL_TIMER)
VECTOR_PROGS(reschedule, VEC_RESCHEDULE)
VECTOR_PROGS(call_function, VEC_CALL_FUNCTION)
VECTOR_PROGS(call_function_single, VEC_CALL_FUNCTION_SINGLE)
VECTOR_PROGS(irq_work, VEC_IRQ_WORK)

/* TLB shootdowns received (x86). irq_tlb_count is incremented at the top of flush_tlb_func on every CPU but
 * the one that asked for the flush (flush_tlb_func_remote before 5.17, which only the others run), before
 * the early returns that skip tlb:tlb_flush. Three ways to count it exactly, best first (user space
 * attaches the first that works):
 *   - csd_function_entry (6.5): every remote run of an SMP function call, from the IPI or from the idle
 *     loop's queue flush, goes through csd_do_func() with its csd; the initiating CPU's own run passes
 *     none. A shootdown is one whose function is flush_tlb_func (its address in cfg, from kallsyms).
 *   - fentry/flush_tlb_func, not counting the initiating CPU (5.17 and later, where BPF trampolines work);
 *   - fentry/flush_tlb_func_remote (before 5.17).
 * Counted only, never timed: the flush runs inside the call-function vector that carried it (whose start
 * slot it must not touch), or from the idle loop. */
SEC("raw_tp/csd_function_entry")
int BPF_PROG(tlb_csd, void *func, void *csd)
{
	if (csd && cfg.flush_tlb_func && (__u64)func == cfg.flush_tlb_func)
		vector_count(VEC_TLB);
	return 0;
}

#if defined(__TARGET_ARCH_x86)
struct flush_tlb_info {
	unsigned int initiating_cpu;
} __attribute__((preserve_access_index));

SEC("fentry/flush_tlb_func")
int BPF_PROG(tlb_fentry, const struct flush_tlb_info *f)
{
	if (f->initiating_cpu != bpf_get_smp_processor_id())
		vector_count(VEC_TLB);
	return 0;
}

SEC("fentry/flush_tlb_func_remote")
int BPF_PROG(tlb_fentry_remote)
{
	vector_count(VEC_TLB);
	return 0;
}
#endif

/* --- raw_tp: the same through CO-RE probe reads ---------------------------------------------------- */

SEC("raw_tp/irq_handler_entry")
int BPF_PROG(irq_count_raw, int irq, struct irqaction *action)
{
	irq_entry(irq, !BPF_CORE_READ(action, next), false);
	return 0;
}

SEC("raw_tp/irq_handler_entry")
int BPF_PROG(irq_entry_raw, int irq, struct irqaction *action)
{
	irq_entry(irq, !BPF_CORE_READ(action, next), true);
	return 0;
}

SEC("raw_tp/irq_handler_exit")
int BPF_PROG(irq_exit_raw, int irq)
{
	irq_exit(irq);
	return 0;
}

SEC("raw_tp/softirq_entry")
int BPF_PROG(softirq_count_raw, unsigned int vec)
{
	softirq_entry(vec, false);
	return 0;
}

SEC("raw_tp/softirq_entry")
int BPF_PROG(softirq_entry_raw, unsigned int vec)
{
	softirq_entry(vec, true);
	return 0;
}

SEC("raw_tp/softirq_exit")
int BPF_PROG(softirq_exit_raw, unsigned int vec)
{
	softirq_exit(vec);
	return 0;
}

SEC("raw_tp/sched_switch")
int BPF_PROG(switch_count_raw, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	on_switch(prev, next, false, false);
	return 0;
}

SEC("raw_tp/sched_switch")
int BPF_PROG(switch_raw, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	on_switch(prev, next, false, true);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
