using KvAdaQuant.Quantization;

namespace KvAdaQuant.Allocation;

/// <summary>
/// The real accounting: a width costs what the quantized cache stores per element of a tensor of <c>HeadDim</c> channels
/// after <c>Tokens</c> positions, by <see cref="KvSpec.BytesPerHead"/> — packed codes (ternary packs 5 values per byte),
/// FP16 scales and zero points, and the FP16 residual window and sink tokens — for the base spec of K or V with the width
/// (and the group size, when the allocation sets one) replaced.
/// </summary>
public sealed class SpecBitCost : IBitCost
{
    /// <summary>Creates the cost for base specs <paramref name="keys"/> and <paramref name="values"/>.</summary>
    public SpecBitCost(KvSpec keys, KvSpec values, int headDim, int tokens)
    {
        if (headDim <= 0 || tokens <= 0)
        {
            throw new ArgumentException($"real bit accounting needs a positive head dimension and context, got {headDim} and {tokens}");
        }

        Keys = keys;
        Values = values;
        HeadDim = headDim;
        Tokens = tokens;
    }

    /// <summary>Base spec of K (its width is replaced).</summary>
    public KvSpec Keys { get; }

    /// <summary>Base spec of V.</summary>
    public KvSpec Values { get; }

    /// <summary>Head dimension.</summary>
    public int HeadDim { get; }

    /// <summary>Context at which the cost is counted (residual and sinks weigh less in a longer context).</summary>
    public int Tokens { get; }

    /// <inheritdoc/>
    public string Name => "real";

    /// <summary>The width as a <see cref="KvBits"/>.</summary>
    public static KvBits ToKvBits(double bits) =>
        KvBitsInfo.TryParse(BitAllocation.Format(bits)) ?? throw new ArgumentException($"width {BitAllocation.Format(bits)} is not one of {KvBitsInfo.Accepted}");

    /// <summary>
    /// The spec one tensor gets: the base spec with the width and, when given, the group size replaced; an unquantized width
    /// (FP16, FP32) drops the base spec's rotation, which applies to quantized rows only.
    /// </summary>
    public KvSpec Spec(KvTensorKind kind, double bits, int? groupSize = null)
    {
        var b = kind == KvTensorKind.Key ? Keys : Values;
        var width = ToKvBits(bits);
        return b with { Bits = width, GroupSize = groupSize ?? b.GroupSize, Rotate = b.Rotate && width.IsQuantized() };
    }

    /// <inheritdoc/>
    public double BitsPerElement(KvTensorKind kind, int layer, double bits, int? groupSize = null) =>
        8.0 * Spec(kind, bits, groupSize).BytesPerHead(HeadDim, Tokens) / ((double)Tokens * HeadDim);
}
