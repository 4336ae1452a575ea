namespace KvAdaQuant.Allocation;

/// <summary>
/// What storing one cached element at a given bit width costs, in bits. The allocators spend a budget in
/// these units, so an equal budget means equal memory exactly when the cost is the real one.
/// </summary>
public interface IBitCost
{
    /// <summary>Short name for reports (<c>nominal</c>, <c>real</c>).</summary>
    string Name { get; }

    /// <summary>Bits per element of tensor <paramref name="kind"/> of <paramref name="layer"/> stored at <paramref name="bits"/> (group size <paramref name="groupSize"/> or the base spec's when null).</summary>
    double BitsPerElement(KvTensorKind kind, int layer, double bits, int? groupSize = null);
}
