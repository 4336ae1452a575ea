namespace KvAdaQuant.Analysis;

/// <summary>Mean, minimum and maximum of a set of values (across heads).</summary>
public sealed record SpreadStatistics(double Mean, double Min, double Max)
{
    /// <summary>The statistics of <paramref name="values"/> (at least one).</summary>
    public static SpreadStatistics Of(IReadOnlyCollection<double> values)
    {
        if (values.Count == 0)
        {
            throw new ArgumentException("no values");
        }

        return new SpreadStatistics(values.Average(), values.Min(), values.Max());
    }
}
