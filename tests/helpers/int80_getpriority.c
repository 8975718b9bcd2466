/* A 64-bit x86_64 program with no C library that makes exactly 1000 i386 getpriority calls (i386 number
 * 96; 96 is gettimeofday in the x86_64 table) through int $0x80, then exits through the 64-bit syscall
 * instruction (x86_64 number 60). The kernel runs an int $0x80 call as an i386 call whatever the task's
 * mode (it sets TS_COMPAT, which in_ia32_syscall() reads), so these are 1000 compat calls from a 64-bit
 * task, whose code segment is the 64-bit one. Built by the kernel tests with cc -nostdlib -static. */
void _start(void)
{
	for (int i = 0; i < 1000; i++) {
		long r;

		/* getpriority(PRIO_PROCESS, 0) */
		__asm__ volatile("int $0x80" : "=a"(r) : "a"(96L), "b"(0L), "c"(0L) : "memory");
	}
	__asm__ volatile("syscall" : : "a"(60L), "D"(0L) : "rcx", "r11", "memory");
	__builtin_unreachable();
}
