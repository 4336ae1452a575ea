// The int8 score pass of Int8AttentionKernels in C (4-bit key tiles, head dim 64, groups of 32 channels, four query
// heads per pass, FP16 step and offset per token and group), shared by int8_scores_bound.c and int8_step_bound.c.
// Include once per program (the tables are file statics).
#ifndef INT8_KERNELS_H
#define INT8_KERNELS_H
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

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

// One KV head: n tokens (a multiple of 16) of tiled 4-bit codes; scores [HEADS][n], and with max (non-null) the
// largest score of each head in max[r]. vnni (a constant in each caller,
// so the compiler makes two loops): 0 = vpmaddubsw + vpaddw into int16, widened by vpmaddwd at the group's end;
// 1 = vpdpbusd straight into int32.
static inline __attribute__((always_inline)) void scores(const uint8_t* codes, const uint16_t* prm, int n, float* out, const int vnni, float* max) {
    const __m512i m = _mm512_set1_epi8(0x0F), one = _mm512_set1_epi16(1);
    __m512 mx[HEADS] = { _mm512_set1_ps(-INFINITY), _mm512_set1_ps(-INFINITY), _mm512_set1_ps(-INFINITY), _mm512_set1_ps(-INFINITY) };
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
        for (int r = 0; r < HEADS; r++) {
            _mm512_storeu_ps(out + (size_t)r * n + t, f[r]);
            if (max) mx[r] = _mm512_max_ps(mx[r], f[r]);
        }
    }
    if (max) for (int r = 0; r < HEADS; r++) max[r] = _mm512_reduce_max_ps(mx[r]);
}

// The parameter word indexes, random query dwords (bytes 0-127) and the per-head steps and sums (call after srand).
static void init_tables(void) {
    for (int g = 0; g < GROUPS; g++) for (int t = 0; t < 32; t++) { idx[g][0][t] = (uint16_t)((t % 16) * 4 + g * 2); idx[g][1][t] = (uint16_t)((t % 16) * 4 + g * 2 + 1); }
    for (int k = 0; k < COLS; k++) for (int j = 0; j < 2; j++) for (int r = 0; r < HEADS; r++) {
        int32_t v = rand(); for (int l = 0; l < 16; l++) qd[k][j][r][l] = v & 0x7F7F7F7F; }
    for (int g = 0; g < GROUPS; g++) for (int r = 0; r < HEADS; r++) { steps[g][r] = 0.01f * (r + 1); sums[g][r] = 0.5f * (g + 1); }
}

#endif
