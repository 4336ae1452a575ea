namespace KvAdaQuant.Gpu;

/// <summary>
/// One tensor kind (K or V) of a batch in the packed GPU layout: codes [batch][kvHead][token][RowBytes] and
/// (scale, min) pairs as FP16 bit patterns packed into one uint (scale in bits 0..15, min in 16..31),
/// [batch][kvHead][ParamCount(tokens)] in the format's order.
/// </summary>
public sealed class PackedKvTensor
{
    /// <summary>Allocates a zeroed tensor.</summary>
    public PackedKvTensor(PackedKvFormat format, int batch, int kvHeads, int tokens)
    {
        ArgumentNullException.ThrowIfNull(format);
        if (format.Axis == PackedKvAxis.PerChannel && tokens % format.GroupSize != 0)
        {
            throw new ArgumentException($"tokens: {tokens} quantized tokens is not a whole number of per-channel groups of {format.GroupSize}.", nameof(tokens));
        }

        Format = format;
        Batch = batch;
        KvHeads = kvHeads;
        Tokens = tokens;
        Codes = new byte[(long)batch * kvHeads * tokens * format.RowBytes];
        Params = new uint[batch * kvHeads * format.ParamCount(tokens)];
    }

    /// <summary>Format.</summary>
    public PackedKvFormat Format { get; }

    /// <summary>Batch size.</summary>
    public int Batch { get; }

    /// <summary>KV heads.</summary>
    public int KvHeads { get; }

    /// <summary>Quantized tokens per head.</summary>
    public int Tokens { get; }

    /// <summary>Packed codes.</summary>
    public byte[] Codes { get; }

    /// <summary>(scale, min) FP16 pairs.</summary>
    public uint[] Params { get; }

    /// <summary>Bytes of codes plus pairs.</summary>
    public long ByteCount => Codes.LongLength + (4L * Params.LongLength);

    /// <summary>The code row of one token.</summary>
    public Span<byte> Row(int b, int h, int token)
    {
        long start = ((((long)b * KvHeads) + h) * Tokens + token) * Format.RowBytes;
        return Codes.AsSpan(checked((int)start), Format.RowBytes);
    }

    /// <summary>Index into <see cref="Params"/> of element (token, d).</summary>
    public long ParamIndex(int b, int h, int token, int d) =>
        ((((long)b * KvHeads) + h) * Format.ParamCount(Tokens)) + Format.ParamIndex(token, d);

    /// <summary>The dequantized value scale * code + min, computed in double from the FP16 scale and min.</summary>
    public double Dequantize(int b, int h, int token, int d)
    {
        uint p = Params[ParamIndex(b, h, token, d)];
        double scale = (double)BitConverter.UInt16BitsToHalf((ushort)(p & 0xFFFF));
        double min = (double)BitConverter.UInt16BitsToHalf((ushort)(p >> 16));
        return (scale * PackedKvCodes.Get(Row(b, h, token), Format.BitsCode, d)) + min;
    }
}
