namespace KvAdaQuant.Allocation;

/// <summary>
/// The reference implementation's accounting: a width costs its nominal bits (ternary 1.58 costs 1.58),
/// scales, zero points and full-precision windows are not counted.
/// </summary>
public sealed class NominalBitCost : IBitCost
{
    /// <inheritdoc/>
    public string Name => "nominal";

    /// <inheritdoc/>
    public double BitsPerElement(KvTensorKind kind, int layer, double bits, int? groupSize = null) => bits;
}
