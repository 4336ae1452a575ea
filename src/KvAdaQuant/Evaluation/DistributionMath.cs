using System.Numerics.Tensors;

namespace KvAdaQuant.Evaluation;

/// <summary>Log-softmax, KL divergence and percentiles over next-token distributions, in double precision.</summary>
public static class DistributionMath
{
    /// <summary>Writes log softmax(<paramref name="logits"/>) into <paramref name="logProbs"/>.</summary>
    public static void LogSoftmax(ReadOnlySpan<float> logits, Span<float> logProbs)
    {
        double logZ = LogSumExp(logits);
        for (int i = 0; i < logits.Length; i++)
        {
            logProbs[i] = (float)(logits[i] - logZ);
        }
    }

    /// <summary>log sum exp(logits), computed in double after subtracting the maximum.</summary>
    public static double LogSumExp(ReadOnlySpan<float> logits)
    {
        float max = TensorPrimitives.Max(logits);
        double sum = 0;
        foreach (float l in logits)
        {
            sum += Math.Exp(l - max);
        }

        return max + Math.Log(sum);
    }

    /// <summary>KL(P || Q) = sum p (log p - log q) from log-probabilities; zero for identical distributions.</summary>
    public static double KlDivergence(ReadOnlySpan<float> logP, ReadOnlySpan<float> logQ)
    {
        double kl = 0;
        for (int i = 0; i < logP.Length; i++)
        {
            double lp = logP[i];
            if (lp > -700)
            {
                kl += Math.Exp(lp) * (lp - logQ[i]);
            }
        }

        // Rounding can leave a tiny negative sum for near-identical distributions; KL is never negative.
        return Math.Max(kl, 0);
    }

    /// <summary>The <paramref name="q"/>-th percentile (0..100) with linear interpolation between order statistics (numpy's default).</summary>
    public static double Percentile(IReadOnlyList<double> values, double q)
    {
        if (values.Count == 0)
        {
            throw new ArgumentException("percentile of no values");
        }

        var sorted = values.OrderBy(x => x).ToArray();
        double rank = q / 100 * (sorted.Length - 1);
        int lo = (int)Math.Floor(rank);
        int hi = Math.Min(lo + 1, sorted.Length - 1);
        return sorted[lo] + ((rank - lo) * (sorted[hi] - sorted[lo]));
    }
}
