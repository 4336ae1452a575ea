using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace KvAdaQuant.Numerics;

/// <summary>
/// Dot products of one Q8_0 or Q4_0 weight row with activations quantized to int8 blocks of 32
/// (<see cref="Q8Activations"/>), as llama.cpp's vec_dot_q8_0_q8_0 / vec_dot_q4_0_q8_0: integer products
/// per block, scaled by the two block scales. Each has a scalar twin; the AVX2 path uses VNNI
/// (vpdpbusd) when present, else maddubs + madd.
/// </summary>
public static unsafe class QuantizedDot
{
    /// <summary>True when the vector path runs on this machine.</summary>
    public static bool VectorPathSupported => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>Q8_0 row (blocks of 34 bytes) · int8 activations.</summary>
    public static float DotQ8_0(byte* row, sbyte* xq, float* xd, int blocks)
        => VectorPathSupported ? DotQ8_0Avx2(row, xq, xd, blocks) : DotQ8_0Scalar(row, xq, xd, blocks);

    /// <summary>Q4_0 row (blocks of 18 bytes) · int8 activations.</summary>
    public static float DotQ4_0(byte* row, sbyte* xq, float* xd, int blocks)
        => VectorPathSupported ? DotQ4_0Avx2(row, xq, xd, blocks) : DotQ4_0Scalar(row, xq, xd, blocks);

    /// <summary>Scalar twin of <see cref="DotQ8_0"/>.</summary>
    public static float DotQ8_0Scalar(byte* row, sbyte* xq, float* xd, int blocks)
    {
        float sum = 0;
        for (int b = 0; b < blocks; b++)
        {
            byte* blk = row + (b * 34);
            sbyte* w = (sbyte*)(blk + 2);
            sbyte* x = xq + (b * 32);
            int s = 0;
            for (int i = 0; i < 32; i++)
            {
                s += w[i] * x[i];
            }

            sum += s * ((float)*(Half*)blk * xd[b]);
        }

        return sum;
    }

    /// <summary>Scalar twin of <see cref="DotQ4_0"/>.</summary>
    public static float DotQ4_0Scalar(byte* row, sbyte* xq, float* xd, int blocks)
    {
        float sum = 0;
        for (int b = 0; b < blocks; b++)
        {
            byte* blk = row + (b * 18);
            byte* qs = blk + 2;
            sbyte* x = xq + (b * 32);
            int s = 0;
            for (int i = 0; i < 16; i++)
            {
                s += (((qs[i] & 0x0F) - 8) * x[i]) + (((qs[i] >> 4) - 8) * x[i + 16]);
            }

            sum += s * ((float)*(Half*)blk * xd[b]);
        }

        return sum;
    }

    /// <summary>AVX2 (+VNNI) path of <see cref="DotQ8_0"/>.</summary>
    public static float DotQ8_0Avx2(byte* row, sbyte* xq, float* xd, int blocks)
    {
        var acc = Vector256<float>.Zero;
        for (int b = 0; b < blocks; b++)
        {
            byte* blk = row + (b * 34);
            var w = Avx.LoadVector256((sbyte*)(blk + 2));
            var x = Avx.LoadVector256(xq + (b * 32));
            var p = DotBlock(w, x);
            float scale = (float)*(Half*)blk * xd[b];
            acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(p), Vector256.Create(scale), acc);
        }

        return Vector256.Sum(acc);
    }

    /// <summary>AVX2 (+VNNI) path of <see cref="DotQ4_0"/>.</summary>
    public static float DotQ4_0Avx2(byte* row, sbyte* xq, float* xd, int blocks)
    {
        var acc = Vector256<float>.Zero;
        var low = Vector128.Create((byte)0x0F);
        var eight = Vector256.Create((sbyte)8);
        for (int b = 0; b < blocks; b++)
        {
            byte* blk = row + (b * 18);
            var q = Sse2.LoadVector128(blk + 2);
            var lo = Sse2.And(q, low);
            var hi = Sse2.And(Sse2.ShiftRightLogical(q.AsUInt16(), 4).AsByte(), low);
            var w = Avx2.Subtract(Vector256.Create(lo, hi).AsSByte(), eight);
            var x = Avx.LoadVector256(xq + (b * 32));
            var p = DotBlock(w, x);
            float scale = (float)*(Half*)blk * xd[b];
            acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(p), Vector256.Create(scale), acc);
        }

        return Vector256.Sum(acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> DotBlock(Vector256<sbyte> w, Vector256<sbyte> x)
    {
        // |w| as unsigned times x with w's sign: the unsigned-by-signed product that vpdpbusd / vpmaddubsw need.
        var aw = Avx2.Abs(w);
        var sx = Avx2.Sign(x, w);
        if (AvxVnni.IsSupported)
        {
            return AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, aw, sx);
        }

        var pairs = Avx2.MultiplyAddAdjacent(aw, sx);
        return Avx2.MultiplyAddAdjacent(pairs, Vector256.Create((short)1));
    }
}
