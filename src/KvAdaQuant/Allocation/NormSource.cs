namespace KvAdaQuant.Allocation;

/// <summary>Where the per-layer norms come from.</summary>
public enum NormSource
{
    /// <summary>The K and V activations measured on calibration text (analysis.json <c>layers[i].k</c> / <c>.v</c>).</summary>
    Activations,

    /// <summary>The weight matrices W_K and W_V (analysis.json <c>layers[i].w_k</c> / <c>.w_v</c>, or the reference's files), as the reference does.</summary>
    Weights,
}
