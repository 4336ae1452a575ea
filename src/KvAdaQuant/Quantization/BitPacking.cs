using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace KvAdaQuant.Quantization;

/// <summary>
/// Dense bit packing of unsigned codes, one row (a token's head vector) at a time.
/// Integer widths b in {1, 2, 3, 4, 5, 6, 8} form a little-endian bit stream: code i occupies bits
/// [i*b, i*b + b) counted from bit 0 of byte 0, so 8 codes fill exactly b bytes (3 bits: 8 codes in 3 bytes,
/// 5 bits: 8 in 5 bytes, 6 bits: 4 in 3 bytes; 1, 2, 4, 8 bits never straddle a byte).
/// Ternary packs 5 trits per byte as t0 + 3 t1 + 9 t2 + 27 t3 + 81 t4 (values 0..242), ceil(n/5) bytes.
/// Unpacking to floats has a scalar path and Vector128/256/512 paths for 2, 4 and 8 bits.
/// </summary>
public static class BitPacking
{
    private static readonly float[] TernaryDigits = BuildTernaryDigits();

    /// <summary>Bytes holding <paramref name="count"/> codes of width <paramref name="bits"/>.</summary>
    public static int PackedBytes(int count, KvBits bits) => bits switch
    {
        KvBits.Ternary => (count + 4) / 5,
        KvBits.Fp16 => count * 2,
        KvBits.Fp32 => count * 4,
        _ => ((count * bits.IntegerBits()) + 7) / 8,
    };

    /// <summary>Packs <paramref name="codes"/> (each below the width's level count) into <paramref name="dst"/>.</summary>
    public static void Pack(ReadOnlySpan<byte> codes, KvBits bits, Span<byte> dst)
    {
        int bytes = PackedBytes(codes.Length, bits);
        dst[..bytes].Clear();
        if (bits == KvBits.Ternary)
        {
            for (int i = 0; i < codes.Length; i += 5)
            {
                int v = 0;
                for (int k = Math.Min(4, codes.Length - i - 1); k >= 0; k--)
                {
                    v = (v * 3) + codes[i + k];
                }

                dst[i / 5] = (byte)v;
            }

            return;
        }

        int b = bits.IntegerBits();
        for (int i = 0; i < codes.Length; i++)
        {
            int bit = i * b;
            int word = codes[i] << (bit & 7);
            dst[bit >> 3] |= (byte)word;
            if ((bit & 7) + b > 8)
            {
                dst[(bit >> 3) + 1] |= (byte)(word >> 8);
            }
        }
    }

    /// <summary>Unpacks dst.Length codes as floats with the fastest path the CPU offers.</summary>
    public static void Unpack(ReadOnlySpan<byte> packed, KvBits bits, Span<float> dst)
    {
        if (Vector512.IsHardwareAccelerated && dst.Length >= 64)
        {
            UnpackVector512(packed, bits, dst);
        }
        else if (Vector256.IsHardwareAccelerated && dst.Length >= 32)
        {
            UnpackVector256(packed, bits, dst);
        }
        else if (Vector128.IsHardwareAccelerated)
        {
            UnpackVector128(packed, bits, dst);
        }
        else
        {
            UnpackScalar(packed, bits, dst);
        }
    }

    /// <summary>Scalar twin: unpacks dst.Length codes of any width as floats.</summary>
    public static void UnpackScalar(ReadOnlySpan<byte> packed, KvBits bits, Span<float> dst)
    {
        CheckLength(packed, bits, dst.Length);
        int n = dst.Length;
        if (bits == KvBits.Ternary)
        {
            for (int i = 0; i < n; i++)
            {
                dst[i] = TernaryDigits[(packed[i / 5] * 5) + (i % 5)];
            }

            return;
        }

        int b = bits.IntegerBits();
        uint mask = (1u << b) - 1;
        int i0 = 0;
        Span<byte> word = stackalloc byte[8];
        for (; i0 + 8 <= n; i0 += 8)
        {
            word.Clear();
            packed.Slice(i0 / 8 * b, b).CopyTo(word);
            ulong w = BinaryPrimitives.ReadUInt64LittleEndian(word);
            for (int k = 0; k < 8; k++)
            {
                dst[i0 + k] = (uint)(w >> (k * b)) & mask;
            }
        }

        for (int i = i0; i < n; i++)
        {
            int bit = i * b;
            int v = packed[bit >> 3] >> (bit & 7);
            if ((bit & 7) + b > 8)
            {
                v |= packed[(bit >> 3) + 1] << (8 - (bit & 7));
            }

            dst[i] = (uint)v & mask;
        }
    }

    /// <summary>Vector128 path (2, 4, 8 bits; other widths and tails take the scalar path).</summary>
    public static void UnpackVector128(ReadOnlySpan<byte> packed, KvBits bits, Span<float> dst)
    {
        CheckLength(packed, bits, dst.Length);
        int done = bits switch
        {
            KvBits.Eight => Unpack8V128(packed, dst),
            KvBits.Four => Unpack4V128(packed, dst),
            KvBits.Two => Unpack2V128(packed, dst),
            _ => 0,
        };
        Tail(packed, bits, dst, done);
    }

    /// <summary>Vector256 path (2, 4, 8 bits; other widths and tails take the scalar path).</summary>
    public static void UnpackVector256(ReadOnlySpan<byte> packed, KvBits bits, Span<float> dst)
    {
        CheckLength(packed, bits, dst.Length);
        int done = bits switch
        {
            KvBits.Eight => Unpack8V256(packed, dst),
            KvBits.Four => Unpack4V256(packed, dst),
            KvBits.Two => Unpack2V256(packed, dst),
            _ => 0,
        };
        Tail(packed, bits, dst, done);
    }

    /// <summary>Vector512 path (2, 4, 8 bits; other widths and tails take the scalar path).</summary>
    public static void UnpackVector512(ReadOnlySpan<byte> packed, KvBits bits, Span<float> dst)
    {
        CheckLength(packed, bits, dst.Length);
        int done = bits switch
        {
            KvBits.Eight => Unpack8V512(packed, dst),
            KvBits.Four => Unpack4V512(packed, dst),
            KvBits.Two => Unpack2V512(packed, dst),
            _ => 0,
        };
        Tail(packed, bits, dst, done);
    }

    private static void CheckLength(ReadOnlySpan<byte> packed, KvBits bits, int count)
    {
        if (!bits.IsQuantized() || packed.Length < PackedBytes(count, bits))
        {
            throw new ArgumentException($"{packed.Length} packed bytes cannot hold {count} codes of {bits.Name()} bits", nameof(packed));
        }
    }

    private static void Tail(ReadOnlySpan<byte> packed, KvBits bits, Span<float> dst, int done)
    {
        if (done < dst.Length)
        {
            // done is a multiple of 8 codes, so the remaining codes start on a byte boundary.
            int skip = PackedBytes(done, bits);
            UnpackScalar(packed[skip..], bits, dst[done..]);
        }
    }

    // 8 bits: 16 codes from 16 bytes per Vector128 step.
    private static int Unpack8V128(ReadOnlySpan<byte> packed, Span<float> dst)
    {
        ref byte src = ref MemoryMarshal.GetReference(packed);
        ref float d = ref MemoryMarshal.GetReference(dst);
        int i = 0;
        for (; i + 16 <= dst.Length; i += 16)
        {
            StoreBytes128(Vector128.LoadUnsafe(ref src, (nuint)i), ref d, i);
        }

        return i;
    }

    // 4 bits: 16 codes from 8 bytes: widen each byte b to a ushort (b & 15) | (b >> 4) << 8, i.e. bytes lo, hi in stream order.
    private static int Unpack4V128(ReadOnlySpan<byte> packed, Span<float> dst)
    {
        ref byte src = ref MemoryMarshal.GetReference(packed);
        ref float d = ref MemoryMarshal.GetReference(dst);
        int i = 0;
        for (; i + 16 <= dst.Length; i += 16)
        {
            var w = Vector128.WidenLower(Vector128.CreateScalarUnsafe(Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref src, i / 2))).AsByte());
            var codes = (w & Vector128.Create((ushort)0x0F)) | ((w << 4) & Vector128.Create((ushort)0x0F00));
            StoreBytes128(codes.AsByte(), ref d, i);
        }

        return i;
    }

    // 2 bits: 16 codes from 4 bytes: widen each byte to a uint holding its 4 codes in 4 bytes.
    private static int Unpack2V128(ReadOnlySpan<byte> packed, Span<float> dst)
    {
        ref byte src = ref MemoryMarshal.GetReference(packed);
        ref float d = ref MemoryMarshal.GetReference(dst);
        int i = 0;
        for (; i + 16 <= dst.Length; i += 16)
        {
            var b = Vector128.CreateScalarUnsafe(Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref src, i / 4))).AsByte();
            var w = Vector128.WidenLower(Vector128.WidenLower(b));
            var codes = (w & Vector128.Create(3u)) | ((w << 6) & Vector128.Create(0x300u)) | ((w << 12) & Vector128.Create(0x30000u)) | ((w << 18) & Vector128.Create(0x3000000u));
            StoreBytes128(codes.AsByte(), ref d, i);
        }

        return i;
    }

    private static int Unpack8V256(ReadOnlySpan<byte> packed, Span<float> dst)
    {
        ref byte src = ref MemoryMarshal.GetReference(packed);
        ref float d = ref MemoryMarshal.GetReference(dst);
        int i = 0;
        for (; i + 32 <= dst.Length; i += 32)
        {
            StoreBytes256(Vector256.LoadUnsafe(ref src, (nuint)i), ref d, i);
        }

        return i;
    }

    private static int Unpack4V256(ReadOnlySpan<byte> packed, Span<float> dst)
    {
        ref byte src = ref MemoryMarshal.GetReference(packed);
        ref float d = ref MemoryMarshal.GetReference(dst);
        int i = 0;
        for (; i + 32 <= dst.Length; i += 32)
        {
            var w = Vector256.WidenLower(Vector128.LoadUnsafe(ref src, (nuint)(i / 2)).ToVector256Unsafe());
            var codes = (w & Vector256.Create((ushort)0x0F)) | ((w << 4) & Vector256.Create((ushort)0x0F00));
            StoreBytes256(codes.AsByte(), ref d, i);
        }

        return i;
    }

    private static int Unpack2V256(ReadOnlySpan<byte> packed, Span<float> dst)
    {
        ref byte src = ref MemoryMarshal.GetReference(packed);
        ref float d = ref MemoryMarshal.GetReference(dst);
        int i = 0;
        for (; i + 32 <= dst.Length; i += 32)
        {
            var b = Vector128.CreateScalarUnsafe(Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref src, i / 4))).AsByte();
            var w = Vector256.WidenLower(Vector128.WidenLower(b).ToVector256Unsafe());
            var codes = (w & Vector256.Create(3u)) | ((w << 6) & Vector256.Create(0x300u)) | ((w << 12) & Vector256.Create(0x30000u)) | ((w << 18) & Vector256.Create(0x3000000u));
            StoreBytes256(codes.AsByte(), ref d, i);
        }

        return i;
    }

    private static int Unpack8V512(ReadOnlySpan<byte> packed, Span<float> dst)
    {
        ref byte src = ref MemoryMarshal.GetReference(packed);
        ref float d = ref MemoryMarshal.GetReference(dst);
        int i = 0;
        for (; i + 64 <= dst.Length; i += 64)
        {
            StoreBytes512(Vector512.LoadUnsafe(ref src, (nuint)i), ref d, i);
        }

        return i;
    }

    private static int Unpack4V512(ReadOnlySpan<byte> packed, Span<float> dst)
    {
        ref byte src = ref MemoryMarshal.GetReference(packed);
        ref float d = ref MemoryMarshal.GetReference(dst);
        int i = 0;
        for (; i + 64 <= dst.Length; i += 64)
        {
            var w = Vector512.WidenLower(Vector256.LoadUnsafe(ref src, (nuint)(i / 2)).ToVector512Unsafe());
            var codes = (w & Vector512.Create((ushort)0x0F)) | ((w << 4) & Vector512.Create((ushort)0x0F00));
            StoreBytes512(codes.AsByte(), ref d, i);
        }

        return i;
    }

    private static int Unpack2V512(ReadOnlySpan<byte> packed, Span<float> dst)
    {
        ref byte src = ref MemoryMarshal.GetReference(packed);
        ref float d = ref MemoryMarshal.GetReference(dst);
        int i = 0;
        for (; i + 64 <= dst.Length; i += 64)
        {
            var w = Vector512.WidenLower(Vector256.WidenLower(Vector128.LoadUnsafe(ref src, (nuint)(i / 4)).ToVector256Unsafe()).ToVector512Unsafe());
            var codes = (w & Vector512.Create(3u)) | ((w << 6) & Vector512.Create(0x300u)) | ((w << 12) & Vector512.Create(0x30000u)) | ((w << 18) & Vector512.Create(0x3000000u));
            StoreBytes512(codes.AsByte(), ref d, i);
        }

        return i;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreBytes128(Vector128<byte> codes, ref float d, int i)
    {
        var (lo, hi) = Vector128.Widen(codes);
        var (a, b) = Vector128.Widen(lo);
        var (c, e) = Vector128.Widen(hi);
        Vector128.ConvertToSingle(a.AsInt32()).StoreUnsafe(ref d, (nuint)i);
        Vector128.ConvertToSingle(b.AsInt32()).StoreUnsafe(ref d, (nuint)(i + 4));
        Vector128.ConvertToSingle(c.AsInt32()).StoreUnsafe(ref d, (nuint)(i + 8));
        Vector128.ConvertToSingle(e.AsInt32()).StoreUnsafe(ref d, (nuint)(i + 12));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreBytes256(Vector256<byte> codes, ref float d, int i)
    {
        var (lo, hi) = Vector256.Widen(codes);
        var (a, b) = Vector256.Widen(lo);
        var (c, e) = Vector256.Widen(hi);
        Vector256.ConvertToSingle(a.AsInt32()).StoreUnsafe(ref d, (nuint)i);
        Vector256.ConvertToSingle(b.AsInt32()).StoreUnsafe(ref d, (nuint)(i + 8));
        Vector256.ConvertToSingle(c.AsInt32()).StoreUnsafe(ref d, (nuint)(i + 16));
        Vector256.ConvertToSingle(e.AsInt32()).StoreUnsafe(ref d, (nuint)(i + 24));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreBytes512(Vector512<byte> codes, ref float d, int i)
    {
        var (lo, hi) = Vector512.Widen(codes);
        var (a, b) = Vector512.Widen(lo);
        var (c, e) = Vector512.Widen(hi);
        Vector512.ConvertToSingle(a.AsInt32()).StoreUnsafe(ref d, (nuint)i);
        Vector512.ConvertToSingle(b.AsInt32()).StoreUnsafe(ref d, (nuint)(i + 16));
        Vector512.ConvertToSingle(c.AsInt32()).StoreUnsafe(ref d, (nuint)(i + 32));
        Vector512.ConvertToSingle(e.AsInt32()).StoreUnsafe(ref d, (nuint)(i + 48));
    }

    private static float[] BuildTernaryDigits()
    {
        var t = new float[256 * 5];
        for (int b = 0; b < 256; b++)
        {
            int v = b;
            for (int k = 0; k < 5; k++)
            {
                t[(b * 5) + k] = v % 3;
                v /= 3;
            }
        }

        return t;
    }
}
