namespace KvAdaQuant.Allocation;

/// <summary>
/// The reference implementation's layer-wise greedy (mohsenhariri/spectral-kv, <c>bit_pattern</c>), reproduced step for
/// step: the tensors are interleaved K0, V0, K1, V1, ...; each weighs c_i = norm_i^2 (norms above 1e100 are first
/// scaled by a power of two so that the squares cannot overflow, see <see cref="WeightScale"/>); all start at the lowest width;
/// while the spent budget is below 2 * layers * budget (tolerance 1e-6), raise to its next width the tensor with the
/// largest gain c_i (2^-2b - 2^-2b') / (cost(b') - cost(b)) among those whose raise keeps the total within budget (a raise
/// that costs nothing under the real accounting counts as an infinite gain); a
/// gain must beat the best so far by more than 1e-6 to replace it, so ties go to the lowest index (K before V, lower
/// layers first). Widths enter as numbers, so ternary is b = 1.58 in the error model. With <see cref="NominalBitCost"/>
/// this is exactly the reference; with the real cost the budget counts scales, zero points and full-precision windows.
/// </summary>
public static class NormAwareAllocator
{
    /// <summary>Floating point tolerance of the reference.</summary>
    public const double Tolerance = 1e-6;

    /// <summary>Rate-distortion exponent: error ~ 2^(-2b).</summary>
    public const double RateDistortionExponent = 2;

    /// <summary>Allocates widths to the K and V tensors of every layer under an average budget of <paramref name="budget"/> cost units per element.</summary>
    public static BitAllocation Allocate(LayerNorms norms, double budget, BitRange range, IBitCost cost)
    {
        int layers = norms.Layers;
        int n = 2 * layers;
        var c = new double[n];
        var bits = new double[n];
        double scale = WeightScale(norms);
        for (int l = 0; l < layers; l++)
        {
            c[2 * l] = Math.Pow(norms.Keys[l] * scale, RateDistortionExponent);
            c[(2 * l) + 1] = Math.Pow(norms.Values[l] * scale, RateDistortionExponent);
        }

        double total = 2 * budget * layers;
        double used = CheckBudget(layers, budget, range, cost);
        Array.Fill(bits, range.Min);

        while (used + Tolerance < total)
        {
            double bestGain = -1;
            int best = -1;
            double bestNext = 0;
            double bestDelta = 0;
            for (int i = 0; i < n; i++)
            {
                if (range.Next(bits[i]) is not double next)
                {
                    continue;
                }

                double delta = Cost(cost, i, next) - Cost(cost, i, bits[i]);
                if (used + delta - total > Tolerance)
                {
                    continue;
                }

                // A raise that costs nothing (ternary packs into as many bytes as 2 bits for small groups) is an infinite gain.
                double gain = delta <= 0 ? double.PositiveInfinity
                    : ((c[i] * Math.Pow(2, -RateDistortionExponent * bits[i])) - (c[i] * Math.Pow(2, -RateDistortionExponent * next))) / delta;
                if (gain > bestGain + Tolerance)
                {
                    (bestGain, best, bestNext, bestDelta) = (gain, i, next, delta);
                }
            }

            if (best < 0)
            {
                break;
            }

            bits[best] = bestNext;
            used += bestDelta;
        }

        return new BitAllocation(
            Enumerable.Range(0, layers).Select(l => bits[2 * l]).ToArray(),
            Enumerable.Range(0, layers).Select(l => bits[(2 * l) + 1]).ToArray());
    }

    /// <summary>
    /// Largest norm for which the weights are computed as given (their squares, times a gain's factors, stay far from
    /// double overflow). Above it, squares overflow to infinity and infinity minus infinity makes every gain of that
    /// tensor NaN, which silently inverted plans.
    /// </summary>
    public const double LargestUnscaledNorm = 1e100;

    /// <summary>
    /// 1, or for norms above <see cref="LargestUnscaledNorm"/> the power of two that brings the largest norm into [1, 2):
    /// every norm is multiplied by it before squaring, which keeps their ratios exactly (norms below about 1e-154 of
    /// the largest then weigh zero, as they would next to it anyway).
    /// </summary>
    public static double WeightScale(LayerNorms norms)
    {
        double max = norms.Keys.Concat(norms.Values).Max();
        return max > LargestUnscaledNorm ? Math.ScaleB(1.0, -Math.ILogB(max)) : 1;
    }

    /// <summary>
    /// Throws the error <see cref="Allocate"/> gives when even the lowest width of <paramref name="range"/> everywhere
    /// costs more than <paramref name="budget"/> (it needs only the number of layers, so a command can check it before
    /// measuring any norms); returns that lowest cost, summed over the 2 x <paramref name="layers"/> tensors.
    /// </summary>
    public static double CheckBudget(int layers, double budget, BitRange range, IBitCost cost)
    {
        int n = 2 * layers;
        double used = 0;
        for (int i = 0; i < n; i++)
        {
            used += Cost(cost, i, range.Min);
        }

        if (used - (2 * budget * layers) > Tolerance)
        {
            throw new ArgumentException($"--budget {BitAllocation.Format(budget)}: even the lowest width {BitAllocation.Format(range.Min)} everywhere costs {used / n:0.####} bits per element ({cost.Name} accounting)");
        }

        return used;
    }

    private static double Cost(IBitCost cost, int index, double bits) =>
        cost.BitsPerElement(index % 2 == 0 ? KvTensorKind.Key : KvTensorKind.Value, index / 2, bits);
}
