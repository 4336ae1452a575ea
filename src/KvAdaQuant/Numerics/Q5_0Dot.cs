using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace KvAdaQuant.Numerics;

/// <summary>
/// Dot product of one Q5_0 weight row (blocks of 22 bytes: FP16 d, 32 high bits qh, 16 bytes of nibbles; value i of a
/// block is (nibble_i | bit_i &lt;&lt; 4) - 16, nibbles 0-15 low, 16-31 high) with activations quantized to int8 blocks of 32
/// (<see cref="Q8Activations"/>), as llama.cpp's ggml_vec_dot_q5_0_q8_0 does it on AVX2: per block the signed values
/// times the activations summed exactly in 8 int32 lanes (lane i: values 4i..4i+3), converted and fused-added times
/// d_w x d_x into 8 float lanes, summed at the end in <see cref="GgmlArithmetic.Sum8(Vector256{float})"/>'s order.
/// The vector path and its scalar twin give the same bits.
/// </summary>
public static unsafe class Q5_0Dot
{
    /// <summary>Bytes of one Q5_0 block.</summary>
    public const int BlockBytes = 22;

    /// <summary>True when the vector path runs on this machine.</summary>
    public static bool VectorPathSupported => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>Q5_0 row · int8 activations (vector path where supported, else the scalar twin).</summary>
    public static float Dot(byte* row, sbyte* xq, float* xd, int blocks)
        => VectorPathSupported ? DotAvx2(row, xq, xd, blocks) : DotScalar(row, xq, xd, blocks);

    /// <summary>The signed value (-16..15) of element <paramref name="i"/> (0..31) of the Q5_0 block at <paramref name="blk"/>.</summary>
    public static int Value(byte* blk, int i)
    {
        uint qh = *(uint*)(blk + 2);
        int nibble = i < 16 ? blk[6 + i] & 0x0F : blk[6 + i - 16] >> 4;
        return (nibble | (int)(((qh >> i) & 1) << 4)) - 16;
    }

    /// <summary>Scalar twin of <see cref="Dot"/>.</summary>
    public static float DotScalar(byte* row, sbyte* xq, float* xd, int blocks)
    {
        Span<float> lanes = stackalloc float[8];
        lanes.Clear();
        for (int b = 0; b < blocks; b++)
        {
            byte* blk = row + (b * BlockBytes);
            sbyte* x = xq + (b * 32);
            float scale = HalfBits.ToSingle(*(ushort*)blk) * xd[b];
            for (int l = 0; l < 8; l++)
            {
                int s = 0;
                for (int i = 4 * l; i < (4 * l) + 4; i++)
                {
                    s += Value(blk, i) * x[i];
                }

                lanes[l] = MathF.FusedMultiplyAdd(s, scale, lanes[l]);
            }
        }

        return GgmlArithmetic.Sum8Scalar(lanes);
    }

    /// <summary>AVX2 (+VNNI) path of <see cref="Dot"/>: qh's bits spread to bytes, values - 16 as nibble | (bit ? 0 : 0xF0).</summary>
    public static float DotAvx2(byte* row, sbyte* xq, float* xd, int blocks)
    {
        var acc = Vector256<float>.Zero;
        var low = Vector128.Create((byte)0x0F);

        // byte j of the spread picks byte j / 8 of qh (the two 128-bit halves shuffle separately) and tests bit j % 8.
        var spread = Vector256.Create((byte)0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
        var bit = Vector256.Create(0x8040201008040201UL).AsByte();
        var negative = Vector256.Create((byte)0xF0);
        for (int b = 0; b < blocks; b++)
        {
            byte* blk = row + (b * BlockBytes);
            var q = Sse2.LoadVector128(blk + 6);
            var nibbles = Vector256.Create(q & low, Sse2.ShiftRightLogical(q.AsUInt16(), 4).AsByte() & low);
            var set = Avx2.CompareEqual(Avx2.Shuffle(Vector256.Create(*(uint*)(blk + 2)).AsByte(), spread) & bit, bit);
            var w = (nibbles | Avx2.AndNot(set, negative)).AsSByte();
            var p = SignedDot(w, Avx.LoadVector256(xq + (b * 32)));
            float scale = HalfBits.ToSingle(*(ushort*)blk) * xd[b];
            acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(p), Vector256.Create(scale), acc);
        }

        return GgmlArithmetic.Sum8(acc);
    }

    // Lane i: sum of w x over bytes 4i..4i+3, exactly (|w| as unsigned times x with w's sign; pair sums within 16 bits).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> SignedDot(Vector256<sbyte> w, Vector256<sbyte> x)
    {
        var aw = Avx2.Abs(w);
        var sx = Avx2.Sign(x, w);
        if (AvxVnni.IsSupported)
        {
            return AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, aw, sx);
        }

        return Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(aw, sx), Vector256.Create((short)1));
    }
}
