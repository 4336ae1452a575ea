using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace KvAdaQuant.Numerics;

/// <summary>Element-wise building blocks of the forward pass, over spans.</summary>
public static class Kernels
{
    /// <summary>o = x / sqrt(mean(x^2) + eps) * w; the sum of squares is accumulated in double, as ggml does.</summary>
    public static void RmsNorm(ReadOnlySpan<float> x, ReadOnlySpan<float> w, float eps, Span<float> o)
    {
        double sum = 0;
        foreach (float v in x)
        {
            sum += v * v;
        }

        float mean = (float)(sum / x.Length);
        float inv = 1f / MathF.Sqrt(mean + eps);
        TensorPrimitives.Multiply(x, inv, o);
        TensorPrimitives.Multiply(o, w, o);
    }

    /// <summary>
    /// Softmax in place, as ggml's CPU soft_max computes it (so that our logits can agree with llama.cpp's to the bit):
    /// the maximum is subtracted first (exp overflows above ~88 otherwise), exp is <see cref="GgmlArithmetic.Exp"/>,
    /// the values are summed in groups of 16 (a partial last group padded with zeros) by
    /// <see cref="GgmlArithmetic.Sum16(ReadOnlySpan{float})"/>, the group sums accumulated in double, and every value
    /// multiplied by (float)(1 / sum).
    /// </summary>
    public static void SoftMax(Span<float> x)
    {
        if (Vector256.IsHardwareAccelerated)
        {
            SoftMaxVector(x);
        }
        else
        {
            SoftMaxScalar(x);
        }
    }

    /// <summary>Scalar twin of <see cref="SoftMax"/>.</summary>
    public static void SoftMaxScalar(Span<float> x)
    {
        float max = Max(x);
        double sum = 0;
        for (int i = 0; i < x.Length; i += 16)
        {
            sum += ExpGroup(x.Slice(i, Math.Min(16, x.Length - i)), max);
        }

        TensorPrimitives.Multiply(x, (float)(1.0 / sum), x);
    }

    // One softmax group of up to 16 values, scalar: x = exp(x - max) in place, returning the group's Sum16 (missing
    // lanes zero).
    private static float ExpGroup(Span<float> group, float max)
    {
        Span<float> lanes = stackalloc float[16];
        lanes.Clear();
        for (int l = 0; l < group.Length; l++)
        {
            float e = GgmlArithmetic.Exp(group[l] - max);
            group[l] = e;
            lanes[l] = e;
        }

        return GgmlArithmetic.Sum16(lanes);
    }

    /// <summary>
    /// Vector path of <see cref="SoftMax"/>: each group of 16 as one Vector512 where 512-bit vectors are accelerated
    /// (else two Vector256), the maximum found by <see cref="MaxVector"/>; same bits as the scalar twin.
    /// </summary>
    public static void SoftMaxVector(Span<float> x)
    {
        if (Vector512.IsHardwareAccelerated && Avx512F.IsSupported)
        {
            SoftMaxVector512(x);
            return;
        }

        float max = Max(x);
        double sum = 0;
        var vmax = Vector256.Create(max);
        int i = 0;
        for (; i + 16 <= x.Length; i += 16)
        {
            ref float xr = ref MemoryMarshal.GetReference(x);
            var lo = GgmlArithmetic.Exp(Vector256.LoadUnsafe(ref xr, (nuint)i) - vmax);
            var hi = GgmlArithmetic.Exp(Vector256.LoadUnsafe(ref xr, (nuint)(i + 8)) - vmax);
            lo.StoreUnsafe(ref xr, (nuint)i);
            hi.StoreUnsafe(ref xr, (nuint)(i + 8));
            sum += GgmlArithmetic.Sum16(lo, hi);
        }

        if (i < x.Length)
        {
            sum += ExpGroup(x[i..], max);
        }

        TensorPrimitives.Multiply(x, (float)(1.0 / sum), x);
    }

    /// <summary>
    /// x = softmax(scale * x) in place, with the bits of <c>TensorPrimitives.Multiply(x, scale, x)</c> followed by
    /// <see cref="SoftMax"/>; on AVX-512 the scaling is fused into the maximum's pass (one pass over x fewer).
    /// </summary>
    public static void ScaledSoftMax(Span<float> x, float scale)
    {
        if (!(Vector512.IsHardwareAccelerated && Avx512F.IsSupported))
        {
            TensorPrimitives.Multiply(x, scale, x);
            SoftMax(x);
            return;
        }

        ref float xr = ref MemoryMarshal.GetReference(x);
        var vs = Vector512.Create(scale);
        var m = Vector512.Create(float.NegativeInfinity);
        int i = 0;
        for (; i + 16 <= x.Length; i += 16)
        {
            var v = Vector512.LoadUnsafe(ref xr, (nuint)i) * vs;
            v.StoreUnsafe(ref xr, (nuint)i);
            m = Avx512F.Max(v, m);
        }

        float max = float.NegativeInfinity;
        for (int l = 0; l < 16; l++)
        {
            float v = m.GetElement(l);
            max = v > max ? v : max;
        }

        for (; i < x.Length; i++)
        {
            float v = Unsafe.Add(ref xr, i) * scale;
            Unsafe.Add(ref xr, i) = v;
            max = v > max ? v : max;
        }

        SoftMaxVector512(x, max);
    }

    // SoftMaxVector with one 16-lane register per group: the same exp lane by lane and the same Sum16 tree (upper 8 +
    // lower 8 first), so the same bits.
    private static void SoftMaxVector512(Span<float> x) => SoftMaxVector512(x, MaxVector(x));

    private static void SoftMaxVector512(Span<float> x, float max)
    {
        double sum = 0;
        var vmax = Vector512.Create(max);
        ref float xr = ref MemoryMarshal.GetReference(x);
        int i = 0;
        for (; i + 64 <= x.Length; i += 64)
        {
            var e0 = GgmlArithmetic.Exp(Vector512.LoadUnsafe(ref xr, (nuint)i) - vmax);
            var e1 = GgmlArithmetic.Exp(Vector512.LoadUnsafe(ref xr, (nuint)(i + 16)) - vmax);
            var e2 = GgmlArithmetic.Exp(Vector512.LoadUnsafe(ref xr, (nuint)(i + 32)) - vmax);
            var e3 = GgmlArithmetic.Exp(Vector512.LoadUnsafe(ref xr, (nuint)(i + 48)) - vmax);
            e0.StoreUnsafe(ref xr, (nuint)i);
            e1.StoreUnsafe(ref xr, (nuint)(i + 16));
            e2.StoreUnsafe(ref xr, (nuint)(i + 32));
            e3.StoreUnsafe(ref xr, (nuint)(i + 48));
            var s = Sum16x4(e0, e1, e2, e3);
            sum += s.GetElement(0);
            sum += s.GetElement(4);
            sum += s.GetElement(8);
            sum += s.GetElement(12);
        }

        for (; i + 16 <= x.Length; i += 16)
        {
            var e = GgmlArithmetic.Exp(Vector512.LoadUnsafe(ref xr, (nuint)i) - vmax);
            e.StoreUnsafe(ref xr, (nuint)i);
            sum += GgmlArithmetic.Sum16(e.GetLower(), e.GetUpper());
        }

        if (i < x.Length)
        {
            sum += ExpGroup(x[i..], max);
        }

        TensorPrimitives.Multiply(x, (float)(1.0 / sum), x);
    }

    /// <summary>
    /// <see cref="GgmlArithmetic.Sum16(Vector256{float}, Vector256{float})"/> of four vectors at once, the same additions
    /// of the same operands (so the same bits): lane 4k holds the sum of v_k. Upper 8 + lower 8 as two vectors' halves
    /// side by side, upper 4 + lower 4 with the four vectors in the four 128-bit blocks, then (l0 + l2) + (l1 + l3)
    /// within each block: 7 shuffles and 5 additions for the four, where four trees take 8 extractions, 8 vector and 12
    /// scalar additions.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> Sum16x4(Vector512<float> v0, Vector512<float> v1, Vector512<float> v2, Vector512<float> v3)
    {
        // Blocks: lower 8 of v0 | lower 8 of v1, and the upper 8s: their sum holds t8 of v0 in lanes 0-7, of v1 in 8-15.
        var t01 = Avx512F.Shuffle4x128(v0, v1, 0b_11_10_11_10) + Avx512F.Shuffle4x128(v0, v1, 0b_01_00_01_00);
        var t23 = Avx512F.Shuffle4x128(v2, v3, 0b_11_10_11_10) + Avx512F.Shuffle4x128(v2, v3, 0b_01_00_01_00);

        // Block k: upper 4 + lower 4 of t8 of v_k.
        var t4 = Avx512F.Shuffle4x128(t01, t23, 0b_11_01_11_01) + Avx512F.Shuffle4x128(t01, t23, 0b_10_00_10_00);

        // Lanes 4k and 4k + 1: t4[0] + t4[2] and t4[1] + t4[3]; then lane 4k: their sum.
        var pairs = t4 + Avx512F.Permute4x32(t4, 0b_01_00_11_10);
        return pairs + Avx512F.Permute4x32(pairs, 0b_10_11_00_01);
    }

    /// <summary>
    /// The maximum as the scalar loop of <see cref="SoftMax"/> finds it (v &gt; max ? v : max from -infinity, so NaNs are
    /// skipped), 16 lanes at a time with <c>vmaxps</c> (which returns its second operand unless the first is greater:
    /// the same rule per lane), the lanes then combined by the same rule. Only the sign of a zero maximum can differ
    /// from the scalar order, and x - (+0) and x - (-0) have the same exp.
    /// </summary>
    public static float MaxVector(ReadOnlySpan<float> x)
    {
        ref float xr = ref MemoryMarshal.GetReference(x);
        int i = 0;
        float max = float.NegativeInfinity;
        if (Avx512F.IsSupported && x.Length >= 16)
        {
            var m0 = Vector512.Create(float.NegativeInfinity);
            var m1 = m0;
            for (; i + 32 <= x.Length; i += 32)
            {
                m0 = Avx512F.Max(Vector512.LoadUnsafe(ref xr, (nuint)i), m0);
                m1 = Avx512F.Max(Vector512.LoadUnsafe(ref xr, (nuint)(i + 16)), m1);
            }

            for (; i + 16 <= x.Length; i += 16)
            {
                m0 = Avx512F.Max(Vector512.LoadUnsafe(ref xr, (nuint)i), m0);
            }

            m0 = Avx512F.Max(m1, m0);
            for (int l = 0; l < 16; l++)
            {
                float v = m0.GetElement(l);
                max = v > max ? v : max;
            }
        }

        for (; i < x.Length; i++)
        {
            float v = Unsafe.Add(ref xr, i);
            max = v > max ? v : max;
        }

        return max;
    }

    private static float Max(ReadOnlySpan<float> x)
    {
        float max = float.NegativeInfinity;
        foreach (float v in x)
        {
            max = v > max ? v : max;
        }

        return max;
    }

    /// <summary>
    /// g = silu(g) * u, in place on <paramref name="gate"/>, row by row (<paramref name="rowLength"/> values each), as
    /// ggml's swiglu: the first multiple of 16 of each row uses <see cref="GgmlArithmetic.Silu"/> (its vectorized exp),
    /// the rest of the row the C library's expf.
    /// </summary>
    public static void SwiGlu(Span<float> gate, ReadOnlySpan<float> up, int rowLength)
    {
        if (rowLength <= 0 || gate.Length % rowLength != 0 || up.Length < gate.Length)
        {
            throw new ArgumentException($"{gate.Length} gate values are not whole rows of {rowLength} (up has {up.Length})");
        }

        for (int r = 0; r < gate.Length; r += rowLength)
        {
            SwiGlu(gate.Slice(r, rowLength), up.Slice(r, rowLength));
        }
    }

    /// <summary>g = silu(g) * u, in place on <paramref name="gate"/>, as one row of ggml's swiglu (see the overload with rows).</summary>
    public static void SwiGlu(Span<float> gate, ReadOnlySpan<float> up)
    {
        int n = gate.Length;
        int vec = n & ~15;
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            ref float gr = ref MemoryMarshal.GetReference(gate);
            ref float ur = ref MemoryMarshal.GetReference(up);
            for (; i < vec; i += 8)
            {
                (GgmlArithmetic.Silu(Vector256.LoadUnsafe(ref gr, (nuint)i)) * Vector256.LoadUnsafe(ref ur, (nuint)i)).StoreUnsafe(ref gr, (nuint)i);
            }
        }

        for (; i < vec; i++)
        {
            gate[i] = GgmlArithmetic.Silu(gate[i]) * up[i];
        }

        for (; i < n; i++)
        {
            float g = gate[i];
            gate[i] = g / (1f + MathF.Exp(-g)) * up[i];
        }
    }

    /// <summary>
    /// Rotates each head of <paramref name="v"/> (heads x headDim) by the angles in cos/sin (headDim/2 each):
    /// x0' = x0 cos - x1 sin and x1' = x0 sin + x1 cos, each with the first product fused into the add, as the compiled
    /// ggml rope kernel rounds.
    /// </summary>
    public static void Rope(Span<float> v, int headDim, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin, bool interleaved)
    {
        int half = headDim / 2;
        for (int h = 0; h < v.Length; h += headDim)
        {
            var x = v.Slice(h, headDim);
            for (int i = 0; i < half; i++)
            {
                int a = interleaved ? 2 * i : i;
                int b = interleaved ? (2 * i) + 1 : i + half;
                float x0 = x[a], x1 = x[b];
                x[a] = MathF.FusedMultiplyAdd(x0, cos[i], -(x1 * sin[i]));
                x[b] = MathF.FusedMultiplyAdd(x0, sin[i], x1 * cos[i]);
            }
        }
    }
}
