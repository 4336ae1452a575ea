using KvAdaQuant.KvCache;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Analysis;

/// <summary>
/// The quantization scheme the analysis measures: a quantize-dequantize round trip of one KV head's rows,
/// and caches that quantize only K or only V. Implemented over the KvCache/Quantization layer.
/// </summary>
public interface IKvQuantizationProbe
{
    /// <summary>Short description of the scheme at <paramref name="bits"/>, e.g. "asymmetric, groups of 64 along head_dim".</summary>
    string Describe(KvBits bits);

    /// <summary>
    /// Writes Q(A) into <paramref name="dst"/> for A = <paramref name="rows"/>, one KV head's [tokens, headDim] keys or
    /// values (<paramref name="keys"/> tells which), quantized to <paramref name="bits"/> as the cache would store it.
    /// </summary>
    void RoundTrip(bool keys, KvBits bits, ReadOnlySpan<float> rows, int tokens, int headDim, Span<float> dst);

    /// <summary>A cache of <paramref name="layout"/> with keys at <paramref name="keyBits"/> and values at <paramref name="valueBits"/> (null: full precision, fp32).</summary>
    IKvCache CreateCache(KvLayout layout, KvBits? keyBits, KvBits? valueBits);
}
