// Decode attention straight on the packed quantized KV cache (KvAdaQuant GPU path).
// Compiled at run time with NVRTC (or offline with nvcc -cubin -arch=sm_90); needs no header.
// Layout: see src/KvAdaQuant/Gpu/PackedKvLayout.cs and the README's "## GPU" section.
//
// Split-KV ("flash decoding"): each block takes one (batch, KV head, token split) and all query heads of
// that KV head (GQA), writes an unnormalised partial output with its running max (log2 domain) and sum;
// kvq_combine merges the splits and the FP16 residual window's partial into the final output.
//
// HEAD_DIM is defined by the host (-DHEAD_DIM=128).

#ifndef HEAD_DIM
#define HEAD_DIM 128
#endif
#define MAX_RATIO 8
// Fast-kernel variants (the bench compares them): masks in place instead of shifts, and two accumulator chains for QK.
#ifndef FAST_SHIFTLESS
#define FAST_SHIFTLESS 1
#endif
#ifndef FAST_SPLIT_CHAIN
#define FAST_SPLIT_CHAIN 0
#endif
#define NEG_BIG (-1.0e30f)

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

__device__ __forceinline__ float h2f(u16 h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
// Two floats to a half2 register: lo in bits 0..15, hi in bits 16..31.
__device__ __forceinline__ u32 pack_h2(float lo, float hi) { u32 r; asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo)); return r; }
__device__ __forceinline__ u32 hsub2(u32 a, u32 b) { u32 r; asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b)); return r; }
__device__ __forceinline__ u32 hmul2(u32 a, u32 b) { u32 r; asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b)); return r; }
__device__ __forceinline__ u32 hfma2(u32 a, u32 b, u32 c) { u32 r; asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c)); return r; }
__device__ __forceinline__ float fast_exp2(float x) { float r; asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x)); return r; }

__device__ __forceinline__ void mma16816(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint4 ldg_stream16(const void* p)
{
    uint4 r;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}

__device__ __forceinline__ float ld_cg(const float* p)
{
    float r;
    asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(r) : "l"(p) : "memory");
    return r;
}

__device__ __forceinline__ u32 ldg_stream4(const void* p)
{
    u32 r;
    asm("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(r) : "l"(p));
    return r;
}

// ---------------------------------------------------------------------------------------------------
// Generic path (FP32 arithmetic): any bit width (1, 1.58 as code 158, 2, 3, 4, 5, 6, 8), any group size,
// per-token or per-channel groups, and FP16 rows (the residual window).
// ---------------------------------------------------------------------------------------------------

struct PackedSource
{
    const u8* codes;     // [T][rowBytes] for this (batch, KV head)
    const u32* params;   // half2 (scale lo, min hi): per token [T][D/G], per channel [T/G][D]
    int bits;            // 1..8, or 158 for ternary
    int rowBytes;
    int group;
    int perChannel;

    __device__ __forceinline__ float value(int tok, int d) const
    {
        const u8* row = codes + (size_t)tok * rowBytes;
        u32 q;
        if (bits == 158)
        {
            u32 b = row[d / 5];
            int digit = d % 5;
            for (int i = 0; i < digit; i++) b /= 3;
            q = b % 3;
        }
        else
        {
            int bit = d * bits;
            int byte = bit >> 3;
            int shift = bit & 7;
            u32 w = row[byte];
            if (shift + bits > 8) w |= (u32)row[byte + 1] << 8;
            q = (w >> shift) & ((1u << bits) - 1u);
        }
        u32 p = perChannel ? params[(size_t)(tok / group) * HEAD_DIM + d] : params[(size_t)tok * (HEAD_DIM / group) + d / group];
        float s = h2f((u16)(p & 0xFFFF));
        float m = h2f((u16)(p >> 16));
        return fmaf(s, (float)q, m);
    }
};

struct Fp16Source
{
    const u16* rows;   // [T][D]
    __device__ __forceinline__ float value(int tok, int d) const { return h2f(rows[(size_t)tok * HEAD_DIM + d]); }
};

#define GT 32  // tokens per tile in the generic kernel
#define DPT ((HEAD_DIM + 127) / 128)

template <class KS, class VS>
__device__ void generic_attend(KS ks, VS vs, int t0, int t1, const float* q, int ratio, float scaleLog2,
                               float* partO, float* partML, int totalSplits, int splitIndex, int hq0, int hqTotal, int b)
{
    __shared__ float sk[GT][HEAD_DIM + 1];
    __shared__ float sq[MAX_RATIO][HEAD_DIM];
    __shared__ float sp[MAX_RATIO][GT];
    __shared__ float salpha[MAX_RATIO];
    __shared__ float sm[MAX_RATIO];
    __shared__ float sl[MAX_RATIO];
    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;

    for (int i = tid; i < ratio * HEAD_DIM; i += blockDim.x)
    {
        int h = i / HEAD_DIM, d = i % HEAD_DIM;
        sq[h][d] = q[((size_t)b * hqTotal + hq0 + h) * HEAD_DIM + d] * scaleLog2;
    }
    if (tid < MAX_RATIO) { sm[tid] = NEG_BIG; sl[tid] = 0.f; }
    float acc[MAX_RATIO][DPT];
    for (int h = 0; h < MAX_RATIO; h++) for (int j = 0; j < DPT; j++) acc[h][j] = 0.f;
    __syncthreads();

    for (int base = t0; base < t1; base += GT)
    {
        int n = min(GT, t1 - base);
        for (int i = tid; i < GT * HEAD_DIM; i += blockDim.x)
        {
            int tok = i / HEAD_DIM, d = i % HEAD_DIM;
            sk[tok][d] = tok < n ? ks.value(base + tok, d) : 0.f;
        }
        __syncthreads();
        for (int i = tid; i < ratio * GT; i += blockDim.x)
        {
            int h = i / GT, tok = i % GT;
            float s = 0.f;
            for (int d = 0; d < HEAD_DIM; d++) s = fmaf(sq[h][d], sk[tok][d], s);
            sp[h][tok] = tok < n ? s : NEG_BIG;
        }
        __syncthreads();
        for (int h = warp; h < ratio; h += blockDim.x / 32)
        {
            float s = sp[h][lane];
            float mx = s;
            for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            float mOld = sm[h];
            float mNew = fmaxf(mOld, mx);
            float p = lane < n ? exp2f(s - mNew) : 0.f;
            float sum = p;
            for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
            __syncwarp();
            sp[h][lane] = p;
            if (lane == 0)
            {
                float alpha = exp2f(mOld - mNew);
                salpha[h] = alpha;
                sl[h] = sl[h] * alpha + sum;
                sm[h] = mNew;
            }
        }
        __syncthreads();
        for (int i = tid; i < GT * HEAD_DIM; i += blockDim.x)
        {
            int tok = i / HEAD_DIM, d = i % HEAD_DIM;
            sk[tok][d] = tok < n ? vs.value(base + tok, d) : 0.f;
        }
        __syncthreads();
        for (int j = 0; j < DPT; j++)
        {
            int d = tid + 128 * j;
            if (d < HEAD_DIM)
            {
                for (int h = 0; h < ratio; h++)
                {
                    float a = acc[h][j] * salpha[h];
                    for (int tok = 0; tok < n; tok++) a = fmaf(sp[h][tok], sk[tok][d], a);
                    acc[h][j] = a;
                }
            }
        }
        __syncthreads();
    }

    for (int j = 0; j < DPT; j++)
    {
        int d = tid + 128 * j;
        if (d < HEAD_DIM)
        {
            for (int h = 0; h < ratio; h++)
            {
                size_t slot = ((size_t)b * hqTotal + hq0 + h) * totalSplits + splitIndex;
                partO[slot * HEAD_DIM + d] = acc[h][j];
                if (d == 0) { partML[slot * 2] = sm[h]; partML[slot * 2 + 1] = sl[h]; }
            }
        }
    }
}

// Grid (splits, kvHeads, batch), block 128. Quantized tokens [split*tps, min(T, (split+1)*tps)).
extern "C" __global__ void __launch_bounds__(128) kvq_generic_packed(
    const u8* kCodes, const u32* kParams, int kBits, int kRowBytes, int kGroup, int kPerChannel,
    const u8* vCodes, const u32* vParams, int vBits, int vRowBytes, int vGroup, int vPerChannel,
    const float* q, float* partO, float* partML, int T, int tokensPerSplit, int totalSplits, int ratio, float scaleLog2, int tStride)
{
    const int split = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z, kvHeads = gridDim.y;
    const size_t bh = (size_t)b * kvHeads + kvh;
    const int kParamRows = kPerChannel ? tStride / kGroup : tStride;
    const int kParamCols = kPerChannel ? HEAD_DIM : HEAD_DIM / kGroup;
    const int vParamRows = vPerChannel ? tStride / vGroup : tStride;
    const int vParamCols = vPerChannel ? HEAD_DIM : HEAD_DIM / vGroup;
    PackedSource ks{kCodes + bh * tStride * kRowBytes, kParams + bh * kParamRows * kParamCols, kBits, kRowBytes, kGroup, kPerChannel};
    PackedSource vs{vCodes + bh * tStride * vRowBytes, vParams + bh * vParamRows * vParamCols, vBits, vRowBytes, vGroup, vPerChannel};
    int t0 = split * tokensPerSplit;
    int t1 = min(T, t0 + tokensPerSplit);
    generic_attend(ks, vs, t0, t1, q, ratio, scaleLog2, partO, partML, totalSplits, split, kvh * ratio, kvHeads * ratio, b);
}

// The FP16 residual window: grid (1, kvHeads, batch), block 128; writes split slot splitIndex.
extern "C" __global__ void __launch_bounds__(128) kvq_generic_fp16(
    const u16* kRows, const u16* vRows, int R, const float* q, float* partO, float* partML,
    int totalSplits, int splitIndex, int ratio, float scaleLog2, int rStride)
{
    const int kvh = blockIdx.y, b = blockIdx.z, kvHeads = gridDim.y;
    const size_t bh = (size_t)b * kvHeads + kvh;
    Fp16Source ks{kRows + bh * rStride * HEAD_DIM};
    Fp16Source vs{vRows + bh * rStride * HEAD_DIM};
    generic_attend(ks, vs, 0, R, q, ratio, scaleLog2, partO, partML, totalSplits, splitIndex, kvh * ratio, kvHeads * ratio, b);
}

// Merges the splits: grid (batch * queryHeads), block 128, totalSplits <= 2048. The split weights are computed once
// into shared memory; each thread then sums its dimension over the splits with independent loads. The first
// COMBINE_PREFETCH partials of the thread's dimension are loaded before the weights are known, so the block waits on
// memory about once. Queued as a programmatic dependent launch, it may start while the split kernel drains:
// griddepcontrol.wait (a no-op after an ordinary launch) holds it until that kernel's results are visible.
#define COMBINE_PREFETCH 16
extern "C" __global__ void __launch_bounds__(128) kvq_combine(const float* partO, const float* partML, float* out, int totalSplits)
{
    __shared__ float sw[2048];
    __shared__ float red[2][4];
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
    const size_t row = blockIdx.x;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const float* ml = partML + row * totalSplits * 2;
    const float* po = partO + row * totalSplits * HEAD_DIM;
    float pre[COMBINE_PREFETCH];
#pragma unroll
    for (int i = 0; i < COMBINE_PREFETCH; i++)
        pre[i] = i < totalSplits && threadIdx.x < HEAD_DIM ? po[(size_t)i * HEAD_DIM + threadIdx.x] : 0.f;
    float mx = NEG_BIG;
    for (int s = threadIdx.x; s < totalSplits; s += blockDim.x) mx = fmaxf(mx, ml[2 * s]);
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    if (lane == 0) red[0][warp] = mx;
    __syncthreads();
    mx = fmaxf(fmaxf(red[0][0], red[0][1]), fmaxf(red[0][2], red[0][3]));
    float l = 0.f;
    for (int s = threadIdx.x; s < totalSplits; s += blockDim.x)
    {
        float w = exp2f(ml[2 * s] - mx);
        sw[s] = w;
        l = fmaf(w, ml[2 * s + 1], l);
    }
    for (int o = 16; o > 0; o >>= 1) l += __shfl_xor_sync(0xffffffffu, l, o);
    if (lane == 0) red[1][warp] = l;
    __syncthreads();
    l = (red[1][0] + red[1][1]) + (red[1][2] + red[1][3]);
    for (int d = threadIdx.x; d < HEAD_DIM; d += blockDim.x)
    {
        float o = 0.f;
        int s0 = 0;
        if (d == (int)threadIdx.x)
        {
#pragma unroll
            for (int i = 0; i < COMBINE_PREFETCH; i++)
                if (i < totalSplits) o = fmaf(sw[i], pre[i], o);
            s0 = COMBINE_PREFETCH;
        }
#pragma unroll 8
        for (int s = s0; s < totalSplits; s++) o = fmaf(sw[s], po[(size_t)s * HEAD_DIM + d], o);
        out[row * HEAD_DIM + d] = o / l;
    }
}

// ---------------------------------------------------------------------------------------------------
// Fast path: K 4-bit, V 2-bit, per-token groups of 64, HEAD_DIM 128, GQA ratio <= 8, FP16 tensor cores
// (mma.sync m16n8k16, FP32 accumulation). Rows of the 16x16 A tiles are query heads (only `ratio` used),
// columns of B are tokens (QK) or head dimensions (PV). Codes are dequantised in registers with
// half2 arithmetic: (0x6400 | c) is the half 1024 + c, minus 1024 is c exactly, times scale plus min in
// one fma.rn.f16x2. The contraction over head dimensions may take the dimensions in any order, as long as
// Q and K agree: thread (g = lane/4, t = lane%4) loads bytes [16t, 16t+16) of token g's 64-byte K row
// (dims 32t..32t+31) and feeds k-step j the pairs of word j/2; fast_q_dim gives the matching Q dimension.
// For PV, thread (g, t) loads word g (dims 16g..16g+15) of the V rows of tokens 2t, 2t+1, 2t+8, 2t+9 of
// each 16-token step; n-tile i column g is dimension 16g + i.
// Grid (splits, kvHeads, batch), block 128 (4 warps, each taking every 4th 32-token step of the split).
// ---------------------------------------------------------------------------------------------------

__device__ __forceinline__ int fast_q_dim(int j, int t, int slot)
{
    int w = j >> 1;
    int pairIdx = 2 * (j & 1) + (slot >= 8 ? 1 : 0);
    int e = pairIdx + 4 * (slot & 1);
    return 32 * t + 8 * w + e;
}

struct FastRaw
{
    uint4 k[4];      // 4 S tiles of 8 tokens: token g, bytes 16t..16t+15
    u32 kp[4];       // (scale, min) of that token's group t/2
    u32 v[2][4];     // 2 PV steps: tokens 2t, 2t+1, 2t+8, 2t+9, word g
    u32 vp[2][4];    // (scale, min) of group g/4 of those tokens
};

// Gathers one 32-token step's operands for thread (g, t); kc, kpar, vc, vpar point at the step's first token.
template <bool SHARED>
__device__ __forceinline__ void fast_gather(FastRaw& r, const u8* kc, const u32* kpar, const u8* vc, const u32* vpar, int g, int t)
{
#pragma unroll
    for (int n = 0; n < 4; n++)
    {
        int tok = 8 * n + g;
        if (SHARED)
        {
            r.k[n] = *(const uint4*)(kc + tok * 64 + 16 * t);
            r.kp[n] = kpar[tok * 2 + (t >> 1)];
        }
        else
        {
            r.k[n] = ldg_stream16(kc + (size_t)tok * 64 + 16 * t);
            r.kp[n] = ldg_stream4(kpar + (size_t)tok * 2 + (t >> 1));
        }
    }
#pragma unroll
    for (int s = 0; s < 2; s++)
    {
#pragma unroll
        for (int i = 0; i < 4; i++)
        {
            int tok = 16 * s + 2 * t + (i & 1) + 8 * (i >> 1);
            if (SHARED)
            {
                r.v[s][i] = *(const u32*)(vc + tok * 32 + 4 * g);
                r.vp[s][i] = vpar[tok * 2 + (g >> 2)];
            }
            else
            {
                r.v[s][i] = ldg_stream4(vc + (size_t)tok * 32 + 4 * g);
                r.vp[s][i] = ldg_stream4(vpar + (size_t)tok * 2 + (g >> 2));
            }
        }
    }
}

__device__ __forceinline__ u32 and_or(u32 a, u32 mask, u32 orv)
{
    u32 r;
    asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(a), "r"(mask), "r"(orv));
    return r;
}

__device__ __forceinline__ u32 transpose8x8(u32 x)
{
    u32 r;
    asm("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(r) : "r"(x));
    return r;
}

// One 32-token step with the heads on the N side of every product (no zero padding):
//   S^T (16 tokens x 8 heads) = K (16 tokens x 16 dims) Q^T, two token tiles x 8 k-steps;
//   online softmax per head (thread holds heads 2t, 2t+1 of tokens g, g+8);
//   P^T fragments by movmatrix transposes; O^T (16 dims x 8 heads) += V^T (16 dims x 16 tokens) P^T.
// Rows of O^T tile k are dims 16g + 2k (rows 0..7) and 16g + 2k + 1 (rows 8..15).
__device__ __forceinline__ void fast_step(const FastRaw& cur, const u32* qb0, const u32* qb1, float (*o)[4], float* mRun, float* lRun)
{
    const u32 magic = 0x64006400u, m4 = 0x000F000Fu, m2 = 0x00030003u;
    float s[2][4];
#if FAST_SPLIT_CHAIN
    float s2[2][4];
#endif
#pragma unroll
    for (int m = 0; m < 2; m++)
    {
        s[m][0] = 0.f; s[m][1] = 0.f; s[m][2] = 0.f; s[m][3] = 0.f;
#if FAST_SPLIT_CHAIN
        s2[m][0] = 0.f; s2[m][1] = 0.f; s2[m][2] = 0.f; s2[m][3] = 0.f;
#endif
        const u32 sLo = __byte_perm(cur.kp[2 * m], 0u, 0x1010), mLo = __byte_perm(cur.kp[2 * m], 0u, 0x3232);
        const u32 sHi = __byte_perm(cur.kp[2 * m + 1], 0u, 0x1010), mHi = __byte_perm(cur.kp[2 * m + 1], 0u, 0x3232);
#if FAST_SHIFTLESS
        // (c << 4) | 0x6400 is the half 1024 + 16c: minus 1024 is 16c exactly, times scale/16 (exact in the normal range).
        const u32 sLo16 = hmul2(sLo, 0x2C002C00u), sHi16 = hmul2(sHi, 0x2C002C00u);
#endif
        const u32 wl[4] = {cur.k[2 * m].x, cur.k[2 * m].y, cur.k[2 * m].z, cur.k[2 * m].w};
        const u32 wh[4] = {cur.k[2 * m + 1].x, cur.k[2 * m + 1].y, cur.k[2 * m + 1].z, cur.k[2 * m + 1].w};
#pragma unroll
        for (int j = 0; j < 8; j++)
        {
            const int sh = (j & 1) * 8;
            const u32 xl = wl[j >> 1] >> sh, xh = wh[j >> 1] >> sh;
            u32 a0 = hfma2(hsub2(and_or(xl, m4, magic), magic), sLo, mLo);
            u32 a1 = hfma2(hsub2(and_or(xh, m4, magic), magic), sHi, mHi);
#if FAST_SHIFTLESS
            u32 a2 = hfma2(hsub2(and_or(xl, m4 << 4, magic), magic), sLo16, mLo);
            u32 a3 = hfma2(hsub2(and_or(xh, m4 << 4, magic), magic), sHi16, mHi);
#else
            u32 a2 = hfma2(hsub2(and_or(xl >> 4, m4, magic), magic), sLo, mLo);
            u32 a3 = hfma2(hsub2(and_or(xh >> 4, m4, magic), magic), sHi, mHi);
#endif
#if FAST_SPLIT_CHAIN
            mma16816((j & 1) ? s2[m] : s[m], a0, a1, a2, a3, qb0[j], qb1[j]);
#else
            mma16816(s[m], a0, a1, a2, a3, qb0[j], qb1[j]);
#endif
        }
#if FAST_SPLIT_CHAIN
        s[m][0] += s2[m][0]; s[m][1] += s2[m][1]; s[m][2] += s2[m][2]; s[m][3] += s2[m][3];
#endif
    }

    float mx0 = fmaxf(fmaxf(s[0][0], s[0][2]), fmaxf(s[1][0], s[1][2]));
    float mx1 = fmaxf(fmaxf(s[0][1], s[0][3]), fmaxf(s[1][1], s[1][3]));
#pragma unroll
    for (int off = 4; off < 32; off <<= 1)
    {
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
    }
    const float n0 = fmaxf(mRun[0], mx0), n1 = fmaxf(mRun[1], mx1);
    const float al0 = fast_exp2(mRun[0] - n0), al1 = fast_exp2(mRun[1] - n1);
    mRun[0] = n0;
    mRun[1] = n1;
    u32 pb0[2], pb1[2];
    float ps0 = 0.f, ps1 = 0.f;
#pragma unroll
    for (int m = 0; m < 2; m++)
    {
        const float p0 = fast_exp2(s[m][0] - n0), p1 = fast_exp2(s[m][1] - n1);
        const float p2 = fast_exp2(s[m][2] - n0), p3 = fast_exp2(s[m][3] - n1);
        ps0 += p0 + p2;
        ps1 += p1 + p3;
        pb0[m] = transpose8x8(pack_h2(p0, p1));  // tokens 2t, 2t+1 of rows 0..7, head g
        pb1[m] = transpose8x8(pack_h2(p2, p3));  // tokens 8 + 2t, 8 + 2t + 1, head g
    }
    lRun[0] = lRun[0] * al0 + ps0;
    lRun[1] = lRun[1] * al1 + ps1;
#pragma unroll
    for (int k = 0; k < 8; k++) { o[k][0] *= al0; o[k][1] *= al1; o[k][2] *= al0; o[k][3] *= al1; }

#pragma unroll
    for (int st = 0; st < 2; st++)
    {
        const u32 sAB01 = __byte_perm(cur.vp[st][0], cur.vp[st][1], 0x5410);
        const u32 mAB01 = __byte_perm(cur.vp[st][0], cur.vp[st][1], 0x7632);
        const u32 sAB89 = __byte_perm(cur.vp[st][2], cur.vp[st][3], 0x5410);
        const u32 mAB89 = __byte_perm(cur.vp[st][2], cur.vp[st][3], 0x7632);
#if FAST_SHIFTLESS
        // Code c of a byte masked in place is 4^c times the code: scales divided by 4^c (exact in the normal range).
        const u32 sA[4] = {sAB01, hmul2(sAB01, 0x34003400u), hmul2(sAB01, 0x2C002C00u), hmul2(sAB01, 0x24002400u)};
        const u32 sB[4] = {sAB89, hmul2(sAB89, 0x34003400u), hmul2(sAB89, 0x2C002C00u), hmul2(sAB89, 0x24002400u)};
#endif
#pragma unroll
        for (int half = 0; half < 2; half++)
        {
            const u32 sel = half ? 0x7632u : 0x5410u;
            const u32 y01 = __byte_perm(cur.v[st][0], cur.v[st][1], sel);
            const u32 y89 = __byte_perm(cur.v[st][2], cur.v[st][3], sel);
#pragma unroll
            for (int kk = 0; kk < 4; kk++)
            {
                const int c = 2 * kk;  // codes c (row g) and c + 1 (row g + 8) of this half
#if FAST_SHIFTLESS
                const u32 z01 = kk >= 2 ? y01 >> 8 : y01, z89 = kk >= 2 ? y89 >> 8 : y89;
                const int c0 = c & 3;
                u32 a0 = hfma2(hsub2(and_or(z01, m2 << (2 * c0), magic), magic), sA[c0], mAB01);
                u32 a1 = hfma2(hsub2(and_or(z01, m2 << (2 * c0 + 2), magic), magic), sA[c0 + 1], mAB01);
                u32 a2 = hfma2(hsub2(and_or(z89, m2 << (2 * c0), magic), magic), sB[c0], mAB89);
                u32 a3 = hfma2(hsub2(and_or(z89, m2 << (2 * c0 + 2), magic), magic), sB[c0 + 1], mAB89);
#else
                u32 a0 = hfma2(hsub2(and_or(y01 >> (2 * c), m2, magic), magic), sAB01, mAB01);
                u32 a1 = hfma2(hsub2(and_or(y01 >> (2 * c + 2), m2, magic), magic), sAB01, mAB01);
                u32 a2 = hfma2(hsub2(and_or(y89 >> (2 * c), m2, magic), magic), sAB89, mAB89);
                u32 a3 = hfma2(hsub2(and_or(y89 >> (2 * c + 2), m2, magic), magic), sAB89, mAB89);
#endif
                mma16816(o[4 * half + kk], a0, a1, a2, a3, pb0[st], pb1[st]);
            }
        }
    }
}

#ifndef FAST_MIN_BLOCKS
#define FAST_MIN_BLOCKS 3
#endif
#ifndef FAST_CPASYNC
#define FAST_CPASYNC 1
#endif
#ifndef FAST_STAGES
#define FAST_STAGES 3
#endif
// The K4V2 kernel's head dimension: 128 (two 64-dim groups per token) or 64 (one). The default path (FAST_FOLD and
// FAST_V3) handles both; the older variants kept for measurement assume 128. For any other HEAD_DIM the file still
// compiles (the generic kernels serve it) but the host never launches kvq_k4v2_fast.
#if HEAD_DIM == 64
#define FAST_HD 64
#else
#define FAST_HD 128
#endif
#define FAST_GROUPS (FAST_HD / 64)                            // per-token groups of 64 per head row
#define FAST_SEGS (FAST_HD / 32)                              // 16-byte K segments per token (32 dims each)
#define FAST_KP_OFF (16 * FAST_HD)                            // 32 tokens of K codes: 2048 / 1024 bytes
#define FAST_V_OFF (FAST_KP_OFF + 128 * FAST_GROUPS)          // K (scale, zero) pairs: 256 / 128 bytes
#define FAST_VP_OFF (FAST_V_OFF + 8 * FAST_HD)                // V codes: 1024 / 512 bytes
#define FAST_STAGE_BYTES (FAST_VP_OFF + 128 * FAST_GROUPS)    // V pairs: 256 / 128 bytes; 3584 / 1792 in all

__device__ __forceinline__ u32 smem_addr(const void* p)
{
    unsigned long long a;
    asm("cvta.to.shared.u64 %0, %1;" : "=l"(a) : "l"(p));
    return (u32)a;
}

__device__ __forceinline__ void cp_async16(u32 dst, const void* src) { asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src)); }
__device__ __forceinline__ void cp_async8(u32 dst, const void* src) { asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" ::"r"(dst), "l"(src)); }
__device__ __forceinline__ void cp_async4(u32 dst, const void* src) { asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(dst), "l"(src)); }
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

// Copies one 32-token step (contiguous in every array) into a warp's stage: 8 copies per lane, coalesced.
__device__ __forceinline__ void fast_issue(u32 stage, const u8* kc, const u32* kpar, const u8* vc, const u32* vpar, int base, int lane)
{
    const u8* k = kc + (size_t)base * 64;
    const u8* kp = (const u8*)(kpar + (size_t)base * 2);
    const u8* v = vc + (size_t)base * 32;
    const u8* vp = (const u8*)(vpar + (size_t)base * 2);
#pragma unroll
    for (int i = 0; i < 4; i++) cp_async16(stage + 16 * (lane + 32 * i), k + 16 * (lane + 32 * i));
    cp_async8(stage + 2048 + 8 * lane, kp + 8 * lane);
#pragma unroll
    for (int i = 0; i < 2; i++) cp_async16(stage + 2304 + 16 * (lane + 32 * i), v + 16 * (lane + 32 * i));
    cp_async8(stage + 3328 + 8 * lane, vp + 8 * lane);
}

// ---------------------------------------------------------------------------------------------------
// FAST_FOLD 1 (default): the dequantization scales and zeros are folded out of the per-element work.
//
// K (S = sum over the two groups g of scale_g * (q_g . c_g) + zero_g * sum(q_g)): the codes are turned into
// halves without any scale: a nibble masked into bits 4..7 of a 16-bit lane OR 0x5400 is the half 64 + c
// exactly (one lop3 per two codes, after a shift that brings the nibble there), so the tensor cores compute
// X_g = sum q_g * (64 + c) per group into their own accumulators, started at -64 * sum(q_g) (the Q halves'
// exact sum), which leaves q_g . c_g; the FP32 epilogue then applies scale and zero per (token, group).
// Per-token groups of 64 with head dim 128 give two groups per token; ldmatrix hands each lane 16-byte
// segments that never cross a group, so every k-step of an mma stays inside one group.
//
// V (O = sum_t p_t (scale_t c_t + zero_t) = sum_t (p_t scale_t) c_t + sum_t p_t zero_t): P is multiplied by the
// token's scale per group before the mma (FP16, per-group B fragments); the zero term is an FP32 sum per
// (group, head). The 2-bit codes are masked in place at bit 4, 6 or 8 of a 16-bit lane OR 0x6400, which is the
// half 1024 + m c with m = 16, 64 or 256 per output row (dimension); one more mma per group with an all-1024 A
// operand accumulates 1024 * sum_t P'_t on the same FP16 P' values, and O = (acc - that) / m + zero term.
// Only bit positions >= 4 are used, so the 1024 offset is at most 43x the code term (errors stay ~1e-6 of it).
// ldmatrix.trans delivers, for lane (g, t), halfword g of one group of tokens 2t and 2t + 1 (the A fragment's
// two k values) in one instruction per 16 tokens.
//
// Shared stage layout as for FAST_FOLD 0, but the 16-byte chunks are XOR-swizzled so that ldmatrix is
// conflict-free: K chunk (token, segment s) at token * 64 + 16 * (s ^ ((token >> 1) & 3)); V chunk (token,
// group) at 2304 + token * 32 + 16 * (group ^ ((token >> 2) & 1)).
// ---------------------------------------------------------------------------------------------------

#ifndef FAST_FOLD
#define FAST_FOLD 1
#endif
#ifndef FAST_TAU
#define FAST_TAU 6
#endif
#if FAST_FOLD && !FAST_CPASYNC
#error "FAST_FOLD needs FAST_CPASYNC"
#endif

__device__ __forceinline__ void ldsm_x4(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];" : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr) : "memory");
}

__device__ __forceinline__ void ldsm_x4_trans(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];" : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr) : "memory");
}

__device__ __forceinline__ float h2f_lo(u32 x) { return h2f((u16)(x & 0xFFFFu)); }
__device__ __forceinline__ float h2f_hi(u32 x) { return h2f((u16)(x >> 16)); }

// Copies one 32-token step into a warp's stage with the swizzled chunk order (kDst, vDst: this lane's offsets).
__device__ __forceinline__ void fold_issue(u32 stage, const u8* kc, const u32* kpar, const u8* vc, const u32* vpar, int base, int lane, u32 kDst, u32 vDst)
{
    const u8* k = kc + (size_t)base * 64;
    const u8* kp = (const u8*)(kpar + (size_t)base * 2);
    const u8* v = vc + (size_t)base * 32;
    const u8* vp = (const u8*)(vpar + (size_t)base * 2);
#pragma unroll
    for (int i = 0; i < 4; i++) cp_async16(stage + kDst + 512 * i, k + 16 * (lane + 32 * i));
    cp_async8(stage + 2048 + 8 * lane, kp + 8 * lane);
#pragma unroll
    for (int i = 0; i < 2; i++) cp_async16(stage + 2304 + vDst + 512 * i, v + 16 * (lane + 32 * i));
    cp_async8(stage + 3328 + 8 * lane, vp + 8 * lane);
}

struct FoldQ
{
    u32 b0[4][2], b1[4][2];  // Q^T B fragments per (16-byte segment, half of its codes)
    float init[2][2];        // -64 * sum(q) per (group, head 2t + e): the start of the K accumulators
    float sig[2][2];         // sum(q) per (group, head 2t + e)
};

__device__ __forceinline__ void mma16816_c(float* d, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1, float c0, float c1, float c2, float c3)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "f"(c0), "f"(c1), "f"(c2), "f"(c3));
}

// One 32-token step, in three parts.
// kAddr/vAddr: this lane's ldmatrix row addresses in the stage; st: the stage.
// o[4 * group + i]: O^T tile of group, rows g / g + 8 = dims 64 group + 8 g + 2 i / + 1, columns heads 2t, 2t + 1.
// w[group]: 1024 * sum P' (all rows equal); z[group][e]: this lane's share of sum p * zero for head 2t + e.

// Scores in the log2 domain: s[m][0..3] = (token 16m + g, head 2t), (16m + g, 2t + 1), (16m + 8 + g, 2t), (16m + 8 + g, 2t + 1).
__device__ __forceinline__ void fold_scores(u32 kAddr, const u8* st, const FoldQ& fq, int g, float (*s)[4])
{
    const u32 magicK = 0x54005400u, maskK = 0x00F000F0u;
    const uint2* kp = (const uint2*)(st + 2048);
#pragma unroll
    for (int m = 0; m < 2; m++)
    {
        u32 wa[4], wb[4];  // tokens 16m + g and 16m + 8 + g: word t of each 16-byte segment
        ldsm_x4(kAddr + 1024 * m, wa[0], wa[1], wa[2], wa[3]);
        ldsm_x4(kAddr + 1024 * m + 512, wb[0], wb[1], wb[2], wb[3]);
        float x[2][4];
#pragma unroll
        for (int grp = 0; grp < 2; grp++)
        {
#pragma unroll
            for (int h = 0; h < 2; h++)
            {
                const int seg = 2 * grp + h;
                const u32 a = wa[seg], b = wb[seg];
                // codes (0, 4) and (1, 5) of the word: nibbles of bytes 0 and 2
                const u32 a0 = and_or(a << 4, maskK, magicK), a1 = and_or(b << 4, maskK, magicK);
                const u32 a2 = and_or(a, maskK, magicK), a3 = and_or(b, maskK, magicK);
                if (h == 0)
                    mma16816_c(x[grp], a0, a1, a2, a3, fq.b0[seg][0], fq.b1[seg][0], fq.init[grp][0], fq.init[grp][1], fq.init[grp][0], fq.init[grp][1]);
                else
                    mma16816(x[grp], a0, a1, a2, a3, fq.b0[seg][0], fq.b1[seg][0]);
                // codes (2, 6) and (3, 7): nibbles of bytes 1 and 3
                mma16816(x[grp], and_or(a >> 4, maskK, magicK), and_or(b >> 4, maskK, magicK), and_or(a >> 8, maskK, magicK), and_or(b >> 8, maskK, magicK),
                         fq.b0[seg][1], fq.b1[seg][1]);
            }
        }
        const uint2 pa = kp[16 * m + g], pb = kp[16 * m + 8 + g];
        const float sa0 = h2f_lo(pa.x), za0 = h2f_hi(pa.x), sa1 = h2f_lo(pa.y), za1 = h2f_hi(pa.y);
        const float sb0 = h2f_lo(pb.x), zb0 = h2f_hi(pb.x), sb1 = h2f_lo(pb.y), zb1 = h2f_hi(pb.y);
#pragma unroll
        for (int e = 0; e < 2; e++)
        {
            s[m][e] = fmaf(sa0, x[0][e], fmaf(sa1, x[1][e], fmaf(za0, fq.sig[0][e], za1 * fq.sig[1][e])));
            s[m][2 + e] = fmaf(sb0, x[0][2 + e], fmaf(sb1, x[1][2 + e], fmaf(zb0, fq.sig[0][e], zb1 * fq.sig[1][e])));
        }
    }
}

// Moves the exponent reference (running maximum) when needed and rescales the accumulators.
__device__ __forceinline__ void fold_reference(const float (*s)[4], float (*o)[4], float (*w)[4], float (*z)[2], float* mRun, float* lRun)
{
#if FAST_TAU > 0
    // The exponent reference only moves when a score exceeds it by more than FAST_TAU (log2 units): then p <= 2^TAU
    // (FP16 keeps it), and in the common step no maximum is reduced across the lanes at all.
    const bool over = fmaxf(fmaxf(s[0][0], s[0][2]), fmaxf(s[1][0], s[1][2])) > mRun[0] + FAST_TAU
                      || fmaxf(fmaxf(s[0][1], s[0][3]), fmaxf(s[1][1], s[1][3])) > mRun[1] + FAST_TAU;
    if (__any_sync(0xffffffffu, over))
#endif
    {
        float mx0 = fmaxf(fmaxf(s[0][0], s[0][2]), fmaxf(s[1][0], s[1][2]));
        float mx1 = fmaxf(fmaxf(s[0][1], s[0][3]), fmaxf(s[1][1], s[1][3]));
#pragma unroll
        for (int off = 4; off < 32; off <<= 1)
        {
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
        }
        const float n0 = fmaxf(mRun[0], mx0), n1 = fmaxf(mRun[1], mx1);
        // Rescale only when some head's reference moved (alpha is then exactly 1 for every other head).
        if (__any_sync(0xffffffffu, n0 > mRun[0] || n1 > mRun[1]))
        {
            const float al0 = fast_exp2(mRun[0] - n0), al1 = fast_exp2(mRun[1] - n1);
            lRun[0] *= al0;
            lRun[1] *= al1;
#pragma unroll
            for (int k = 0; k < 8; k++) { o[k][0] *= al0; o[k][1] *= al1; o[k][2] *= al0; o[k][3] *= al1; }
#pragma unroll
            for (int grp = 0; grp < 2; grp++)
            {
                w[grp][0] *= al0; w[grp][1] *= al1; w[grp][2] *= al0; w[grp][3] *= al1;
                z[grp][0] *= al0; z[grp][1] *= al1;
            }
            mRun[0] = n0;
            mRun[1] = n1;
        }
    }
}

// P = 2^(s - reference), then O += V^T P'^T per group.
__device__ __forceinline__ void fold_pv(u32 vAddr, const u8* st, const float (*s)[4], float (*o)[4], float (*w)[4], float (*z)[2],
                                        const float* mRun, float* lRun, int g)
{
    const u32 magicV = 0x64006400u;
    const uint2* vp = (const uint2*)(st + 3328);
    const float n0 = mRun[0], n1 = mRun[1];
#pragma unroll
    for (int m = 0; m < 2; m++)
    {
        const float p0 = fast_exp2(s[m][0] - n0), p1 = fast_exp2(s[m][1] - n1);
        const float p2 = fast_exp2(s[m][2] - n0), p3 = fast_exp2(s[m][3] - n1);
        lRun[0] += p0 + p2;
        lRun[1] += p1 + p3;
        const u32 pk01 = pack_h2(p0, p1), pk23 = pack_h2(p2, p3);  // token g / g + 8, heads 2t, 2t + 1
        const uint2 va = vp[16 * m + g], vb = vp[16 * m + 8 + g];
        u32 yv[4];  // ldmatrix.trans: [group] tokens 2t, 2t + 1; [2 + group] tokens 8 + 2t, 9 + 2t; halfword g
        ldsm_x4_trans(vAddr + 512 * m, yv[0], yv[1], yv[2], yv[3]);
#pragma unroll
        for (int grp = 0; grp < 2; grp++)
        {
            const u32 pairA = grp ? va.y : va.x, pairB = grp ? vb.y : vb.x;
            const u32 b0 = transpose8x8(hmul2(pk01, __byte_perm(pairA, 0u, 0x1010)));
            const u32 b1 = transpose8x8(hmul2(pk23, __byte_perm(pairB, 0u, 0x1010)));
            const float zA = h2f_hi(pairA), zB = h2f_hi(pairB);
            z[grp][0] = fmaf(p0, zA, fmaf(p2, zB, z[grp][0]));
            z[grp][1] = fmaf(p1, zA, fmaf(p3, zB, z[grp][1]));
            const u32 yA = yv[grp], yB = yv[2 + grp];
            const u32 yA4 = yA << 4, yB4 = yB << 4, yA6 = yA >> 6, yB6 = yB >> 6;
            const u32 c2 = 0x00300030u, c3 = 0x00C000C0u, c4 = 0x03000300u;
            // tile 0: codes 0 (bit 4 of y << 4) and 1 (bit 6 of y << 4)
            mma16816(o[4 * grp + 0], and_or(yA4, c2, magicV), and_or(yA4, c3, magicV), and_or(yB4, c2, magicV), and_or(yB4, c3, magicV), b0, b1);
            // tile 1: codes 2 (bit 4) and 3 (bit 6) in place
            mma16816(o[4 * grp + 1], and_or(yA, c2, magicV), and_or(yA, c3, magicV), and_or(yB, c2, magicV), and_or(yB, c3, magicV), b0, b1);
            // tile 2: codes 4 (bit 8 in place) and 5 (bit 4 of y >> 6)
            mma16816(o[4 * grp + 2], and_or(yA, c4, magicV), and_or(yA6, c2, magicV), and_or(yB, c4, magicV), and_or(yB6, c2, magicV), b0, b1);
            // tile 3: codes 6 (bit 6 of y >> 6) and 7 (bit 8 of y >> 6)
            mma16816(o[4 * grp + 3], and_or(yA6, c3, magicV), and_or(yA6, c4, magicV), and_or(yB6, c3, magicV), and_or(yB6, c4, magicV), b0, b1);
            mma16816(w[grp], magicV, magicV, magicV, magicV, b0, b1);
        }
    }
}

__device__ __forceinline__ void fold_step(u32 kAddr, u32 vAddr, const u8* st, const FoldQ& fq, float (*o)[4], float (*w)[4], float (*z)[2],
                                          float* mRun, float* lRun, int g)
{
    float s[2][4];
    fold_scores(kAddr, st, fq, g, s);
    fold_reference(s, o, w, z, mRun, lRun);
    fold_pv(vAddr, st, s, o, w, z, mRun, lRun, g);
}

// ---------------------------------------------------------------------------------------------------
// FAST_V3 (default): FAST_FOLD with fewer instructions per step.
// - K codes without a shift for half of them: a nibble in bits 0..3 of a 16-bit lane OR 0x6400 is the half
//   1024 + c, one in bits 4..7 OR 0x5400 is 64 + c (both exact), so a 32-bit word of 8 codes needs one shift
//   (>> 8) and four lop3 instead of three shifts and four lop3. The accumulators start at
//   -(1024 sum(q even dims) + 64 sum(q odd dims)) (the FP16 Q halves' sum), which leaves q . c.
// - K's zero term z_g sum(q_g) and the running reference -n come out of one more mma per 16 tokens: A holds the
//   token's two FP16 zeros (z_0, z_1 at k = 0, 1 and again at 2, 3), B the FP16 hi (k = 0, 1) and lo (k = 2, 3)
//   parts of (sum(q_0), sum(q_1)) per head, zero elsewhere, C = -n: the score epilogue is then two FFMA per
//   element and the scores come out already relative to the reference (p = 2^s).
// - cp.async addresses advance by constants and the stages rotate without a modulo.
// ---------------------------------------------------------------------------------------------------
#ifndef FAST_V3
#define FAST_V3 1
#endif

__device__ __forceinline__ void mma1688_c(float* d, u32 a0, u32 a1, u32 b0, float c0, float c1, float c2, float c3)
{
    asm("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%7,%8,%9,%10};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a0), "r"(a1), "r"(b0), "f"(c0), "f"(c1), "f"(c2), "f"(c3));
}

struct V3Q
{
    u32 b0[FAST_SEGS][2], b1[FAST_SEGS][2];  // Q^T B fragments per (16-byte segment, half of its codes), as FoldQ
    float init[FAST_GROUPS][2];              // -(1024 sum(q even) + 64 sum(q odd)) per (group, head 2t + e)
    u32 sigB;                // zero-term B fragment for head g: t = 0: hi halves of (sum(q_0), sum(q_1)); t = 1: lo halves; else 0
};

// Scores relative to the reference n (log2 domain), s[m][..] as in fold_scores.
__device__ __forceinline__ void v3_scores(u32 kAddr, const u8* st, const V3Q& fq, int g, float negN0, float negN1, float (*s)[4])
{
    const u32 m64 = 0x54005400u, m1024 = 0x64006400u, lo = 0x000F000Fu, hi = 0x00F000F0u;
#if FAST_HD == 128
    const uint2* kp = (const uint2*)(st + FAST_KP_OFF);
#else
    const u32* kp = (const u32*)(st + FAST_KP_OFF);
#endif
#pragma unroll
    for (int m = 0; m < 2; m++)
    {
        u32 wa[FAST_SEGS], wb[FAST_SEGS];  // tokens 16m + g and 16m + 8 + g: word t of each 16-byte segment
#if FAST_HD == 128
        ldsm_x4(kAddr + 1024 * m, wa[0], wa[1], wa[2], wa[3]);
        ldsm_x4(kAddr + 1024 * m + 512, wb[0], wb[1], wb[2], wb[3]);
#else
        // 32-byte rows: matrices (tokens 0..7, segment 0), (0..7, 1), (8..15, 0), (8..15, 1) of the 16 tokens.
        ldsm_x4(kAddr + 512 * m, wa[0], wa[1], wb[0], wb[1]);
#endif
        float x[FAST_GROUPS][4];
#pragma unroll
        for (int grp = 0; grp < FAST_GROUPS; grp++)
        {
#pragma unroll
            for (int h = 0; h < 2; h++)
            {
                const int seg = 2 * grp + h;
                const u32 qb00 = fq.b0[seg][0], qb10 = fq.b1[seg][0], qb01 = fq.b0[seg][1], qb11 = fq.b1[seg][1];
                const u32 a = wa[seg], b = wb[seg], a8 = a >> 8, b8 = b >> 8;
                // codes (0, 4) at bits 0..3 (1024 + c) and (1, 5) at bits 4..7 (64 + c)
                const u32 a0 = and_or(a, lo, m1024), a1 = and_or(b, lo, m1024), a2 = and_or(a, hi, m64), a3 = and_or(b, hi, m64);
                if (h == 0)
                    mma16816_c(x[grp], a0, a1, a2, a3, qb00, qb10, fq.init[grp][0], fq.init[grp][1], fq.init[grp][0], fq.init[grp][1]);
                else
                    mma16816(x[grp], a0, a1, a2, a3, qb00, qb10);
                // codes (2, 6) and (3, 7) of the word shifted by 8
                mma16816(x[grp], and_or(a8, lo, m1024), and_or(b8, lo, m1024), and_or(a8, hi, m64), and_or(b8, hi, m64), qb01, qb11);
            }
        }
#if FAST_HD == 128
        const uint2 pa = kp[16 * m + g], pb = kp[16 * m + 8 + g];
        const u32 za = __byte_perm(pa.x, pa.y, 0x7632), zb = __byte_perm(pb.x, pb.y, 0x7632);  // (z_0, z_1) of the token
        float zt[4];
        mma1688_c(zt, za, zb, fq.sigB, negN0, negN1, negN0, negN1);
        const float sa0 = h2f_lo(pa.x), sa1 = h2f_lo(pa.y), sb0 = h2f_lo(pb.x), sb1 = h2f_lo(pb.y);
#pragma unroll
        for (int e = 0; e < 2; e++)
        {
            s[m][e] = fmaf(sa0, x[0][e], fmaf(sa1, x[1][e], zt[e]));
            s[m][2 + e] = fmaf(sb0, x[0][2 + e], fmaf(sb1, x[1][2 + e], zt[2 + e]));
        }
#else
        const u32 pa = kp[16 * m + g], pb = kp[16 * m + 8 + g];
        const u32 za = __byte_perm(pa, 0u, 0x7632), zb = __byte_perm(pb, 0u, 0x7632);  // (z_0, 0) of the token
        float zt[4];
        mma1688_c(zt, za, zb, fq.sigB, negN0, negN1, negN0, negN1);
        const float sa0 = h2f_lo(pa), sb0 = h2f_lo(pb);
#pragma unroll
        for (int e = 0; e < 2; e++)
        {
            s[m][e] = fmaf(sa0, x[0][e], zt[e]);
            s[m][2 + e] = fmaf(sb0, x[0][2 + e], zt[2 + e]);
        }
#endif
    }
}

// Scores are relative to the reference; it moves when one exceeds it by more than FAST_TAU, and on a warp's first
// step (reference 0 before) it is set to the step's maximum. Moving it by d rescales the accumulators by 2^-d.
__device__ __forceinline__ void v3_reference(float (*s)[4], float (*o)[4], float (*w)[4], float (*z)[2], float* nNeg, float* lRun, bool first)
{
    const bool over = fmaxf(fmaxf(s[0][0], s[0][2]), fmaxf(s[1][0], s[1][2])) > (float)FAST_TAU
                      || fmaxf(fmaxf(s[0][1], s[0][3]), fmaxf(s[1][1], s[1][3])) > (float)FAST_TAU;
    if (__any_sync(0xffffffffu, over) || first)
    {
        float mx0 = fmaxf(fmaxf(s[0][0], s[0][2]), fmaxf(s[1][0], s[1][2]));
        float mx1 = fmaxf(fmaxf(s[0][1], s[0][3]), fmaxf(s[1][1], s[1][3]));
#pragma unroll
        for (int off = 4; off < 32; off <<= 1)
        {
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
        }
        const float d0 = first ? mx0 : fmaxf(mx0, 0.f), d1 = first ? mx1 : fmaxf(mx1, 0.f);
        if (__any_sync(0xffffffffu, d0 != 0.f || d1 != 0.f))
        {
            if (!first)
            {
                const float al0 = fast_exp2(-d0), al1 = fast_exp2(-d1);
                lRun[0] *= al0;
                lRun[1] *= al1;
#pragma unroll
                for (int k = 0; k < 4 * FAST_GROUPS; k++) { o[k][0] *= al0; o[k][1] *= al1; o[k][2] *= al0; o[k][3] *= al1; }
#pragma unroll
                for (int grp = 0; grp < FAST_GROUPS; grp++)
                {
                    w[grp][0] *= al0; w[grp][1] *= al1; w[grp][2] *= al0; w[grp][3] *= al1;
                    z[grp][0] *= al0; z[grp][1] *= al1;
                }
            }
            nNeg[0] -= d0;
            nNeg[1] -= d1;
#pragma unroll
            for (int m = 0; m < 2; m++) { s[m][0] -= d0; s[m][1] -= d1; s[m][2] -= d0; s[m][3] -= d1; }
        }
    }
}

// p = 2^s (scores relative to the reference): the sums per head of this lane's p, for the softmax denominator.
__device__ __forceinline__ void v3_exp(const float (*s)[4], float (*p)[4], float* ps)
{
#pragma unroll
    for (int m = 0; m < 2; m++)
    {
#pragma unroll
        for (int i = 0; i < 4; i++) p[m][i] = fast_exp2(s[m][i]);
    }
    ps[0] = (p[0][0] + p[0][2]) + (p[1][0] + p[1][2]);
    ps[1] = (p[0][1] + p[0][3]) + (p[1][1] + p[1][3]);
}

// O += V^T P'^T per group (as fold_pv), P' = p * scale.
__device__ __forceinline__ void v3_pv(u32 vAddr, const u8* st, const float (*p)[4], float (*o)[4], float (*w)[4], float (*z)[2], int g)
{
    const u32 magicV = 0x64006400u;
#if FAST_HD == 128
    const uint2* vp = (const uint2*)(st + FAST_VP_OFF);
#else
    const u32* vp = (const u32*)(st + FAST_VP_OFF);
    u32 yAll[4];  // 16-byte rows: matrices of tokens 0..7, 8..15, 16..23, 24..31
    ldsm_x4_trans(vAddr, yAll[0], yAll[1], yAll[2], yAll[3]);
#endif
#pragma unroll
    for (int m = 0; m < 2; m++)
    {
        const float p0 = p[m][0], p1 = p[m][1], p2 = p[m][2], p3 = p[m][3];
        const u32 pk01 = pack_h2(p0, p1), pk23 = pack_h2(p2, p3);
#if FAST_HD == 128
        const uint2 va = vp[16 * m + g], vb = vp[16 * m + 8 + g];
        u32 yv[4];  // (tokens 0..7, group 0), (0..7, 1), (8..15, 0), (8..15, 1)
        ldsm_x4_trans(vAddr + 512 * m, yv[0], yv[1], yv[2], yv[3]);
#else
        const u32 vA = vp[16 * m + g], vB = vp[16 * m + 8 + g];
        const u32 yv[4] = {yAll[2 * m], 0u, yAll[2 * m + 1], 0u};  // indexed as for 128: group 0 only
#endif
#pragma unroll
        for (int grp = 0; grp < FAST_GROUPS; grp++)
        {
#if FAST_HD == 128
            const u32 pairA = grp ? va.y : va.x, pairB = grp ? vb.y : vb.x;
#else
            const u32 pairA = vA, pairB = vB;
#endif
            const u32 b0 = transpose8x8(hmul2(pk01, __byte_perm(pairA, 0u, 0x1010)));
            const u32 b1 = transpose8x8(hmul2(pk23, __byte_perm(pairB, 0u, 0x1010)));
            const float zA = h2f_hi(pairA), zB = h2f_hi(pairB);
            z[grp][0] = fmaf(p0, zA, fmaf(p2, zB, z[grp][0]));
            z[grp][1] = fmaf(p1, zA, fmaf(p3, zB, z[grp][1]));
            const u32 yA = yv[grp], yB = yv[2 + grp];
            const u32 yA4 = yA << 4, yB4 = yB << 4, yA6 = yA >> 6, yB6 = yB >> 6;
            const u32 c2 = 0x00300030u, c3 = 0x00C000C0u, c4 = 0x03000300u;
            mma16816(o[4 * grp + 0], and_or(yA4, c2, magicV), and_or(yA4, c3, magicV), and_or(yB4, c2, magicV), and_or(yB4, c3, magicV), b0, b1);
            mma16816(o[4 * grp + 1], and_or(yA, c2, magicV), and_or(yA, c3, magicV), and_or(yB, c2, magicV), and_or(yB, c3, magicV), b0, b1);
            mma16816(o[4 * grp + 2], and_or(yA, c4, magicV), and_or(yA6, c2, magicV), and_or(yB, c4, magicV), and_or(yB6, c2, magicV), b0, b1);
            mma16816(o[4 * grp + 3], and_or(yA6, c3, magicV), and_or(yA6, c4, magicV), and_or(yB6, c3, magicV), and_or(yB6, c4, magicV), b0, b1);
            mma16816(w[grp], magicV, magicV, magicV, magicV, b0, b1);
        }
    }
}

// The FP16 residual window (or one chunk of it) inside the fast kernel, in its last blocks of each head: warp w takes tokens w, w+4, ...;
// lane holds dims FAST_DPL*lane.. of every query head (4 for head dim 128, 2 for 64); online softmax per token in FP32.
#define FAST_DPL (FAST_HD / 32)
__device__ __forceinline__ void fast_residual(const u16* kr, const u16* vr, int R, const float* qrows, int ratio, float scaleLog2,
                                              int warp, int lane, float (*so)[MAX_RATIO][HEAD_DIM], float (*sml)[MAX_RATIO][2])
{
    float qv[MAX_RATIO][FAST_DPL], acc[MAX_RATIO][FAST_DPL], m[MAX_RATIO], l[MAX_RATIO];
#pragma unroll
    for (int h = 0; h < MAX_RATIO; h++)
    {
        m[h] = NEG_BIG;
        l[h] = 0.f;
#pragma unroll
        for (int i = 0; i < FAST_DPL; i++)
        {
            qv[h][i] = h < ratio ? qrows[h * HEAD_DIM + FAST_DPL * lane + i] * scaleLog2 : 0.f;
            acc[h][i] = 0.f;
        }
    }
    for (int tok = warp; tok < R; tok += 4)
    {
#if FAST_DPL == 4
        uint2 kk = *(const uint2*)(kr + (size_t)tok * HEAD_DIM + 4 * lane);
        uint2 vv = *(const uint2*)(vr + (size_t)tok * HEAD_DIM + 4 * lane);
        float k[4] = {h2f((u16)(kk.x & 0xFFFF)), h2f((u16)(kk.x >> 16)), h2f((u16)(kk.y & 0xFFFF)), h2f((u16)(kk.y >> 16))};
        float v[4] = {h2f((u16)(vv.x & 0xFFFF)), h2f((u16)(vv.x >> 16)), h2f((u16)(vv.y & 0xFFFF)), h2f((u16)(vv.y >> 16))};
#else
        u32 kk = *(const u32*)(kr + (size_t)tok * HEAD_DIM + 2 * lane);
        u32 vv = *(const u32*)(vr + (size_t)tok * HEAD_DIM + 2 * lane);
        float k[2] = {h2f_lo(kk), h2f_hi(kk)};
        float v[2] = {h2f_lo(vv), h2f_hi(vv)};
#endif
        // Every head unconditionally (q is 0 beyond ratio), so the eight shuffle chains interleave instead of
        // running one after another behind a branch on ratio.
        float sc[MAX_RATIO];
#pragma unroll
        for (int h = 0; h < MAX_RATIO; h++)
        {
            sc[h] = qv[h][0] * k[0] + qv[h][1] * k[1];
#if FAST_DPL == 4
            sc[h] += qv[h][2] * k[2] + qv[h][3] * k[3];
#endif
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
        {
#pragma unroll
            for (int h = 0; h < MAX_RATIO; h++) sc[h] += __shfl_xor_sync(0xffffffffu, sc[h], o);
        }
#pragma unroll
        for (int h = 0; h < MAX_RATIO; h++)
        {
            const float mNew = fmaxf(m[h], sc[h]);
            const float alpha = exp2f(m[h] - mNew), p = exp2f(sc[h] - mNew);
            m[h] = mNew;
            l[h] = l[h] * alpha + p;
#pragma unroll
            for (int i = 0; i < FAST_DPL; i++) acc[h][i] = fmaf(p, v[i], acc[h][i] * alpha);
        }
    }
#pragma unroll
    for (int h = 0; h < MAX_RATIO; h++)
    {
        if (h < ratio)
        {
#pragma unroll
            for (int i = 0; i < FAST_DPL; i++) so[warp][h][FAST_DPL * lane + i] = acc[h][i];
            if (lane == 0) { sml[warp][h][0] = m[h]; sml[warp][h][1] = l[h]; }
        }
    }
}

// One 32-token step into a warp's stage (FAST_V3): K codes, K pairs, V codes, V pairs from this lane's sources.
__device__ __forceinline__ void fast_v3_issue(u32 stg, const u8* kG, const u8* kpG, const u8* vG, const u8* vpG, u32 kDst, u32 vDst, int lane)
{
#if FAST_HD == 128
#pragma unroll
    for (int i = 0; i < 4; i++) cp_async16(stg + kDst + 512 * i, kG + 512 * i);
    cp_async8(stg + FAST_KP_OFF + 8 * lane, kpG);
#pragma unroll
    for (int i = 0; i < 2; i++) cp_async16(stg + FAST_V_OFF + vDst + 512 * i, vG + 512 * i);
    cp_async8(stg + FAST_VP_OFF + 8 * lane, vpG);
#else
#pragma unroll
    for (int i = 0; i < 2; i++) cp_async16(stg + kDst + 512 * i, kG + 512 * i);
    cp_async4(stg + FAST_KP_OFF + 4 * lane, kpG);
    cp_async16(stg + FAST_V_OFF + vDst, vG);
    cp_async4(stg + FAST_VP_OFF + 4 * lane, vpG);
#endif
}

#if FAST_HD != 128 && !(FAST_FOLD && FAST_V3)
#error "head dim 64 in kvq_k4v2_fast needs the default path (FAST_FOLD 1, FAST_V3 1)"
#endif

// Grid (quantized splits + residual blocks, kvHeads, batch); the residual window is split over the last blocks.
// FAST_CPASYNC 1: each warp streams its 32-token steps through FAST_STAGES shared-memory stages with cp.async;
// 0: the next step is prefetched into registers.
extern "C" __global__ void __launch_bounds__(128, FAST_MIN_BLOCKS) kvq_k4v2_fast(
    const u8* kCodes, const u32* kParams, const u8* vCodes, const u32* vParams, const u16* kRes, const u16* vRes, int R,
    const float* q, float* partO, float* partML, int T, int tokensPerSplit, int totalSplits, int ratio, float scaleLog2,
    float* out, u32* counters, int tStride, int rStride)
{
#if FAST_CPASYNC
    __shared__ alignas(16) u8 stages[4][FAST_STAGES][FAST_STAGE_BYTES];
    float (*so)[MAX_RATIO][HEAD_DIM] = (float (*)[MAX_RATIO][HEAD_DIM])&stages[0][0][0];
    static_assert(sizeof(stages) >= 4 * MAX_RATIO * HEAD_DIM * sizeof(float), "merge area aliases the stages");
#else
    __shared__ float soBuf[4][MAX_RATIO][HEAD_DIM];
    float (*so)[MAX_RATIO][HEAD_DIM] = soBuf;
#endif
    __shared__ float sml[4][MAX_RATIO][2];
    // Splits [0, qSplits) of a (batch, KV head) take the packed tokens, the other gridDim.x - qSplits blocks equal
    // chunks of the residual window. The linear block order puts every packed-token block first (head-major), then
    // the window's blocks, so the long blocks spread evenly over the multiprocessors and the short ones fill in.
    const int kvHeads = gridDim.y;
    const int qSplits = T > 0 ? (T + tokensPerSplit - 1) / tokensPerSplit : 0;
    const int lin = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const int heavy = kvHeads * gridDim.z * qSplits;
    int split, headIdx;
    if (lin < heavy)
    {
        headIdx = lin / qSplits;
        split = lin - headIdx * qSplits;
    }
    else
    {
        const int rBlocks = gridDim.x - qSplits;
        headIdx = (lin - heavy) / rBlocks;
        split = qSplits + (lin - heavy - headIdx * rBlocks);
    }
    const int kvh = headIdx % kvHeads, b = headIdx / kvHeads;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const size_t bh = (size_t)b * kvHeads + kvh;
    const int hqTotal = kvHeads * ratio;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    // A combine kernel queued as a programmatic dependent launch may be scheduled once every block got here; it
    // waits on the device for this grid's results (griddepcontrol.wait), so this only hides its launch.
    asm volatile("griddepcontrol.launch_dependents;");
#endif
    const u8* kc = kCodes + bh * tStride * (FAST_HD / 2);
    const u32* kpar = kParams + bh * tStride * FAST_GROUPS;
    const u8* vc = vCodes + bh * tStride * (FAST_HD / 4);
    const u32* vpar = vParams + bh * tStride * FAST_GROUPS;

    if (R > 0 && split >= qSplits)
    {
        const int rBlocks = gridDim.x - qSplits;
        const int chunk = (R + rBlocks - 1) / rBlocks;
        const int r0 = min(R, (split - qSplits) * chunk);
        const size_t rowOff = (bh * rStride + r0) * HEAD_DIM;
        fast_residual(kRes + rowOff, vRes + rowOff, min(chunk, R - r0), q + ((size_t)b * hqTotal + kvh * ratio) * HEAD_DIM,
                      ratio, scaleLog2, warp, lane, so, sml);
    }
    else
    {
        const int t0 = split * tokensPerSplit;
        const int t1 = min(T, t0 + tokensPerSplit);
#if FAST_FOLD && FAST_V3
        const u32 myStages = smem_addr(&stages[warp][0][0]);
        const u8* myStagesGen = &stages[warp][0][0];
        const int li = lane >> 3, lr = lane & 7;  // ldmatrix: this lane addresses row lr of matrix li
#if FAST_HD == 128
        const u32 kDst = (lane >> 2) * 64 + (((lane & 3) ^ ((lane >> 3) & 3)) << 4);
        const u32 vDst = (lane >> 1) * 32 + (((lane & 1) ^ ((lane >> 3) & 1)) << 4);
        const u32 kOff = lr * 64 + ((li ^ ((lr >> 1) & 3)) << 4);
        const u32 vOff = FAST_V_OFF + 256 * (li >> 1) + 32 * lr + (((li & 1) ^ ((lr >> 2) & 1)) << 4);
#else
        // 32-byte K rows: segment s of token r at r * 32 + 16 (s ^ ((r >> 2) & 1)) (ldmatrix conflict-free);
        // 16-byte V rows unswizzled (eight consecutive rows are 128 bytes).
        const u32 kDst = (lane >> 1) * 32 + (((lane & 1) ^ ((lane >> 3) & 1)) << 4);
        const u32 vDst = 16 * lane;
        const u32 kOff = (8 * (li >> 1) + lr) * 32 + (((li & 1) ^ ((lr >> 2) & 1)) << 4);
        const u32 vOff = FAST_V_OFF + 16 * lane;
#endif
        // This lane's cp.async sources for the warp's next step to issue; they advance by 128 tokens per step.
        const size_t first = (size_t)(t0 + 32 * warp);
        const u8* kG = kc + first * (FAST_HD / 2) + 16 * lane;
        const u8* vG = vc + first * (FAST_HD / 4) + 16 * lane;
        // (scale, zero) pairs: 8 bytes a token and 8-byte copies (head dim 128), 4 and 4 (64)
        const u8* kpG = (const u8*)kpar + first * 4 * FAST_GROUPS + 4 * FAST_GROUPS * lane;
        const u8* vpG = (const u8*)vpar + first * 4 * FAST_GROUPS + 4 * FAST_GROUPS * lane;
        int nb = t0 + 32 * warp;
#pragma unroll
        for (int k = 0; k < FAST_STAGES - 1; k++)
        {
            if (nb < t1) fast_v3_issue(myStages + k * FAST_STAGE_BYTES, kG, kpG, vG, vpG, kDst, vDst, lane);
            cp_async_commit();
            nb += 128;
            kG += 128 * (FAST_HD / 2); kpG += 128 * 4 * FAST_GROUPS; vG += 128 * (FAST_HD / 4); vpG += 128 * 4 * FAST_GROUPS;
        }
        V3Q fq;
        {
            const float* qrow = q + ((size_t)b * hqTotal + kvh * ratio + (g < ratio ? g : 0)) * HEAD_DIM;
            const float qs = g < ratio ? scaleLog2 : 0.f;
            float sumE[FAST_GROUPS], sumO[FAST_GROUPS];
#pragma unroll
            for (int grp = 0; grp < FAST_GROUPS; grp++) { sumE[grp] = 0.f; sumO[grp] = 0.f; }
#pragma unroll
            for (int seg = 0; seg < FAST_SEGS; seg++)
            {
#pragma unroll
                for (int e = 0; e < 2; e++)
                {
                    const int d = 32 * seg + 8 * t + 2 * e;
                    fq.b0[seg][e] = pack_h2(qrow[d] * qs, qrow[d + 4] * qs);      // even dims (codes at bits 0..3)
                    fq.b1[seg][e] = pack_h2(qrow[d + 1] * qs, qrow[d + 5] * qs);  // odd dims (codes at bits 4..7)
                    sumE[seg >> 1] += h2f_lo(fq.b0[seg][e]) + h2f_hi(fq.b0[seg][e]);
                    sumO[seg >> 1] += h2f_lo(fq.b1[seg][e]) + h2f_hi(fq.b1[seg][e]);
                }
            }
            float sig[2] = {0.f, 0.f};  // head dim 64: the second group's sum stays 0 (its zero is 0 in the A fragment too)
#pragma unroll
            for (int grp = 0; grp < FAST_GROUPS; grp++)
            {
                sumE[grp] += __shfl_xor_sync(0xffffffffu, sumE[grp], 1);
                sumE[grp] += __shfl_xor_sync(0xffffffffu, sumE[grp], 2);
                sumO[grp] += __shfl_xor_sync(0xffffffffu, sumO[grp], 1);
                sumO[grp] += __shfl_xor_sync(0xffffffffu, sumO[grp], 2);
                sig[grp] = sumE[grp] + sumO[grp];  // head g, every lane of the quad
                const float negOff = fmaf(-1024.f, sumE[grp], -64.f * sumO[grp]);
#pragma unroll
                for (int e = 0; e < 2; e++) fq.init[grp][e] = __shfl_sync(0xffffffffu, negOff, 4 * (2 * t + e));
            }
            const u32 hiH = pack_h2(sig[0], sig[1]);
            const u32 loH = pack_h2(sig[0] - h2f_lo(hiH), sig[1] - h2f_hi(hiH));
            fq.sigB = t == 0 ? hiH : t == 1 ? loH : 0u;
        }

        float o[4 * FAST_GROUPS][4], w[FAST_GROUPS][4], z[FAST_GROUPS][2];
#pragma unroll
        for (int k = 0; k < 4 * FAST_GROUPS; k++) { o[k][0] = 0.f; o[k][1] = 0.f; o[k][2] = 0.f; o[k][3] = 0.f; }
#pragma unroll
        for (int grp = 0; grp < FAST_GROUPS; grp++) { w[grp][0] = 0.f; w[grp][1] = 0.f; w[grp][2] = 0.f; w[grp][3] = 0.f; z[grp][0] = 0.f; z[grp][1] = 0.f; }
        float nNeg[2] = {0.f, 0.f}, lRun[2] = {0.f, 0.f};  // minus the reference, and the sum of p
        bool firstStep = true;
        u32 rOff = 0, wOff = (FAST_STAGES - 1) * FAST_STAGE_BYTES;  // stage read now / written now (the one read last)
        for (int base = t0 + 32 * warp; base < t1; base += 128)
        {
            if (base + 128 * (FAST_STAGES - 1) < t1) fast_v3_issue(myStages + wOff, kG, kpG, vG, vpG, kDst, vDst, lane);
            cp_async_commit();
            kG += 128 * (FAST_HD / 2); kpG += 128 * 4 * FAST_GROUPS; vG += 128 * (FAST_HD / 4); vpG += 128 * 4 * FAST_GROUPS;
            cp_async_wait<FAST_STAGES - 1>();
            __syncwarp();
            const u32 stAddr = myStages + rOff;
            const u8* st = myStagesGen + rOff;
            float s[2][4], p[2][4], ps[2];
            v3_scores(stAddr + kOff, st, fq, g, nNeg[0], nNeg[1], s);
            v3_reference(s, o, w, z, nNeg, lRun, firstStep);
            v3_exp(s, p, ps);
            firstStep = false;
            lRun[0] += ps[0];
            lRun[1] += ps[1];
            v3_pv(stAddr + vOff, st, p, o, w, z, g);
            __syncwarp();
#if FAST_STAGES == 3
            const u32 nr = 3 * FAST_STAGE_BYTES - rOff - wOff;  // the third stage
#else
            const u32 nr = rOff + FAST_STAGE_BYTES == FAST_STAGES * FAST_STAGE_BYTES ? 0u : rOff + FAST_STAGE_BYTES;
#endif
            wOff = rOff;
            rOff = nr;
        }
        cp_async_wait<0>();
        __syncthreads();  // every warp is done with the stages before they become the merge area
        // The reference; with no step this warp's partial weighs nothing.
        const float mRun[2] = {firstStep ? NEG_BIG : -nNeg[0], firstStep ? NEG_BIG : -nNeg[1]};

#pragma unroll
        for (int off = 4; off < 32; off <<= 1)
        {
            lRun[0] += __shfl_xor_sync(0xffffffffu, lRun[0], off);
            lRun[1] += __shfl_xor_sync(0xffffffffu, lRun[1], off);
#pragma unroll
            for (int grp = 0; grp < FAST_GROUPS; grp++)
            {
                z[grp][0] += __shfl_xor_sync(0xffffffffu, z[grp][0], off);
                z[grp][1] += __shfl_xor_sync(0xffffffffu, z[grp][1], off);
            }
        }
        const float invA[4] = {1.f / 16.f, 1.f / 16.f, 1.f / 256.f, 1.f / 64.f};
        const float invB[4] = {1.f / 64.f, 1.f / 64.f, 1.f / 16.f, 1.f / 256.f};
#pragma unroll
        for (int e = 0; e < 2; e++)
        {
            const int h = 2 * t + e;
            if (h < ratio)
            {
#pragma unroll
                for (int grp = 0; grp < FAST_GROUPS; grp++)
                {
#pragma unroll
                    for (int i = 0; i < 4; i++)
                    {
                        const int d = 64 * grp + 8 * g + 2 * i;
                        so[warp][h][d] = fmaf(o[4 * grp + i][e] - w[grp][e], invA[i], z[grp][e]);
                        so[warp][h][d + 1] = fmaf(o[4 * grp + i][2 + e] - w[grp][e], invB[i], z[grp][e]);
                    }
                }
                if (g == 0) { sml[warp][h][0] = mRun[e]; sml[warp][h][1] = lRun[e]; }
            }
        }
#elif FAST_FOLD
        const u32 myStages = smem_addr(&stages[warp][0][0]);
        const u32 kDst = (lane >> 2) * 64 + (((lane & 3) ^ ((lane >> 3) & 3)) << 4);
        const u32 vDst = (lane >> 1) * 32 + (((lane & 1) ^ ((lane >> 3) & 1)) << 4);
        const int li = lane >> 3, lr = lane & 7;  // ldmatrix: this lane addresses row lr of matrix li
        const u32 kOff = lr * 64 + ((li ^ ((lr >> 1) & 3)) << 4);
        const u32 vOff = 2304 + 256 * (li >> 1) + 32 * lr + (((li & 1) ^ ((lr >> 2) & 1)) << 4);
#pragma unroll
        for (int k = 0; k < FAST_STAGES - 1; k++)
        {
            int nb = t0 + 32 * warp + 128 * k;
            if (nb < t1) fold_issue(myStages + k * FAST_STAGE_BYTES, kc, kpar, vc, vpar, nb, lane, kDst, vDst);
            cp_async_commit();
        }
        // Q^T fragments of head g (zero for g >= ratio), pre-scaled by log2(e)/sqrt(D); dims 32 seg + 8 t + code.
        FoldQ fq;
        {
            const float* qrow = q + ((size_t)b * hqTotal + kvh * ratio + (g < ratio ? g : 0)) * HEAD_DIM;
            const float qs = g < ratio ? scaleLog2 : 0.f;
            float sum[2] = {0.f, 0.f};
#pragma unroll
            for (int seg = 0; seg < 4; seg++)
            {
#pragma unroll
                for (int e = 0; e < 2; e++)
                {
                    const int d = 32 * seg + 8 * t + 2 * e;
                    fq.b0[seg][e] = pack_h2(qrow[d] * qs, qrow[d + 4] * qs);
                    fq.b1[seg][e] = pack_h2(qrow[d + 1] * qs, qrow[d + 5] * qs);
                    sum[seg >> 1] += (h2f_lo(fq.b0[seg][e]) + h2f_hi(fq.b0[seg][e])) + (h2f_lo(fq.b1[seg][e]) + h2f_hi(fq.b1[seg][e]));
                }
            }
#pragma unroll
            for (int grp = 0; grp < 2; grp++)
            {
                sum[grp] += __shfl_xor_sync(0xffffffffu, sum[grp], 1);
                sum[grp] += __shfl_xor_sync(0xffffffffu, sum[grp], 2);
#pragma unroll
                for (int e = 0; e < 2; e++)
                {
                    fq.sig[grp][e] = __shfl_sync(0xffffffffu, sum[grp], 4 * (2 * t + e));
                    fq.init[grp][e] = -64.f * fq.sig[grp][e];
                }
            }
        }

        float o[8][4], w[2][4], z[2][2];
#pragma unroll
        for (int k = 0; k < 8; k++) { o[k][0] = 0.f; o[k][1] = 0.f; o[k][2] = 0.f; o[k][3] = 0.f; }
#pragma unroll
        for (int grp = 0; grp < 2; grp++) { w[grp][0] = 0.f; w[grp][1] = 0.f; w[grp][2] = 0.f; w[grp][3] = 0.f; z[grp][0] = 0.f; z[grp][1] = 0.f; }
        float mRun[2] = {NEG_BIG, NEG_BIG}, lRun[2] = {0.f, 0.f};
        int it = 0;
        for (int base = t0 + 32 * warp; base < t1; base += 128, it++)
        {
            int nb = base + 128 * (FAST_STAGES - 1);
            if (nb < t1) fold_issue(myStages + ((it + FAST_STAGES - 1) % FAST_STAGES) * FAST_STAGE_BYTES, kc, kpar, vc, vpar, nb, lane, kDst, vDst);
            cp_async_commit();
            cp_async_wait<FAST_STAGES - 1>();
            __syncwarp();
            const int sIdx = it % FAST_STAGES;
            const u32 stAddr = myStages + sIdx * FAST_STAGE_BYTES;
            fold_step(stAddr + kOff, stAddr + vOff, &stages[warp][sIdx][0], fq, o, w, z, mRun, lRun, g);
            __syncwarp();
        }
        cp_async_wait<0>();
        __syncthreads();  // every warp is done with the stages before they become the merge area

#pragma unroll
        for (int off = 4; off < 32; off <<= 1)
        {
            lRun[0] += __shfl_xor_sync(0xffffffffu, lRun[0], off);
            lRun[1] += __shfl_xor_sync(0xffffffffu, lRun[1], off);
#pragma unroll
            for (int grp = 0; grp < 2; grp++)
            {
                z[grp][0] += __shfl_xor_sync(0xffffffffu, z[grp][0], off);
                z[grp][1] += __shfl_xor_sync(0xffffffffu, z[grp][1], off);
            }
        }
        // 1/m of tile i's rows g (code 2i) and g + 8 (code 2i + 1).
        const float invA[4] = {1.f / 16.f, 1.f / 16.f, 1.f / 256.f, 1.f / 64.f};
        const float invB[4] = {1.f / 64.f, 1.f / 64.f, 1.f / 16.f, 1.f / 256.f};
#pragma unroll
        for (int e = 0; e < 2; e++)
        {
            const int h = 2 * t + e;
            if (h < ratio)
            {
#pragma unroll
                for (int grp = 0; grp < 2; grp++)
                {
#pragma unroll
                    for (int i = 0; i < 4; i++)
                    {
                        const int d = 64 * grp + 8 * g + 2 * i;
                        so[warp][h][d] = fmaf(o[4 * grp + i][e] - w[grp][e], invA[i], z[grp][e]);
                        so[warp][h][d + 1] = fmaf(o[4 * grp + i][2 + e] - w[grp][e], invB[i], z[grp][e]);
                    }
                }
                if (g == 0) { sml[warp][h][0] = mRun[e]; sml[warp][h][1] = lRun[e]; }
            }
        }
#else
#if FAST_CPASYNC
        const u32 myStages = smem_addr(&stages[warp][0][0]);
#pragma unroll
        for (int k = 0; k < FAST_STAGES - 1; k++)
        {
            int nb = t0 + 32 * warp + 128 * k;
            if (nb < t1) fast_issue(myStages + k * FAST_STAGE_BYTES, kc, kpar, vc, vpar, nb, lane);
            cp_async_commit();
        }
#endif
        // Q fragments (rows = query heads g < ratio), pre-scaled by log2(e)/sqrt(D).
        u32 qa0[8], qa2[8];  // B fragments of Q^T: b0 = Q[head g][slots 2t, 2t+1], b1 = slots 2t+8, 2t+9
        {
            const float* qrow = q + ((size_t)b * hqTotal + kvh * ratio + (g < ratio ? g : 0)) * HEAD_DIM;
#pragma unroll
            for (int j = 0; j < 8; j++)
            {
                if (g < ratio)
                {
                    qa0[j] = pack_h2(qrow[fast_q_dim(j, t, 0)] * scaleLog2, qrow[fast_q_dim(j, t, 1)] * scaleLog2);
                    qa2[j] = pack_h2(qrow[fast_q_dim(j, t, 8)] * scaleLog2, qrow[fast_q_dim(j, t, 9)] * scaleLog2);
                }
                else
                {
                    qa0[j] = 0u;
                    qa2[j] = 0u;
                }
            }
        }

        float o[8][4];
#pragma unroll
        for (int k = 0; k < 8; k++) { o[k][0] = 0.f; o[k][1] = 0.f; o[k][2] = 0.f; o[k][3] = 0.f; }
        float mRun[2] = {NEG_BIG, NEG_BIG}, lRun[2] = {0.f, 0.f};

#if FAST_CPASYNC
        int it = 0;
        for (int base = t0 + 32 * warp; base < t1; base += 128, it++)
        {
            int nb = base + 128 * (FAST_STAGES - 1);
            if (nb < t1) fast_issue(myStages + ((it + FAST_STAGES - 1) % FAST_STAGES) * FAST_STAGE_BYTES, kc, kpar, vc, vpar, nb, lane);
            cp_async_commit();
            cp_async_wait<FAST_STAGES - 1>();
            __syncwarp();
            const u8* st = &stages[warp][it % FAST_STAGES][0];
            FastRaw cur;
            fast_gather<true>(cur, st, (const u32*)(st + 2048), st + 2304, (const u32*)(st + 3328), g, t);
            fast_step(cur, qa0, qa2, o, mRun, lRun);
            __syncwarp();
        }
        cp_async_wait<0>();
        __syncthreads();  // every warp is done with the stages before they become the merge area
#else
        int base = t0 + 32 * warp;
        FastRaw cur;
        if (base < t1) fast_gather<false>(cur, kc + (size_t)base * 64, kpar + (size_t)base * 2, vc + (size_t)base * 32, vpar + (size_t)base * 2, g, t);
        for (; base < t1; base += 128)
        {
            FastRaw nxt;
            const bool more = base + 128 < t1;
            const int nb = base + 128;
            if (more) fast_gather<false>(nxt, kc + (size_t)nb * 64, kpar + (size_t)nb * 2, vc + (size_t)nb * 32, vpar + (size_t)nb * 2, g, t);
            fast_step(cur, qa0, qa2, o, mRun, lRun);
            if (more) cur = nxt;
        }
#endif

        // Sums of heads 2t, 2t+1 over the 8 lane groups, then the warp's partial into the merge area.
#pragma unroll
        for (int off = 4; off < 32; off <<= 1)
        {
            lRun[0] += __shfl_xor_sync(0xffffffffu, lRun[0], off);
            lRun[1] += __shfl_xor_sync(0xffffffffu, lRun[1], off);
        }
#pragma unroll
        for (int e = 0; e < 2; e++)
        {
            const int h = 2 * t + e;
            if (h < ratio)
            {
#pragma unroll
                for (int k = 0; k < 8; k++)
                {
                    so[warp][h][16 * g + 2 * k] = o[k][e];
                    so[warp][h][16 * g + 2 * k + 1] = o[k][2 + e];
                }
                if (g == 0) { sml[warp][h][0] = mRun[e]; sml[warp][h][1] = lRun[e]; }
            }
        }
#endif
    }
    __syncthreads();
    const int d = threadIdx.x;
    for (int h = 0; h < ratio && d < HEAD_DIM; h++)
    {
        float mx = fmaxf(fmaxf(sml[0][h][0], sml[1][h][0]), fmaxf(sml[2][h][0], sml[3][h][0]));
        float acc = 0.f, l = 0.f;
#pragma unroll
        for (int w = 0; w < 4; w++)
        {
            float wt = fast_exp2(sml[w][h][0] - mx);
            acc = fmaf(wt, so[w][h][d], acc);
            l = fmaf(wt, sml[w][h][1], l);
        }
        size_t slot = ((size_t)b * hqTotal + kvh * ratio + h) * totalSplits + split;
        partO[slot * HEAD_DIM + d] = acc;
        if (d == 0) { partML[slot * 2] = mx; partML[slot * 2 + 1] = l; }
    }

    // Fused combine (counters != null): the last block of this (batch, KV head) to finish merges all its splits.
    if (counters != nullptr)
    {
        __shared__ int sLast;
        __threadfence();
        __syncthreads();
        if (threadIdx.x == 0) sLast = atomicAdd(counters + bh, 1u) == (u32)(gridDim.x - 1);
        __syncthreads();
        if (sLast)
        {
            // All heads at once (the host keeps ratio * totalSplits within the merge area): warp w finds the split
            // weights of heads w, w + 4; then each thread sums its dimension of every head over the splits.
            __threadfence();
            __shared__ float sInvL[MAX_RATIO];
            float* sw = &so[0][0][0];  // [ratio][totalSplits]; the merge area is free again
            for (int h = warp; h < ratio; h += 4)
            {
                const float* ml = partML + ((size_t)b * hqTotal + kvh * ratio + h) * totalSplits * 2;
                float mx = NEG_BIG;
                for (int s = lane; s < totalSplits; s += 32) mx = fmaxf(mx, ld_cg(ml + 2 * s));
                for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
                float l = 0.f;
                for (int s = lane; s < totalSplits; s += 32)
                {
                    float w = exp2f(ld_cg(ml + 2 * s) - mx);
                    sw[h * totalSplits + s] = w;
                    l = fmaf(w, ld_cg(ml + 2 * s + 1), l);
                }
                for (int o = 16; o > 0; o >>= 1) l += __shfl_xor_sync(0xffffffffu, l, o);
                if (lane == 0) sInvL[h] = 1.f / l;
            }
            __syncthreads();
            const float* po = partO + ((size_t)b * hqTotal + kvh * ratio) * totalSplits * HEAD_DIM + d;
            float acc[MAX_RATIO];
            const int dRatio = d < HEAD_DIM ? ratio : 0;  // threads beyond the head dimension (head dim 64) idle
#pragma unroll
            for (int h = 0; h < MAX_RATIO; h++) acc[h] = 0.f;
            for (int s = 0; s < totalSplits; s++)
            {
#pragma unroll
                for (int h = 0; h < MAX_RATIO; h++)
                {
                    if (h < dRatio) acc[h] = fmaf(sw[h * totalSplits + s], ld_cg(po + ((size_t)h * totalSplits + s) * HEAD_DIM), acc[h]);
                }
            }
#pragma unroll
            for (int h = 0; h < MAX_RATIO; h++)
            {
                if (h < dRatio) out[((size_t)b * hqTotal + kvh * ratio + h) * HEAD_DIM + d] = acc[h] * sInvL[h];
            }
            if (threadIdx.x == 0) counters[bh] = 0u;
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Benchmark helpers: fill device memory with hashed bytes and valid (scale, min) pairs, never zeros.
// ---------------------------------------------------------------------------------------------------

__device__ __forceinline__ u32 hash_u32(u32 x)
{
    x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16;
    return x;
}

extern "C" __global__ void kvq_fill_bytes(u32* p, size_t words, u32 seed)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < words; i += (size_t)gridDim.x * blockDim.x)
        p[i] = hash_u32((u32)i * 2654435761u ^ seed);
}

// (scale in [0.02, 0.1), min in [-1, -0.5)) as half2.
extern "C" __global__ void kvq_fill_params(u32* p, size_t count, u32 seed)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
    {
        u32 h = hash_u32((u32)i * 2246822519u ^ seed);
        float s = 0.02f + 0.08f * (float)(h & 0xFFFF) / 65536.f;
        float m = -1.f + 0.5f * (float)(h >> 16) / 65536.f;
        p[i] = pack_h2(s, m);
    }
}

extern "C" __global__ void kvq_fill_halves(u16* p, size_t count, u32 seed)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
    {
        u32 h = hash_u32((u32)i * 3266489917u ^ seed);
        float x = ((float)(h & 0xFFFF) / 32768.f) - 1.f;
        p[i] = (u16)(pack_h2(x, 0.f) & 0xFFFF);
    }
}
