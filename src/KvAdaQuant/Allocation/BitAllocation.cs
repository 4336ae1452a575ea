namespace KvAdaQuant.Allocation;

/// <summary>
/// Bit widths (and optionally group sizes) chosen for the K and V tensors of every layer. A width of
/// <see cref="FullPrecision"/> means the tensor stays unquantized (FP16).
/// </summary>
public sealed record BitAllocation
{
    /// <summary>Width meaning "not quantized" (FP16 storage).</summary>
    public const double FullPrecision = 16;

    /// <summary>Creates an allocation; both lists must have one entry per layer.</summary>
    public BitAllocation(IReadOnlyList<double> keyBits, IReadOnlyList<double> valueBits, IReadOnlyList<int>? keyGroups = null, IReadOnlyList<int>? valueGroups = null)
    {
        if (keyBits.Count != valueBits.Count)
        {
            throw new ArgumentException($"allocation: {keyBits.Count} K widths but {valueBits.Count} V widths");
        }

        if ((keyGroups is null) != (valueGroups is null) || (keyGroups is not null && (keyGroups.Count != keyBits.Count || valueGroups!.Count != keyBits.Count)))
        {
            throw new ArgumentException("allocation: group sizes must be given for K and V of every layer or not at all");
        }

        KeyBits = keyBits.ToArray();
        ValueBits = valueBits.ToArray();
        KeyGroups = keyGroups?.ToArray();
        ValueGroups = valueGroups?.ToArray();
    }

    /// <summary>K width per layer.</summary>
    public IReadOnlyList<double> KeyBits { get; }

    /// <summary>V width per layer.</summary>
    public IReadOnlyList<double> ValueBits { get; }

    /// <summary>K group size per layer, or null for the base spec's.</summary>
    public IReadOnlyList<int>? KeyGroups { get; }

    /// <summary>V group size per layer, or null for the base spec's.</summary>
    public IReadOnlyList<int>? ValueGroups { get; }

    /// <summary>Layers.</summary>
    public int Layers => KeyBits.Count;

    /// <summary>The same K and V width in every layer (with per-layer group sizes, when given).</summary>
    public static BitAllocation Uniform(int layers, double keyBits, double valueBits, IReadOnlyList<int>? keyGroups = null, IReadOnlyList<int>? valueGroups = null) =>
        new(Enumerable.Repeat(keyBits, layers).ToArray(), Enumerable.Repeat(valueBits, layers).ToArray(), keyGroups, valueGroups);

    /// <summary>Width of one tensor.</summary>
    public double Bits(int layer, KvTensorKind kind) => kind == KvTensorKind.Key ? KeyBits[layer] : ValueBits[layer];

    /// <summary>A copy with one tensor's width replaced.</summary>
    public BitAllocation With(int layer, KvTensorKind kind, double bits)
    {
        var k = KeyBits.ToArray();
        var v = ValueBits.ToArray();
        (kind == KvTensorKind.Key ? k : v)[layer] = bits;
        return new BitAllocation(k, v, KeyGroups, ValueGroups);
    }

    /// <summary>Average cost per cached element under <paramref name="cost"/> (K and V tensors weigh equally: they hold as many elements).</summary>
    public double AverageBits(IBitCost cost)
    {
        double sum = 0;
        for (int l = 0; l < Layers; l++)
        {
            sum += cost.BitsPerElement(KvTensorKind.Key, l, KeyBits[l], KeyGroups?[l]);
            sum += cost.BitsPerElement(KvTensorKind.Value, l, ValueBits[l], ValueGroups?[l]);
        }

        return sum / (2 * Layers);
    }

    /// <summary>Compact text, e.g. <c>K=[6,6,4,4] V=[2,2,4,4]</c>.</summary>
    public override string ToString() =>
        $"K=[{string.Join(",", KeyBits.Select(Format))}] V=[{string.Join(",", ValueBits.Select(Format))}]" +
        (KeyGroups is null ? string.Empty : $" gK=[{string.Join(",", KeyGroups)}] gV=[{string.Join(",", ValueGroups!)}]");

    /// <summary>Formats a width: 1.58 stays 1.58, whole numbers print without decimals.</summary>
    public static string Format(double bits) => bits.ToString("0.##", System.Globalization.CultureInfo.InvariantCulture);
}
