namespace KvAdaQuant.Allocation;

/// <summary>The <c>uniform</c> policy: the widest single width b of the range with K = V = b in every layer whose cost is within the budget (costed with the group sizes per layer, when given).</summary>
public static class UniformAllocator
{
    /// <summary>Allocates.</summary>
    public static BitAllocation Allocate(int layers, double budget, BitRange range, IBitCost cost, IReadOnlyList<int>? keyGroups = null, IReadOnlyList<int>? valueGroups = null)
    {
        for (int i = range.Widths.Count - 1; i >= 0; i--)
        {
            var a = BitAllocation.Uniform(layers, range.Widths[i], range.Widths[i], keyGroups, valueGroups);
            if (a.AverageBits(cost) <= budget + NormAwareAllocator.Tolerance)
            {
                return a;
            }
        }

        throw BudgetTooSmall(layers, budget, range, cost, keyGroups, valueGroups);
    }

    /// <summary>
    /// Throws the error <see cref="Allocate"/> gives when even the lowest width of <paramref name="range"/> everywhere
    /// costs more than <paramref name="budget"/>; needs only the shape, so a command can check it before any work.
    /// </summary>
    public static void CheckBudget(int layers, double budget, BitRange range, IBitCost cost, IReadOnlyList<int>? keyGroups = null, IReadOnlyList<int>? valueGroups = null)
    {
        if (BitAllocation.Uniform(layers, range.Min, range.Min, keyGroups, valueGroups).AverageBits(cost) > budget + NormAwareAllocator.Tolerance)
        {
            throw BudgetTooSmall(layers, budget, range, cost, keyGroups, valueGroups);
        }
    }

    private static ArgumentException BudgetTooSmall(int layers, double budget, BitRange range, IBitCost cost, IReadOnlyList<int>? keyGroups, IReadOnlyList<int>? valueGroups) =>
        new($"--budget {BitAllocation.Format(budget)}: even K{BitAllocation.Format(range.Min)}V{BitAllocation.Format(range.Min)} costs {BitAllocation.Uniform(layers, range.Min, range.Min, keyGroups, valueGroups).AverageBits(cost):0.####} bits per element ({cost.Name} accounting)");
}
