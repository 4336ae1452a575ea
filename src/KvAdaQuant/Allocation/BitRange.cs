using System.Globalization;

namespace KvAdaQuant.Allocation;

/// <summary>The bit widths an allocator may choose from, sorted ascending.</summary>
public sealed record BitRange
{
    /// <summary>Widths the quantized cache supports (1.58 is ternary).</summary>
    public static readonly IReadOnlyList<double> Supported = [1, 1.58, 2, 3, 4, 5, 6, 8];

    /// <summary>Creates a range from <paramref name="widths"/> (any order, no duplicates).</summary>
    public BitRange(IEnumerable<double> widths)
    {
        var sorted = widths.OrderBy(w => w).ToArray();
        if (sorted.Length == 0)
        {
            throw new ArgumentException("--bit-range: no widths given");
        }

        foreach (double w in sorted)
        {
            if (!Supported.Any(s => Math.Abs(s - w) < 1e-9))
            {
                throw new ArgumentException($"--bit-range: width {w.ToString(CultureInfo.InvariantCulture)} is not supported (expected some of {string.Join(",", Supported.Select(BitAllocation.Format))})");
            }
        }

        for (int i = 1; i < sorted.Length; i++)
        {
            if (sorted[i] == sorted[i - 1])
            {
                throw new ArgumentException($"--bit-range: width {BitAllocation.Format(sorted[i])} appears twice");
            }
        }

        Widths = sorted;
    }

    /// <summary>The default range: every supported width.</summary>
    public static BitRange Default => new(Supported);

    /// <summary>Widths, ascending.</summary>
    public IReadOnlyList<double> Widths { get; }

    /// <summary>Smallest width.</summary>
    public double Min => Widths[0];

    /// <summary>Largest width.</summary>
    public double Max => Widths[^1];

    /// <summary>Parses <c>1,1.58,2,4</c>.</summary>
    public static BitRange Parse(string text)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        var widths = new List<double>();
        foreach (var p in parts)
        {
            if (!double.TryParse(p, NumberStyles.Float, CultureInfo.InvariantCulture, out double w))
            {
                throw new ArgumentException($"--bit-range '{text}': '{p}' is not a number");
            }

            widths.Add(w);
        }

        return new BitRange(widths);
    }

    /// <summary>The next wider width after <paramref name="bits"/>, or null at the top.</summary>
    public double? Next(double bits)
    {
        for (int i = 0; i < Widths.Count - 1; i++)
        {
            if (Widths[i] == bits)
            {
                return Widths[i + 1];
            }
        }

        return null;
    }

    /// <summary>True when <paramref name="bits"/> is one of the widths.</summary>
    public bool Contains(double bits) => Widths.Contains(bits);

    /// <inheritdoc/>
    public override string ToString() => string.Join(",", Widths.Select(BitAllocation.Format));
}
