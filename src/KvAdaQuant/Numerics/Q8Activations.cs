namespace KvAdaQuant.Numerics;

/// <summary>
/// Activation vectors quantized to int8 in blocks of 32 with one scale each (ggml's x86 Q8_0 rule: d = max|x| / 127
/// rounded to FP16, q = x * (127 / max|x|) rounded half to even), the right-hand side of the Q8_0 and Q4_0 integer dot products.
/// Buffers grow on demand and are reused.
/// </summary>
public sealed class Q8Activations
{
    private sbyte[] _q = [];
    private float[] _d = [];
    private int[] _sums = [];

    /// <summary>Quantized values, [vectors, cols].</summary>
    public sbyte[] Values => _q;

    /// <summary>Block scales, [vectors, cols / 32].</summary>
    public float[] Scales => _d;

    /// <summary>Sum of the int8 values of each block, [vectors, cols / 32] (for K-quant minimums).</summary>
    public int[] Sums => _sums;

    /// <summary>Quantizes <paramref name="n"/> vectors of <paramref name="cols"/> floats (cols a multiple of 32).</summary>
    public void Quantize(ReadOnlySpan<float> x, int n, int cols)
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
            var q = _q.AsSpan(b * 32, 32);
            QuantizeBlock(x.Slice(b * 32, 32), q, out _d[b]);
            int s = 0;
            foreach (sbyte v in q)
            {
                s += v;
            }

            _sums[b] = s;
        }
    }

    /// <summary>
    /// One block of 32 as ggml's x86 quantize_row_q8_0 does it (the code llama.cpp runs here): multiplier 127 / max|x|,
    /// round half to even. (The C reference multiplies by 1 / d and rounds half away from zero; ties and the one-ulp
    /// difference of the multipliers flip a value now and then, which shows in the logits.)
    /// </summary>
    public static void QuantizeBlock(ReadOnlySpan<float> x, Span<sbyte> q, out float scale)
    {
        float amax = 0;
        for (int i = 0; i < 32; i++)
        {
            amax = MathF.Max(amax, MathF.Abs(x[i]));
        }

        float d = amax / 127f;
        float id = amax != 0 ? 127f / amax : 0f;
        for (int i = 0; i < 32; i++)
        {
            q[i] = (sbyte)MathF.Round(x[i] * id, MidpointRounding.ToEven);
        }

        scale = (float)(Half)d;
    }
}
