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

                double spent = Pair(layers, k, v, keyGroups, valueGroups).AverageBits(cost);
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
            return Pair(layers, b.K, b.V, keyGroups, valueGroups);
        }

        for (int i = range.Widths.Count - 1; i >= 0; i--)
        {
            var a = Pair(layers, range.Widths[i], range.Widths[i], keyGroups, valueGroups);
            if (a.AverageBits(cost) <= budget + NormAwareAllocator.Tolerance)
            {
                return a;
            }
        }

        throw new ArgumentException($"--budget {BitAllocation.Format(budget)}: even K{BitAllocation.Format(range.Min)}V{BitAllocation.Format(range.Min)} costs {Pair(layers, range.Min, range.Min, keyGroups, valueGroups).AverageBits(cost):0.####} bits per element ({cost.Name} accounting)");
    }

    private static BitAllocation Pair(int layers, double k, double v, IReadOnlyList<int>? keyGroups, IReadOnlyList<int>? valueGroups) =>
        new(Enumerable.Repeat(k, layers).ToArray(), Enumerable.Repeat(v, layers).ToArray(), keyGroups, valueGroups);
}
