using System.Globalization;

namespace KvAdaQuant.Quantization;

/// <summary>
/// How one tensor kind (K or V) of one layer is cached. <see cref="GroupSize"/> counts channels per group for
/// <see cref="QuantAxis.PerToken"/> and tokens per chunk for <see cref="QuantAxis.PerChannel"/>; 0 (the default) means
/// 32 channels (llama.cpp's block), or the largest divisor of the head dimension not above 32 for smaller or odd heads,
/// and 32 tokens per chunk per-channel.
/// Scales and zero points are FP16. The first <see cref="Sinks"/> tokens and the most recent <see cref="Residual"/>
/// tokens are kept in FP16; per-token specs quantize a token as soon as it leaves the residual window, per-channel
/// specs quantize GroupSize tokens at a time once the window holds Residual + GroupSize of them.
/// </summary>
public sealed record KvSpec(KvBits Bits, int GroupSize = KvSpec.DefaultGroupSize, QuantAxis Axis = QuantAxis.PerToken, bool Symmetric = false, int Residual = 0, int Sinks = 0)
{
    /// <summary>Default group: 0, meaning automatic (32 channels or tokens, see the type's remarks).</summary>
    public const int DefaultGroupSize = 0;

    /// <summary>The automatic group size.</summary>
    public const int AutoGroup = 32;

    /// <summary>
    /// Whether each head's row is rotated (<see cref="KvRotation"/>) before it is quantized: the cache stores R x and turns
    /// reads and attention outputs back, so every result means the same; only the quantization error changes. Quantized
    /// specs on heads whose dimension is a power of two; spec option <c>rot</c>.
    /// </summary>
    public bool Rotate { get; init; }

    /// <summary>Unquantized FP32.</summary>
    public static KvSpec Fp32 { get; } = new(KvBits.Fp32, 0);

    /// <summary>Unquantized FP16.</summary>
    public static KvSpec Fp16 { get; } = new(KvBits.Fp16, 0);

    /// <summary>Whether values are quantized.</summary>
    public bool IsQuantized => Bits.IsQuantized();

    /// <summary>Bytes of one stored scale/zero set: 2 (FP16 scale) when symmetric, 4 (FP16 scale + FP16 zero) when asymmetric.</summary>
    public int ParamBytes => Symmetric ? 2 : 4;

    /// <summary>Channels per per-token group for a head of <paramref name="headDim"/> (GroupSize, or the head when 0).</summary>
    public int ChannelGroup(int headDim)
    {
        if (GroupSize != 0)
        {
            return GroupSize;
        }

        for (int g = Math.Min(AutoGroup, headDim); g > 1; g--)
        {
            if (headDim % g == 0)
            {
                return g;
            }
        }

        return 1;
    }

    /// <summary>Tokens per per-channel group (GroupSize, or 32 when 0).</summary>
    public int TokenGroup => GroupSize == 0 ? AutoGroup : GroupSize;

    /// <summary>Tokens quantized at once when the residual window overflows: 1 per-token, TokenGroup per-channel.</summary>
    public int FlushChunk => Axis == QuantAxis.PerChannel ? TokenGroup : 1;

    /// <summary>
    /// Checks the spec against a head size; returns null when valid, else what is wrong, naming the field
    /// (<paramref name="field"/> prefixes the field name, e.g. "layers[2].k.").
    /// </summary>
    public string? Problem(int headDim, string field = "")
    {
        if (Residual < 0)
        {
            return $"{field}residual must be >= 0, got {Residual}";
        }

        if (Sinks < 0)
        {
            return $"{field}sinks must be >= 0, got {Sinks}";
        }

        if (!IsQuantized)
        {
            return Rotate ? $"{field}rot rotates rows before they are quantized; {Bits.Name()} is not quantized" : null;
        }

        if (Rotate && !KvRotation.Supports(headDim))
        {
            return $"{field}rot needs a head dimension that is a power of two (the Walsh-Hadamard rotation), the model has {headDim}";
        }

        if (headDim % 8 != 0)
        {
            return $"quantized caches need a head dimension divisible by 8, the model has {headDim}";
        }

        if (Axis == QuantAxis.PerToken)
        {
            if (GroupSize < 0)
            {
                return $"{field}group must be >= 0 channels (0: the whole head), got {GroupSize}";
            }

            if (GroupSize > headDim)
            {
                return $"{field}group {GroupSize} is larger than the head dimension {headDim} (per-token groups run along the head)";
            }

            if (GroupSize > 0 && headDim % GroupSize != 0)
            {
                return $"{field}group {GroupSize} does not divide the head dimension {headDim}";
            }
        }
        else if (GroupSize < 0)
        {
            return $"{field}group must be >= 0 tokens for per-channel quantization, got {GroupSize}";
        }

        return null;
    }

    /// <summary>Bits per cached element of a quantized token (codes, scales and zero points), ignoring residual and sinks.</summary>
    public double SteadyBitsPerElement(int headDim) => 8.0 * SteadyBytesPerToken(headDim) / headDim;

    /// <summary>Bytes per token per head once quantized: packed codes plus its share of scales/zero points (fractional for per-channel).</summary>
    public double SteadyBytesPerToken(int headDim)
    {
        if (!IsQuantized)
        {
            return headDim * (Bits == KvBits.Fp16 ? 2 : 4);
        }

        int row = BitPacking.PackedBytes(headDim, Bits);
        return Axis == QuantAxis.PerToken
            ? row + (headDim / ChannelGroup(headDim) * ParamBytes)
            : row + ((double)headDim * ParamBytes / TokenGroup);
    }

    /// <summary>Positions among the first <paramref name="tokens"/> that are held quantized (the rest are sinks or residual, in FP16).</summary>
    public int QuantizedTokens(int tokens)
    {
        if (!IsQuantized)
        {
            return 0;
        }

        int m = tokens - Math.Min(Sinks, tokens);
        int over = m - Residual;
        return over <= 0 ? 0 : over / FlushChunk * FlushChunk;
    }

    /// <summary>Exact bytes one head of this tensor kind occupies after <paramref name="tokens"/> positions.</summary>
    public long BytesPerHead(int headDim, int tokens)
    {
        if (!IsQuantized)
        {
            return (long)tokens * headDim * (Bits == KvBits.Fp16 ? 2 : 4);
        }

        long q = QuantizedTokens(tokens);
        long fp = tokens - q;
        long row = BitPacking.PackedBytes(headDim, Bits);
        long param = Axis == QuantAxis.PerToken
            ? q * (headDim / ChannelGroup(headDim)) * ParamBytes
            : q / TokenGroup * headDim * ParamBytes;
        return (fp * headDim * 2) + (q * row) + param;
    }

    /// <summary>Canonical text of this spec's bit width and options (e.g. "4:g32:pt:asym:r0:sink0", "4:g32:pt:asym:r0:sink0:rot", or "fp16").</summary>
    public override string ToString() => IsQuantized
        ? string.Create(CultureInfo.InvariantCulture, $"{Bits.Name()}:g{(GroupSize == 0 ? "auto" : GroupSize)}:{(Axis == QuantAxis.PerToken ? "pt" : "pc")}:{(Symmetric ? "sym" : "asym")}:r{Residual}:sink{Sinks}{(Rotate ? ":rot" : string.Empty)}")
        : Bits.Name() + (Rotate ? ":rot" : string.Empty);
}
