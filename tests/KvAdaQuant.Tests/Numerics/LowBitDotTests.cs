using KvAdaQuant.Numerics;

namespace KvAdaQuant.Tests.Numerics;

/// <summary>
/// The Q2_K, Q3_K and IQ4_XS dot products with Q8_K activations and the IQ4_NL one with Q8_0 activations: each AVX2 path
/// equals its scalar twin bit for bit for 1-4 tokens, a token gives the same bits alone and in a batch, the result is close
/// to the float product of the dequantized weights (<see cref="RowDequantizer"/>, whose layouts have their own tests) and
/// the activations, and the integer sums stay exact at the extreme codes.
/// </summary>
public unsafe class LowBitDotTests
{
    public enum Kind
    {
        Q2_K,
        Q3_K,
        Iq4_XS,
        Iq4_NL,
    }

    private static (GgmlType Type, int BlockBytes, int BlockElements) Geometry(Kind kind) => kind switch
    {
        Kind.Q2_K => (GgmlType.Q2_K, 84, 256),
        Kind.Q3_K => (GgmlType.Q3_K, 110, 256),
        Kind.Iq4_XS => (GgmlType.IQ4_XS, 136, 256),
        _ => (GgmlType.IQ4_NL, 18, 32),
    };

    // Random blocks with finite, small FP16 scales at the kind's offsets.
    private static byte[] RandomBlocks(Kind kind, Random rng, int count)
    {
        var (_, bytes, _) = Geometry(kind);
        var data = new byte[count * bytes];
        rng.NextBytes(data);
        fixed (byte* p = data)
        {
            for (int b = 0; b < count; b++)
            {
                byte* blk = p + (b * bytes);
                var d = (Half)(float)((rng.NextDouble() * 0.01) + 0.001);
                switch (kind)
                {
                    case Kind.Q2_K:
                        *(Half*)(blk + 80) = d;
                        *(Half*)(blk + 82) = (Half)(float)(rng.NextDouble() * 0.01);
                        break;
                    case Kind.Q3_K:
                        *(Half*)(blk + 108) = d;
                        break;
                    default:
                        *(Half*)blk = d;
                        break;
                }
            }
        }

        return data;
    }

    private static void Run(Kind kind, bool vector, byte* w, int blocks, int tokens, Q8KActivations k, Q8Activations q, float* output, long stride, int tokenOffset = 0)
    {
        if (kind == Kind.Iq4_NL)
        {
            fixed (sbyte* pq = q.Values)
            fixed (float* pd = q.Scales)
            {
                sbyte* x = pq + ((long)tokenOffset * blocks * 32);
                float* d = pd + ((long)tokenOffset * blocks);
                if (vector)
                {
                    LowBitDot.DotIq4_NLAvx2(w, blocks, tokens, x, d, output, stride);
                }
                else
                {
                    LowBitDot.DotIq4_NLScalar(w, blocks, tokens, x, d, output, stride);
                }
            }

            return;
        }

        fixed (sbyte* pq = k.Values)
        fixed (float* pd = k.Scales)
        fixed (short* ps = k.Sums16)
        {
            sbyte* x = pq + ((long)tokenOffset * blocks * 256);
            float* d = pd + ((long)tokenOffset * blocks);
            short* s = ps + ((long)tokenOffset * blocks * 16);
            switch (kind, vector)
            {
                case (Kind.Q2_K, true):
                    LowBitDot.DotQ2_KAvx2(w, blocks, tokens, x, d, s, output, stride);
                    break;
                case (Kind.Q2_K, false):
                    LowBitDot.DotQ2_KScalar(w, blocks, tokens, x, d, s, output, stride);
                    break;
                case (Kind.Q3_K, true):
                    LowBitDot.DotQ3_KAvx2(w, blocks, tokens, x, d, s, output, stride);
                    break;
                case (Kind.Q3_K, false):
                    LowBitDot.DotQ3_KScalar(w, blocks, tokens, x, d, s, output, stride);
                    break;
                case (_, true):
                    LowBitDot.DotIq4_XSAvx2(w, blocks, tokens, x, d, output, stride);
                    break;
                default:
                    LowBitDot.DotIq4_XSScalar(w, blocks, tokens, x, d, output, stride);
                    break;
            }
        }
    }

    [Theory]
    [InlineData(Kind.Q2_K, 1)]
    [InlineData(Kind.Q2_K, 4)]
    [InlineData(Kind.Q3_K, 1)]
    [InlineData(Kind.Q3_K, 3)]
    [InlineData(Kind.Q3_K, 4)]
    [InlineData(Kind.Iq4_XS, 2)]
    [InlineData(Kind.Iq4_XS, 4)]
    [InlineData(Kind.Iq4_NL, 1)]
    [InlineData(Kind.Iq4_NL, 4)]
    public void VectorPathEqualsScalarTwinBitForBit_BatchEqualsSingleTokens_CloseToFloat(Kind kind, int tokens)
    {
        var rng = new Random((int)kind * 10 + tokens);
        var (type, _, blockElements) = Geometry(kind);
        // IQ4_NL: three groups of eight blocks and a tail of five
        int blocks = kind == Kind.Iq4_NL ? 29 : 3, cols = blocks * blockElements;
        var w = RandomBlocks(kind, rng, blocks);
        var deq = new float[cols];
        RowDequantizer.Dequantize(type, w, deq);
        var x = Enumerable.Range(0, tokens * cols).Select(_ => (float)((rng.NextDouble() * 2) - 1)).ToArray();
        var k = new Q8KActivations();
        var q = new Q8Activations();
        if (kind == Kind.Iq4_NL)
        {
            q.Quantize(x, tokens, cols);
        }
        else
        {
            k.Quantize(x, tokens, cols);
        }

        var batch = new float[tokens * 3];
        var single = new float[tokens];
        var vectorBatch = new float[tokens * 3];
        fixed (byte* pw = w)
        fixed (float* pb = batch)
        fixed (float* p1 = single)
        fixed (float* pv = vectorBatch)
        {
            Run(kind, false, pw, blocks, tokens, k, q, pb, 3);
            for (int t = 0; t < tokens; t++)
            {
                Run(kind, false, pw, blocks, 1, k, q, p1 + t, 1, t);
            }

            if (LowBitDot.VectorPathSupported)
            {
                Run(kind, true, pw, blocks, tokens, k, q, pv, 3);
            }
        }

        for (int t = 0; t < tokens; t++)
        {
            double exact = 0, norm = 0;
            for (int i = 0; i < cols; i++)
            {
                exact += deq[i] * x[(t * cols) + i];
                norm += Math.Abs(deq[i] * x[(t * cols) + i]);
            }

            // Only the activations are rounded (to 8 bits with a scale per block): well within 2 % of sum |w x|.
            Assert.True(Math.Abs(batch[t * 3] - exact) <= 0.02 * norm, $"{kind} token {t}: {batch[t * 3]} vs float {exact} (sum |w x| {norm})");
            Assert.Equal(BitConverter.SingleToInt32Bits(single[t]), BitConverter.SingleToInt32Bits(batch[t * 3]));
            if (LowBitDot.VectorPathSupported)
            {
                Assert.Equal(BitConverter.SingleToInt32Bits(batch[t * 3]), BitConverter.SingleToInt32Bits(vectorBatch[t * 3]));
            }
        }
    }

    [Theory]
    [InlineData(Kind.Q2_K)]
    [InlineData(Kind.Q3_K)]
    [InlineData(Kind.Iq4_XS)]
    [InlineData(Kind.Iq4_NL)]
    public void ExtremeCodes_IntegerSumsStayExact(Kind kind)
    {
        // The largest products each format holds, against activations all at -127 or 127: Q2_K code 3 with scale 15 and min 15;
        // Q3_K value -4 (code 0, high bit clear) with scale -32; IQ4 level -127 (code 0) with IQ4_XS scale -32.
        var (type, bytes, blockElements) = Geometry(kind);
        var w = new byte[bytes];
        switch (kind)
        {
            case Kind.Q2_K:
                Array.Fill(w, (byte)0xFF, 0, 80);
                BitConverter.TryWriteBytes(w.AsSpan(80), (Half)1f);
                BitConverter.TryWriteBytes(w.AsSpan(82), (Half)0.5f);
                break;
            case Kind.Q3_K:
                // scales all 0 (value -32), hmask and codes all 0 (value -4)
                BitConverter.TryWriteBytes(w.AsSpan(108), (Half)1f);
                break;
            case Kind.Iq4_XS:
                BitConverter.TryWriteBytes(w.AsSpan(0), (Half)1f);
                break;
            default:
                BitConverter.TryWriteBytes(w.AsSpan(0), (Half)1f);
                break;
        }

        var deq = new float[blockElements];
        RowDequantizer.Dequantize(type, w, deq);
        var x = Enumerable.Range(0, blockElements).Select(i => i == 0 ? 1f : -1f).ToArray();
        var k = new Q8KActivations();
        var q = new Q8Activations();
        if (blockElements == 256)
        {
            k.Quantize(x, 1, 256);
            Assert.All(k.Values[1..256], v => Assert.Equal(127, (int)v));
        }
        else
        {
            q.Quantize(x, 1, 32);
        }

        float scalar = 0, vector = 0;
        fixed (byte* pw = w)
        {
            Run(kind, false, pw, 1, 1, k, q, &scalar, 1);
            if (LowBitDot.VectorPathSupported)
            {
                Run(kind, true, pw, 1, 1, k, q, &vector, 1);
                Assert.Equal(scalar, vector);
            }
        }

        // exact: the dequantized weights times the quantized activations, in doubles
        var values = blockElements == 256 ? k.Values : q.Values;
        float scale = blockElements == 256 ? k.Scales[0] : q.Scales[0];
        double exact = 0;
        for (int i = 0; i < blockElements; i++)
        {
            exact += (double)deq[i] * values[i] * scale;
        }

        Assert.True(Math.Abs(exact - scalar) <= 1e-6 * Math.Abs(exact), $"{kind}: {scalar} vs {exact}");
    }

    [Theory]
    [InlineData(false, 1)]
    [InlineData(false, 4)]
    [InlineData(true, 1)]
    [InlineData(true, 3)]
    public void Q4_1AndQ5_1VectorPathEqualsScalarTwin_BatchEqualsSingleTokens_CloseToFloat(bool fiveBit, int tokens)
    {
        var rng = new Random((fiveBit ? 50 : 40) + tokens);
        int bytes = fiveBit ? 24 : 20, blocks = 13, cols = blocks * 32;
        var w = new byte[blocks * bytes];
        rng.NextBytes(w);
        for (int b = 0; b < blocks; b++)
        {
            BitConverter.TryWriteBytes(w.AsSpan(b * bytes), (Half)(float)((rng.NextDouble() * 0.01) + 0.001));
            BitConverter.TryWriteBytes(w.AsSpan((b * bytes) + 2), (Half)(float)((rng.NextDouble() * 0.1) - 0.05));
        }

        var deq = new float[cols];
        RowDequantizer.Dequantize(fiveBit ? GgmlType.Q5_1 : GgmlType.Q4_1, w, deq);
        var x = Enumerable.Range(0, tokens * cols).Select(_ => (float)((rng.NextDouble() * 2) - 1)).ToArray();
        var q = new Q8Activations();
        q.Quantize(x, tokens, cols);
        var s1 = q.Q8_1Sums(x, tokens, cols);
        var batch = new float[tokens * 3];
        var single = new float[tokens];
        var vectorBatch = new float[tokens * 3];
        fixed (byte* pw = w)
        fixed (sbyte* px = q.Values)
        fixed (float* pd = q.Scales)
        fixed (float* ps = s1)
        fixed (float* pb = batch)
        fixed (float* p1 = single)
        fixed (float* pv = vectorBatch)
        {
            LowBitDot.DotQ4_1Scalar(pw, blocks, tokens, fiveBit, px, pd, ps, pb, 3);
            for (int t = 0; t < tokens; t++)
            {
                LowBitDot.DotQ4_1Scalar(pw, blocks, 1, fiveBit, px + (t * cols), pd + (t * blocks), ps + (t * blocks), p1 + t, 1);
            }

            if (LowBitDot.VectorPathSupported)
            {
                LowBitDot.DotQ4_1Avx2(pw, blocks, tokens, fiveBit, px, pd, ps, pv, 3);
            }
        }

        for (int t = 0; t < tokens; t++)
        {
            double exact = 0, norm = 0;
            for (int i = 0; i < cols; i++)
            {
                exact += deq[i] * x[(t * cols) + i];
                norm += Math.Abs(deq[i] * x[(t * cols) + i]);
            }

            Assert.True(Math.Abs(batch[t * 3] - exact) <= 0.02 * norm, $"token {t}: {batch[t * 3]} vs float {exact} (sum |w x| {norm})");
            Assert.Equal(BitConverter.SingleToInt32Bits(single[t]), BitConverter.SingleToInt32Bits(batch[t * 3]));
            if (LowBitDot.VectorPathSupported)
            {
                Assert.Equal(BitConverter.SingleToInt32Bits(batch[t * 3]), BitConverter.SingleToInt32Bits(vectorBatch[t * 3]));
            }
        }

        // the Q8_1 sums: FP16 of (max |x| / 127) x the block's int8 sum
        for (int b = 0; b < tokens * blocks; b++)
        {
            float amax = x.AsSpan(b * 32, 32).ToArray().Max(MathF.Abs);
            int sum = q.Values.AsSpan(b * 32, 32).ToArray().Sum(v => (int)v);
            Assert.Equal((float)(Half)(amax / 127f * sum), s1[b]);
        }
    }

    [Fact]
    public void Q3_KScalesUnpackedFourAtATimeEqualTheOneAtATimeRule()
    {
        var rng = new Random(31);
        var packed = new byte[12];
        for (int trial = 0; trial < 200; trial++)
        {
            rng.NextBytes(packed);
            fixed (byte* p = packed)
            {
                var v = LowBitDot.ScalesQ3_K(p);
                for (int j = 0; j < 16; j++)
                {
                    Assert.Equal(RowDequantizer.ScaleQ3_K(j, packed) + 32, v[j]);
                }
            }
        }
    }

    [Fact]
    public void Iq4_XSScaleBytesDepositedAtOnceEqualTheOneAtATimeRule()
    {
        var rng = new Random(32);
        var blk = new byte[136];
        for (int trial = 0; trial < 200; trial++)
        {
            rng.NextBytes(blk);
            ushort h = BitConverter.ToUInt16(blk, 2);
            fixed (byte* p = blk)
            {
                ulong bytes = LowBitDot.ScaleBytesIq4_XS(p);
                Assert.Equal(LowBitDot.ScaleBytesIq4_XSScalar(p), bytes);
                for (int ib = 0; ib < 8; ib++)
                {
                    Assert.Equal(RowDequantizer.ScaleIq4_XS(ib, h, blk.AsSpan(4, 4)), (int)((bytes >> (8 * ib)) & 0xFF));
                }
            }
        }
    }

    [Fact]
    public void MoreThanFourTokensAtOnce_Throws()
    {
        var w = new byte[136];
        var x = new sbyte[5 * 256];
        var d = new float[5];
        var y = new float[5];
        fixed (byte* pw = w)
        fixed (sbyte* px = x)
        fixed (float* pd = d)
        fixed (float* py = y)
        {
            byte* rw = pw;
            sbyte* rx = px;
            float* rd = pd, ry = py;
            Assert.Throws<ArgumentOutOfRangeException>(() => LowBitDot.DotIq4_XSScalar(rw, 1, 5, rx, rd, ry, 1));
            Assert.Throws<ArgumentOutOfRangeException>(() => LowBitDot.DotQ3_KScalar(rw, 1, 0, rx, rd, null, ry, 1));
            Assert.Throws<ArgumentOutOfRangeException>(() => LowBitDot.DotIq4_NLScalar(rw, 1, 5, rx, rd, ry, 1));
        }
    }
}
