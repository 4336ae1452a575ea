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

    /// <summary>Quantized values, [vectors, cols].</summary>
    public sbyte[] Values => _q;

    /// <summary>Block scales, [vectors, cols / 256].</summary>
    public float[] Scales => _d;

    /// <summary>Sum of each 16 int8 values, [vectors, cols / 16].</summary>
    public short[] Sums16 => _sums;

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
        }
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
