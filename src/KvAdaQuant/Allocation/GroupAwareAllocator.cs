namespace KvAdaQuant.Allocation;

/// <summary>
/// The reference implementation's group-size allocation (mohsenhariri/spectral-kv, <c>group_pattern</c>), step for step:
/// tensors interleaved K0, V0, K1, V1, ... weigh c_i = norm_i (not squared, as there); the metadata budget is
/// sum 1/g_i = 2 * layers / G for a target average group size G. The continuous optimum g_i = kappa / sqrt(c_i)
/// (kappa = sum sqrt(c) / target) is rounded to the nearest allowed size (ties to the smaller), then repaired greedily:
/// while sum 1/g is off target by more than 1e-6, grow the g whose growth costs the least error per unit of sum removed
/// (c_i (g' - g) / (1/g - 1/g')) or shrink the g that saves the most error per unit of sum added, never overshooting;
/// strict comparisons, so ties go to the lowest index.
/// <para>
/// The widths then come from the key-favoring rule applied to the tensors <b>with the groups chosen</b>: under the real
/// accounting a smaller group stores more scales and zero points per element, so the pair is the one whose cost with
/// these groups is within the bit budget (it can be narrower than key-favoring's pair at the base group size). When not
/// even the lowest width fits with these groups, the allocation is refused. Under the nominal accounting groups cost
/// nothing and the pair is key-favoring's.
/// </para>
/// </summary>
public static class GroupAwareAllocator
{
    /// <summary>
    /// Group sizes and widths within <paramref name="budget"/> under <paramref name="cost"/>: the reference's groups for
    /// target average <paramref name="groupBudget"/>, then the key-favoring pair costed with those groups.
    /// </summary>
    public static BitAllocation Allocate(LayerNorms norms, int groupBudget, IReadOnlyList<int> groupSizes, double budget, BitRange range, IBitCost cost)
    {
        var (kg, vg) = Groups(norms, groupBudget, groupSizes);
        int layers = norms.Layers;
        double floor = BitAllocation.Uniform(layers, range.Min, range.Min, kg, vg).AverageBits(cost);
        if (floor > budget + NormAwareAllocator.Tolerance)
        {
            throw new ArgumentException(string.Create(
                System.Globalization.CultureInfo.InvariantCulture,
                $"--group-budget {groupBudget}: with the groups it gives (K {string.Join(",", kg)}, V {string.Join(",", vg)}) even K{BitAllocation.Format(range.Min)}V{BitAllocation.Format(range.Min)} costs {floor:0.####} bits per element, over --budget {BitAllocation.Format(budget)} ({cost.Name} accounting); raise --group-budget or --budget"));
        }

        return KeyFavoringAllocator.Allocate(layers, budget, range, cost, kg, vg);
    }

    /// <summary>Group sizes per layer for K and V with the given widths in every layer (the reference's <c>group_pattern</c>; no bit budget is checked).</summary>
    public static BitAllocation Allocate(LayerNorms norms, int groupBudget, IReadOnlyList<int> groupSizes, double keyBits, double valueBits)
    {
        var (kg, vg) = Groups(norms, groupBudget, groupSizes);
        return BitAllocation.Uniform(norms.Layers, keyBits, valueBits, kg, vg);
    }

    /// <summary>The reference's group sizes per layer for K and V under the metadata budget sum 1/g = 2 * layers / <paramref name="groupBudget"/>.</summary>
    public static (int[] KeyGroups, int[] ValueGroups) Groups(LayerNorms norms, int groupBudget, IReadOnlyList<int> groupSizes)
    {
        if (groupSizes.Count == 0 || groupSizes.Any(g => g <= 0))
        {
            throw new ArgumentException("--group-sizes: need at least one positive group size");
        }

        if (groupBudget <= 0)
        {
            throw new ArgumentException($"--group-budget must be positive, got {groupBudget}");
        }

        var sizes = groupSizes.Distinct().OrderBy(g => g).ToArray();
        int layers = norms.Layers;
        var c = new double[2 * layers];
        for (int l = 0; l < layers; l++)
        {
            c[2 * l] = norms.Keys[l];
            c[(2 * l) + 1] = norms.Values[l];
        }

        if (c.Any(x => x <= 0))
        {
            throw new ArgumentException($"{norms.Source}: group-aware allocation needs positive norms");
        }

        double target = 2.0 * layers / groupBudget;
        double kappa = c.Sum(Math.Sqrt) / target;
        var g = c.Select(x => Nearest(sizes, kappa / Math.Sqrt(x))).ToArray();
        double sum = g.Sum(x => 1.0 / x);
        const double tol = NormAwareAllocator.Tolerance;
        while (Math.Abs(sum - target) > tol)
        {
            int best = -1;
            double bestScore = 0;
            bool grow = sum > target;
            for (int i = 0; i < g.Length; i++)
            {
                int idx = Array.IndexOf(sizes, g[i]);
                int nextIdx = grow ? idx + 1 : idx - 1;
                if (nextIdx < 0 || nextIdx >= sizes.Length)
                {
                    continue;
                }

                int next = sizes[nextIdx];
                double deltaSum = (1.0 / next) - (1.0 / g[i]);
                double newSum = sum + deltaSum;
                if (grow ? newSum + tol < target : newSum - tol > target)
                {
                    continue;
                }

                // grow: penalty per unit of sum removed (minimise); shrink: gain per unit of sum added (maximise).
                double score = grow ? c[i] * (next - g[i]) / -deltaSum : c[i] * (g[i] - next) / deltaSum;
                if (best < 0 || (grow ? score < bestScore : score > bestScore))
                {
                    (best, bestScore) = (i, score);
                }
            }

            if (best < 0)
            {
                break;
            }

            int cur = g[best];
            int nxt = sizes[Array.IndexOf(sizes, cur) + (grow ? 1 : -1)];
            sum += (1.0 / nxt) - (1.0 / cur);
            g[best] = nxt;
        }

        return (Enumerable.Range(0, layers).Select(l => g[2 * l]).ToArray(), Enumerable.Range(0, layers).Select(l => g[(2 * l) + 1]).ToArray());
    }

    private static int Nearest(int[] sizes, double g) => sizes.OrderBy(s => Math.Abs(s - g)).ThenBy(s => s).First();
}
