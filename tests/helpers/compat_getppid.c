/* A 32-bit x86 program with no C library: exactly 1000 compat getppid calls (i386 number 64) through
 * int 0x80, then exit (i386 number 1). Built by the kernel tests with cc -m32 -nostdlib -static. */
void _start(void)
{
	for (int i = 0; i < 1000; i++) {
		int r;

		__asm__ volatile("int $0x80" : "=a"(r) : "a"(64));
	}
	__asm__ volatile("int $0x80" : : "a"(1), "b"(0));
}
