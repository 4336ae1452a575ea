// Loads only, no arithmetic: one thread walks 32,768 rows of 2,176 bytes (the Q8_0 row of 2,048 columns; 71.3 MB, more
// than the caches) one row at a time, or two rows at a time D rows apart, with the same 32-byte loads at the same 34-byte
// block offsets as QuantizedDot.DotQ8_0. Shows that the row-pair effect behind QuantizedDot.DecodePairDistance is the
// memory system's, not the kernel's (README, "Q8_0 row pairs far apart"). Best of five passes, two rounds.
// Build and run: gcc -O2 -march=native -o /tmp/stream_pairs bench/native/stream_pairs.c && /tmp/stream_pairs
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

int main(int argc, char** argv) {
    if (argc > 1) {
        fprintf(stderr, "usage: %s (no arguments); got:", argv[0]);
        for (int i = 1; i < argc; i++) fprintf(stderr, " '%s'", argv[i]);
        fprintf(stderr, "\n");
        return 2;
    }
    const long rows = 32768, rb = 2176;
    unsigned char* w = aligned_alloc(64, rows * rb);
    for (long i = 0; i < rows * rb; i++) w[i] = (unsigned char)i;
    const int distances[] = { 0, 1, 2, 16, 64, 1024 };
    for (int round = 1; round <= 2; round++) {
        for (int di = 0; di < 6; di++) {
            int d = distances[di];
            double best = 1e9;
            __m256i acc = _mm256_setzero_si256();
            for (int k = 0; k < 5; k++) {
                double t0 = now();
                if (d == 0) {
                    for (long r = 0; r < rows; r++) {
                        const unsigned char* p = w + r * rb;
                        for (int b = 0; b < 64; b++) acc = _mm256_add_epi8(acc, _mm256_loadu_si256((const __m256i*)(p + b * 34 + 2)));
                    }
                } else {
                    for (long r0 = 0; r0 < rows; r0 += 2L * d)
                        for (long r = r0; r < r0 + d; r++) {
                            const unsigned char* p = w + r * rb;
                            const unsigned char* q = p + d * rb;
                            for (int b = 0; b < 64; b++) {
                                acc = _mm256_add_epi8(acc, _mm256_loadu_si256((const __m256i*)(p + b * 34 + 2)));
                                acc = _mm256_add_epi8(acc, _mm256_loadu_si256((const __m256i*)(q + b * 34 + 2)));
                            }
                        }
                }
                double t = now() - t0;
                if (t < best) best = t;
            }
            unsigned char o[32];
            _mm256_storeu_si256((__m256i*)o, acc);
            printf("round %d, %-22s %4d: %.2f ms = %.1f GB/s (checksum byte %d)\n", round, d ? "two rows, rows apart" : "one row at a time", d, best * 1e3, rows * rb / best / 1e9, o[0]);
        }
    }
    return 0;
}
