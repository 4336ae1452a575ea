// The int8 score kernel's inner work in C, to separate what the ISA allows from what .NET 10's code generation and
// intrinsics reach (README, Int8 attention, "Native bound of the int8 scores"). The kernel (int8_kernels.h): same data layout and
// arithmetic as Int8AttentionKernels' 16-token pass over KeyTiles (4-bit codes, head dim 64, groups of 32 channels, four query heads
// per pass, FP16 step and offset per token and group): "madd" = vpmaddubsw + vpaddw into int16, widened by vpmaddwd at
// the group's end (the .NET kernel's instructions); "vnni" = vpdpbusd at 512 bits straight into int32 (which .NET 10
// does not expose on this CPU). Random codes and parameters; one layer of 8 KV heads; the fastest of many passes over
// a cache-resident layer (CTX 2048 and 8192) and over layers cycled through memory (CTX 32768, 16 layers, 268 MB).
// Build and run (gcc, AVX-512 BW/VNNI/FP16C):
//   gcc -O3 -march=native -o /tmp/int8_scores_bound bench/native/int8_scores_bound.c && /tmp/int8_scores_bound [PREFETCH_BYTES [huge]]
// (-O3: at -O2 gcc keeps the four heads' int16 sums in memory, which takes twice as long.)
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>

#include "int8_kernels.h"

static void scores_madd(const uint8_t* codes, const uint16_t* prm, int n, float* out) { scores(codes, prm, n, out, 0, NULL); }
static void scores_vnni(const uint8_t* codes, const uint16_t* prm, int n, float* out) { scores(codes, prm, n, out, 1, NULL); }

static void run(int ctx, int layers, int passes) {
    size_t codeBytes = (size_t)ctx * ROW, prmWords = (size_t)ctx * GROUPS * 2 + 64;
    uint8_t** codes = malloc(sizeof(uint8_t*) * layers * KV_HEADS);
    uint16_t** prm = malloc(sizeof(uint16_t*) * layers * KV_HEADS);
    for (int i = 0; i < layers * KV_HEADS; i++) {
        codes[i] = alloc(codeBytes + 16384);
        prm[i] = alloc(prmWords * 2);
        for (size_t j = 0; j < codeBytes + 16384; j++) codes[i][j] = (uint8_t)rand();
        for (size_t j = 0; j < prmWords; j++) prm[i][j] = (uint16_t)(0x2C00 + (rand() & 0x3FF)); // halves in [1/16, 1/8)
    }
    float* out = aligned_alloc(64, sizeof(float) * HEADS * ctx);
    // Bytes one layer step reads: codes + parameters of every KV head (the .NET benchmark's CacheBytes counts the same).
    double bytes = (double)KV_HEADS * ctx * (ROW + GROUPS * 2 * 2);
    for (int variant = 0; variant < 2; variant++) {
        double best = 1e9;
        for (int p = 0; p < passes; p++) {
            int l = p % layers;
            double t0 = now();
            for (int h = 0; h < KV_HEADS; h++) {
                if (variant == 0) scores_madd(codes[l * KV_HEADS + h], prm[l * KV_HEADS + h], ctx, out);
                else scores_vnni(codes[l * KV_HEADS + h], prm[l * KV_HEADS + h], ctx, out);
            }
            double t = now() - t0;
            if (t < best) best = t;
        }
        printf("ctx %6d, %2d layer(s): %s scores step %.3f ms (%.2f GB/s of codes + parameters), %.2f ns a 16-token tile and KV head\n",
               ctx, layers, variant == 0 ? "madd (vpmaddubsw + vpaddw)" : "vnni (vpdpbusd zmm)      ", best * 1e3, bytes / best / 1e9, best * 1e9 / (KV_HEADS * ctx / 16.0));
    }
    for (int i = 0; i < layers * KV_HEADS; i++) { free(codes[i]); free(prm[i]); }
    free(codes); free(prm); free(out);
}

int main(int argc, char** argv) {
    char* end = NULL;
    if (argc > 1) prefetchBytes = strtol(argv[1], &end, 10);
    if (argc > 3 || (argc > 1 && (*argv[1] == 0 || *end != 0 || prefetchBytes < 0 || prefetchBytes > (1 << 20))) || (argc > 2 && strcmp(argv[2], "huge") != 0)) {
        fprintf(stderr, "usage: %s [PREFETCH_BYTES (0 to 1048576, default 2048) [huge]]; got:", argv[0]);
        for (int i = 1; i < argc; i++) fprintf(stderr, " '%s'", argv[i]);
        fprintf(stderr, "\n");
        return 2;
    }
    huge = argc > 2;
    printf("prefetch %ld bytes ahead, %s pages\n", prefetchBytes, huge ? "huge" : "4 KB");
    srand(7);
    init_tables();
    run(2048, 1, 4000);
    run(8192, 1, 1000);
    run(32768, 16, 160);
    return 0;
}
