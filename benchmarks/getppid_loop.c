/* Calls getppid() N times on one CPU and prints nanoseconds per call.
 * Used by bench_syscalls.py: the added cost of a BPF program at sys_enter/sys_exit is the difference
 * between this figure with and without the program attached.
 *
 * The calls are timed in CHUNKS equal chunks and the figure printed is the median chunk's time per call:
 * an interrupt storm or another task's cache footprint inflates a few chunks, and the median ignores them
 * where a mean over the whole loop would not. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* The thread's own CPU time, not wall-clock time: while another task holds the CPU the clock stops, so a
 * shared machine's load does not add to the figure (the interrupts the thread takes still do). */
static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: %s CALLS CPU [CHUNKS]\n", argv[0]);
		return 2;
	}
	long n = atol(argv[1]);
	int cpu = atoi(argv[2]);
	long chunks = argc == 4 ? atol(argv[3]) : 1;
	if (n <= 0 || chunks <= 0 || chunks > n) {
		fprintf(stderr, "CALLS and CHUNKS must be positive, CHUNKS <= CALLS\n");
		return 2;
	}
	long per = n / chunks;
	double *t = calloc(chunks, sizeof(*t));
	cpu_set_t set;
	if (!t) {
		perror("calloc");
		return 1;
	}
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set)) {
		perror("sched_setaffinity");
		return 1;
	}
	for (long i = 0; i < n / 10; i++) /* warm up caches and the branch predictor */
		syscall(SYS_getppid);
	for (long c = 0; c < chunks; c++) {
		double t0 = now_ns();
		for (long i = 0; i < per; i++)
			syscall(SYS_getppid);
		t[c] = (now_ns() - t0) / per;
	}
	qsort(t, chunks, sizeof(*t), cmp_double);
	printf("%.3f\n", chunks % 2 ? t[chunks / 2] : (t[chunks / 2 - 1] + t[chunks / 2]) / 2);
	free(t);
	return 0;
}
