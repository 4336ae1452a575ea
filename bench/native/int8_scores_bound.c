// The int8 score kernel's inner work in C, to separate what the ISA allows from what .NET 10's code generation and
// intrinsics reach (README, Int8 attention, "Native bound of the int8 scores"). Same data layout and arithmetic as
// Int8AttentionKernels' 16-token pass over KeyTiles (4-bit codes, head dim 64, groups of 32 channels, four query heads
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

enum { HD = 64, GROUPS = 2, KV_HEADS = 8, HEADS = 4, COLS = HD * 4 / 32, ROW = HD / 2 };

// Prefetch distance in bytes (argument 1, default 2048 as the .NET kernel) and whether the buffers ask for huge pages
// (argument 2 "huge": 2 MB-aligned, madvise(MADV_HUGEPAGE); this machine's THP mode is madvise).
static long prefetchBytes = 2048;
static int huge;

static void* alloc(size_t n) {
    size_t a = huge ? (2u << 20) : 64;
    n = (n + a - 1) / a * a;
    void* p = aligned_alloc(a, n);
    if (huge) madvise(p, n, MADV_HUGEPAGE);
    return p;
}

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

// The query dwords: for column k and nibble field j, head r: 16 copies of one dword (as QuantizeQueries lays them out).
static int32_t qd[COLS][2][HEADS][16] __attribute__((aligned(64)));
static float steps[GROUPS][HEADS], sums[GROUPS][HEADS];

// Word indexes of group g's a (idx[g][0]) and b (idx[g][1]) of sixteen tokens in their [token][group][a, b] params.
static uint16_t idx[GROUPS][2][32] __attribute__((aligned(64)));

// Sixteen tokens' FP16 (a, b) of each group as floats: one two-register word permute each, then vcvtph2ps.
static inline void params16(const uint16_t* p, __m512* a, __m512* b) {
    __m512i w0 = _mm512_loadu_si512(p), w1 = _mm512_loadu_si512(p + 32);
    for (int g = 0; g < GROUPS; g++) {
        __m512i ra = _mm512_permutex2var_epi16(w0, _mm512_load_si512(idx[g][0]), w1), rb = _mm512_permutex2var_epi16(w0, _mm512_load_si512(idx[g][1]), w1);
        a[g] = _mm512_cvtph_ps(_mm512_castsi512_si256(ra));
        b[g] = _mm512_cvtph_ps(_mm512_castsi512_si256(rb));
    }
}

// One KV head: n tokens (a multiple of 16) of tiled 4-bit codes; scores [HEADS][n]. vnni (a constant in each caller,
// so the compiler makes two loops): 0 = vpmaddubsw + vpaddw into int16, widened by vpmaddwd at the group's end;
// 1 = vpdpbusd straight into int32.
static inline __attribute__((always_inline)) void scores(const uint8_t* codes, const uint16_t* prm, int n, float* out, const int vnni) {
    const __m512i m = _mm512_set1_epi8(0x0F), one = _mm512_set1_epi16(1);
    for (int t = 0; t < n; t += 16) {
        __m512 a[GROUPS], b[GROUPS];
        params16(prm + (size_t)t * GROUPS * 2, a, b);
        __m512 f[HEADS] = { _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps() };
        const uint8_t* col = codes + (size_t)t * ROW;
        for (int g = 0; g < GROUPS; g++) {
            __m512i h[HEADS] = { _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512() };
            for (int k = g * 4; k < g * 4 + 4; k++, col += 64) {
                _mm_prefetch((const char*)col + prefetchBytes, _MM_HINT_T0);
                __m512i c = _mm512_load_si512(col), lo = _mm512_and_si512(c, m), hi = _mm512_and_si512(_mm512_srli_epi32(c, 4), m);
                for (int r = 0; r < HEADS; r++) {
                    __m512i q0 = _mm512_load_si512(qd[k][0][r]), q1 = _mm512_load_si512(qd[k][1][r]);
                    h[r] = vnni ? _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(h[r], lo, q0), hi, q1)
                                : _mm512_add_epi16(_mm512_add_epi16(h[r], _mm512_maddubs_epi16(lo, q0)), _mm512_maddubs_epi16(hi, q1));
                }
            }
            for (int r = 0; r < HEADS; r++) {
                __m512 d = _mm512_cvtepi32_ps(vnni ? h[r] : _mm512_madd_epi16(h[r], one));
                f[r] = _mm512_fmadd_ps(d, _mm512_mul_ps(a[g], _mm512_set1_ps(steps[g][r])), f[r]);
                f[r] = _mm512_fmadd_ps(_mm512_set1_ps(sums[g][r]), b[g], f[r]);
            }
        }
        for (int r = 0; r < HEADS; r++) _mm512_storeu_ps(out + (size_t)r * n + t, f[r]);
    }
}

static void scores_madd(const uint8_t* codes, const uint16_t* prm, int n, float* out) { scores(codes, prm, n, out, 0); }
static void scores_vnni(const uint8_t* codes, const uint16_t* prm, int n, float* out) { scores(codes, prm, n, out, 1); }

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
    for (int g = 0; g < GROUPS; g++) for (int t = 0; t < 32; t++) { idx[g][0][t] = (uint16_t)((t % 16) * 4 + g * 2); idx[g][1][t] = (uint16_t)((t % 16) * 4 + g * 2 + 1); }
    for (int k = 0; k < COLS; k++) for (int j = 0; j < 2; j++) for (int r = 0; r < HEADS; r++) {
        int32_t v = rand(); for (int l = 0; l < 16; l++) qd[k][j][r][l] = v & 0x7F7F7F7F; }
    for (int g = 0; g < GROUPS; g++) for (int r = 0; r < HEADS; r++) { steps[g][r] = 0.01f * (r + 1); sums[g][r] = 0.5f * (g + 1); }
    run(2048, 1, 4000);
    run(8192, 1, 1000);
    run(32768, 16, 160);
    return 0;
}
