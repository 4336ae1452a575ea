using KvAdaQuant.Numerics;

namespace KvAdaQuant.Model;

/// <summary>Weights of one transformer block.</summary>
public sealed class LayerWeights
{
    /// <summary>RMSNorm weight before attention.</summary>
    public required float[] AttentionNorm { get; init; }

    /// <summary>Query projection [QDim, Dim].</summary>
    public required WeightMatrix Wq { get; init; }

    /// <summary>Key projection [KvDim, Dim].</summary>
    public required WeightMatrix Wk { get; init; }

    /// <summary>Value projection [KvDim, Dim].</summary>
    public required WeightMatrix Wv { get; init; }

    /// <summary>Output projection [Dim, QDim].</summary>
    public required WeightMatrix Wo { get; init; }

    /// <summary>Optional query bias (Qwen2).</summary>
    public float[]? Bq { get; init; }

    /// <summary>Optional key bias.</summary>
    public float[]? Bk { get; init; }

    /// <summary>Optional value bias.</summary>
    public float[]? Bv { get; init; }

    /// <summary>RMSNorm weight before the MLP.</summary>
    public required float[] FfnNorm { get; init; }

    /// <summary>Gate projection [HiddenDim, Dim].</summary>
    public required WeightMatrix W1 { get; init; }

    /// <summary>Down projection [Dim, HiddenDim].</summary>
    public required WeightMatrix W2 { get; init; }

    /// <summary>Up projection [HiddenDim, Dim].</summary>
    public required WeightMatrix W3 { get; init; }
}
