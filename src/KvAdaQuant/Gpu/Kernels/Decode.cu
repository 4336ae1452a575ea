// The GPU decode path of KvAdaQuant (kvaq generate/bench --device cuda): one token per sequence per step for a
// batch of sequences at the same position. Compiled at run time with NVRTC (-DHEAD_DIM=<model head dim>);
// needs no header. Activations are FP32 [batch][width]; weights FP16, or Q8_0 / Q4_0 repacked into a code array
// and an FP16 scale array (one scale per 32 elements of a row, the GGUF block's own scale):
//   type 0 (F16):  u16 halves [rows][ldw]
//   type 1 (Q8_0): s8 codes [rows][cols], scales [rows][cols/32]; w = code * scale
//   type 2 (Q4_0): u8 [rows][cols/2], element 2i in the low nibble of byte i, 2i+1 in the high one; w = (nibble - 8) * scale
// The FP16 KV cache is [layer][batch][kvHead][capacity][HEAD_DIM]; the packed cache uses the layout of
// PackedKvAttention.cu with a token stride of `capacity` and a residual window stride of `window capacity`.

#ifndef HEAD_DIM
#define HEAD_DIM 128
#endif
#define MAX_RATIO 8
#define NEG_BIG (-1.0e30f)

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;
typedef unsigned long long u64;

__device__ __forceinline__ float h2f(u16 h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ u16 f2h(float f) { u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ float lo_h(u32 w) { return h2f((u16)(w & 0xFFFFu)); }
__device__ __forceinline__ float hi_h(u32 w) { return h2f((u16)(w >> 16)); }

// ---------------------------------------------------------------------------------------------------
// Weight rows: 8 consecutive elements [c, c+8) of row `row` as floats (c a multiple of 8), or one element.
// ---------------------------------------------------------------------------------------------------

template <int TYPE>
__device__ __forceinline__ void weight8(const u8* W, const u16* S, int ldw, int cols, int row, int c, float* w)
{
    if (TYPE == 0)
    {
        uint4 v = *(const uint4*)((const u16*)W + (size_t)row * ldw + c);
        w[0] = lo_h(v.x); w[1] = hi_h(v.x); w[2] = lo_h(v.y); w[3] = hi_h(v.y);
        w[4] = lo_h(v.z); w[5] = hi_h(v.z); w[6] = lo_h(v.w); w[7] = hi_h(v.w);
    }
    else if (TYPE == 1)
    {
        uint2 v = *(const uint2*)(W + (size_t)row * cols + c);
        float s = h2f(S[(size_t)row * (cols >> 5) + (c >> 5)]);
#pragma unroll
        for (int i = 0; i < 4; i++)
        {
            w[i] = (float)(int)(signed char)(u8)(v.x >> (8 * i)) * s;
            w[4 + i] = (float)(int)(signed char)(u8)(v.y >> (8 * i)) * s;
        }
    }
    else
    {
        u32 v = *(const u32*)(W + (size_t)row * (cols >> 1) + (c >> 1));
        float s = h2f(S[(size_t)row * (cols >> 5) + (c >> 5)]);
#pragma unroll
        for (int i = 0; i < 8; i++) w[i] = (float)((int)((v >> (4 * i)) & 15u) - 8) * s;
    }
}

template <int TYPE>
__device__ __forceinline__ float weight1(const u8* W, const u16* S, int ldw, int cols, int row, int c)
{
    if (TYPE == 0) return h2f(((const u16*)W)[(size_t)row * ldw + c]);
    float s = h2f(S[(size_t)row * (cols >> 5) + (c >> 5)]);
    if (TYPE == 1) return (float)(int)(signed char)W[(size_t)row * cols + c] * s;
    u32 b = W[(size_t)row * (cols >> 1) + (c >> 1)];
    return (float)((int)((c & 1) ? (b >> 4) : (b & 15u)) - 8) * s;
}

// y[b][row] (+)= sum_c W[row][c] * x[b][c] for NB batch rows. A block of 256 threads takes MV_ROWS consecutive rows;
// its threads split the columns (8 consecutive columns a thread, 2048 a block step), so each x element loaded serves
// MV_ROWS rows (x is read from L1/L2 once per block and row group, not once per row); warp shuffles, then shared
// memory, sum the partials.
#define MV_ROWS 4
#define MV_THREADS 256
template <int NB, int TYPE>
__device__ __forceinline__ void matvec(const u8* W, const u16* S, int ldw, const float* x, int ldx, float* y, int ldy,
                                       int rows, int cols, int accumulate)
{
    __shared__ float red[MV_THREADS / 32][MV_ROWS][NB];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int row0 = blockIdx.x * MV_ROWS;
    const int nr = min(MV_ROWS, rows - row0);
    float acc[MV_ROWS][NB];
#pragma unroll
    for (int r = 0; r < MV_ROWS; r++)
    {
#pragma unroll
        for (int b = 0; b < NB; b++) acc[r][b] = 0.f;
    }
    if ((cols & 7) == 0 && (ldx & 3) == 0)
    {
        for (int c = threadIdx.x * 8; c < cols; c += MV_THREADS * 8)
        {
            float w[MV_ROWS][8];
#pragma unroll
            for (int r = 0; r < MV_ROWS; r++)
            {
                if (r < nr) weight8<TYPE>(W, S, ldw, cols, row0 + r, c, w[r]);
                else
                {
#pragma unroll
                    for (int i = 0; i < 8; i++) w[r][i] = 0.f;
                }
            }
#pragma unroll
            for (int b = 0; b < NB; b++)
            {
                float4 x0 = __ldg((const float4*)(x + (size_t)b * ldx + c));
                float4 x1 = __ldg((const float4*)(x + (size_t)b * ldx + c + 4));
#pragma unroll
                for (int r = 0; r < MV_ROWS; r++)
                {
                    float a = acc[r][b];
                    a = fmaf(w[r][0], x0.x, a); a = fmaf(w[r][1], x0.y, a); a = fmaf(w[r][2], x0.z, a); a = fmaf(w[r][3], x0.w, a);
                    a = fmaf(w[r][4], x1.x, a); a = fmaf(w[r][5], x1.y, a); a = fmaf(w[r][6], x1.z, a); a = fmaf(w[r][7], x1.w, a);
                    acc[r][b] = a;
                }
            }
        }
    }
    else
    {
        for (int c = threadIdx.x; c < cols; c += MV_THREADS)
        {
#pragma unroll
            for (int r = 0; r < MV_ROWS; r++)
            {
                float w = r < nr ? weight1<TYPE>(W, S, ldw, cols, row0 + r, c) : 0.f;
#pragma unroll
                for (int b = 0; b < NB; b++) acc[r][b] = fmaf(w, x[(size_t)b * ldx + c], acc[r][b]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < MV_ROWS; r++)
    {
#pragma unroll
        for (int b = 0; b < NB; b++)
        {
            float a = acc[r][b];
            for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffffu, a, o);
            if (lane == 0) red[warp][r][b] = a;
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < nr * NB; i += MV_THREADS)
    {
        int r = i / NB, b = i % NB;
        float a = 0.f;
#pragma unroll
        for (int w = 0; w < MV_THREADS / 32; w++) a += red[w][r][b];
        float* dst = y + (size_t)b * ldy + row0 + r;
        *dst = accumulate ? *dst + a : a;
    }
}

#define DEC_MATVEC(TNAME, TYPE, NB)                                                                                       \
    extern "C" __global__ void __launch_bounds__(MV_THREADS) dec_matvec_##TNAME##_##NB(                                          \
        const u8* W, const u16* S, int ldw, const float* x, int ldx, float* y, int ldy, int rows, int cols, int accumulate) \
    {                                                                                                                     \
        matvec<NB, TYPE>(W, S, ldw, x, ldx, y, ldy, rows, cols, accumulate);                                              \
    }

#define DEC_MATVEC_ALL(TNAME, TYPE) \
    DEC_MATVEC(TNAME, TYPE, 1) DEC_MATVEC(TNAME, TYPE, 2) DEC_MATVEC(TNAME, TYPE, 3) DEC_MATVEC(TNAME, TYPE, 4) \
    DEC_MATVEC(TNAME, TYPE, 5) DEC_MATVEC(TNAME, TYPE, 6) DEC_MATVEC(TNAME, TYPE, 7) DEC_MATVEC(TNAME, TYPE, 8)

DEC_MATVEC_ALL(f16, 0)
DEC_MATVEC_ALL(q8, 1)
DEC_MATVEC_ALL(q4, 2)

// Prefill chunks: y[b][row] (+)= sum_c W[row][c] * x[b][c] over the chunk's nx rows of x. A block of 128 threads takes GM_W
// weight rows, GM_X rows of x (grid y) and one of `splits` ranges of the columns (grid z, split-K, so that a product with
// few weight rows still fills the GPU); each K step of GM_K columns stages the dequantized weights and the x values in
// shared memory (transposed, so a thread reads 4 weights and 4 x values as two float4), and each thread accumulates a 4 x 4
// tile in column order. With one split the tile goes to y; with more, to part[split][b][row], which dec_gemm_reduce adds
// to y in split order (no atomics: the same sums every run). The weights are read once per x tile instead of once per
// 8 rows (the matrix-vector kernels), and x once per 64 weight rows.
#define GM_W 64
#define GM_X 32
#define GM_K 32

// x[xr][c .. c + 8) of a chunk's activations (0 past kEnd or nx), as two float4 loads where the columns allow.
__device__ __forceinline__ void gemm_x8(const float* x, int ldx, int nx, int kEnd, int xr, int c, bool vec, float* v)
{
    if (vec && c + 8 <= kEnd && xr < nx)
    {
        float4 a = __ldg((const float4*)(x + (size_t)xr * ldx + c));
        float4 b = __ldg((const float4*)(x + (size_t)xr * ldx + c + 4));
        v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
    }
    else
    {
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = c + i < kEnd && xr < nx ? x[(size_t)xr * ldx + c + i] : 0.f;
    }
}

// One output of a chunk's product, weight row r of x row b: to this split's partials where the columns are split, else
// to y (added to it where accumulate); nothing outside the rows.
__device__ __forceinline__ void gemm_out(float* y, int ldy, float* part, int rows, int nx, int r, int b, int accumulate, float v)
{
    if (b >= nx || r >= rows) return;
    if (gridDim.z > 1) part[((size_t)blockIdx.z * nx + b) * rows + r] = v;
    else
    {
        float* dst = y + (size_t)b * ldy + r;
        *dst = accumulate ? *dst + v : v;
    }
}
template <int TYPE>
__device__ __forceinline__ void gemm(const u8* W, const u16* S, int ldw, const float* x, int ldx, float* y, int ldy,
                                     int rows, int cols, int nx, int accumulate, float* part, int colsPerSplit)
{
    __shared__ alignas(16) float sw[GM_K][GM_W + 4];
    __shared__ alignas(16) float sx[GM_K][GM_X + 4];
    const int t = threadIdx.x;
    const int tw = t >> 3, tx = t & 7;            // the thread's 4 weight rows and 4 x rows
    const int lr = t >> 2, lc = (t & 3) * 8;       // what it stages: weight rows lr and lr + 32, x row lr; columns lc .. lc + 7
    const int row0 = blockIdx.x * GM_W, xb0 = blockIdx.y * GM_X;
    const int kBegin = blockIdx.z * colsPerSplit, kEnd = min(cols, kBegin + colsPerSplit);
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
    {
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.f;
    }
    const bool vec = (cols & 7) == 0 && (ldx & 3) == 0;
    // The next K step's weights and x values are loaded into registers while the current one is computed.
    float w[2][8], v[8];
    auto load = [&](int k0)
    {
        const int c = k0 + lc;
        const int xr = xb0 + lr;
#pragma unroll
        for (int half = 0; half < 2; half++)
        {
            const int wr = row0 + lr + 32 * half;
            if (vec && c + 8 <= kEnd && wr < rows) weight8<TYPE>(W, S, ldw, cols, wr, c, w[half]);
            else
            {
#pragma unroll
                for (int i = 0; i < 8; i++) w[half][i] = c + i < kEnd && wr < rows ? weight1<TYPE>(W, S, ldw, cols, wr, c + i) : 0.f;
            }
        }
        gemm_x8(x, ldx, nx, kEnd, xr, c, vec, v);
    };
    if (kBegin < kEnd) load(kBegin);
    for (int k0 = kBegin; k0 < kEnd; k0 += GM_K)
    {
#pragma unroll
        for (int i = 0; i < 8; i++)
        {
            sw[lc + i][lr] = w[0][i];
            sw[lc + i][lr + 32] = w[1][i];
            sx[lc + i][lr] = v[i];
        }
        __syncthreads();
        if (k0 + GM_K < kEnd) load(k0 + GM_K);
#pragma unroll 8
        for (int kk = 0; kk < GM_K; kk++)
        {
            float4 a = *(const float4*)&sw[kk][tw * 4];
            float4 b = *(const float4*)&sx[kk][tx * 4];
            float wa[4] = {a.x, a.y, a.z, a.w}, xv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
            for (int i = 0; i < 4; i++)
            {
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] = fmaf(wa[i], xv[j], acc[i][j]);
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < 4; j++)
    {
#pragma unroll
        for (int i = 0; i < 4; i++) gemm_out(y, ldy, part, rows, nx, row0 + tw * 4 + i, xb0 + tx * 4 + j, accumulate, acc[i][j]);
    }
}


// Prefill chunks on the tensor cores (sm_80 and later): the same product, tiles, splits and arguments as dec_gemm_*, with
// mma.sync m16n8k16 (FP16 inputs, FP32 accumulation) instead of FP32 FMAs. Each K step is one 32-column block (a Q8_0 /
// Q4_0 block of every weight row):
// - Weights enter the mma as FP16 codes, exact: the Q8_0 codes (-128..127) and Q4_0 codes (-8..7) as integers, F16
//   weights as they are. The block's weight scale (1 for F16) multiplies the block's FP32 partial sums afterwards.
// - Each x row's 32 values are first scaled by a power of two 2^-e that puts the block's largest magnitude in
//   [2^14, 2^15) (no FP16 overflow however large x is, no underflow of a small row), then split into two FP16 halves,
//   hi = fp16(x 2^-e) and lo = fp16(x 2^-e - hi), and both go through the mma: hi + lo carries about 22 significant bits,
//   so each product is as exact as the FP32 kernel's. The partial sums are multiplied by 2^e (exact) and the weight scale.
// The block's 4 warps take 16 weight rows each, all 32 x rows (4 n-tiles of 8); fragments come from shared memory with
// ldmatrix (rows padded to 80 bytes: conflict-free). The next K step is loaded into registers while the current one is
// computed, as in dec_gemm_*. The sums differ from dec_gemm_*'s in order and rounding only; the same bits every run.
#define TC_LD 40
__device__ __forceinline__ u32 tc_smem(const void* p) { u64 a; asm("cvta.to.shared.u64 %0, %1;" : "=l"(a) : "l"(p)); return (u32)a; }
__device__ __forceinline__ u32 tc_bits(float f) { u32 r; asm("mov.b32 %0, %1;" : "=r"(r) : "f"(f)); return r; }
__device__ __forceinline__ float tc_float(u32 b) { float r; asm("mov.b32 %0, %1;" : "=f"(r) : "r"(b)); return r; }
__device__ __forceinline__ void tc_st16(u16* p, u32 a, u32 b, u32 c, u32 d) { uint4 v; v.x = a; v.y = b; v.z = c; v.w = d; *(uint4*)p = v; }
__device__ __forceinline__ void tc_ldsm_x4(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];" : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr) : "memory");
}
__device__ __forceinline__ void tc_mma(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
    __trap();
#endif
}
// Two floats as a half2 (lo in bits 0..15), rounded to nearest.
__device__ __forceinline__ u32 tc_h2(float lo, float hi) { u32 r; asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo)); return r; }
__device__ __forceinline__ u32 tc_hsub2(u32 a, u32 b) { u32 r; asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b)); return r; }

// The FP16 codes of 8 consecutive elements [c, c + 8) of row `row` (as 4 half2) and the block's scale.
template <int TYPE>
__device__ __forceinline__ void tc_codes8(const u8* W, const u16* S, int ldw, int cols, int row, int c, u32* h, float& scale)
{
    if (TYPE == 0)
    {
        uint4 v = *(const uint4*)((const u16*)W + (size_t)row * ldw + c);
        h[0] = v.x; h[1] = v.y; h[2] = v.z; h[3] = v.w;
        scale = 1.f;
    }
    else if (TYPE == 1)
    {
        // A signed code q becomes the FP16 1024 + (q + 128) (exponent bits 0x6400, q + 128 in the mantissa), minus 1152.
        uint2 v = *(const uint2*)(W + (size_t)row * cols + c);
        u32 a = v.x ^ 0x80808080u, b = v.y ^ 0x80808080u;
        h[0] = tc_hsub2((a & 0xFFu) | ((a & 0xFF00u) << 8) | 0x64006400u, 0x64806480u);
        h[1] = tc_hsub2(((a >> 16) & 0xFFu) | ((a >> 8) & 0xFF0000u) | 0x64006400u, 0x64806480u);
        h[2] = tc_hsub2((b & 0xFFu) | ((b & 0xFF00u) << 8) | 0x64006400u, 0x64806480u);
        h[3] = tc_hsub2(((b >> 16) & 0xFFu) | ((b >> 8) & 0xFF0000u) | 0x64006400u, 0x64806480u);
        scale = h2f(S[(size_t)row * (cols >> 5) + (c >> 5)]);
    }
    else
    {
        // Element 2i is the low nibble of byte i, 2i + 1 the high one: element e is bits 4e .. 4e + 3; n - 8 = (1024 + n) - 1032.
        u32 v = *(const u32*)(W + (size_t)row * (cols >> 1) + (c >> 1));
#pragma unroll
        for (int i = 0; i < 4; i++) h[i] = tc_hsub2(((v >> (8 * i)) & 0xFu) | (((v >> (8 * i + 4)) & 0xFu) << 16) | 0x64006400u, 0x64086408u);
        scale = h2f(S[(size_t)row * (cols >> 5) + (c >> 5)]);
    }
}

// One element's FP16 code (0 outside the matrix); the slow path of tc_codes8.
template <int TYPE>
__device__ __forceinline__ float tc_code1(const u8* W, int ldw, int cols, int row, int c)
{
    if (TYPE == 0) return h2f(((const u16*)W)[(size_t)row * ldw + c]);
    if (TYPE == 1) return (float)(int)(signed char)W[(size_t)row * cols + c];
    u32 b = W[(size_t)row * (cols >> 1) + (c >> 1)];
    return (float)((int)((c & 1) ? (b >> 4) : (b & 15u)) - 8);
}

template <int TYPE>
__device__ __forceinline__ void gemm_tc(const u8* W, const u16* S, int ldw, const float* x, int ldx, float* y, int ldy,
                                        int rows, int cols, int nx, int accumulate, float* part, int colsPerSplit)
{
    __shared__ alignas(16) u16 sw[GM_W][TC_LD];
    __shared__ alignas(16) u16 sxh[GM_X][TC_LD];
    __shared__ alignas(16) u16 sxl[GM_X][TC_LD];
    __shared__ float sws[GM_W];
    __shared__ float sxs[GM_X];
    const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
    const int g = lane >> 2, tg = lane & 3;
    const int lr = t >> 2, lc = (t & 3) * 8;  // what this thread stages: weight rows lr and lr + 32, x row lr; columns lc .. lc + 7
    const int row0 = blockIdx.x * GM_W, xb0 = blockIdx.y * GM_X;
    const int kBegin = blockIdx.z * colsPerSplit, kEnd = min(cols, kBegin + colsPerSplit);
    float acc[4][4];
#pragma unroll
    for (int j = 0; j < 4; j++)
    {
#pragma unroll
        for (int i = 0; i < 4; i++) acc[j][i] = 0.f;
    }
    const bool vec = (cols & 7) == 0 && (ldx & 3) == 0;
    u32 wh[2][4];
    float ws[2], v[8];
    auto load = [&](int k0)
    {
        const int c = k0 + lc;
        const int xr = xb0 + lr;
#pragma unroll
        for (int half = 0; half < 2; half++)
        {
            const int wr = row0 + lr + 32 * half;
            if (vec && c + 8 <= kEnd && wr < rows) tc_codes8<TYPE>(W, S, ldw, cols, wr, c, wh[half], ws[half]);
            else
            {
                float f[8];
#pragma unroll
                for (int i = 0; i < 8; i++) f[i] = c + i < kEnd && wr < rows ? tc_code1<TYPE>(W, ldw, cols, wr, c + i) : 0.f;
#pragma unroll
                for (int i = 0; i < 4; i++) wh[half][i] = tc_h2(f[2 * i], f[2 * i + 1]);
                ws[half] = TYPE == 0 || wr >= rows || c >= kEnd ? 1.f : h2f(S[(size_t)wr * (cols >> 5) + (c >> 5)]);
            }
        }
        gemm_x8(x, ldx, nx, kEnd, xr, c, vec, v);
    };
    // ldmatrix addresses: A (weights) rows 16 warp + (lane & 7) + 8 ((lane >> 3) & 1), columns 8 (lane >> 4); B (x) rows
    // (lane & 7) + 8 (lane >> 4) of each pair of n-tiles, columns 8 ((lane >> 3) & 1).
    const u32 aAddr = tc_smem(&sw[16 * warp + (lane & 7) + 8 * ((lane >> 3) & 1)][8 * (lane >> 4)]);
    const u32 bhAddr = tc_smem(&sxh[(lane & 7) + 8 * (lane >> 4)][8 * ((lane >> 3) & 1)]);
    const u32 blAddr = tc_smem(&sxl[(lane & 7) + 8 * (lane >> 4)][8 * ((lane >> 3) & 1)]);
    if (kBegin < kEnd) load(kBegin);
    for (int k0 = kBegin; k0 < kEnd; k0 += GM_K)
    {
        // Stage: the weight codes, and x split into hi + lo after the power-of-two scaling of its 32-column block.
        float m = 0.f;
#pragma unroll
        for (int i = 0; i < 8; i++) m = fmaxf(m, fabsf(v[i]));
        m = fmaxf(m, __shfl_xor_sync(0xFFFFFFFFu, m, 1));
        m = fmaxf(m, __shfl_xor_sync(0xFFFFFFFFu, m, 2));
        const int e = (int)(tc_bits(m) >> 23);  // the biased exponent of the block's largest |x| (255: inf or NaN)
        const int shift = e == 255 ? 0 : max(e - 141, -126);
        const float down = tc_float((u32)(127 - shift) << 23), up = tc_float((u32)(127 + shift) << 23);
        u32 hi[4], lo[4];
#pragma unroll
        for (int i = 0; i < 4; i++)
        {
            float a = v[2 * i] * down, b = v[2 * i + 1] * down;
            hi[i] = tc_h2(a, b);
            lo[i] = tc_h2(a - lo_h(hi[i]), b - hi_h(hi[i]));
        }
        tc_st16(&sw[lr][lc], wh[0][0], wh[0][1], wh[0][2], wh[0][3]);
        tc_st16(&sw[lr + 32][lc], wh[1][0], wh[1][1], wh[1][2], wh[1][3]);
        tc_st16(&sxh[lr][lc], hi[0], hi[1], hi[2], hi[3]);
        tc_st16(&sxl[lr][lc], lo[0], lo[1], lo[2], lo[3]);
        if ((t & 3) == 0)
        {
            sws[lr] = ws[0];
            sws[lr + 32] = ws[1];
            sxs[lr] = up;
        }
        __syncthreads();
        if (k0 + GM_K < kEnd) load(k0 + GM_K);
        float part4[4][4];
#pragma unroll
        for (int j = 0; j < 4; j++)
        {
#pragma unroll
            for (int i = 0; i < 4; i++) part4[j][i] = 0.f;
        }
#pragma unroll
        for (int kk = 0; kk < GM_K; kk += 16)
        {
            u32 a0, a1, a2, a3;
            tc_ldsm_x4(aAddr + 2 * kk, a0, a1, a2, a3);
#pragma unroll
            for (int jp = 0; jp < 2; jp++)
            {
                u32 b0, b1, b2, b3;
                const u32 off = 2 * (16 * jp * TC_LD + kk);
                tc_ldsm_x4(bhAddr + off, b0, b1, b2, b3);
                tc_mma(part4[2 * jp], a0, a1, a2, a3, b0, b1);
                tc_mma(part4[2 * jp + 1], a0, a1, a2, a3, b2, b3);
                tc_ldsm_x4(blAddr + off, b0, b1, b2, b3);
                tc_mma(part4[2 * jp], a0, a1, a2, a3, b0, b1);
                tc_mma(part4[2 * jp + 1], a0, a1, a2, a3, b2, b3);
            }
        }
        const float sa = sws[16 * warp + g], sb = sws[16 * warp + g + 8];
#pragma unroll
        for (int j = 0; j < 4; j++)
        {
            const float x0 = sxs[8 * j + 2 * tg], x1 = sxs[8 * j + 2 * tg + 1];
            acc[j][0] = fmaf(sa * x0, part4[j][0], acc[j][0]);
            acc[j][1] = fmaf(sa * x1, part4[j][1], acc[j][1]);
            acc[j][2] = fmaf(sb * x0, part4[j][2], acc[j][2]);
            acc[j][3] = fmaf(sb * x1, part4[j][3], acc[j][3]);
        }
        __syncthreads();
    }
    // acc[j]: rows 16 warp + g (0, 1) and + 8 (2, 3) of x rows 8 j + 2 tg (0, 2) and + 1 (1, 3).
#pragma unroll
    for (int j = 0; j < 4; j++)
    {
#pragma unroll
        for (int i = 0; i < 4; i++) gemm_out(y, ldy, part, rows, nx, row0 + 16 * warp + g + 8 * (i >> 1), xb0 + 8 * j + 2 * tg + (i & 1), accumulate, acc[j][i]);
    }
}

// The chunk products' kernels: dec_gemm_<type> (FP32 FMAs) and dec_gemm_tc_<type> (tensor cores), same arguments.
#define DEC_GEMM(KNAME, FN, TYPE)                                                                                         \
    extern "C" __global__ void __launch_bounds__(128) KNAME(                                                              \
        const u8* W, const u16* S, int ldw, const float* x, int ldx, float* y, int ldy, int rows, int cols, int nx, int accumulate, \
        float* part, int colsPerSplit)                                                                                    \
    {                                                                                                                     \
        FN<TYPE>(W, S, ldw, x, ldx, y, ldy, rows, cols, nx, accumulate, part, colsPerSplit);                              \
    }

DEC_GEMM(dec_gemm_f16, gemm, 0)
DEC_GEMM(dec_gemm_q8, gemm, 1)
DEC_GEMM(dec_gemm_q4, gemm, 2)
DEC_GEMM(dec_gemm_tc_f16, gemm_tc, 0)
DEC_GEMM(dec_gemm_tc_q8, gemm_tc, 1)
DEC_GEMM(dec_gemm_tc_q4, gemm_tc, 2)

// y[b][row] (+)= the splits' partial sums of dec_gemm_*, added in split order; grid-stride.
extern "C" __global__ void __launch_bounds__(256) dec_gemm_reduce(const float* part, int splits, float* y, int ldy, int rows, int nx, int accumulate)
{
    const size_t n = (size_t)rows * nx;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    {
        size_t b = i / rows, r = i % rows;
        float a = part[i];
        for (int s = 1; s < splits; s++) a += part[(size_t)s * n + i];
        float* dst = y + b * ldy + r;
        *dst = accumulate ? *dst + a : a;
    }
}

// x[b][i] = embedding row tokens[b]; grid (batch), block 256.
extern "C" __global__ void __launch_bounds__(256) dec_embed(const u8* W, const u16* S, int ldw, int type, const int* tokens, float* x, int dim)
{
    const int b = blockIdx.x;
    const int tok = tokens[b];
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
    {
        float v = type == 0 ? weight1<0>(W, S, ldw, dim, tok, i) : type == 1 ? weight1<1>(W, S, ldw, dim, tok, i) : weight1<2>(W, S, ldw, dim, tok, i);
        x[(size_t)b * dim + i] = v;
    }
}

// out[b] = x[b] / sqrt(mean(x[b]^2) + eps) * w, the sum of squares in double as the CPU engine does; grid (batch), block 256.
extern "C" __global__ void __launch_bounds__(256) dec_rmsnorm(const float* x, const float* w, float* out, int dim, float eps)
{
    __shared__ double red[8];
    const int b = blockIdx.x;
    const float* xr = x + (size_t)b * dim;
    double s = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
    {
        float v = xr[i];
        s += (double)(v * v);
    }
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = s;
    __syncthreads();
    double total = 0.0;
    for (int i = 0; i < (int)(blockDim.x >> 5); i++) total += red[i];
    float mean = (float)(total / dim);
    float inv = 1.f / sqrtf(mean + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) out[(size_t)b * dim + i] = __fmul_rn(__fmul_rn(xr[i], inv), w[i]);
}

// qkv = [r][q | k | v] (+ bias); rotates q and k (RoPE from the host's cos/sin table at `pos`), writes q to qOut
// [r][heads][HEAD_DIM] and k, v as FP16 to the cache rows [b][kvHead][slot] (head stride `headStride` elements).
// Row r = p * seqs + b is sequence b's p-th new position (a prefill chunk, position-major; a decode step has p = 0):
// it takes position pos + p and cache slot slot + p. Grid (rows), block 256.
extern "C" __global__ void __launch_bounds__(256) dec_rope_append(
    const float* qkv, int ldqkv, const float* bias, const float* cosT, const float* sinT, const int* posPtr, int pos, int heads, int kvHeads,
    int interleaved, float* qOut, u16* kCache, u16* vCache, u64 headStride, int slot, float* kvScratch, int rotK, int rotV, int seqs)
{
    const int r = blockIdx.x, b = r % seqs;
    const int half = HEAD_DIM / 2;
    if (posPtr != 0) pos = *posPtr;
    pos += r / seqs;
    slot += r / seqs;
    const float* row = qkv + (size_t)r * ldqkv;
    const float* cs = cosT + (size_t)pos * half;
    const float* sn = sinT + (size_t)pos * half;
    const int qd = heads * HEAD_DIM, kvd = kvHeads * HEAD_DIM;
    for (int i = threadIdx.x; i < (heads + kvHeads) * half; i += blockDim.x)
    {
        int h = i / half, p = i % half;
        int a = interleaved ? 2 * p : p;
        int c = interleaved ? 2 * p + 1 : p + half;
        int base = h * HEAD_DIM;
        float x0 = row[base + a], x1 = row[base + c];
        if (bias != 0) { x0 = __fadd_rn(x0, bias[base + a]); x1 = __fadd_rn(x1, bias[base + c]); }
        float y0 = __fsub_rn(__fmul_rn(x0, cs[p]), __fmul_rn(x1, sn[p]));
        float y1 = __fadd_rn(__fmul_rn(x0, sn[p]), __fmul_rn(x1, cs[p]));
        if (h < heads)
        {
            float* q = qOut + (size_t)r * qd + base;
            q[a] = y0;
            q[c] = y1;
        }
        else if (rotK)
        {
            // Rotated keys: the FP32 row goes to the scratch, dec_rotate_qkv rotates it and writes the FP16 slot.
            float* k = kvScratch + ((size_t)r * 2 * kvHeads + (h - heads)) * HEAD_DIM;
            k[a] = y0;
            k[c] = y1;
        }
        else
        {
            int kvh = h - heads;
            u16* k = kCache + ((size_t)b * kvHeads + kvh) * headStride + (size_t)slot * HEAD_DIM;
            k[a] = f2h(y0);
            k[c] = f2h(y1);
        }
    }
    for (int i = threadIdx.x; i < kvd; i += blockDim.x)
    {
        float v = row[qd + kvd + i];
        if (bias != 0) v = __fadd_rn(v, bias[qd + kvd + i]);
        int kvh = i / HEAD_DIM, d = i % HEAD_DIM;
        if (rotV) kvScratch[((size_t)r * 2 * kvHeads + kvHeads + kvh) * HEAD_DIM + d] = v;
        else vCache[((size_t)b * kvHeads + kvh) * headStride + (size_t)slot * HEAD_DIM + d] = f2h(v);
    }
}

// ---------------------------------------------------------------------------------------------------
// Rotated rows (the rot spec option, KvRotation on the CPU): R = H D / sqrt(HEAD_DIM), H the Sylvester Hadamard matrix,
// D the fixed signs of splitmix64. One warp per row; lane holds elements lane + 32 e (e < ROT_E), or element lane when
// HEAD_DIM < 32. The butterflies, their order and the rounding are the CPU's, so a rotated row is the CPU's bit for bit.
// ---------------------------------------------------------------------------------------------------

#define ROT_E (HEAD_DIM >= 32 ? HEAD_DIM / 32 : 1)

__device__ __forceinline__ float kv_rot_sign(int i)
{
    u64 z = (u64)(i + 1) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (z >> 63) ? -1.f : 1.f;
}

__device__ __forceinline__ void warp_fwht(float* v, int lane)
{
#pragma unroll
    for (int h = 1; h < HEAD_DIM; h <<= 1)
    {
        if (h < 32)
        {
#pragma unroll
            for (int e = 0; e < ROT_E; e++)
            {
                float o = __shfl_xor_sync(0xffffffffu, v[e], h);
                v[e] = (lane & h) ? __fsub_rn(o, v[e]) : __fadd_rn(v[e], o);
            }
        }
        else
        {
            const int he = h >> 5;
#pragma unroll
            for (int e = 0; e < ROT_E; e++)
            {
                if ((e & he) == 0)
                {
                    float a = v[e], b = v[e | he];
                    v[e] = __fadd_rn(a, b);
                    v[e | he] = __fsub_rn(a, b);
                }
            }
        }
    }
}

// x <- R x (forward) or R^T x, in place on one row of HEAD_DIM floats held by the warp.
__device__ __forceinline__ void warp_rotate(float* v, int lane, bool forward)
{
    const float scale = __fdiv_rn(1.f, __fsqrt_rn((float)HEAD_DIM));
    if (forward)
    {
#pragma unroll
        for (int e = 0; e < ROT_E; e++) v[e] = __fmul_rn(v[e], kv_rot_sign(lane + 32 * e));
    }
    warp_fwht(v, lane);
#pragma unroll
    for (int e = 0; e < ROT_E; e++)
    {
        v[e] = __fmul_rn(v[e], scale);
        if (!forward) v[e] = __fmul_rn(v[e], kv_rot_sign(lane + 32 * e));
    }
}

__device__ __forceinline__ void warp_load(const float* row, float* v, int lane)
{
#pragma unroll
    for (int e = 0; e < ROT_E; e++) { int j = lane + 32 * e; v[e] = j < HEAD_DIM ? row[j] : 0.f; }
}

// After dec_rope_append of a layer with rotated keys and/or values: the query rows rotated in place (with the keys), and
// the K and V rows from the scratch rotated into their FP16 cache slot. Rows as dec_rope_append's (row y = p * seqs + b:
// sequence b, slot slot + p). Grid (heads + 2 kvHeads, rows), block 32.
extern "C" __global__ void __launch_bounds__(32) dec_rotate_qkv(
    float* q, const float* kvScratch, u16* kCache, u16* vCache, u64 headStride, int slot, int heads, int kvHeads, int rotK, int rotV, int seqs)
{
    const int r = blockIdx.x, y = blockIdx.y, b = y % seqs, lane = threadIdx.x;
    slot += y / seqs;
    float v[ROT_E];
    if (r < heads)
    {
        if (!rotK) return;
        float* row = q + ((size_t)y * heads + r) * HEAD_DIM;
        warp_load(row, v, lane);
        warp_rotate(v, lane, true);
#pragma unroll
        for (int e = 0; e < ROT_E; e++) { int j = lane + 32 * e; if (j < HEAD_DIM) row[j] = v[e]; }
        return;
    }
    const bool keys = r < heads + kvHeads;
    if (keys ? !rotK : !rotV) return;
    const int kvh = keys ? r - heads : r - heads - kvHeads;
    warp_load(kvScratch + ((size_t)y * 2 * kvHeads + (keys ? 0 : kvHeads) + kvh) * HEAD_DIM, v, lane);
    warp_rotate(v, lane, true);
    u16* dst = (keys ? kCache : vCache) + ((size_t)b * kvHeads + kvh) * headStride + (size_t)slot * HEAD_DIM;
#pragma unroll
    for (int e = 0; e < ROT_E; e++) { int j = lane + 32 * e; if (j < HEAD_DIM) dst[j] = f2h(v[e]); }
}

// The attention output of a layer with rotated values turned back (R^T), in place: rows [batch][heads]. Grid (heads, batch), block 32.
extern "C" __global__ void __launch_bounds__(32) dec_unrotate_rows(float* x, int heads)
{
    const int lane = threadIdx.x;
    float* row = x + ((size_t)blockIdx.y * heads + blockIdx.x) * HEAD_DIM;
    float v[ROT_E];
    warp_load(row, v, lane);
    warp_rotate(v, lane, false);
#pragma unroll
    for (int e = 0; e < ROT_E; e++) { int j = lane + 32 * e; if (j < HEAD_DIM) row[j] = v[e]; }
}

// out[b][i] = silu(gu[b][i]) * gu[b][hidden + i], as the CPU's g / (1 + exp(-g)) * u; grid-stride.
extern "C" __global__ void __launch_bounds__(256) dec_swiglu(const float* gu, float* out, int hidden, int batch)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)batch * hidden; i += (size_t)gridDim.x * blockDim.x)
    {
        size_t b = i / hidden, j = i % hidden;
        float g = gu[b * 2 * hidden + j];
        float u = gu[b * 2 * hidden + hidden + j];
        out[i] = __fmul_rn(__fdiv_rn(g, __fadd_rn(1.f, expf(-g))), u);
    }
}

// ---------------------------------------------------------------------------------------------------
// Decode attention on the FP16 cache, split-KV: each warp takes `tokensPerWarp` positions of one (batch, KV head)
// for all its query heads and writes an unnormalised partial (log2-domain max and sum) that kvq_combine merges.
// Grid (ceil(splits / 4), kvHeads, batch), block 128; split index = 4 * blockIdx.x + warp; totalSplits = 4 * gridDim.x.
// QK: 8 tokens per warp step, 4 lanes per token, each lane HEAD_DIM / 4 dimensions. PV: each lane HEAD_DIM / 32
// consecutive dimensions (one when HEAD_DIM < 32, lanes beyond HEAD_DIM idle).
// ---------------------------------------------------------------------------------------------------

#define QK_DPL (HEAD_DIM / 4)
#define PV_DPL (HEAD_DIM >= 32 ? HEAD_DIM / 32 : 1)
#define PV_LANES (HEAD_DIM / PV_DPL)
#define QK_PAD (QK_DPL + 4)

template <int N>
__device__ __forceinline__ void load_halves(const u16* p, float* out)
{
    if constexpr (N % 8 == 0)
    {
#pragma unroll
        for (int i = 0; i < N / 8; i++)
        {
            uint4 v = *(const uint4*)(p + 8 * i);
            out[8 * i + 0] = lo_h(v.x); out[8 * i + 1] = hi_h(v.x); out[8 * i + 2] = lo_h(v.y); out[8 * i + 3] = hi_h(v.y);
            out[8 * i + 4] = lo_h(v.z); out[8 * i + 5] = hi_h(v.z); out[8 * i + 6] = lo_h(v.w); out[8 * i + 7] = hi_h(v.w);
        }
    }
    else if constexpr (N % 4 == 0)
    {
#pragma unroll
        for (int i = 0; i < N / 4; i++)
        {
            uint2 v = *(const uint2*)(p + 4 * i);
            out[4 * i + 0] = lo_h(v.x); out[4 * i + 1] = hi_h(v.x); out[4 * i + 2] = lo_h(v.y); out[4 * i + 3] = hi_h(v.y);
        }
    }
    else if constexpr (N % 2 == 0)
    {
#pragma unroll
        for (int i = 0; i < N / 2; i++)
        {
            u32 v = *(const u32*)(p + 2 * i);
            out[2 * i] = lo_h(v); out[2 * i + 1] = hi_h(v);
        }
    }
    else
    {
#pragma unroll
        for (int i = 0; i < N; i++) out[i] = h2f(p[i]);
    }
}

template <class SRC>
__device__ __forceinline__ void attn_split(const SRC& src, const float* q, float* partO, float* partML, int T, int tokensPerWarp, int ratio, float scaleLog2)
{
    __shared__ alignas(16) float sq[MAX_RATIO][4][QK_PAD];
    const int kvh = blockIdx.y, b = blockIdx.z, kvHeads = gridDim.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int split = blockIdx.x * 4 + warp;
    const int totalSplits = gridDim.x * 4;
    const int hqTotal = kvHeads * ratio;
    const size_t bh = (size_t)b * kvHeads + kvh;
    for (int i = threadIdx.x; i < ratio * HEAD_DIM; i += blockDim.x)
    {
        int h = i / HEAD_DIM, d = i % HEAD_DIM;
        sq[h][d / QK_DPL][d % QK_DPL] = q[((size_t)b * hqTotal + kvh * ratio + h) * HEAD_DIM + d] * scaleLog2;
    }
    __syncthreads();

    const SRC rows = src.head(bh);
    const int t0 = split * tokensPerWarp;
    const int t1 = min(T, t0 + tokensPerWarp);
    float m[MAX_RATIO], l[MAX_RATIO], acc[MAX_RATIO][PV_DPL];
#pragma unroll
    for (int h = 0; h < MAX_RATIO; h++)
    {
        m[h] = NEG_BIG;
        l[h] = 0.f;
#pragma unroll
        for (int i = 0; i < PV_DPL; i++) acc[h][i] = 0.f;
    }

    for (int base = t0; base < t1; base += 8)
    {
        const int tok = base + g;
        const bool valid = tok < t1;
        // V rows of the 8 positions, loaded before the scores so that K and V loads are in flight together.
        float vv[8][PV_DPL];
#pragma unroll
        for (int j = 0; j < 8; j++)
        {
            if (base + j < t1 && lane < PV_LANES) rows.template value_row<PV_DPL>(base + j, lane * PV_DPL, vv[j]);
            else
            {
#pragma unroll
                for (int i = 0; i < PV_DPL; i++) vv[j][i] = 0.f;
            }
        }
        float s[MAX_RATIO];
#pragma unroll
        for (int h = 0; h < MAX_RATIO; h++) s[h] = 0.f;
        if (valid)
        {
            float k[QK_DPL];
            rows.template key_row<QK_DPL>(tok, t * QK_DPL, k);
#pragma unroll
            for (int h = 0; h < MAX_RATIO; h++)
            {
                if (h < ratio)
                {
                    float a = 0.f;
                    if constexpr (QK_DPL % 4 == 0)
                    {
#pragma unroll
                        for (int j = 0; j < QK_DPL; j += 4)
                        {
                            float4 qv = *(const float4*)&sq[h][t][j];
                            a = fmaf(qv.x, k[j], a); a = fmaf(qv.y, k[j + 1], a); a = fmaf(qv.z, k[j + 2], a); a = fmaf(qv.w, k[j + 3], a);
                        }
                    }
                    else
                    {
#pragma unroll
                        for (int j = 0; j < QK_DPL; j++) a = fmaf(sq[h][t][j], k[j], a);
                    }
                    s[h] = a;
                }
            }
        }
        float p[MAX_RATIO];
#pragma unroll
        for (int h = 0; h < MAX_RATIO; h++)
        {
            if (h < ratio)
            {
                float v = s[h];
                v += __shfl_xor_sync(0xffffffffu, v, 1);
                v += __shfl_xor_sync(0xffffffffu, v, 2);
                v = valid ? v : NEG_BIG;
                float mx = v;
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 8));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
                float mNew = fmaxf(m[h], mx);
                float alpha = exp2f(m[h] - mNew);
                float pv = valid ? exp2f(v - mNew) : 0.f;
                float sum = pv;
                sum += __shfl_xor_sync(0xffffffffu, sum, 4);
                sum += __shfl_xor_sync(0xffffffffu, sum, 8);
                sum += __shfl_xor_sync(0xffffffffu, sum, 16);
                l[h] = l[h] * alpha + sum;
                m[h] = mNew;
#pragma unroll
                for (int i = 0; i < PV_DPL; i++) acc[h][i] *= alpha;
                p[h] = pv;
            }
        }
#pragma unroll
        for (int j = 0; j < 8; j++)
        {
            const bool have = base + j < t1 && lane < PV_LANES;
#pragma unroll
            for (int h = 0; h < MAX_RATIO; h++)
            {
                if (h < ratio)
                {
                    float pj = __shfl_sync(0xffffffffu, p[h], 4 * j);
                    if (have)
                    {
#pragma unroll
                        for (int i = 0; i < PV_DPL; i++) acc[h][i] = fmaf(pj, vv[j][i], acc[h][i]);
                    }
                }
            }
        }
    }

#pragma unroll
    for (int h = 0; h < MAX_RATIO; h++)
    {
        if (h < ratio)
        {
            size_t slot = ((size_t)b * hqTotal + kvh * ratio + h) * totalSplits + split;
            if (lane < PV_LANES)
            {
#pragma unroll
                for (int i = 0; i < PV_DPL; i++) partO[slot * HEAD_DIM + lane * PV_DPL + i] = acc[h][i];
            }
            if (lane == 0) { partML[slot * 2] = m[h]; partML[slot * 2 + 1] = l[h]; }
        }
    }
}


// Rows of the FP16 cache: [batch][kvHead][headStride / HEAD_DIM][HEAD_DIM].
struct Fp16Rows
{
    const u16* k;
    const u16* v;
    u64 headStride;

    __device__ __forceinline__ Fp16Rows head(size_t bh) const { return Fp16Rows{k + bh * headStride, v + bh * headStride, headStride}; }

    template <int N>
    __device__ __forceinline__ void key_row(int tok, int d0, float* out) const { load_halves<N>(k + (size_t)tok * HEAD_DIM + d0, out); }

    template <int N>
    __device__ __forceinline__ void value_row(int tok, int d0, float* out) const { load_halves<N>(v + (size_t)tok * HEAD_DIM + d0, out); }
};

// One packed tensor of one head (per-token groups): code d of token tok dequantized as scale * code + min.
// BITS > 0 fixes the width at compile time (constant shifts); 0 reads it from `bits`.
template <int BITS>
struct PackedRow
{
    const u8* codes;
    const u32* params;
    int bits;
    int rowBytes;
    int group;

    template <int N>
    __device__ __forceinline__ void load(int tok, int d0, float* out) const
    {
        const int b = BITS > 0 ? BITS : bits;
        const u8* row = codes + (size_t)tok * rowBytes;
        const u32* par = params + (size_t)tok * (HEAD_DIM / group);
        // Widths dividing 32 (codes never straddle 32-bit words), rows of whole words, dimensions inside one group:
        // one or two word loads and one (scale, min) pair.
        if (b != 158 && (32 % b) == 0 && (rowBytes & 3) == 0 && (d0 % group) + N <= group)
        {
            const int bit0 = d0 * b;
            const int off = bit0 & 31;
            if (off + N * b <= 64)
            {
                const u32* words = (const u32*)row + (bit0 >> 5);
                const u32 w0 = words[0];
                const u32 w1 = off + N * b > 32 ? words[1] : 0u;
                const u32 p = par[d0 / group];
                const float sc = lo_h(p), mn = hi_h(p);
                const u32 mask = (1u << b) - 1u;
#pragma unroll
                for (int i = 0; i < N; i++)
                {
                    const int pos = off + i * b;
                    const u32 w = pos < 32 ? w0 : w1;
                    out[i] = fmaf(sc, (float)((w >> (pos & 31)) & mask), mn);
                }
                return;
            }
        }
#pragma unroll
        for (int i = 0; i < N; i++)
        {
            int d = d0 + i;
            u32 q;
            if (b == 158)
            {
                u32 byte = row[d / 5];
                int digit = d % 5;
                for (int j = 0; j < digit; j++) byte /= 3;
                q = byte % 3;
            }
            else
            {
                int bit = d * b;
                u32 w = row[bit >> 3];
                if ((bit & 7) + b > 8) w |= (u32)row[(bit >> 3) + 1] << 8;
                q = (w >> (bit & 7)) & ((1u << b) - 1u);
            }
            u32 p = par[d / group];
            out[i] = fmaf(lo_h(p), (float)q, hi_h(p));
        }
    }
};

// Rows of a packed layer: positions [0, T) packed, [T, T + R) in the FP16 window.
template <int KB, int VB>
struct PackedRows
{
    PackedRow<KB> k;
    PackedRow<VB> v;
    const u16* resK;
    const u16* resV;
    u64 tokenStride;
    u64 resHeadStride;
    int T;

    __device__ __forceinline__ PackedRows head(size_t bh) const
    {
        PackedRows r = *this;
        r.k.codes += bh * tokenStride * k.rowBytes;
        r.k.params += bh * tokenStride * (HEAD_DIM / k.group);
        r.v.codes += bh * tokenStride * v.rowBytes;
        r.v.params += bh * tokenStride * (HEAD_DIM / v.group);
        r.resK += bh * resHeadStride;
        r.resV += bh * resHeadStride;
        return r;
    }

    template <int N>
    __device__ __forceinline__ void key_row(int tok, int d0, float* out) const
    {
        if (tok < T) k.template load<N>(tok, d0, out);
        else load_halves<N>(resK + (size_t)(tok - T) * HEAD_DIM + d0, out);
    }

    template <int N>
    __device__ __forceinline__ void value_row(int tok, int d0, float* out) const
    {
        if (tok < T) v.template load<N>(tok, d0, out);
        else load_halves<N>(resV + (size_t)(tok - T) * HEAD_DIM + d0, out);
    }
};

// A prefill chunk: each sequence's `qps` new positions, query rows p * gridDim.z + b (position-major), causal: row p sees
// the first T - (qps - 1 - p) positions, T counting the whole chunk. A block of 128 threads takes one split of the
// positions (`tokensPerSplit`) for CH_ROWS (query position, head) rows of one KV head (grid x = split * rowGroups + group):
// each row is CH_TPR threads (1 up to head dim 64, 2 up to 128, 4 up to 256) holding CH_DPT = HEAD_DIM / CH_TPR of its
// query's dimensions and of its output in registers. Tiles of CH_TILE
// positions are dequantized into shared memory once for all rows; for each position a row forms its score, and the
// output accumulates p * v with p = exp2(score - m), where the reference m only moves when a score exceeds it by more than
// CH_SLACK (p <= 2^8; the accumulators are rescaled then), so the common position costs no rescale. The partial (m, l,
// output relative to exp2(m)) is kvq_combine's.
#define CH_TPR (HEAD_DIM <= 64 ? 1 : HEAD_DIM <= 128 ? 2 : 4)
#define CH_DPT (HEAD_DIM / CH_TPR)
#define CH_ROWS (128 / CH_TPR)
#define CH_TILE (HEAD_DIM <= 128 ? 32 : 16)
#define CH_SLACK 8.f
template <class SRC>
__device__ __forceinline__ void attn_chunk(const SRC& src, const float* q, float* partO, float* partML, int T, int tokensPerSplit, int ratio, float scaleLog2,
                                           int qps, int rowGroups)
{
    __shared__ alignas(16) float sk[CH_TILE][HEAD_DIM];
    __shared__ alignas(16) float sv[CH_TILE][HEAD_DIM];
    const int kvh = blockIdx.y, kvHeads = gridDim.y, b = blockIdx.z, seqs = gridDim.z;
    const int split = blockIdx.x / rowGroups, group = blockIdx.x % rowGroups;
    const int totalSplits = gridDim.x / rowGroups;
    const int hqTotal = kvHeads * ratio;
    const int t = threadIdx.x, lane = t & 31;
    const int row = group * CH_ROWS + t / CH_TPR;
    const int d0 = (t % CH_TPR) * CH_DPT;
    const bool active = row < qps * ratio;
    const int p = active ? row / ratio : 0, h = active ? row % ratio : 0;
    const int qr = p * seqs + b;
    const SRC rows = src.head((size_t)b * kvHeads + kvh);
    const int t0 = split * tokensPerSplit, t1 = min(T, t0 + tokensPerSplit);
    const int end = active ? min(t1, T - (qps - 1 - p)) : t0;
    const unsigned rowMask = CH_TPR == 1 ? 1u << lane : ((1u << CH_TPR) - 1u) << (lane & ~(CH_TPR - 1));
    float qv[CH_DPT], acc[CH_DPT];
    const float* qrow = q + ((size_t)qr * hqTotal + kvh * ratio + h) * HEAD_DIM + d0;
#pragma unroll
    for (int i = 0; i < CH_DPT; i++)
    {
        qv[i] = active ? qrow[i] * scaleLog2 : 0.f;
        acc[i] = 0.f;
    }
    float m = NEG_BIG, l = 0.f;
    for (int base = t0; base < t1; base += CH_TILE)
    {
        const int n = min(CH_TILE, t1 - base);
        __syncthreads(); // the previous tile is no longer read
        for (int i = t; i < n * (HEAD_DIM / 8); i += blockDim.x)
        {
            const int j = i / (HEAD_DIM / 8), d = (i % (HEAD_DIM / 8)) * 8;
            rows.template key_row<8>(base + j, d, &sk[j][d]);
            rows.template value_row<8>(base + j, d, &sv[j][d]);
        }
        __syncthreads();
        const int jn = min(n, end - base);
        for (int j = 0; j < jn; j++)
        {
            float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
            if constexpr (CH_DPT % 4 == 0)
            {
#pragma unroll
                for (int i = 0; i < CH_DPT; i += 4)
                {
                    float4 k = *(const float4*)&sk[j][d0 + i];
                    a0 = fmaf(qv[i], k.x, a0); a1 = fmaf(qv[i + 1], k.y, a1); a2 = fmaf(qv[i + 2], k.z, a2); a3 = fmaf(qv[i + 3], k.w, a3);
                }
            }
            else
            {
                // Head dims in (128, 256] that 16 does not divide: 2 (mod 4) dimensions a thread, no float4.
#pragma unroll
                for (int i = 0; i < CH_DPT; i += 2)
                {
                    a0 = fmaf(qv[i], sk[j][d0 + i], a0);
                    a1 = fmaf(qv[i + 1], sk[j][d0 + i + 1], a1);
                }
            }
            float sc = (a0 + a1) + (a2 + a3);
#pragma unroll
            for (int o = 1; o < CH_TPR; o <<= 1) sc += __shfl_xor_sync(rowMask, sc, o);
            if (sc > m + CH_SLACK)
            {
                const float alpha = exp2f(m - sc);
                l *= alpha;
#pragma unroll
                for (int i = 0; i < CH_DPT; i++) acc[i] *= alpha;
                m = sc;
            }
            const float pr = exp2f(sc - m);
            l += pr;
            if constexpr (CH_DPT % 4 == 0)
            {
#pragma unroll
                for (int i = 0; i < CH_DPT; i += 4)
                {
                    float4 v = *(const float4*)&sv[j][d0 + i];
                    acc[i] = fmaf(pr, v.x, acc[i]); acc[i + 1] = fmaf(pr, v.y, acc[i + 1]); acc[i + 2] = fmaf(pr, v.z, acc[i + 2]); acc[i + 3] = fmaf(pr, v.w, acc[i + 3]);
                }
            }
            else
            {
#pragma unroll
                for (int i = 0; i < CH_DPT; i++) acc[i] = fmaf(pr, sv[j][d0 + i], acc[i]);
            }
        }
    }
    if (!active) return;
    const size_t slot = ((size_t)qr * hqTotal + kvh * ratio + h) * totalSplits + split;
#pragma unroll
    for (int i = 0; i < CH_DPT; i++) partO[slot * HEAD_DIM + d0 + i] = acc[i];
    if (d0 == 0) { partML[slot * 2] = m; partML[slot * 2 + 1] = l; }
}

// The same chunk attention on the tensor cores (head dims a multiple of 16 up to 128; the C# side picks it), same grid,
// arguments and partials as attn_chunk, flash-attention style: per tile of CT_KEYS positions the block's 4 warps each take
// 16 x CT_M (query position, head) rows (CT_M = 2 m-tiles at head dim 64 and below, else 1) and form the tile's scores
// S = Q K^T and then O += P V with mma.sync m16n8k16 (FP16 in, FP32 sums), the online softmax in between in registers.
// Exactness as dec_gemm_tc_*: every FP32 operand goes in as two FP16 halves, hi = fp16(x) and lo = fp16(x - hi) (about 22
// significant bits), and only hi x hi, hi x lo and lo x hi are summed (lo x lo is below FP32's rounding):
// - each query row is scaled by a power of two 2^s putting its largest |q * scaleLog2| in [2^14, 2^15) before the split
//   (no FP16 overflow or underflow of the row), and its scores by 2^-s after (exact);
// - K and V tiles go to shared memory as FP16 hi halves, plus lo halves when LO (a packed cache's dequantized
//   scale * code + min; the FP16 cache's values are FP16 already, lo = 0 and its mma skipped);
// - p = exp2(score - m) in [0, 1] is split into hi / lo for P V.
// V is stored transposed ([dim][position]) so that P V's B fragments are single 32-bit loads; rows padded by 8 halves
// (conflict-free fragment loads). Positions past the tile's end are zero-filled, and masked scores give p = 0.
#if HEAD_DIM % 16 == 0 && HEAD_DIM <= 128
#define CT_KEYS 32
#define CT_M (HEAD_DIM <= 64 ? 2 : 1)
#define CT_KLD (HEAD_DIM + 8)
#define CT_VLD (CT_KEYS + 8)
template <bool LO, class SRC>
__device__ __forceinline__ void attn_chunk_tc(const SRC& src, const float* q, float* partO, float* partML, int T, int tokensPerSplit, int ratio,
                                              float scaleLog2, int qps, int rowGroups)
{
    static_assert(CH_ROWS == 4 * 16 * CT_M, "the tensor-core chunk attention takes attn_chunk's rows per block");
    __shared__ alignas(16) u16 skh[CT_KEYS][CT_KLD];
    __shared__ alignas(16) u16 svh[HEAD_DIM][CT_VLD];
    __shared__ alignas(16) u16 skl[LO ? CT_KEYS : 1][LO ? CT_KLD : 8];
    __shared__ alignas(16) u16 svl[LO ? HEAD_DIM : 1][LO ? CT_VLD : 8];
    const int kvh = blockIdx.y, kvHeads = gridDim.y, b = blockIdx.z, seqs = gridDim.z;
    const int split = blockIdx.x / rowGroups, group = blockIdx.x % rowGroups;
    const int totalSplits = gridDim.x / rowGroups;
    const int hqTotal = kvHeads * ratio;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t4 = lane & 3;
    const SRC rows = src.head((size_t)b * kvHeads + kvh);
    const int t0 = split * tokensPerSplit, t1 = min(T, t0 + tokensPerSplit);

    // This thread's 2 CT_M rows (g and g + 8 of each m-tile): where each one's positions end (causal), and its query as
    // A fragments (hi, lo) of the power-of-two-scaled q * scaleLog2.
    int end[CT_M][2];
    float unscale[CT_M][2];
    u32 qh[CT_M][HEAD_DIM / 16][4], ql[CT_M][HEAD_DIM / 16][4];
    int warpEnd = t0;
#pragma unroll
    for (int mt = 0; mt < CT_M; mt++)
    {
#pragma unroll
        for (int r = 0; r < 2; r++)
        {
            const int row = group * CH_ROWS + warp * 16 * CT_M + mt * 16 + g + 8 * r;
            const bool active = row < qps * ratio;
            const int p = active ? row / ratio : 0, h = active ? row % ratio : 0;
            end[mt][r] = active ? min(t1, T - (qps - 1 - p)) : t0;
            warpEnd = max(warpEnd, end[mt][r]);
            const float* qrow = q + ((size_t)(p * seqs + b) * hqTotal + kvh * ratio + h) * HEAD_DIM;
            float v[HEAD_DIM / 16][4];
            float mx = 0.f;
#pragma unroll
            for (int kk = 0; kk < HEAD_DIM / 16; kk++)
            {
                const float2 c0 = active ? *(const float2*)(qrow + 16 * kk + 2 * t4) : make_float2(0.f, 0.f);
                const float2 c8 = active ? *(const float2*)(qrow + 16 * kk + 8 + 2 * t4) : make_float2(0.f, 0.f);
                v[kk][0] = c0.x * scaleLog2; v[kk][1] = c0.y * scaleLog2; v[kk][2] = c8.x * scaleLog2; v[kk][3] = c8.y * scaleLog2;
#pragma unroll
                for (int i = 0; i < 4; i++) mx = fmaxf(mx, fabsf(v[kk][i]));
            }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            // 2^s puts mx in [2^14, 2^15): with mx's biased exponent e (mx in [2^(e - 127), 2^(e - 126))), s = 141 - e; at
            // most 2^126 (a row below 2^-111 stays below 2^15: its scores are that small too), none for an infinite or NaN row.
            const int e = (int)(tc_bits(mx) >> 23);
            const int s = e == 255 ? 0 : min(141 - e, 126);
            unscale[mt][r] = ldexpf(1.f, -s);
#pragma unroll
            for (int kk = 0; kk < HEAD_DIM / 16; kk++)
            {
#pragma unroll
                for (int i = 0; i < 2; i++)
                {
                    const float a = ldexpf(v[kk][2 * i], s), c = ldexpf(v[kk][2 * i + 1], s);
                    const u32 hh = tc_h2(a, c);
                    // Fragment registers: a0 (row g, k 2t..), a1 (row g + 8, k 2t..), a2 (row g, k 2t + 8..), a3 (row g + 8, k 2t + 8..).
                    qh[mt][kk][2 * i + r] = hh;
                    ql[mt][kk][2 * i + r] = tc_h2(a - lo_h(hh), c - hi_h(hh));
                }
            }
        }
    }
    for (int o = 16; o > 0; o >>= 1) warpEnd = max(warpEnd, __shfl_xor_sync(0xffffffffu, warpEnd, o));

    float acc[CT_M][HEAD_DIM / 8][4];
    float m[CT_M][2], l[CT_M][2];
#pragma unroll
    for (int mt = 0; mt < CT_M; mt++)
    {
#pragma unroll
        for (int r = 0; r < 2; r++) { m[mt][r] = NEG_BIG; l[mt][r] = 0.f; }
#pragma unroll
        for (int nt = 0; nt < HEAD_DIM / 8; nt++)
        {
#pragma unroll
            for (int i = 0; i < 4; i++) acc[mt][nt][i] = 0.f;
        }
    }

    for (int base = t0; base < t1; base += CT_KEYS)
    {
        const int n = min(CT_KEYS, t1 - base);
        __syncthreads(); // the previous tile is no longer read
        // Position j = i % CT_KEYS, dimensions 8 c .. 8 c + 7 (c = i / CT_KEYS): consecutive threads write consecutive
        // positions of the transposed V rows.
        for (int i = threadIdx.x; i < CT_KEYS * (HEAD_DIM / 8); i += blockDim.x)
        {
            const int j = i % CT_KEYS, d = (i / CT_KEYS) * 8;
            float kf[8], vf[8];
            if (j < n)
            {
                rows.template key_row<8>(base + j, d, kf);
                rows.template value_row<8>(base + j, d, vf);
            }
            else
            {
#pragma unroll
                for (int e = 0; e < 8; e++) { kf[e] = 0.f; vf[e] = 0.f; }
            }
            u32 kh[4];
#pragma unroll
            for (int e = 0; e < 4; e++) kh[e] = tc_h2(kf[2 * e], kf[2 * e + 1]);
            tc_st16(&skh[j][d], kh[0], kh[1], kh[2], kh[3]);
            if constexpr (LO)
            {
                u32 kl[4];
#pragma unroll
                for (int e = 0; e < 4; e++) kl[e] = tc_h2(kf[2 * e] - lo_h(kh[e]), kf[2 * e + 1] - hi_h(kh[e]));
                tc_st16(&skl[j][d], kl[0], kl[1], kl[2], kl[3]);
            }
#pragma unroll
            for (int e = 0; e < 8; e++)
            {
                const u16 vh = f2h(vf[e]);
                svh[d + e][j] = vh;
                if constexpr (LO) svl[d + e][j] = f2h(vf[e] - h2f(vh));
            }
        }
        __syncthreads();
        if (warpEnd <= base) continue; // every row of this warp ends before the tile (causal)
#pragma unroll
        for (int mt = 0; mt < CT_M; mt++)
        {
            float sc[CT_KEYS / 8][4];
#pragma unroll
            for (int nt = 0; nt < CT_KEYS / 8; nt++)
            {
#pragma unroll
                for (int i = 0; i < 4; i++) sc[nt][i] = 0.f;
            }
#pragma unroll
            for (int kk = 0; kk < HEAD_DIM / 16; kk++)
            {
#pragma unroll
                for (int nt = 0; nt < CT_KEYS / 8; nt++)
                {
                    const u32 b0 = *(const u32*)&skh[nt * 8 + g][16 * kk + 2 * t4];
                    const u32 b1 = *(const u32*)&skh[nt * 8 + g][16 * kk + 8 + 2 * t4];
                    tc_mma(sc[nt], qh[mt][kk][0], qh[mt][kk][1], qh[mt][kk][2], qh[mt][kk][3], b0, b1);
                    tc_mma(sc[nt], ql[mt][kk][0], ql[mt][kk][1], ql[mt][kk][2], ql[mt][kk][3], b0, b1);
                    if constexpr (LO)
                    {
                        const u32 c0 = *(const u32*)&skl[nt * 8 + g][16 * kk + 2 * t4];
                        const u32 c1 = *(const u32*)&skl[nt * 8 + g][16 * kk + 8 + 2 * t4];
                        tc_mma(sc[nt], qh[mt][kk][0], qh[mt][kk][1], qh[mt][kk][2], qh[mt][kk][3], c0, c1);
                    }
                }
            }
            // Online softmax of the two rows: accumulator i of n-tile nt is row g + 8 (i / 2), position nt * 8 + 2 t + i % 2.
            u32 ph[CT_KEYS / 8][2], pl[CT_KEYS / 8][2];
#pragma unroll
            for (int r = 0; r < 2; r++)
            {
                float mx = NEG_BIG;
#pragma unroll
                for (int nt = 0; nt < CT_KEYS / 8; nt++)
                {
#pragma unroll
                    for (int i = 0; i < 2; i++)
                    {
                        const bool valid = base + nt * 8 + 2 * t4 + i < end[mt][r];
                        const float v = valid ? sc[nt][2 * r + i] * unscale[mt][r] : NEG_BIG;
                        sc[nt][2 * r + i] = v;
                        mx = fmaxf(mx, v);
                    }
                }
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                const float mNew = fmaxf(m[mt][r], mx);
                const float alpha = exp2f(m[mt][r] - mNew);
                m[mt][r] = mNew;
                float sum = 0.f;
#pragma unroll
                for (int nt = 0; nt < CT_KEYS / 8; nt++)
                {
                    float pv[2];
#pragma unroll
                    for (int i = 0; i < 2; i++)
                    {
                        const float v = sc[nt][2 * r + i];
                        pv[i] = v > NEG_BIG ? exp2f(v - mNew) : 0.f;
                        sum += pv[i];
                    }
                    ph[nt][r] = tc_h2(pv[0], pv[1]);
                    pl[nt][r] = tc_h2(pv[0] - lo_h(ph[nt][r]), pv[1] - hi_h(ph[nt][r]));
                }
                l[mt][r] = l[mt][r] * alpha + sum;
#pragma unroll
                for (int nt = 0; nt < HEAD_DIM / 8; nt++)
                {
                    acc[mt][nt][2 * r] *= alpha;
                    acc[mt][nt][2 * r + 1] *= alpha;
                }
            }
            // O += P V: the k-step of 16 positions ks takes P's n-tiles 2 ks (a0, a1) and 2 ks + 1 (a2, a3).
#pragma unroll
            for (int ks = 0; ks < CT_KEYS / 16; ks++)
            {
                const u32 a0 = ph[2 * ks][0], a1 = ph[2 * ks][1], a2 = ph[2 * ks + 1][0], a3 = ph[2 * ks + 1][1];
                const u32 e0 = pl[2 * ks][0], e1 = pl[2 * ks][1], e2 = pl[2 * ks + 1][0], e3 = pl[2 * ks + 1][1];
#pragma unroll
                for (int nt = 0; nt < HEAD_DIM / 8; nt++)
                {
                    const u32 b0 = *(const u32*)&svh[nt * 8 + g][16 * ks + 2 * t4];
                    const u32 b1 = *(const u32*)&svh[nt * 8 + g][16 * ks + 8 + 2 * t4];
                    tc_mma(acc[mt][nt], a0, a1, a2, a3, b0, b1);
                    tc_mma(acc[mt][nt], e0, e1, e2, e3, b0, b1);
                    if constexpr (LO)
                    {
                        const u32 c0 = *(const u32*)&svl[nt * 8 + g][16 * ks + 2 * t4];
                        const u32 c1 = *(const u32*)&svl[nt * 8 + g][16 * ks + 8 + 2 * t4];
                        tc_mma(acc[mt][nt], a0, a1, a2, a3, c0, c1);
                    }
                }
            }
        }
    }

    // l was summed over this thread's positions only: add the row's 4 threads.
#pragma unroll
    for (int mt = 0; mt < CT_M; mt++)
    {
#pragma unroll
        for (int r = 0; r < 2; r++)
        {
            float s = l[mt][r];
            s += __shfl_xor_sync(0xffffffffu, s, 1);
            s += __shfl_xor_sync(0xffffffffu, s, 2);
            const int row = group * CH_ROWS + warp * 16 * CT_M + mt * 16 + g + 8 * r;
            if (row >= qps * ratio) continue;
            const int p = row / ratio, h = row % ratio;
            const size_t slot = ((size_t)(p * seqs + b) * hqTotal + kvh * ratio + h) * totalSplits + split;
#pragma unroll
            for (int nt = 0; nt < HEAD_DIM / 8; nt++)
                *(float2*)&partO[slot * HEAD_DIM + nt * 8 + 2 * t4] = make_float2(acc[mt][nt][2 * r], acc[mt][nt][2 * r + 1]);
            if (t4 == 0) { partML[slot * 2] = m[mt][r]; partML[slot * 2 + 1] = s; }
        }
    }
}
#endif

extern "C" __global__ void __launch_bounds__(128) dec_attn_fp16(
    const u16* kCache, const u16* vCache, u64 headStride, const float* q, float* partO, float* partML,
    int T, int tokensPerWarp, int ratio, float scaleLog2)
{
    attn_split(Fp16Rows{kCache, vCache, headStride}, q, partO, partML, T, tokensPerWarp, ratio, scaleLog2);
}

// A prefill chunk's attention over the FP16 cache: dec_attn_fp16_chunk (FP32 FMAs), dec_attn_fp16_chunk_tc (tensor cores).
#define DEC_ATTN_FP16_CHUNK(KNAME, CALL)                                                                                         \
    extern "C" __global__ void __launch_bounds__(128) KNAME(                                                                     \
        const u16* kCache, const u16* vCache, u64 headStride, const float* q, float* partO, float* partML,                       \
        int T, int tokensPerSplit, int ratio, float scaleLog2, int qps, int rowGroups)                                           \
    {                                                                                                                            \
        CALL(Fp16Rows{kCache, vCache, headStride}, q, partO, partML, T, tokensPerSplit, ratio, scaleLog2, qps, rowGroups);      \
    }
DEC_ATTN_FP16_CHUNK(dec_attn_fp16_chunk, attn_chunk)
#if HEAD_DIM % 16 == 0 && HEAD_DIM <= 128
DEC_ATTN_FP16_CHUNK(dec_attn_fp16_chunk_tc, attn_chunk_tc<false>)
#endif

// Any per-token packed format (1, 1.58, 2, 3, 4, 5, 6, 8 bits, any group dividing HEAD_DIM) plus the FP16 window:
// the same split scheme as dec_attn_fp16 over T + R positions, codes dequantized in FP32. _k4v2: widths fixed at 4 / 2.
// A prefill chunk's: NAME_chunk (FP32 FMAs) and NAME_chunk_tc (tensor cores, the dequantized values as FP16 hi + lo).
#define DEC_ATTN_PACKED_ARGS                                                                                                     \
    const u8 *kCodes, const u32 *kParams, int kBits, int kRowBytes, int kGroup, const u8 *vCodes, const u32 *vParams, int vBits, \
        int vRowBytes, int vGroup, const u16 *resK, const u16 *resV, u64 tokenStride, u64 resHeadStride
#define DEC_ATTN_PACKED_SRC(KB, VB)                                                                                              \
    PackedRows<KB, VB> src{PackedRow<KB>{kCodes, kParams, kBits, kRowBytes, kGroup}, PackedRow<VB>{vCodes, vParams, vBits, vRowBytes, vGroup}, \
                           resK, resV, tokenStride, resHeadStride, T}
#define DEC_ATTN_PACKED_CHUNK(KNAME, KB, VB, CALL)                                                                               \
    extern "C" __global__ void __launch_bounds__(128) KNAME(                                                                     \
        DEC_ATTN_PACKED_ARGS, const float* q, float* partO, float* partML, int T, int R, int tokensPerSplit, int ratio,          \
        float scaleLog2, int qps, int rowGroups)                                                                                 \
    {                                                                                                                            \
        DEC_ATTN_PACKED_SRC(KB, VB);                                                                                             \
        CALL(src, q, partO, partML, T + R, tokensPerSplit, ratio, scaleLog2, qps, rowGroups);                                    \
    }
#define DEC_ATTN_PACKED(NAME, KB, VB)                                                                                            \
    extern "C" __global__ void __launch_bounds__(128) NAME(                                                                      \
        DEC_ATTN_PACKED_ARGS, const float* q, float* partO, float* partML, int T, int R, int tokensPerWarp, int ratio, float scaleLog2) \
    {                                                                                                                            \
        DEC_ATTN_PACKED_SRC(KB, VB);                                                                                             \
        attn_split(src, q, partO, partML, T + R, tokensPerWarp, ratio, scaleLog2);                                               \
    }                                                                                                                            \
    DEC_ATTN_PACKED_CHUNK(NAME##_chunk, KB, VB, attn_chunk)

DEC_ATTN_PACKED(dec_attn_packed, 0, 0)
DEC_ATTN_PACKED(dec_attn_packed_k4v2, 4, 2)
#if HEAD_DIM % 16 == 0 && HEAD_DIM <= 128
DEC_ATTN_PACKED_CHUNK(dec_attn_packed_chunk_tc, 0, 0, attn_chunk_tc<true>)
DEC_ATTN_PACKED_CHUNK(dec_attn_packed_k4v2_chunk_tc, 4, 2, attn_chunk_tc<true>)
#endif

// ---------------------------------------------------------------------------------------------------
// Packed cache: quantize the oldest `chunk` rows of the FP16 residual window into packed rows [T, T + chunk)
// (per-token groups, asymmetric, the CPU AffineQuantizer's arithmetic in double: zero = min rounded down to FP16,
// scale = (max - zero) / (levels - 1) rounded up to FP16, code = round-half-away((x - zero) / scale) clamped),
// then move window rows [chunk, count) to [0, count - chunk). Grid (kvHeads, batch), block FLUSH_THREADS (CudaDecoder.FlushThreads):
// a warp a row.
// ---------------------------------------------------------------------------------------------------

__device__ __forceinline__ double half_to_double(u16 h) { return (double)h2f(h); }

__device__ __forceinline__ u16 half_next_up(u16 h)
{
    if (h == 0x8000u) return 0x0001u;
    return (h & 0x8000u) ? (u16)(h - 1) : (u16)(h + 1);
}

__device__ __forceinline__ u16 half_next_down(u16 h)
{
    if (h == 0x0000u) return 0x8001u;
    return (h & 0x8000u) ? (u16)(h + 1) : (u16)(h - 1);
}

__device__ __forceinline__ u16 half_round_down(double x)
{
    u16 h = f2h((float)x);
    if ((h & 0x7FFFu) > 0x7BFFu) h = (h & 0x8000u) | 0x7BFFu;  // beyond FP16: the largest finite of that sign
    return half_to_double(h) > x ? half_next_down(h) : h;
}

__device__ __forceinline__ u16 half_round_up(double x)
{
    u16 h = f2h((float)x);
    if ((h & 0x7FFFu) > 0x7BFFu) return (h & 0x8000u) | 0x7BFFu;
    return half_to_double(h) < x ? half_next_up(h) : h;
}

// Quantizes one FP16 row of HEAD_DIM values into `codes` (HEAD_DIM x bits / 8 bytes, or ceil(HEAD_DIM / 5) ternary) and
// `params` (HEAD_DIM / group pairs) with one warp: a lane per group for the (scale, zero) pair, a lane per element for its
// code (the same double arithmetic as the CPU quantizer, so the same codes), then a lane per output byte of the
// little-endian bit stream (ternary: 5 trits a byte in base 3). `par` and `code` are the warp's shared scratch.
__device__ void quantize_row_warp(const u16* src, u8* codes, u32* params, int bits, int group, u32* par, u8* code, int lane)
{
    const int top = (bits == 158 ? 3 : (1 << bits)) - 1;
    for (int g = lane; g < HEAD_DIM / group; g += 32)
    {
        float mn = 3.0e38f, mx = -3.0e38f;
        for (int i = 0; i < group; i++)
        {
            float v = h2f(src[g * group + i]);
            mn = fminf(mn, v);
            mx = fmaxf(mx, v);
        }
        u16 zh = half_round_down((double)mn);
        double z = half_to_double(zh);
        u16 sh = half_round_up(((double)mx - z) / top);
        par[g] = (u32)sh | ((u32)zh << 16);
        params[g] = par[g];
    }
    __syncwarp();
    for (int d = lane; d < HEAD_DIM; d += 32)
    {
        const u32 p = par[d / group];
        const double z = half_to_double((u16)(p >> 16)), s = half_to_double((u16)(p & 0xFFFFu));
        double c = s == 0.0 ? 0.0 : round(((double)h2f(src[d]) - z) / s);
        code[d] = (u8)(u32)(c < 0.0 ? 0.0 : c > top ? (double)top : c);
    }
    __syncwarp();
    if (bits == 158)
    {
        for (int j = lane; j < (HEAD_DIM + 4) / 5; j += 32)
        {
            u32 byte = 0;
            for (int k = 4; k >= 0; k--) byte = byte * 3u + (5 * j + k < HEAD_DIM ? code[5 * j + k] : 0u);
            codes[j] = (u8)byte;
        }
    }
    else
    {
        for (int j = lane; j < HEAD_DIM * bits / 8; j += 32)
        {
            // Byte j holds bits [8 j, 8 j + 8) of the stream: codes d0..d1, code d at bit d x bits.
            u32 byte = 0;
            const int d0 = 8 * j / bits, d1 = min(HEAD_DIM - 1, (8 * j + 7) / bits);
            for (int d = d0; d <= d1; d++)
            {
                const int off = d * bits - 8 * j;
                byte |= off >= 0 ? (u32)code[d] << off : (u32)code[d] >> -off;
            }
            codes[j] = (u8)byte;
        }
    }
    __syncwarp();
}

#define FLUSH_THREADS 512
extern "C" __global__ void __launch_bounds__(FLUSH_THREADS) dec_kv_flush(
    u16* resK, u16* resV, u64 resHeadStride, int count, int chunk,
    u8* kCodes, u32* kParams, int kBits, int kRowBytes, int kGroup,
    u8* vCodes, u32* vParams, int vBits, int vRowBytes, int vGroup,
    u64 tokenStride, int T)
{
    __shared__ u32 spar[FLUSH_THREADS / 32][HEAD_DIM];
    __shared__ u8 scode[FLUSH_THREADS / 32][HEAD_DIM];
    const int kvh = blockIdx.x, b = blockIdx.y, kvHeads = gridDim.x;
    const size_t bh = (size_t)b * kvHeads + kvh;
    u16* rk = resK + bh * resHeadStride;
    u16* rv = resV + bh * resHeadStride;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    // Warp w quantizes rows w, w + warps, ...: K rows [0, chunk), then V rows.
    for (int i = warp; i < 2 * chunk; i += warps)
    {
        const bool key = i < chunk;
        const int r = key ? i : i - chunk;
        const size_t tok = bh * tokenStride + T + r;
        if (key) quantize_row_warp(rk + (size_t)r * HEAD_DIM, kCodes + tok * kRowBytes, kParams + tok * (HEAD_DIM / kGroup), kBits, kGroup, spar[warp], scode[warp], lane);
        else quantize_row_warp(rv + (size_t)r * HEAD_DIM, vCodes + tok * vRowBytes, vParams + tok * (HEAD_DIM / vGroup), vBits, vGroup, spar[warp], scode[warp], lane);
    }
    __syncthreads();
    for (int first = chunk; first < count; first += chunk)
    {
        int n = min(chunk, count - first) * HEAD_DIM;
        for (int e = threadIdx.x; e < n; e += blockDim.x)
        {
            rk[(size_t)(first - chunk) * HEAD_DIM + e] = rk[(size_t)first * HEAD_DIM + e];
            rv[(size_t)(first - chunk) * HEAD_DIM + e] = rv[(size_t)first * HEAD_DIM + e];
        }
        __syncthreads();
    }
}

// ---------------------------------------------------------------------------------------------------
// Sampling on the device, one block of 1024 threads per batch row.
// ---------------------------------------------------------------------------------------------------

#define SAMPLE_THREADS 1024

__device__ __forceinline__ void argmax_pair(float& v, int& i, float ov, int oi)
{
    if (ov > v || (ov == v && oi < i)) { v = ov; i = oi; }
}

__device__ float block_sum(float x, float* red)
{
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = x;
    __syncthreads();
    float t = 0.f;
    for (int w = 0; w < SAMPLE_THREADS / 32; w++) t += red[w];
    return t;
}

__device__ float block_max(float x, float* red)
{
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = x;
    __syncthreads();
    float t = red[0];
    for (int w = 1; w < SAMPLE_THREADS / 32; w++) t = fmaxf(t, red[w]);
    return t;
}

// The index of the largest logit, the first on ties; grid (batch), block 1024.
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS) dec_argmax(const float* logits, int vocab, int* out)
{
    __shared__ float rv[32];
    __shared__ int ri[32];
    const float* row = logits + (size_t)blockIdx.x * vocab;
    float v = -3.4e38f;
    int idx = 0x7FFFFFFF;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) argmax_pair(v, idx, row[i], i);
    for (int o = 16; o > 0; o >>= 1)
    {
        float ov = __shfl_xor_sync(0xffffffffu, v, o);
        int oi = __shfl_xor_sync(0xffffffffu, idx, o);
        argmax_pair(v, idx, ov, oi);
    }
    if ((threadIdx.x & 31) == 0) { rv[threadIdx.x >> 5] = v; ri[threadIdx.x >> 5] = idx; }
    __syncthreads();
    if (threadIdx.x == 0)
    {
        for (int w = 1; w < SAMPLE_THREADS / 32; w++) argmax_pair(v, idx, rv[w], ri[w]);
        out[blockIdx.x] = idx;
    }
}

// Temperature / top-k / top-p sampling: p_i = exp((l_i - max) / T); top-k keeps the values >= the k-th largest
// (bisection on the threshold), top-p then keeps the largest values whose mass reaches top_p of the total
// (bisection), and a token is drawn by inverse CDF in index order with a uniform number from the row's
// xorshift64* state (llama2.c's generator). Grid (batch), block 1024.
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS) dec_sample(
    const float* logits, int vocab, float invTemp, int topK, float topP, u64* states, int* out)
{
    __shared__ float red[32];
    __shared__ float chunkSum[SAMPLE_THREADS];
    const float* row = logits + (size_t)blockIdx.x * vocab;
    float mx = -3.4e38f;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) mx = fmaxf(mx, row[i]);
    mx = block_max(mx, red);
    float total = 0.f;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) total += expf((row[i] - mx) * invTemp);
    total = block_sum(total, red);

    float threshold = 0.f;  // keep p_i >= threshold
    if (topK > 0 && topK < vocab)
    {
        float lo = 0.f, hi = 1.f;  // count(p >= hi) <= ... the largest p is 1
        for (int it = 0; it < 40; it++)
        {
            float mid = 0.5f * (lo + hi);
            float cnt = 0.f;
            for (int i = threadIdx.x; i < vocab; i += blockDim.x) cnt += expf((row[i] - mx) * invTemp) >= mid ? 1.f : 0.f;
            cnt = block_sum(cnt, red);
            if (cnt >= (float)topK) lo = mid; else hi = mid;
        }
        threshold = lo;
    }
    if (topP < 1.f)
    {
        float lo = threshold, hi = 1.f;
        for (int it = 0; it < 40; it++)
        {
            float mid = 0.5f * (lo + hi);
            float mass = 0.f;
            for (int i = threadIdx.x; i < vocab; i += blockDim.x)
            {
                float p = expf((row[i] - mx) * invTemp);
                mass += p >= mid ? p : 0.f;
            }
            mass = block_sum(mass, red);
            if (mass >= topP * total) lo = mid; else hi = mid;
        }
        threshold = lo;
    }

    // Contiguous chunks per thread, their kept mass, and an inverse-CDF pick.
    const int per = (vocab + SAMPLE_THREADS - 1) / SAMPLE_THREADS;
    const int c0 = threadIdx.x * per, c1 = min(vocab, c0 + per);
    float mine = 0.f;
    for (int i = c0; i < c1; i++)
    {
        float p = expf((row[i] - mx) * invTemp);
        mine += p >= threshold ? p : 0.f;
    }
    chunkSum[threadIdx.x] = mine;
    __syncthreads();
    __shared__ float target;
    __shared__ int pick;
    if (threadIdx.x == 0)
    {
        u64 s = states[blockIdx.x];
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        states[blockIdx.x] = s;
        float u = (float)((s * 0x2545F4914F6CDD1DULL) >> 40) / 16777216.0f;
        float kept = 0.f;
        for (int w = 0; w < SAMPLE_THREADS; w++) kept += chunkSum[w];
        target = u * kept;
        pick = -1;
    }
    __syncthreads();
    if (threadIdx.x == 0)
    {
        float accum = 0.f;
        int last = 0;
        for (int w = 0; w < SAMPLE_THREADS && pick < 0; w++)
        {
            if (chunkSum[w] > 0.f) last = w;
            if (accum + chunkSum[w] > target)
            {
                int w0 = w * per, w1 = min(vocab, w0 + per);
                float a = accum;
                for (int i = w0; i < w1; i++)
                {
                    float p = expf((row[i] - mx) * invTemp);
                    if (p >= threshold)
                    {
                        a += p;
                        pick = i;
                        if (a > target) break;
                    }
                }
            }
            accum += chunkSum[w];
        }
        if (pick < 0)
        {
            int w0 = last * per, w1 = min(vocab, w0 + per);
            for (int i = w0; i < w1; i++) if (expf((row[i] - mx) * invTemp) >= threshold) pick = i;
        }
        out[blockIdx.x] = pick < 0 ? 0 : pick;
    }
}

// Benchmarks: keeps the device busy for `cycles` clock cycles, so that the work queued behind it runs back to back
// (its events then time the GPU work alone, not the host's launch rate).
extern "C" __global__ void dec_spin(long long cycles)
{
    long long t0 = clock64();
    while (clock64() - t0 < cycles) { }
}
