namespace KvAdaQuant.Evaluation;

/// <summary>
/// Standard errors of the evaluation metrics, as lm-evaluation-harness reports them next to each (<c>acc_stderr</c>):
/// small samples on small models move by a few points between runs of the same cache, so a difference between two
/// caches means something only when it is larger than their errors.
/// </summary>
public static class StandardError
{
    /// <summary>Suffix of a metric's standard error in the tables (<c>acc</c> → <c>acc_stderr</c>).</summary>
    public const string Suffix = "_stderr";

    /// <summary>
    /// The standard error of a mean of <paramref name="n"/> 0/1 outcomes with mean <paramref name="p"/>: the sample
    /// standard deviation over √n, √(p (1 − p) / (n − 1)) (lm-evaluation-harness's <c>mean_stderr</c>); NaN for n &lt; 2.
    /// </summary>
    public static double OfProportion(double p, int n) => n < 2 ? double.NaN : Math.Sqrt(Math.Max(p * (1 - p), 0) / (n - 1));

    /// <summary>The name of <paramref name="metric"/>'s standard error in a table (<c>perplexity</c>'s is <c>perplexity_uncertainty</c>, llama.cpp's ±).</summary>
    public static string NameFor(string metric) => metric == "perplexity" ? "perplexity_uncertainty" : metric + Suffix;

    /// <summary>Adds <paramref name="metric"/>'s standard error <paramref name="value"/> to <paramref name="metrics"/> when it is finite.</summary>
    public static void Add(IDictionary<string, double> metrics, string metric, double value)
    {
        if (double.IsFinite(value))
        {
            metrics[NameFor(metric)] = value;
        }
    }
}
