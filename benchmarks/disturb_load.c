/* Load for bench_disturb.py: fires the hooks the disturbance counter uses, at rates a shared 2-CPU machine
 * sustains, for SECONDS:
 *   - two processes pinned to CPU A ping-pong a byte over pipes (task switches on one CPU);
 *   - two processes on CPU A and CPU B do the same across CPUs (wake-up IPIs: reschedule, call function);
 *   - a process on CPU B sends UDP datagrams to itself over loopback (NET_RX softirqs);
 *   - a process on CPU A reads a file with O_DIRECT (block interrupts, BLOCK softirqs).
 * usage: disturb_load SECONDS CPU_A CPU_B FILE */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void pin(int cpu)
{
	cpu_set_t s;

	CPU_ZERO(&s);
	CPU_SET(cpu, &s);
	sched_setaffinity(0, sizeof(s), &s);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void pingpong(int cpu_a, int cpu_b, double end)
{
	int ab[2], ba[2];
	char c = 0;

	if (pipe(ab) || pipe(ba))
		exit(1);
	if (fork() == 0) {
		close(ab[1]);
		close(ba[0]);
		pin(cpu_b);
		while (read(ab[0], &c, 1) == 1 && write(ba[1], &c, 1) == 1)
			;
		exit(0);
	}
	close(ab[0]);
	close(ba[1]);
	pin(cpu_a);
	while (now() < end)
		for (int i = 0; i < 1000; i++)
			if (write(ab[1], &c, 1) != 1 || read(ba[0], &c, 1) != 1)
				exit(1);
	close(ab[1]);
	wait(NULL);
	exit(0);
}

static void udp(int cpu, double end)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	char buf[64] = { 0 };
	int s = socket(AF_INET, SOCK_DGRAM, 0);

	pin(cpu);
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) || getsockname(s, (struct sockaddr *)&a, &len))
		exit(1);
	while (now() < end)
		for (int i = 0; i < 1000; i++) {
			sendto(s, buf, sizeof(buf), 0, (struct sockaddr *)&a, sizeof(a));
			recv(s, buf, sizeof(buf), MSG_DONTWAIT);
		}
	exit(0);
}

static void direct_reads(int cpu, const char *path, double end)
{
	void *buf;
	int fd = open(path, O_RDONLY | O_DIRECT);

	pin(cpu);
	if (fd < 0 || posix_memalign(&buf, 4096, 4096))
		exit(1);
	for (off_t off = 0; now() < end; off = (off + 4096) % (16 << 20))
		if (pread(fd, buf, 4096, off) < 0)
			exit(1);
	exit(0);
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: %s SECONDS CPU_A CPU_B FILE\n", argv[0]);
		return 2;
	}
	double end = now() + atof(argv[1]);
	int a = atoi(argv[2]), b = atoi(argv[3]), n = 0, status, rc = 0;

	if (fork() == 0)
		pingpong(a, a, end);
	if (fork() == 0)
		pingpong(a, b, end);
	if (fork() == 0)
		udp(b, end);
	if (fork() == 0)
		direct_reads(a, argv[4], end);
	for (n = 0; n < 4; n++) {
		wait(&status);
		rc |= !WIFEXITED(status) || WEXITSTATUS(status);
	}
	return rc;
}
