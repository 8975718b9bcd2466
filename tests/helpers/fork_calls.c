/* Many short processes, cheaply, for the per-process table tests: N children forked one after the other,
 * each making M getpriority() calls before it exits; the parent reaps each before the next. Children of a
 * fork keep the parent's name, so a test names the binary uniquely to filter on it.
 * usage: fork_calls N M   (compiled at test time: cc -O2 -o NAME fork_calls.c) */
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? strtol(argv[1], NULL, 10) : 0;
	long m = argc > 2 ? strtol(argv[2], NULL, 10) : 0;

	for (long i = 0; i < n; i++) {
		pid_t pid = fork();

		if (pid < 0)
			return 1;
		if (pid == 0) {
			for (long j = 0; j < m; j++)
				syscall(SYS_getpriority, 0, 0); /* not getpriority(): the same call whatever libc does */
			_exit(0);
		}
		if (waitpid(pid, NULL, 0) != pid)
			return 1;
	}
	return 0;
}
