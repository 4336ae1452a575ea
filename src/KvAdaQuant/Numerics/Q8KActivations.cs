using System.Runtime.Intrinsics;

namespace KvAdaQuant.Numerics;

/// <summary>
/// Activation vectors quantized to int8 in blocks of 256 with one float scale each, the right-hand side of the Q4_K and
/// Q6_K integer dot products (<see cref="KQuantDot"/>), by llama.cpp's rule (quantize_row_q8_K): max = the first value of
/// largest magnitude, iscale = -127 / max, q = min(127, round-half-to-even(iscale * x)), d = 1 / iscale, and the sum of
/// each 16 values. Buffers grow on demand and are reused. The vector path and its scalar twin
/// (<see cref="QuantizeBlock"/>) give identical bytes.
/// </summary>
public sealed class Q8KActivations
{
    private sbyte[] _q = [];
    private float[] _d = [];
    private short[] _sums = [];
    private int[] _pairs16 = [];
    private int[] _pairs32 = [];

    /// <summary>Quantized values, [vectors, cols].</summary>
    public sbyte[] Values => _q;

    /// <summary>Block scales, [vectors, cols / 256].</summary>
    public float[] Scales => _d;

    /// <summary>Sum of each 16 int8 values, [vectors, cols / 16].</summary>
    public short[] Sums16 => _sums;

    /// <summary>
    /// The 16-value sums b_k (k = 0..15) of each block paired for 16-bit multiply-adds against lanes holding two
    /// sub-block scales: [vectors, cols / 256 * 8], entry 2v of a block (b_4v, b_4v+2), entry 2v + 1 (b_4v+1, b_4v+3),
    /// each pair one int with the first sum in its low 16 bits (<see cref="KQuantRowGroupDot"/>'s Q6_K offsets).
    /// </summary>
    public int[] Sums16Pairs => _pairs16;

    /// <summary>
    /// The 32-value sums B_j = b_2j + b_2j+1 (j = 0..7) of each block paired the same way: [vectors, cols / 256 * 4],
    /// entries (B_0, B_2), (B_1, B_3), (B_4, B_6), (B_5, B_7) (<see cref="KQuantRowGroupDot"/>'s Q4_K minimums).
    /// </summary>
    public int[] Sums32Pairs => _pairs32;

    /// <summary>Quantizes <paramref name="n"/> vectors of <paramref name="cols"/> floats (cols a multiple of 256).</summary>
    public void Quantize(ReadOnlySpan<float> x, int n, int cols) => Quantize(x, n, cols, Vector256.IsHardwareAccelerated);

    /// <summary>As <see cref="Quantize(ReadOnlySpan{float}, int, int)"/>, choosing the vector path or its scalar twin.</summary>
    public void Quantize(ReadOnlySpan<float> x, int n, int cols, bool vector)
    {
        if (cols % 256 != 0)
        {
            throw new ArgumentException($"row length {cols} is not a multiple of 256 (K-quant super-blocks)");
        }

        if (_q.Length < n * cols)
        {
            _q = new sbyte[n * cols];
            _d = new float[n * cols / 256];
            _sums = new short[n * cols / 16];
            _pairs16 = new int[n * cols / 32];
            _pairs32 = new int[n * cols / 64];
        }

        int blocks = n * cols / 256;
        for (int b = 0; b < blocks; b++)
        {
            var src = x.Slice(b * 256, 256);
            var q = _q.AsSpan(b * 256, 256);
            var sums = _sums.AsSpan(b * 16, 16);
            if (vector)
            {
                _d[b] = QuantizeBlockVector(src, q, sums);
            }
            else
            {
                _d[b] = QuantizeBlock(src, q, sums);
            }

            PairSums(sums, _pairs16.AsSpan(b * 8, 8), _pairs32.AsSpan(b * 4, 4));
        }
    }

    private static int Pair(int low, int high) => (ushort)(short)low | (high << 16);

    private static void PairSums(ReadOnlySpan<short> b, Span<int> pairs16, Span<int> pairs32)
    {
        for (int v = 0; v < 4; v++)
        {
            pairs16[2 * v] = Pair(b[4 * v], b[(4 * v) + 2]);
            pairs16[(2 * v) + 1] = Pair(b[(4 * v) + 1], b[(4 * v) + 3]);
        }

        Span<int> s32 = stackalloc int[8];
        for (int j = 0; j < 8; j++)
        {
            s32[j] = b[2 * j] + b[(2 * j) + 1];
        }

        pairs32[0] = Pair(s32[0], s32[2]);
        pairs32[1] = Pair(s32[1], s32[3]);
        pairs32[2] = Pair(s32[4], s32[6]);
        pairs32[3] = Pair(s32[5], s32[7]);
    }

    /// <summary>One block of 256 (scalar twin of the vector path); returns its scale.</summary>
    public static float QuantizeBlock(ReadOnlySpan<float> x, Span<sbyte> q, Span<short> sums)
    {
        float max = 0, amax = 0;
        for (int i = 0; i < 256; i++)
        {
            float ax = MathF.Abs(x[i]);
            if (ax > amax)
            {
                amax = ax;
                max = x[i];
            }
        }

        if (amax == 0)
        {
            q[..256].Clear();
            sums[..16].Clear();
            return 0;
        }

        float iscale = -127f / max;
        for (int i = 0; i < 256; i++)
        {
            q[i] = (sbyte)Math.Min(127, (int)MathF.Round(iscale * x[i], MidpointRounding.ToEven));
        }

        for (int s = 0; s < 16; s++)
        {
            int sum = 0;
            for (int i = 0; i < 16; i++)
            {
                sum += q[(s * 16) + i];
            }

            sums[s] = (short)sum;
        }

        return 1 / iscale;
    }

    private static float QuantizeBlockVector(ReadOnlySpan<float> x, Span<sbyte> q, Span<short> sums)
    {
        var m = Vector256<float>.Zero;
        for (int i = 0; i < 256; i += 8)
        {
            m = Vector256.Max(m, Vector256.Abs(Vector256.Create(x.Slice(i, 8))));
        }

        var m4 = Vector128.Max(m.GetLower(), m.GetUpper());
        float amax = MathF.Max(MathF.Max(m4[0], m4[1]), MathF.Max(m4[2], m4[3]));
        if (amax == 0 || float.IsNaN(amax))
        {
            // (NaN: the scalar rule, whose comparisons skip NaN, decides.)
            return QuantizeBlock(x, q, sums);
        }

        // the first value of largest magnitude, as the scalar rule keeps it
        int at = 0;
        while (MathF.Abs(x[at]) != amax)
        {
            at++;
        }

        var iscale = Vector256.Create(-127f / x[at]);
        var limit = Vector256.Create(127);
        for (int i = 0; i < 256; i += 32)
        {
            var i0 = Vector256.Min(Vector256.ConvertToInt32(Vector256.Round(iscale * Vector256.Create(x.Slice(i, 8)))), limit);
            var i1 = Vector256.Min(Vector256.ConvertToInt32(Vector256.Round(iscale * Vector256.Create(x.Slice(i + 8, 8)))), limit);
            var i2 = Vector256.Min(Vector256.ConvertToInt32(Vector256.Round(iscale * Vector256.Create(x.Slice(i + 16, 8)))), limit);
            var i3 = Vector256.Min(Vector256.ConvertToInt32(Vector256.Round(iscale * Vector256.Create(x.Slice(i + 24, 8)))), limit);
            Vector256.Narrow(Vector256.Narrow(i0, i1), Vector256.Narrow(i2, i3)).CopyTo(q.Slice(i, 32));
            sums[i / 16] = (short)Vector256.Sum(i0 + i1);
            sums[(i / 16) + 1] = (short)Vector256.Sum(i2 + i3);
        }

        return 1 / (-127f / x[at]);
    }
}
