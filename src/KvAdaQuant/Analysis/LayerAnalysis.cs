using System.Text.Json.Serialization;

namespace KvAdaQuant.Analysis;

/// <summary>Everything measured on one layer.</summary>
public sealed class LayerAnalysis
{
    /// <summary>Layer index.</summary>
    public required int Layer { get; init; }

    /// <summary>Keys after RoPE, per KV head.</summary>
    [JsonPropertyName("k")]
    public required HeadSpectra K { get; init; }

    /// <summary>Keys before RoPE, per KV head.</summary>
    [JsonPropertyName("k_pre_rope")]
    public required HeadSpectra KPreRope { get; init; }

    /// <summary>Values, per KV head.</summary>
    [JsonPropertyName("v")]
    public required HeadSpectra V { get; init; }

    /// <summary>Key projection weight norms.</summary>
    [JsonPropertyName("w_k")]
    public required WeightNorms WK { get; init; }

    /// <summary>Value projection weight norms.</summary>
    [JsonPropertyName("w_v")]
    public required WeightNorms WV { get; init; }

    /// <summary>K / V ratios of the head-mean norms (activations and weights).</summary>
    [JsonPropertyName("ratios")]
    public KvRatios Ratios => new(
        K.FrobeniusStats.Mean / V.FrobeniusStats.Mean,
        K.SpectralStats.Mean / V.SpectralStats.Mean,
        WK.WholeFrobenius / WV.WholeFrobenius,
        WK.WholeSpectral / WV.WholeSpectral);

    /// <summary>Relative quantization error of this layer's K and V per bit width (empty when not measured).</summary>
    [JsonPropertyName("quantization")]
    public IReadOnlyList<QuantizationError> Quantization { get; init; } = [];
}
