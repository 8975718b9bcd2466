/* A fast native workload for `percpu stat -- COMMAND` tests: exactly N getppid() system calls, then exit.
 * Native, so the calls start microseconds after execve: a count that starts late misses some of them.
 * usage: getppid_n N   (compiled at test time: cc -O2 -o getppid_n getppid_n.c) */
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? strtol(argv[1], NULL, 10) : 0;

	for (long i = 0; i < n; i++)
		syscall(SYS_getppid); /* not getppid(): no libc may ever cache it */
	return 0;
}
