// The core clock as seen by a dependent chain of 64-bit adds (one per cycle): gcc -O2 -o /tmp/clock_chain
// bench/native/clock_chain.c && /tmp/clock_chain. Prints GHz three times.
#include <stdio.h>
#include <time.h>

int main(void)
{
    struct timespec a, b;
    long n = 2000000000L, x = 0;
    for (int r = 0; r < 3; r++)
    {
        clock_gettime(CLOCK_MONOTONIC, &a);
        __asm__ volatile("mov %1, %%rcx\n1:\n add $1, %0\n add $1, %0\n add $1, %0\n add $1, %0\n sub $4, %%rcx\n jnz 1b\n"
                         : "+r"(x) : "r"(n) : "rcx");
        clock_gettime(CLOCK_MONOTONIC, &b);
        double s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
        printf("%.2f GHz\n", n / s / 1e9);
    }
    return 0;
}
