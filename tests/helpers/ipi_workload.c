// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Interrupts sent to one CPU on purpose, a known number of times: a thread of this process spins on
 * SPIN_CPU (SCHED_FIFO, so nothing else takes that CPU while it runs), and the main thread, on CALL_CPU,
 *   - calls membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) MEMBARRIERS times: each sends one function-call
 *     IPI to every other CPU running this process, here SPIN_CPU alone (a single target: the
 *     call_function_single vector on x86);
 *   - makes a written page read-only and writable again MPROTECTS times: each write-protect flushes the
 *     TLB of every other CPU running this mm, here SPIN_CPU (a TLB shootdown there).
 *
 * usage: ipi_workload SPIN_CPU CALL_CPU MEMBARRIERS MPROTECTS
 * Prints the spinning thread's id when done. Needs root (SCHED_FIFO); exits 2 when a call fails.
 */
#define _GNU_SOURCE
#include <linux/membarrier.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static volatile int spinning, stop;
static volatile pid_t spin_tid;
static int spin_cpu;

static void pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set)) {
		perror("sched_setaffinity");
		exit(2);
	}
}

static void *spin(void *arg)
{
	struct sched_param p = { .sched_priority = 1 };

	(void)arg;
	pin(spin_cpu);
	if (sched_setscheduler(0, SCHED_FIFO, &p)) {
		perror("sched_setscheduler");
		exit(2);
	}
	spin_tid = (pid_t)syscall(SYS_gettid);
	spinning = 1;
	while (!stop)
		;
	return NULL;
}

static long membarrier(int cmd)
{
	return syscall(__NR_membarrier, cmd, 0, 0);
}

int main(int argc, char **argv)
{
	pthread_t t;
	long n, m;
	char *page;

	if (argc != 5) {
		fprintf(stderr, "usage: %s SPIN_CPU CALL_CPU MEMBARRIERS MPROTECTS\n", argv[0]);
		return 2;
	}
	spin_cpu = atoi(argv[1]);
	pin(atoi(argv[2]));
	n = atol(argv[3]);
	m = atol(argv[4]);
	page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED || membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED)) {
		perror("mmap or membarrier register");
		return 2;
	}
	if (pthread_create(&t, NULL, spin, NULL))
		return 2;
	while (!spinning)
		;
	for (long i = 0; i < n; i++)
		if (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)) {
			perror("membarrier");
			return 2;
		}
	for (long i = 0; i < m; i++) {
		page[0] = (char)i;
		if (mprotect(page, 4096, PROT_READ) || mprotect(page, 4096, PROT_READ | PROT_WRITE)) {
			perror("mprotect");
			return 2;
		}
	}
	stop = 1;
	pthread_join(t, NULL);
	printf("%d\n", (int)spin_tid);
	return 0;
}
