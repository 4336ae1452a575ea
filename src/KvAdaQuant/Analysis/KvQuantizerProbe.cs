using KvAdaQuant.KvCache;
using KvAdaQuant.Quantization;

namespace KvAdaQuant.Analysis;

/// <summary>
/// The analysis probe over the Quantization layer: round trips through <see cref="KvQuantizer"/> with the spec
/// <see cref="Template"/> at each bit width, and caches that quantize only K or only V with that spec.
/// </summary>
public sealed class KvQuantizerProbe : IKvQuantizationProbe
{
    /// <summary>Creates the probe; <paramref name="template"/> gives group, axis, symmetry, rotation, residual window and sinks (its bits are replaced).</summary>
    public KvQuantizerProbe(KvSpec template)
    {
        Template = template;
    }

    /// <summary>
    /// Whether only-K / only-V runs use the analysis's own round-trip cache (FP32 storage of quantize-dequantized
    /// rows, max-subtracted softmax; per-token specs without residual or sinks) instead of the library's quantized cache.
    /// </summary>
    public bool EmulatedCache { get; init; }

    /// <summary>The spec whose bits are replaced by each measured width.</summary>
    public KvSpec Template { get; }

    /// <summary>The spec at <paramref name="bits"/>.</summary>
    public KvSpec Spec(KvBits bits) => Template with { Bits = bits };

    /// <summary>
    /// Whether the emulated cache (<see cref="EmulatedCache"/>) can stand for a cache of <paramref name="spec"/>: an
    /// unquantized spec, or a per-token one without residual window or sinks (each row is then quantized on its own).
    /// </summary>
    public static bool CanEmulate(KvSpec spec) => !spec.IsQuantized || (spec.Axis == QuantAxis.PerToken && spec.Residual == 0 && spec.Sinks == 0);

    /// <summary>Checks the spec fits a head of <paramref name="headDim"/>; throws naming what is wrong.</summary>
    public void Validate(int headDim)
    {
        if (Spec(KvBits.Four).Problem(headDim) is { } problem)
        {
            throw new ArgumentException($"{(Template.Rotate && problem.Contains("rot", StringComparison.Ordinal) ? "--rotate" : "--group/--axis")}: {problem}");
        }
    }

    /// <inheritdoc/>
    public string Describe(KvBits bits) => Spec(bits).ToString();

    /// <inheritdoc/>
    public void RoundTrip(bool keys, KvBits bits, ReadOnlySpan<float> rows, int tokens, int headDim, Span<float> dst) =>
        KvQuantizer.RoundTrip(rows, tokens, headDim, Spec(bits), dst);

    /// <inheritdoc/>
    public IKvCache CreateCache(KvLayout layout, KvBits? keyBits, KvBits? valueBits)
    {
        var k = keyBits is { } kb ? Spec(kb) : KvSpec.Fp32;
        var v = valueBits is { } vb ? Spec(vb) : KvSpec.Fp32;
        return EmulatedCache ? new RoundTripKvCache(layout, k, v) : KvCacheFactory.Create(KvPlan.Uniform(k, v, layout.Layers), layout);
    }
}
