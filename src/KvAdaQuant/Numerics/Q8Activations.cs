using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace KvAdaQuant.Numerics;

/// <summary>
/// Activation vectors quantized to int8 in blocks of 32 with one scale each, the right-hand side of the Q8_0 and Q4_0
/// integer dot products, by the rule llama.cpp's CPU backend applies on x86 (quantize_row_q8_0's AVX path): amax =
/// max |x|, d = amax / 127 stored as FP16, q = round-half-to-even(x * (127 / amax)). Buffers grow on demand and are
/// reused. The vector path and its scalar twin (<see cref="QuantizeBlock"/>) give identical bytes.
/// </summary>
public sealed class Q8Activations
{
    private sbyte[] _q = [];
    private float[] _d = [];
    private int[] _sums = [];
    private float[] _s1 = [];

    /// <summary>Quantized values, [vectors, cols].</summary>
    public sbyte[] Values => _q;

    /// <summary>Block scales, [vectors, cols / 32].</summary>
    public float[] Scales => _d;

    /// <summary>Sum of the int8 values of each block, [vectors, cols / 32] (for K-quant minimums and Q4_0's offset).</summary>
    public int[] Sums => _sums;

    /// <summary>Quantizes <paramref name="n"/> vectors of <paramref name="cols"/> floats (cols a multiple of 32).</summary>
    public void Quantize(ReadOnlySpan<float> x, int n, int cols) => Quantize(x, n, cols, Vector256.IsHardwareAccelerated);

    /// <summary>As <see cref="Quantize(ReadOnlySpan{float}, int, int)"/>, choosing the vector path or its scalar twin.</summary>
    public void Quantize(ReadOnlySpan<float> x, int n, int cols, bool vector)
    {
        if (cols % 32 != 0)
        {
            throw new ArgumentException($"row length {cols} is not a multiple of 32");
        }

        if (_q.Length < n * cols)
        {
            _q = new sbyte[n * cols];
            _d = new float[n * cols / 32];
            _sums = new int[n * cols / 32];
        }

        int blocks = n * cols / 32;
        for (int b = 0; b < blocks; b++)
        {
            var src = x.Slice(b * 32, 32);
            var q = _q.AsSpan(b * 32, 32);
            if (vector)
            {
                _sums[b] = QuantizeBlockVector(src, q, out _d[b]);
            }
            else
            {
                QuantizeBlock(src, q, out _d[b]);
                int s = 0;
                foreach (sbyte v in q)
                {
                    s += v;
                }

                _sums[b] = s;
            }
        }
    }

    /// <summary>
    /// The FP16 "s" field llama.cpp's Q8_1 activations carry for Q4_1 / Q5_1 products (quantize_row_q8_1): per block of 32,
    /// s = FP16(d x sum of the int8 values) with d = max |x| / 127 unrounded (the stored scale is d rounded to FP16, which
    /// Q8_1 shares with Q8_0), as a float; [vectors, cols / 32]. Call after <see cref="Quantize(ReadOnlySpan{float}, int, int)"/>
    /// with the same input.
    /// </summary>
    public float[] Q8_1Sums(ReadOnlySpan<float> x, int n, int cols)
    {
        int blocks = n * cols / 32;
        if (_s1.Length < blocks)
        {
            _s1 = new float[blocks];
        }

        for (int b = 0; b < blocks; b++)
        {
            var src = x.Slice(b * 32, 32);
            float amax = 0;
            for (int i = 0; i < 32; i++)
            {
                amax = MathF.Max(amax, MathF.Abs(src[i]));
            }

            _s1[b] = (float)(Half)(amax / 127f * _sums[b]);
        }

        return _s1;
    }

    /// <summary>One block of 32 (scalar twin of the vector path).</summary>
    public static void QuantizeBlock(ReadOnlySpan<float> x, Span<sbyte> q, out float scale)
    {
        float amax = 0;
        for (int i = 0; i < 32; i++)
        {
            amax = MathF.Max(amax, MathF.Abs(x[i]));
        }

        float id = amax != 0 ? 127f / amax : 0f;
        for (int i = 0; i < 32; i++)
        {
            q[i] = (sbyte)MathF.Round(x[i] * id, MidpointRounding.ToEven);
        }

        scale = (float)(Half)(amax / 127f);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int QuantizeBlockVector(ReadOnlySpan<float> x, Span<sbyte> q, out float scale)
    {
        var v0 = Vector256.Create(x[..8]);
        var v1 = Vector256.Create(x.Slice(8, 8));
        var v2 = Vector256.Create(x.Slice(16, 8));
        var v3 = Vector256.Create(x.Slice(24, 8));
        var m = Vector256.Max(Vector256.Max(Vector256.Abs(v0), Vector256.Abs(v1)), Vector256.Max(Vector256.Abs(v2), Vector256.Abs(v3)));
        var m4 = Vector128.Max(m.GetLower(), m.GetUpper());
        float amax = MathF.Max(MathF.Max(m4[0], m4[1]), MathF.Max(m4[2], m4[3]));
        var id = Vector256.Create(amax != 0 ? 127f / amax : 0f);
        var i0 = Vector256.ConvertToInt32(Vector256.Round(v0 * id));
        var i1 = Vector256.ConvertToInt32(Vector256.Round(v1 * id));
        var i2 = Vector256.ConvertToInt32(Vector256.Round(v2 * id));
        var i3 = Vector256.ConvertToInt32(Vector256.Round(v3 * id));
        Vector256.Narrow(Vector256.Narrow(i0, i1), Vector256.Narrow(i2, i3)).CopyTo(q);
        scale = (float)(Half)(amax / 127f);
        return Vector256.Sum((i0 + i1) + (i2 + i3));
    }
}
