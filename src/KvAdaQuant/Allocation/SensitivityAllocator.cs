namespace KvAdaQuant.Allocation;

/// <summary>
/// The <c>sensitivity</c> policy: choose one width per tensor to minimise the predicted KL (the sum of the measured
/// single-tensor KL values of a <see cref="SensitivityProfile"/>) under the budget, exactly, as a multiple-choice
/// knapsack solved by dynamic programming. Costs are counted in units of 1/<see cref="UnitsPerBit"/> bit (1/100 bit
/// when the table would exceed 50 M cells, i.e. for models of more than about 80 layers), each rounded up, and the
/// budget rounded down, so the plan found never exceeds the budget; among plans of equal predicted KL the
/// one found first (lower widths for lower indices) wins.
/// </summary>
public static class SensitivityAllocator
{
    /// <summary>Resolution of the cost grid.</summary>
    public const int UnitsPerBit = 1000;

    /// <summary>Allocates under an average budget of <paramref name="budget"/> cost units per element.</summary>
    public static BitAllocation Allocate(SensitivityProfile profile, double budget, IBitCost cost)
    {
        int layers = profile.Layers;
        int n = 2 * layers;
        var widths = profile.Range.Widths;
        int m = widths.Count;
        int units = Units(n, budget);
        var w = new int[n, m];
        var kl = new double[n, m];
        for (int i = 0; i < n; i++)
        {
            var kind = i % 2 == 0 ? KvTensorKind.Key : KvTensorKind.Value;
            for (int j = 0; j < m; j++)
            {
                w[i, j] = Weight(cost, i, widths[j], units);
                kl[i, j] = profile.Kl(i / 2, kind, widths[j]);
            }
        }

        int capacity = Capacity(n, budget, units);
        var best = new double[capacity + 1];
        Array.Fill(best, double.PositiveInfinity);
        best[0] = 0;
        var choice = new byte[n, capacity + 1];
        var next = new double[capacity + 1];
        for (int i = 0; i < n; i++)
        {
            Array.Fill(next, double.PositiveInfinity);
            for (int c = 0; c <= capacity; c++)
            {
                if (double.IsPositiveInfinity(best[c]))
                {
                    continue;
                }

                for (int j = 0; j < m; j++)
                {
                    int c2 = c + w[i, j];
                    if (c2 > capacity)
                    {
                        continue;
                    }

                    double v = best[c] + kl[i, j];
                    if (v < next[c2] && !double.IsPositiveInfinity(kl[i, j]))
                    {
                        next[c2] = v;
                        choice[i, c2] = (byte)j;
                    }
                }
            }

            (best, next) = (next, best);
        }

        int end = -1;
        for (int c = 0; c <= capacity; c++)
        {
            if (!double.IsPositiveInfinity(best[c]) && (end < 0 || best[c] < best[end]))
            {
                end = c;
            }
        }

        if (end < 0)
        {
            throw BudgetTooSmall(budget, cost);
        }

        var bits = new double[n];
        for (int i = n - 1, c = end; i >= 0; i--)
        {
            int j = choice[i, c];
            bits[i] = widths[j];
            c -= w[i, j];
        }

        return new BitAllocation(
            Enumerable.Range(0, layers).Select(l => bits[2 * l]).ToArray(),
            Enumerable.Range(0, layers).Select(l => bits[(2 * l) + 1]).ToArray());
    }

    /// <summary>
    /// Throws the error <see cref="Allocate"/> gives when even the cheapest width of <paramref name="range"/> for every
    /// tensor exceeds <paramref name="budget"/> on its cost grid; needs only the number of layers, so a command can check
    /// it before measuring the sensitivity.
    /// </summary>
    public static void CheckBudget(int layers, BitRange range, double budget, IBitCost cost)
    {
        int n = 2 * layers;
        int units = Units(n, budget);
        long lowest = 0;
        for (int i = 0; i < n; i++)
        {
            lowest += range.Widths.Min(width => Weight(cost, i, width, units));
        }

        if (lowest > Capacity(n, budget, units))
        {
            throw BudgetTooSmall(budget, cost);
        }
    }

    private static int Units(int n, double budget) => (long)n * (long)(budget * n * UnitsPerBit) > 50_000_000 ? UnitsPerBit / 10 : UnitsPerBit;

    private static int Weight(IBitCost cost, int index, double width, int units) =>
        (int)Math.Ceiling((cost.BitsPerElement(index % 2 == 0 ? KvTensorKind.Key : KvTensorKind.Value, index / 2, width) * units) - 1e-6);

    private static int Capacity(int n, double budget, int units) => (int)Math.Floor((budget * n * units) + 1e-6);

    private static ArgumentException BudgetTooSmall(double budget, IBitCost cost) =>
        new($"--budget {BitAllocation.Format(budget)}: even the lowest width everywhere exceeds it ({cost.Name} accounting)");
}
