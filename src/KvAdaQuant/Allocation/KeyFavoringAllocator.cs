namespace KvAdaQuant.Allocation;

/// <summary>
/// The paper's rule: at an average budget B, give K the higher width of an admissible pair. Among pairs (k, v) of the
/// range with k &gt; v whose average cost (cost(k) + cost(v)) / 2 is within B, take the one spending the most, then
/// the one with the smallest gap k - v (at B = 3 over 1..8: K4V2; at B = 4: K6V2 unless 5 is in the range). When no
/// such pair exists (B at the lowest width), falls back to the widest uniform width within B. Same pair in every layer.
/// Group sizes per layer, when given, are kept and costed (group-aware allocation).
/// </summary>
public static class KeyFavoringAllocator
{
    /// <summary>Allocates.</summary>
    public static BitAllocation Allocate(int layers, double budget, BitRange range, IBitCost cost, IReadOnlyList<int>? keyGroups = null, IReadOnlyList<int>? valueGroups = null)
    {
        (double K, double V, double Spent)? best = null;
        foreach (double k in range.Widths)
        {
            foreach (double v in range.Widths)
            {
                if (k <= v)
                {
                    continue;
                }

                double spent = BitAllocation.Uniform(layers, k, v, keyGroups, valueGroups).AverageBits(cost);
                if (spent > budget + NormAwareAllocator.Tolerance)
                {
                    continue;
                }

                if (best is null || spent > best.Value.Spent + NormAwareAllocator.Tolerance
                    || (Math.Abs(spent - best.Value.Spent) <= NormAwareAllocator.Tolerance && k - v < best.Value.K - best.Value.V))
                {
                    best = (k, v, spent);
                }
            }
        }

        if (best is { } b)
        {
            return BitAllocation.Uniform(layers, b.K, b.V, keyGroups, valueGroups);
        }

        return UniformAllocator.Allocate(layers, budget, range, cost, keyGroups, valueGroups);
    }
}
