namespace KvAdaQuant.Allocation;

/// <summary>One norm per layer for the K tensor and for the V tensor, and where they came from.</summary>
public sealed record LayerNorms
{
    /// <summary>Creates the record; both lists must be equally long, non-empty, finite and non-negative.</summary>
    public LayerNorms(IReadOnlyList<double> keys, IReadOnlyList<double> values, string source)
    {
        if (keys.Count == 0 || keys.Count != values.Count)
        {
            throw new ArgumentException($"{source}: need one K and one V norm per layer, got {keys.Count} K and {values.Count} V norms");
        }

        foreach (var (x, i) in keys.Concat(values).Select((x, i) => (x, i)))
        {
            if (!double.IsFinite(x) || x < 0)
            {
                throw new ArgumentException($"{source}: norm {i} is {x}; norms must be finite and non-negative");
            }
        }

        Keys = keys.ToArray();
        Values = values.ToArray();
        Source = source;
    }

    /// <summary>K norm per layer.</summary>
    public IReadOnlyList<double> Keys { get; }

    /// <summary>V norm per layer.</summary>
    public IReadOnlyList<double> Values { get; }

    /// <summary>Where they came from (file and fields), for the plan's record of inputs.</summary>
    public string Source { get; }

    /// <summary>Layers.</summary>
    public int Layers => Keys.Count;
}
