namespace KvAdaQuant.Analysis;

/// <summary>
/// K / V ratios of one layer: head-mean Frobenius and spectral norms of the activations, and the whole-matrix
/// Frobenius and spectral norms of W_K over W_V.
/// </summary>
public sealed record KvRatios(double Frobenius, double Spectral, double WeightFrobenius, double WeightSpectral);
