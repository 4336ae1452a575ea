// The whole int8 decode-attention step of `--attn-int8-values` ported straight to C, against a STREAM-style triad in
// the same run: whether native code of the same design comes nearer the issue-6 target (attention alone at 32k with
// k4v2 >= 70 % of the triad) than the .NET kernels (README, Int8 attention, "Native port of the whole step"). A direct
// port, not a tuned one: each head and group's largest weight by one horizontal reduction (the .NET kernel's Max8
// does eight at once), and the compilers keep some of the sixteen int16 sums in memory.
// Llama-3.2-1B shape: 8 KV heads x 4 query heads, head dim 64, k4v2 with groups of 32 channels: keys as in
// int8_kernels.h (4-bit 16-token tiles, int8 queries, vpmaddubsw); then per KV head the value pass of Int8ValueKernels
// over 2-bit rows (16 bytes a token, FP16 step and offset per token and group): per block of 64 tokens the parameters
// (vcvtph2ps, which .NET 10 lacks), the exponentials (the same degree-6 polynomial), weights p * a per head and group
// rounded to bytes against the block's largest, the offsets' sums p * b, then per quad of tokens one byte permute of
// the codes, shifts and masks, one weight permute and four vpmaddubsw + vpaddw per head, the int16 sums widened and
// scaled at the block's end. The arithmetic is not checked against .NET (random data); the instruction mix is the same.
// A step = all 8 KV heads of one layer; 16 layers of 32,768 positions cycled through memory (268 MB); threads take
// KV heads from a shared counter, as the engine's WorkerPool does. The triad: a[i] = b[i] + 3 c[i] over three 128 MB
// float arrays, 12 bytes an element as STREAM counts, each thread a contiguous part.
// Build and run (gcc, AVX-512 BW/VBMI, F16C):
//   gcc -O3 -march=native -pthread -o /tmp/int8_step_bound bench/native/int8_step_bound.c && /tmp/int8_step_bound [ROUNDS]
// ROUNDS (1 to 100, default 3): alternations of the triad and the step, each at 1 and 2 threads.
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "int8_kernels.h"

enum { VROW = HD / 4, BLK = 64, CTX = 32768, LAYERS = 16, STEPS = 96, TRIAD = 32 << 20 };

// The value pass's index tables: word j of a quad's permuted codes holds byte j of two tokens (lower half tokens 0
// and 1, upper half 2 and 3); the weight index spreads the quad's weights of the channel's group (plane A below 64,
// B above) to those bytes.
static uint8_t codeIdx[64] __attribute__((aligned(64))), weightIdx[64] __attribute__((aligned(64)));

// e^x for x <= 0 as Int8ValueKernels.SoftExp: clamp, n = round(x log2 e), two-part reduction, degree-6 Taylor, 2^n.
static inline __m512 softexp(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.f));
    const __m512 shift = _mm512_set1_ps(12582912.f);
    __m512 n = _mm512_sub_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504f), shift), shift);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x));
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.f / 720), r, _mm512_set1_ps(1.f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
    return _mm512_scalef_ps(p, n);
}

// sum of the int16 lanes' two halves (same channel) times scale, added to o[0..15].
static inline void flush(float* o, __m512 scale, __m512i s) {
    __m512i w = _mm512_add_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(s)), _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(s, 1)));
    _mm512_storeu_ps(o, _mm512_fmadd_ps(_mm512_cvtepi32_ps(w), scale, _mm512_loadu_ps(o)));
}

#define MADD4(w, a0, a1, a2, a3) \
    a0 = _mm512_add_epi16(a0, _mm512_maddubs_epi16(w, f0)); a1 = _mm512_add_epi16(a1, _mm512_maddubs_epi16(w, f1)); \
    a2 = _mm512_add_epi16(a2, _mm512_maddubs_epi16(w, f2)); a3 = _mm512_add_epi16(a3, _mm512_maddubs_epi16(w, f3));

// One KV head's value pass: n tokens (a multiple of 64) of 2-bit rows and their parameters [token][group][a, b];
// sc [HEADS][n] the scores, max their per-head largest; out [HEADS][HD] (positions permuted as the .NET kernel's),
// sum [HEADS] the exponentials' sums.
static void values(const uint8_t* codes, const uint16_t* prm, const float* sc, int n, const float* max, float* out, float* sum) {
    const __m512i m3 = _mm512_set1_epi8(3), ci = _mm512_load_si512(codeIdx);
    __m512 off[HEADS][GROUPS], sl[HEADS];
    uint8_t uq[HEADS][GROUPS][BLK] __attribute__((aligned(64)));
    for (int r = 0; r < HEADS; r++) { sl[r] = _mm512_setzero_ps(); for (int g = 0; g < GROUPS; g++) off[r][g] = _mm512_setzero_ps(); }
    memset(out, 0, sizeof(float) * HEADS * HD);
    for (int t0 = 0; t0 < n; t0 += BLK) {
        if (t0 + BLK < n) {
            for (int i = 0; i < BLK * VROW; i += 64) _mm_prefetch((const char*)(codes + (size_t)(t0 + BLK) * VROW + i), _MM_HINT_T0);
            for (int i = 0; i < BLK * GROUPS * 4; i += 64) _mm_prefetch((const char*)(prm + (size_t)(t0 + BLK) * GROUPS * 2) + i, _MM_HINT_T0);
        }
        // The block's a and b per group, sixteen tokens a vector.
        __m512 a[GROUPS][4], b[GROUPS][4];
        for (int q = 0; q < 4; q++) {
            __m512 aq[GROUPS], bq[GROUPS];
            params16(prm + (size_t)(t0 + 16 * q) * GROUPS * 2, aq, bq);
            for (int g = 0; g < GROUPS; g++) { a[g][q] = aq[g]; b[g][q] = bq[g]; }
        }
        float scale[HEADS][GROUPS];
        for (int r = 0; r < HEADS; r++) {
            const __m512 top = _mm512_set1_ps(max[r]);
            __m512 p[4];
            for (int q = 0; q < 4; q++) p[q] = softexp(_mm512_sub_ps(_mm512_loadu_ps(sc + (size_t)r * n + t0 + 16 * q), top));
            sl[r] = _mm512_add_ps(sl[r], _mm512_add_ps(_mm512_add_ps(p[0], p[1]), _mm512_add_ps(p[2], p[3])));
            for (int g = 0; g < GROUPS; g++) {
                __m512 u[4];
                for (int q = 0; q < 4; q++) { u[q] = _mm512_mul_ps(p[q], a[g][q]); off[r][g] = _mm512_fmadd_ps(p[q], b[g][q], off[r][g]); }
                float m = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(u[0], u[1]), _mm512_max_ps(u[2], u[3])));
                scale[r][g] = m > 0 ? m / 255 : 0;
                const __m512 inv = _mm512_set1_ps(m > 0 ? 255 / m : 0);
                __m512i w01 = _mm512_packus_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(u[0], inv)), _mm512_cvtps_epi32(_mm512_mul_ps(u[1], inv)));
                __m512i w23 = _mm512_packus_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(u[2], inv)), _mm512_cvtps_epi32(_mm512_mul_ps(u[3], inv)));
                _mm512_store_si512(uq[r][g], _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), _mm512_packus_epi16(w01, w23)));
            }
        }
        // The sums: sixteen quads, four heads, int16 lanes.
        __m512i a00 = _mm512_setzero_si512(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00;
        __m512i a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;
        __m512i wi = _mm512_load_si512(weightIdx);
        const __m512i four = _mm512_set1_epi8(4);
        const uint8_t* row = codes + (size_t)t0 * VROW;
        for (int t = 0; t < BLK; t += 4, row += 4 * VROW) {
            __m512i x = _mm512_permutexvar_epi8(ci, _mm512_loadu_si512(row));
            __m512i f0 = _mm512_and_si512(x, m3), f1 = _mm512_and_si512(_mm512_srli_epi16(x, 2), m3);
            __m512i f2 = _mm512_and_si512(_mm512_srli_epi16(x, 4), m3), f3 = _mm512_and_si512(_mm512_srli_epi16(x, 6), m3);
            __m512i w = _mm512_permutex2var_epi8(_mm512_load_si512(uq[0][0]), wi, _mm512_load_si512(uq[0][1]));
            MADD4(w, a00, a01, a02, a03)
            w = _mm512_permutex2var_epi8(_mm512_load_si512(uq[1][0]), wi, _mm512_load_si512(uq[1][1]));
            MADD4(w, a10, a11, a12, a13)
            w = _mm512_permutex2var_epi8(_mm512_load_si512(uq[2][0]), wi, _mm512_load_si512(uq[2][1]));
            MADD4(w, a20, a21, a22, a23)
            w = _mm512_permutex2var_epi8(_mm512_load_si512(uq[3][0]), wi, _mm512_load_si512(uq[3][1]));
            MADD4(w, a30, a31, a32, a33)
            wi = _mm512_add_epi8(wi, four);
        }
        // Position 16 k + j holds channel 4 j + k: lanes 0-7 group 0, 8-15 group 1.
        __m512 s0 = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(scale[0][0]), _mm512_set1_ps(scale[0][1]));
        __m512 s1 = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(scale[1][0]), _mm512_set1_ps(scale[1][1]));
        __m512 s2 = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(scale[2][0]), _mm512_set1_ps(scale[2][1]));
        __m512 s3 = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(scale[3][0]), _mm512_set1_ps(scale[3][1]));
        flush(out, s0, a00); flush(out + 16, s0, a01); flush(out + 32, s0, a02); flush(out + 48, s0, a03);
        flush(out + HD, s1, a10); flush(out + HD + 16, s1, a11); flush(out + HD + 32, s1, a12); flush(out + HD + 48, s1, a13);
        flush(out + 2 * HD, s2, a20); flush(out + 2 * HD + 16, s2, a21); flush(out + 2 * HD + 32, s2, a22); flush(out + 2 * HD + 48, s2, a23);
        flush(out + 3 * HD, s3, a30); flush(out + 3 * HD + 16, s3, a31); flush(out + 3 * HD + 32, s3, a32); flush(out + 3 * HD + 48, s3, a33);
    }
    for (int r = 0; r < HEADS; r++) {
        sum[r] = _mm512_reduce_add_ps(sl[r]);
        __m512 o = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(_mm512_reduce_add_ps(off[r][0])), _mm512_set1_ps(_mm512_reduce_add_ps(off[r][1])));
        __m512 inv = _mm512_set1_ps(1 / sum[r]);
        for (int k = 0; k < HD; k += 16) _mm512_storeu_ps(out + r * HD + k, _mm512_mul_ps(_mm512_add_ps(_mm512_loadu_ps(out + r * HD + k), o), inv));
    }
}

// The cache: per layer and KV head the key tiles and parameters, the value rows and parameters.
static uint8_t* keyCodes[LAYERS * KV_HEADS];
static uint16_t* keyPrm[LAYERS * KV_HEADS];
static uint8_t* valCodes[LAYERS * KV_HEADS];
static uint16_t* valPrm[LAYERS * KV_HEADS];
static float* triadA;
static float* triadB;
static float* triadC;

// Work shared with the helper thread: a generation number per job, the job kind, the layer, a KV-head counter.
static atomic_int generation, done, nextHead;
static int jobKind, jobLayer, jobThreads;
static atomic_int quit;

// Per thread: scores [HEADS][CTX], outputs.
typedef struct { float* scores; float out[HEADS * HD]; float max[HEADS], sum[HEADS]; } Scratch;
static Scratch* scratch[2];

static void head_step(Scratch* s, int l, int h) {
    int i = l * KV_HEADS + h;
    scores(keyCodes[i], keyPrm[i], CTX, s->scores, 0, s->max);
    values(valCodes[i], valPrm[i], s->scores, CTX, s->max, s->out, s->sum);
}

static void triad_part(int index, int threads) {
    size_t part = TRIAD / threads, start = index * part, end = index == threads - 1 ? TRIAD : start + part;
    const __m512 k = _mm512_set1_ps(3.f);
    for (size_t i = start; i < end; i += 16)
        _mm512_store_ps(triadA + i, _mm512_fmadd_ps(_mm512_load_ps(triadC + i), k, _mm512_load_ps(triadB + i)));
}

static void work(int self) {
    if (jobKind == 0) { triad_part(self, jobThreads); return; }
    for (int h; (h = atomic_fetch_add(&nextHead, 1)) < KV_HEADS;) head_step(scratch[self], jobLayer, h);
}

static void* helper(void* arg) {
    (void)arg;
    int seen = 0;
    while (!atomic_load(&quit)) {
        int g = atomic_load(&generation);
        if (g == seen) { _mm_pause(); continue; }
        seen = g;
        work(1);
        atomic_fetch_add(&done, 1);
    }
    return NULL;
}

// One job on 1 or 2 threads; returns its seconds.
static double job(int kind, int layer, int threads) {
    jobKind = kind; jobLayer = layer; jobThreads = threads;
    atomic_store(&nextHead, 0);
    atomic_store(&done, 0);
    double t0 = now();
    if (threads == 2) atomic_fetch_add(&generation, 1);
    work(0);
    if (threads == 2) while (atomic_load(&done) == 0) _mm_pause();
    return now() - t0;
}

static int cmp(const void* a, const void* b) { double x = *(const double*)a, y = *(const double*)b; return (x > y) - (x < y); }

int main(int argc, char** argv) {
    int rounds = 3;
    char* end = NULL;
    if (argc > 1) rounds = (int)strtol(argv[1], &end, 10);
    if (argc > 2 || (argc > 1 && (*argv[1] == 0 || *end != 0 || rounds < 1 || rounds > 100))) {
        fprintf(stderr, "usage: %s [ROUNDS (1 to 100, default 3)]; got:", argv[0]);
        for (int i = 1; i < argc; i++) fprintf(stderr, " '%s'", argv[i]);
        fprintf(stderr, "\n");
        return 2;
    }
    srand(7);
    init_tables();
    for (int i = 0; i < 64; i++) {
        int token = 2 * (i / 32) + (i % 2), j = (i % 32) / 2;
        codeIdx[i] = (uint8_t)(token * VROW + j);
        weightIdx[i] = (uint8_t)((4 * j < 32 ? 0 : 64) + token);
    }
    size_t kBytes = (size_t)CTX * ROW, vBytes = (size_t)CTX * VROW, pWords = (size_t)CTX * GROUPS * 2 + 64;
    for (int i = 0; i < LAYERS * KV_HEADS; i++) {
        keyCodes[i] = alloc(kBytes + 16384); valCodes[i] = alloc(vBytes + 16384);
        keyPrm[i] = alloc(pWords * 2); valPrm[i] = alloc(pWords * 2);
        for (size_t j = 0; j < kBytes + 16384; j++) keyCodes[i][j] = (uint8_t)rand();
        for (size_t j = 0; j < vBytes + 16384; j++) valCodes[i][j] = (uint8_t)rand();
        for (size_t j = 0; j < pWords; j++) { keyPrm[i][j] = (uint16_t)(0x2C00 + (rand() & 0x3FF)); valPrm[i][j] = (uint16_t)(0x2C00 + (rand() & 0x3FF)); }
    }
    triadA = alloc(4L * TRIAD); triadB = alloc(4L * TRIAD); triadC = alloc(4L * TRIAD);
    for (size_t i = 0; i < TRIAD; i++) { triadA[i] = 0; triadB[i] = 1; triadC[i] = 2; }
    for (int t = 0; t < 2; t++) { scratch[t] = aligned_alloc(64, sizeof(Scratch)); scratch[t]->scores = alloc(sizeof(float) * HEADS * CTX); }
    pthread_t th;
    pthread_create(&th, NULL, helper, NULL);

    // Bytes a step reads, as the .NET benchmarks count them: codes + FP16 parameters of keys and values, all KV heads.
    double stepBytes = (double)KV_HEADS * CTX * (ROW + VROW + 2 * GROUPS * 2 * 2), triadBytes = 12.0 * TRIAD;
    printf("Llama-3.2-1B shape, k4v2, ctx %d, %d layers cycled (%.1f MB), step = 8 KV heads; triad 3 x %d MB\n", CTX, LAYERS, stepBytes * LAYERS / 1e6, (int)(4L * TRIAD >> 20));
    double* t = malloc(sizeof(double) * STEPS);
    for (int round = 1; round <= rounds; round++) {
        for (int threads = 1; threads <= 2; threads++) {
            double triadBest = 1e9, triadMed;
            for (int i = 0; i < 12; i++) { t[i] = job(0, 0, threads); if (t[i] < triadBest) triadBest = t[i]; }
            qsort(t, 12, sizeof(double), cmp);
            triadMed = (t[5] + t[6]) / 2;
            double stepBest = 1e9;
            for (int i = 0; i < STEPS; i++) { t[i] = job(1, i % LAYERS, threads); if (t[i] < stepBest) stepBest = t[i]; }
            qsort(t, STEPS, sizeof(double), cmp);
            double stepMed = (t[STEPS / 2 - 1] + t[STEPS / 2]) / 2;
            double triadGb = triadBytes / triadMed / 1e9, stepGb = stepBytes / stepMed / 1e9;
            printf("round %d, %d thread%s: triad %.2f GB/s (best %.2f); step median %.3f ms = %.2f GB/s (best %.3f ms = %.2f GB/s) = %.1f %% of the triad (best/best %.1f %%)\n",
                   round, threads, threads > 1 ? "s" : " ", triadGb, triadBytes / triadBest / 1e9, stepMed * 1e3, stepGb, stepBest * 1e3, stepBytes / stepBest / 1e9,
                   100 * stepGb / triadGb, 100 * (stepBytes / stepBest) / (triadBytes / triadBest));
        }
    }
    // The parts on one thread (scores, then values, over the same heads), medians.
    for (int part = 0; part < 2; part++) {
        for (int i = 0; i < STEPS; i++) {
            int l = i % LAYERS;
            double t0 = now();
            for (int h = 0; h < KV_HEADS; h++) {
                int j = l * KV_HEADS + h;
                if (part == 0) scores(keyCodes[j], keyPrm[j], CTX, scratch[0]->scores, 0, scratch[0]->max);
                else values(valCodes[j], valPrm[j], scratch[0]->scores, CTX, scratch[0]->max, scratch[0]->out, scratch[0]->sum);
            }
            t[i] = now() - t0;
        }
        qsort(t, STEPS, sizeof(double), cmp);
        printf("1 thread parts: %s median %.3f ms\n", part == 0 ? "scores (keys) " : "values (2-bit)", (t[STEPS / 2 - 1] + t[STEPS / 2]) / 2 * 1e3);
    }
    float check = 0;
    for (int i = 0; i < HEADS * HD; i++) check += scratch[0]->out[i];
    printf("(checksum %g)\n", check);
    atomic_store(&quit, 1);
    pthread_join(th, NULL);
    return 0;
}
