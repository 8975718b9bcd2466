/* Calls getppid() N times on one CPU and prints the mean nanoseconds per call.
 * Used by bench_syscalls.py: the added cost of a BPF program at sys_enter/sys_exit is the difference
 * between this figure with and without the program attached. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s CALLS CPU\n", argv[0]);
		return 2;
	}
	long n = atol(argv[1]);
	int cpu = atoi(argv[2]);
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set)) {
		perror("sched_setaffinity");
		return 1;
	}
	for (long i = 0; i < n / 10; i++) /* warm up caches and the branch predictor */
		syscall(SYS_getppid);
	double t0 = now_ns();
	for (long i = 0; i < n; i++)
		syscall(SYS_getppid);
	double t1 = now_ns();
	printf("%.3f\n", (t1 - t0) / n);
	return 0;
}
