using System.Globalization;

namespace KvAdaQuant.Gpu;

/// <summary>
/// The packed format of one tensor kind (K or V) in the GPU layout: bit width (1, 1.58 = ternary, 2, 3, 4, 5, 6, 8),
/// group size and group axis; quantization is asymmetric (x = scale * code + min, scale and min in FP16).
/// </summary>
public sealed record PackedKvFormat
{
    /// <summary>Code of the ternary width (1.58 bits) as the kernels see it.</summary>
    public const int TernaryCode = 158;

    /// <summary>Creates a format, checking every field against <paramref name="headDim"/>.</summary>
    /// <exception cref="ArgumentException">A field is out of range; the message names it.</exception>
    public PackedKvFormat(double bits, int groupSize, PackedKvAxis axis, int headDim)
    {
        BitsCode = bits switch
        {
            1 => 1,
            2 => 2,
            3 => 3,
            4 => 4,
            5 => 5,
            6 => 6,
            8 => 8,
            1.58 => TernaryCode,
            _ => throw new ArgumentException($"bits: {bits.ToString(CultureInfo.InvariantCulture)} is not one of 1, 1.58, 2, 3, 4, 5, 6, 8.", nameof(bits)),
        };
        if (headDim <= 0 || headDim % 8 != 0)
        {
            throw new ArgumentException($"headDim: {headDim} must be a positive multiple of 8.", nameof(headDim));
        }

        if (groupSize <= 0)
        {
            throw new ArgumentException($"groupSize: {groupSize} must be positive.", nameof(groupSize));
        }

        if (axis == PackedKvAxis.PerToken && (groupSize > headDim || headDim % groupSize != 0))
        {
            throw new ArgumentException($"groupSize: {groupSize} must divide the head dimension {headDim} for per-token groups.", nameof(groupSize));
        }

        Bits = bits;
        GroupSize = groupSize;
        Axis = axis;
        HeadDim = headDim;
    }

    /// <summary>Bits per code (1.58 for ternary).</summary>
    public double Bits { get; }

    /// <summary>1..8, or <see cref="TernaryCode"/>.</summary>
    public int BitsCode { get; }

    /// <summary>Elements per (scale, min) pair.</summary>
    public int GroupSize { get; }

    /// <summary>Group axis.</summary>
    public PackedKvAxis Axis { get; }

    /// <summary>Head dimension D.</summary>
    public int HeadDim { get; }

    /// <summary>Number of code values: 3 for ternary, else 2^bits.</summary>
    public int Levels => BitsCode == TernaryCode ? 3 : 1 << BitsCode;

    /// <summary>Bytes of one token's codes: ceil(D / 5) for ternary (5 trits a byte), else D * bits / 8.</summary>
    public int RowBytes => BitsCode == TernaryCode ? (HeadDim + 4) / 5 : HeadDim * BitsCode / 8;

    /// <summary>(scale, min) pairs for <paramref name="tokens"/> tokens of one head; per-channel needs whole groups.</summary>
    public long ParamCount(int tokens) => Axis == PackedKvAxis.PerToken
        ? (long)tokens * (HeadDim / GroupSize)
        : (long)(tokens / GroupSize) * HeadDim;

    /// <summary>Index of the (scale, min) pair of element (token, d) within one head.</summary>
    public long ParamIndex(int token, int d) => Axis == PackedKvAxis.PerToken
        ? ((long)token * (HeadDim / GroupSize)) + (d / GroupSize)
        : ((long)(token / GroupSize) * HeadDim) + d;

    /// <summary>Bytes of one head's packed data for <paramref name="tokens"/> tokens: codes plus 4 bytes per pair.</summary>
    public long BytesPerHead(int tokens) => ((long)tokens * RowBytes) + (4 * ParamCount(tokens));

    /// <summary>Parses "4", "1.58", with "g64", "tok"/"chan" parts: e.g. "4:g64:tok".</summary>
    /// <exception cref="ArgumentException">Malformed text; the message quotes it.</exception>
    public static PackedKvFormat Parse(string text, int headDim)
    {
        ArgumentNullException.ThrowIfNull(text);
        string[] parts = text.Split(':');
        if (!double.TryParse(parts[0], NumberStyles.Float, CultureInfo.InvariantCulture, out double bits))
        {
            throw new ArgumentException($"format '{text}': bits '{parts[0]}' is not a number.", nameof(text));
        }

        int group = 64;
        var axis = PackedKvAxis.PerToken;
        foreach (string part in parts.Skip(1))
        {
            if (part.StartsWith('g') && int.TryParse(part.AsSpan(1), NumberStyles.None, CultureInfo.InvariantCulture, out int g))
            {
                group = g;
            }
            else if (part == "tok")
            {
                axis = PackedKvAxis.PerToken;
            }
            else if (part == "chan")
            {
                axis = PackedKvAxis.PerChannel;
            }
            else
            {
                throw new ArgumentException($"format '{text}': unknown part '{part}' (expected gN, tok or chan).", nameof(text));
            }
        }

        return new PackedKvFormat(bits, group, axis, headDim);
    }

    /// <inheritdoc/>
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"{(BitsCode == TernaryCode ? "1.58" : BitsCode.ToString(CultureInfo.InvariantCulture))}:g{GroupSize}:{(Axis == PackedKvAxis.PerToken ? "tok" : "chan")}");
}
